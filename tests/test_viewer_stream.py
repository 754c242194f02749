"""The recording writer process (embodied/viewer/stream.py): same files as writing inline, errors
reported to the recording process, the static cache across recordings, nothing lost when the
recording process dies."""
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install -e '.[viewer]')")

from embodied.tasks import NavConfig, make_env  # noqa: E402
from embodied.viewer import stream  # noqa: E402
from embodied.viewer.recording import OraclePolicy, record_episode  # noqa: E402
from embodied.viewer.rrd import Recording  # noqa: E402


def test_writer_process_writes_the_same_recording_as_inline(tmp_path):
    env = make_env(NavConfig(name="nav/pointnav", width=32, height=32, sensors=["rgb", "depth"], max_steps=30))
    files = {}
    for writer in ("inline", "process"):
        record_episode(env, OraclePolicy(), tmp_path / f"{writer}.rrd", seed=7, writer=writer)
        files[writer] = Recording(tmp_path / f"{writer}.rrd")
    inline, process = files["inline"], files["process"]
    assert set(inline.entities) == set(process.entities) and len(inline.entities) > 10
    for entity in inline.entities:  # static rows (step None) and timed rows may come in either order
        assert sorted(inline[entity].steps, key=str) == sorted(process[entity].steps, key=str), entity
    a, b = inline.images("world/agent/camera/rgb"), process.images("world/agent/camera/rgb")
    assert a.keys() == b.keys() and all(np.array_equal(a[s], b[s]) for s in a)
    assert inline.texts("text/log") == process.texts("text/log")
    explored = "Points2D:positions"
    a, b = inline["map/explored"].at(explored), process["map/explored"].at(explored)
    assert all(np.allclose(np.asarray(a[s][0]), np.asarray(b[s][0])) for s in a if a[s] and a[s][0] is not None)


def _defined_here(*_):  # the writer process cannot import a test module
    return None


def test_writer_errors_reach_the_recording_process_and_the_writer_survives(tmp_path):
    bad = stream.open_stream(tmp_path / "bad.rrd", "bad")
    bad.columns([("scalars/x", stream.scalar_columns, [(0, 0, "not a number")])])
    bad.close()
    with pytest.raises(RuntimeError, match=r"(?s)bad\.rrd: writing the recording failed.*could not convert"):
        stream.sync()
    stream.sync()  # reported once
    alien = stream.open_stream(tmp_path / "alien.rrd", "alien")
    alien.log("x", _defined_here, static=True)
    alien.close()
    with pytest.raises(RuntimeError, match=r"(?s)alien\.rrd.*No module named"):
        stream.sync()
    good = stream.open_stream(tmp_path / "good.rrd", "good")
    good.log("text", stream.text_log, "still writing", time=(0, 0))
    good.close()
    stream.sync()
    assert Recording(tmp_path / "good.rrd").texts("text") == {0: "still writing"}


@pytest.mark.parametrize("writer", stream.WRITERS)
def test_static_cache_evicts_in_step_with_the_applying_side(tmp_path, monkeypatch, writer):
    # Two keys over a one-entry cache: every recording after the first must re-send what it logs.
    monkeypatch.setattr(stream, "CACHE_SIZE", 1)
    built = []
    for i, key in enumerate(["a", "b", "a", "a", "b"]):
        s = stream.open_stream(tmp_path / f"{i}.rrd", f"r{i}", writer=writer)
        s.log_cached("doc", ("test-cache", writer, key), stream.markdown, lambda key=key: built.append(key) or (f"text {key}",))
        s.close()
    stream.sync()
    assert built == ["a", "b", "a", "b"]  # the third recording reused "a"
    for i, key in enumerate(["a", "b", "a", "a", "b"]):
        rec = Recording(tmp_path / f"{i}.rrd")
        assert rec["doc"].static and rec["doc"].components["TextDocument:text"][0][0] == f"text {key}"


def test_recording_survives_the_death_of_the_recording_process(tmp_path):
    # Rows flushed before the process dies (os._exit: no atexit, no close) are in a complete file.
    path = tmp_path / "killed.rrd"
    script = textwrap.dedent(f"""
        import os
        from embodied.viewer import stream
        s = stream.open_stream({str(path)!r}, "killed")
        s.columns([("scalars/x", stream.scalar_columns, [(t, t, float(t)) for t in range(5)])])
        s.flush()
        s.log("never", stream.text_log, "lost", time=(9, 9))  # not flushed: lost, as documented
        os._exit(1)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    deadline = time.monotonic() + 60  # the orphaned writer finishes the file after its input closes
    while True:
        try:
            rec = Recording(path)
            break
        except Exception:  # noqa: BLE001 - not yet complete
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert sorted(rec["scalars/x"].steps) == [0, 1, 2, 3, 4]
    assert "never" not in rec


def test_bad_writer_name_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="writer: 'thread'; allowed: process, inline"):
        stream.open_stream(tmp_path / "x.rrd", "x", writer="thread")


def test_a_dead_writer_is_an_error_not_a_silent_success(tmp_path):
    s = stream.open_stream(tmp_path / "a.rrd", "a")
    writer = stream._WRITER
    writer.proc.kill()
    writer.proc.wait(timeout=30)
    with pytest.raises(RuntimeError, match="recording writer process exited"):
        s.close()
        stream.sync()
    fresh = stream.open_stream(tmp_path / "b.rrd", "b")  # the next recording starts a new writer
    assert stream._WRITER is not writer
    fresh.log("text", stream.text_log, "again", time=(0, 0))
    fresh.close()
    stream.sync()
    assert Recording(tmp_path / "b.rrd").texts("text") == {0: "again"}


def test_writer_runs_at_lower_priority_and_a_bad_setting_fails_clearly(tmp_path, monkeypatch):
    import os

    s = stream.open_stream(tmp_path / "a.rrd", "a")
    s.close()
    stream.sync()
    pid = stream._WRITER.proc.pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + stream.WRITER_NICE)
    stream._WRITER.proc.kill()
    stream._WRITER.proc.wait(timeout=30)
    monkeypatch.setenv("EMBODIED_WRITER_NICE", "fast")
    with pytest.raises(ValueError, match="EMBODIED_WRITER_NICE='fast': expected a niceness increment 0..19"):
        stream.open_stream(tmp_path / "b.rrd", "b")
