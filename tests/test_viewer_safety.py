"""A newcomer's viewer commands fail safe: `view --web` stops its rerun server on SIGTERM, SIGINT and
SIGHUP and moves both its ports; `play` and `record` never replace an earlier run's files silently."""
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install -e '.[viewer]')")
psutil = pytest.importorskip("psutil")

from embodied.config import ConfigError, InputError  # noqa: E402
from embodied.viewer import serve  # noqa: E402
from embodied.viewer.rrd import Recording  # noqa: E402
from embodied.viewer.serve import free_port, port_in_use, resolve_ports  # noqa: E402

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from embodied.tasks import make_env
    from embodied.viewer.recording import RandomPolicy, record_episode

    path = tmp_path_factory.mktemp("serve") / "episode.rrd"
    record_episode(make_env({"name": "ballet/2_delay16"}), RandomPolicy(0), path, seed=0)
    return path


def two_free_ports() -> int:
    """A port P with P + 1 free too (the viewer's HTTP and gRPC ports)."""
    for _ in range(50):
        port = free_port(HOST)
        if port < 65535 and not port_in_use(HOST, port + 1):
            return port
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture
def listening():
    """Listen on a port, as another viewer would."""
    socks = []

    def listen(port: int | None = None) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, port or 0))
        s.listen()
        socks.append(s)
        return s.getsockname()[1]

    yield listen
    for s in socks:
        s.close()


def alive(p) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_view_web_stops_its_server_on_signals(recording, sig):
    port = two_free_ports()
    proc = subprocess.Popen([sys.executable, "-m", "embodied.cli", "view", str(recording), "--web", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        deadline, line = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not line.startswith("web viewer:"):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"view exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert line.startswith("web viewer:"), "no URL line within 120 s"
        url = line.split(": ", 1)[1]
        # --port moves both: HTTP on it, gRPC on the next.
        assert f"http://{HOST}:{port}/" in url and f"{HOST}%3A{port + 1}" in url, url
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children and port_in_use(HOST, port) and port_in_use(HOST, port + 1)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        survivors = [c for c in children if alive(c)]
        assert not survivors, survivors  # gone, not orphaned
        assert not port_in_use(HOST, port) and not port_in_use(HOST, port + 1)
    finally:  # a failed check leaves nothing behind
        for p in ([psutil.Process(proc.pid)] if proc.poll() is None else []) + children:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait()


def test_port_moves_both_and_zero_picks_free_ones():
    port = two_free_ports()
    assert resolve_ports(HOST, port) == (port, port + 1, None)
    web, grpc, note = resolve_ports(HOST, 0)
    assert web > 0 and grpc > 0 and web != grpc and note is None
    web, grpc, _ = resolve_ports(HOST, port, grpc_port=0)
    assert web == port and grpc not in (0, port)
    with pytest.raises(InputError, match="--port: 70000; allowed"):
        resolve_ports(HOST, 70000)


def test_busy_ports_fail_in_one_line_or_move_when_defaulted(listening, monkeypatch):
    busy = listening()
    with pytest.raises(InputError, match=rf"^--port {busy}: {HOST}:{busy} is in use; pass another --port"):
        resolve_ports(HOST, busy)
    with pytest.raises(InputError, match=rf"^--grpc-port {busy}: .* is in use"):
        resolve_ports(HOST, 0, grpc_port=busy)
    if not port_in_use(HOST, busy - 1):
        with pytest.raises(InputError, match=rf"^--port {busy - 1}: the gRPC port {busy} \(--port \+ 1\)"):
            resolve_ports(HOST, busy - 1)
    # The default port taken by a first viewer: a second one serves on free ports and says so.
    monkeypatch.setattr(serve, "DEFAULT_PORT", busy)
    web, grpc, note = resolve_ports(HOST)
    assert busy not in (web, grpc) and f"port {busy} is in use" in note


def _play_cfg(out, *extra):
    from embodied.config import compose

    return compose("play", ["task=nav/pointnav", "task.width=32", "task.height=32", "task.max_steps=8",
                            "video=false", "quiet=true", f"out={out}", *extra])


def test_play_refuses_to_overwrite_an_earlier_run(tmp_path):
    from embodied.viewer.play import play

    play(_play_cfg(tmp_path))
    measures = tmp_path / "measures.json"
    before = measures.read_bytes()
    with pytest.raises(ConfigError, match=rf"^out: {re.escape(str(measures))} exists .*another out=DIR, or overwrite=true"):
        play(_play_cfg(tmp_path, "seed=5"))
    assert measures.read_bytes() == before
    # An MP4 of an earlier run counts too, and overwrite=true replaces the files.
    (tmp_path / "episode_000.mp4").write_bytes(b"earlier")
    measures.unlink()
    with pytest.raises(ConfigError, match="episode_000.mp4 exists"):
        play(_play_cfg(tmp_path, "video=true"))
    play(_play_cfg(tmp_path, "seed=5", "overwrite=true"))
    assert measures.read_bytes() != before


def test_record_refuses_to_overwrite_an_earlier_recording(tmp_path):
    earlier = tmp_path / "episode_001.rrd"
    earlier.write_bytes(b"an earlier run's recording")
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "record", "task=ballet/2_delay16", "agent=random",
                        "episodes=2", f"out={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{earlier} exists" in lines[0] and "overwrite=true" in lines[0], r.stderr
    assert earlier.read_bytes() == b"an earlier run's recording"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_001.rrd"]  # nothing else written


def test_record_overwrite_true_replaces_the_recording(tmp_path):
    from embodied.config import compose
    from embodied.viewer.record import record

    (tmp_path / "episode_000.rrd").write_bytes(b"earlier")
    cfg = compose("record", ["task=ballet/2_delay16", "agent=random", "quiet=true", f"out={tmp_path}", "overwrite=true"])
    record(cfg)
    assert (tmp_path / "episode_000.rrd").read_bytes() != b"earlier"
    Recording(tmp_path / "episode_000.rrd")  # a readable recording
