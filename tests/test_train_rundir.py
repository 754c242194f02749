"""The run directory is safe: one process per run_dir, one metrics row per update after any crash,
a full disk says so in one line and leaves the last checkpoint usable, temp files of killed writes
go away, a rejected start changes nothing, a preempted run exits 3, and the start/end say where."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import embodied.train  # noqa: F401  (registers the config schemas)
from embodied.config import compose
from embodied.config import ConfigError
from embodied.train import run as run_module
from embodied.loading import CheckpointError, load_checkpoint
from embodied.train.checkpoint import CheckpointManager, RunDirError, RunDirLock
from embodied.train.logger import JsonlLogger
from embodied.train.run import EXIT_PREEMPTED, train

REPO = Path(__file__).resolve().parents[1]
# 64 env steps per update; total_steps=640 is 10 updates
TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=16", "agent.hidden=16",
       "trainer.rollout_steps=16", "num_envs=4", "num_workers=0", "device=cpu", "quiet=true",
       "trainer.lr=3e-3", "ckpt_every=1000", "total_steps=640"]


def cli(run_dir: Path, *extra: str, wait: bool = True, env: dict | None = None):
    cmd = [sys.executable, "-m", "embodied.train", *TOY, f"run_dir={run_dir}", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def wait_for_rows(proc: subprocess.Popen, metrics: Path, rows: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {rows} metrics rows: rc={proc.poll()} "
                         f"{proc.stderr.read()[-2000:] if proc.poll() is not None else ''}")


def updates(run_dir: Path) -> list[int]:
    return [json.loads(x)["update"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.strip()]


# --- one run directory, one process ----------------------------------------------------------------

@pytest.mark.slow
def test_second_run_stops_at_start_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    held = RunDirLock(run).acquire()  # the first run, in this process
    try:
        second = cli(run)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = error_lines(second.stderr)
        assert len(lines) == 1 and lines[0].startswith("embodied train: error: run_dir:"), lines
        assert f"process {os.getpid()} on host {socket.gethostname()}" in lines[0]
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the second run wrote nothing
        with pytest.raises(RunDirError, match=str(os.getpid())):
            train(compose("train", [*TOY, f"run_dir={run}"]))
    finally:
        held.release()

    # a holder killed by SIGKILL cannot release: the kernel drops its flock, the next start takes over
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from embodied.train.checkpoint import RunDirLock\n"
                               f"RunDirLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(600)"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirError, match=f"process {holder.pid} "):
        RunDirLock(run).acquire()
    holder.kill()
    holder.wait()
    result = train(compose("train", [*TOY, f"run_dir={run}", "total_steps=128"]))
    assert result["status"] == "finished" and updates(run) == [1, 2]
    assert (run / ".lock").read_text().split()[0] == str(os.getpid())


# --- each update once after any crash ----------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_rerun_logs_each_update_once(tmp_path):
    run = tmp_path / "run"
    proc = cli(run, wait=False)
    wait_for_rows(proc, run / "metrics.jsonl", 3)
    proc.kill()
    proc.communicate()
    assert not (run / "latest.pt").exists() and len(updates(run)) >= 3
    again = cli(run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "fresh start" in again.stderr
    assert updates(run) == list(range(1, 11))


# --- temp files of killed writes ---------------------------------------------------------------------

def test_temp_files_of_killed_writes_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    stale = [run / ".ckpt-00000003.pt.tmp-99999", run / ".latest.pt.tmp-99999", run / ".best.pt.tmp-123",
             run / ".metrics.jsonl.tmp-7", run / ".hydra" / ".config.yaml.tmp-42"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    kept = [run / "notes.txt", run / ".ckpt-00000003.pt.tmp-x"]  # not a temp file name of ours
    for p in kept:
        p.write_text("mine")
    train(compose("train", [*TOY, f"run_dir={run}", "total_steps=64"]))
    assert not [p for p in stale if p.exists()]
    assert all(p.read_text() == "mine" for p in kept)
    assert "left by a write that was killed" in (run / "train.log").read_text()


# --- a full disk -------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """(directory, fill): a 2 MiB tmpfs filled up by fill() where this test may mount one (root);
    elsewhere a plain directory where fill() makes every write of a checkpoint or a metrics row
    fail with ENOSPC as a full disk does (torch.save reports it as RuntimeError `unexpected pos`)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                                                   capture_output=True).returncode == 0

    def fill() -> None:
        if mounted:
            with open(disk / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            return
        real_write = os.write

        def save(obj, f, *args, **kwargs):
            f.write(b"PK\3\4 partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

        def write(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(disk)):
                real_write(fd, bytes(data[: len(data) // 2]))
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(os, "write", write)

    yield disk, fill
    if mounted:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: a failed test may hold a file open


def test_full_disk_during_a_save_says_so_and_keeps_the_previous_checkpoint(small_disk):
    disk, fill = small_disk
    manager = CheckpointManager(disk, keep_last=2)
    manager.save({"model": {"w": torch.ones(1000)}, "counters": {"update": 1}, "config": {}}, 1, metric=0.5)
    metrics = JsonlLogger(disk / "metrics.jsonl")
    metrics.log({"update": 1, "loss": 0.5})
    fill()
    with pytest.raises(CheckpointError) as err:
        manager.save({"model": {"w": torch.full((100_000,), 2.0)}, "counters": {"update": 2}, "config": {}},
                     2, metric=0.9)
    assert str(err.value) == (f"no space left on device writing {disk / 'ckpt-00000002.pt'}; "
                              f"the previous checkpoint {disk / 'latest.pt'} is intact")
    with pytest.raises(RunDirError, match=r"^no space left on device writing .*metrics\.jsonl \(update 2\)"):
        metrics.log({"update": 2, "loss": 0.25, "padding": "x" * 8192})
    metrics.close()
    names = sorted(p.name for p in disk.iterdir() if p.name != "filler")
    assert names == ["best.pt", "ckpt-00000001.pt", "latest.pt", "metrics.jsonl"]  # no temp file, no ckpt 2
    for link in ("latest.pt", "best.pt"):
        assert load_checkpoint(disk / link)["counters"]["update"] == 1
    assert (disk / "metrics.jsonl").read_text() == '{"loss": 0.5, "update": 1}\n'  # no torn row


def test_full_disk_during_training_ends_in_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint (update 4) hits a full disk
            f.write(b"PK\3\4 partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointError) as err:
        train(compose("train", [*TOY, f"run_dir={run}", "ckpt_every=2"]))
    assert str(err.value) == (f"no space left on device writing {run / 'ckpt-00000004.pt'}; "
                              f"the previous checkpoint {run / 'latest.pt'} is intact")
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    assert load_checkpoint(run / "latest.pt")["counters"]["update"] == 2
    assert "error: no space left on device" in (run / "train.log").read_text()
    monkeypatch.setattr(torch, "save", real_save)
    train(compose("train", [*TOY, f"run_dir={run}", "ckpt_every=2"]))
    assert updates(run) == list(range(1, 11))


# --- a rejected start changes nothing; a finished run says so ------------------------------------------

@pytest.mark.slow
def test_rejected_starts_and_a_finished_run_change_nothing(tmp_path):
    run = tmp_path / "run"
    train(compose("train", [*TOY, f"run_dir={run}", "total_steps=128"]))
    before = snapshot(run)
    assert {".lock", ".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "metrics.jsonl",
            "latest.pt"} <= set(before)

    other_memory = cli(run, "total_steps=128", "memory=lstm", "memory.hidden=16")
    assert other_memory.returncode == 2
    lines = error_lines(other_memory.stderr)
    assert len(lines) == 1 and "memory.name='gru'" in lines[0] and "'lstm'" in lines[0], lines
    assert snapshot(run) == before

    with pytest.raises(ConfigError, match="resume"):
        train(compose("train", [*TOY, f"run_dir={run}", "total_steps=128", "resume=false"]))
    assert snapshot(run) == before

    finished = cli(run, "total_steps=128")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert error_lines(finished.stderr) == [f"embodied train: run_dir {run} already finished at 128 steps "
                                            "(total_steps=128); raise total_steps to continue"]
    assert snapshot(run) == before

    fresh = tmp_path / "fresh"  # a rejected start in a new run_dir leaves no directory behind
    bad = cli(fresh, "num_envs=0")
    assert bad.returncode == 2 and not fresh.exists()


# --- preemption, start and end lines, train.log --------------------------------------------------------

@pytest.mark.slow
def test_preempted_run_exits_3_requeues_and_logs_to_train_log(tmp_path):
    run = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # SLURM's requeue, recorded
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.args'}\n")
    scontrol.chmod(0o755)
    env = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = cli(run, wait=False, env=env)
    wait_for_rows(proc, run / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED == 3, err[-2000:]
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    stopped_at = load_checkpoint(run / "latest.pt")["counters"]["update"]
    assert "requeued SLURM job 4242" in err
    log = (run / "train.log").read_text()
    assert "fresh start" in log and "preempted (signal 15)" in log and "requeued SLURM job 4242" in log
    for line in ("writing to", "preempted (signal 15)"):
        assert err.count(line) == 1  # on the console once (the file handler does not echo)

    again = cli(run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from update {stopped_at} ({stopped_at * 64} env steps)" in again.stderr
    assert f"finished at update 10 (640 env steps); checkpoints: {run}" in again.stderr
    assert str(run / "metrics.jsonl") in again.stderr
    assert updates(run) == list(range(1, 11))
    log = (run / "train.log").read_text()
    assert log.count("writing to") == 2 and "finished at update 10" in log


def test_progress_bar_moves_before_the_first_update_ends(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []
    tick = run_module._Progress.tick

    def record(self, n):
        rows = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
        seen.append((self.bar.n if self.bar is not None else None, rows))
        tick(self, n)

    monkeypatch.setattr(run_module._Progress, "tick", record)
    train(compose("train", [*TOY, f"run_dir={run}", "total_steps=128", "quiet=false"]))
    assert seen[0] == (0, "")  # the bar exists and ticks during the first rollout
    assert seen[5] == (5 * 4, "")  # moved by num_envs per env step, before any update was logged


def test_keyframe_training_shares_the_run_dir_lock_and_rejects_without_writing(tmp_path):
    from keyframe_synthetic import moved_into, synthetic_demos

    from embodied.tasks.episodes import write_episodes
    from embodied.tasks.memorybench import WORKSPACE

    run = tmp_path / "run"
    demos = write_episodes(tmp_path / "demos.npz", moved_into(synthetic_demos(4), WORKSPACE))
    cfg = compose("train", ["task=memorybench/reopen_drawer", "task.width=32", "task.height=32", "agent=keyframe",
                            "agent.grid_size=16", "agent.channels=[8,16]", "memory=membank", "memory.mem_dim=8",
                            "memory.ff_dim=16", "memory.layers=1", f"trainer.demos={demos}", "trainer.batch_episodes=4",
                            "trainer.epochs=1", "trainer.dagger_rounds=0", "trainer.dagger_steps=0", "num_envs=1",
                            "num_workers=0", "device=cpu", "quiet=true", f"run_dir={run}"])
    held = RunDirLock(run).acquire()
    try:
        with pytest.raises(RunDirError, match=f"process {os.getpid()} on host"):
            train(cfg)
    finally:
        held.release()
    assert train(cfg)["update"] == 1
    before = snapshot(run)
    assert train(cfg)["update"] == 1  # finished: says so, writes nothing
    assert snapshot(run) == before


def test_the_end_line_names_best_pt_only_when_best_metric_wrote_it(tmp_path, caplog):
    # best_metric=a name no metric has: best.pt is never written, and the last line used to name it anyway.
    for name, metric, expected in (("typo", "episode/sucess", "(latest.pt, no best.pt: no metric 'episode/sucess' was logged)"),
                                   ("auto", "auto", "(latest.pt, best.pt)")):
        run = tmp_path / name
        with caplog.at_level("INFO", logger="embodied.train"):
            train(compose("train", [*TOY, f"run_dir={run}", "total_steps=128", f"best_metric={metric}"]))
        end = [r.getMessage() for r in caplog.records if "finished at" in r.getMessage()][-1]
        assert expected in end and (run / "best.pt").exists() == (metric == "auto")
