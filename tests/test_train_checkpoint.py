"""Checkpoints: atomic under kill -9, corrupt files name themselves, keep-last/best, RNG round trip."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from pathlib import Path

import numpy as np
import pytest
import torch

from embodied.loading import CheckpointError, load_checkpoint, load_model_state
from embodied.train.checkpoint import CheckpointManager, NonFiniteError, atomic_save, capture_rng, restore_rng

REPO = Path(__file__).resolve().parents[1]


def payload(value: float, n: int = 10) -> dict:
    return {"model": {"w": torch.full((n,), value)}, "counters": {"update": 0}, "config": {"seed": 0}}


def test_corrupt_and_foreign_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(payload(1.0), 1)
    good = (tmp_path / "ckpt-00000001.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for path, what in ((truncated, "unreadable"), (garbage, "unreadable"), (foreign, "not an embodied"),
                       (tmp_path / "missing.pt", "no such")):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value) and what in str(err.value)


def test_pickled_objects_are_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "embodied-checkpoint", "version": 1, "model": {}, "counters": {}, "config": {},
                "obj": subprocess.Popen}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_incompatible_model_names_file_and_parameter(tmp_path):
    model = torch.nn.Linear(3, 2)
    bad = {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"x\.pt: parameter weight has shape \(5, 3\)"):
        load_model_state(model, bad, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_model_state(model, {"weight": torch.zeros(2, 3)}, tmp_path / "x.pt")
    # loaded for a task: another family is said first, briefly; the same family keeps the weights' detail
    with pytest.raises(CheckpointError) as info:
        load_model_state(model, bad, "x.pt", task="nav/pointnav", trained_task="ballet/4_delay16")
    assert str(info.value) == ("ckpt: x.pt was trained on ballet/4_delay16, another task family than task=nav/pointnav; "
                               "allowed: a ballet/ task (e.g. task=ballet/4_delay16)")
    with pytest.raises(CheckpointError, match=r"x\.pt: model does not match the checkpoint \(missing \['bias'\]"):
        load_model_state(model, {"weight": torch.zeros(2, 3)}, "x.pt", task="ballet/8_delay48", trained_task="ballet/4_delay16")
    with pytest.raises(CheckpointError, match=r"x\.pt: parameter weight has shape"):
        load_model_state(model, bad, "x.pt", task="ballet/8_delay48", trained_task="ballet/4_delay16")
    load_model_state(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "x.pt", task="nav/pointnav",
                     trained_task="ballet/4_delay16")  # weights that fit load, whatever the task
    assert model.bias.tolist() == [1.0, 1.0]


def test_nan_parameters_are_never_written(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(payload(1.0), 1)
    with pytest.raises(NonFiniteError):
        manager.save(payload(float("nan")), 2)
    assert not (tmp_path / "ckpt-00000002.pt").exists()
    assert load_checkpoint(manager.latest_path)["model"]["w"][0] == 1.0


def test_keep_last_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, best_metric="success")
    for update, success in enumerate([0.1, 0.9, 0.3, 0.2], start=1):
        manager.save(payload(float(update)), update, metric=success)
    assert [p.name for p in manager.checkpoints()] == ["ckpt-00000003.pt", "ckpt-00000004.pt"]
    assert load_checkpoint(manager.latest_path)["model"]["w"][0] == 4.0
    best = load_checkpoint(manager.best_path)
    assert best["model"]["w"][0] == 2.0 and best["best"]["value"] == 0.9
    again = CheckpointManager(tmp_path, keep_last=2)
    again.load_latest()
    assert again.best_value == 0.9


def test_rng_round_trip_is_exact(tmp_path):
    gen = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng({"g": gen})
    atomic_save({"rng": state}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen))
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    restore_rng(loaded, {"g": gen})
    got = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen))
    assert expected[0] == got[0] and expected[1] == got[1]
    assert torch.equal(expected[2], got[2]) and torch.equal(expected[3], got[3])


WRITER = textwrap.dedent("""
    import sys, torch
    from embodied.train.checkpoint import CheckpointManager
    manager = CheckpointManager(sys.argv[1], keep_last=2)
    update = 0
    while True:
        update += 1
        manager.save({"model": {"w": torch.full((2_000_000,), float(update))}, "counters": {"update": update},
                      "config": {}}, update)
        print(update, flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_writes_never_leaves_a_truncated_latest(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(0)
    for trial in range(4):
        run = tmp_path / f"run{trial}"
        proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        proc.stdout.readline()  # at least one checkpoint exists
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(run / "latest.pt")
        update = ckpt["counters"]["update"]
        assert torch.equal(ckpt["model"]["w"], torch.full((2_000_000,), float(update)))
        for p in CheckpointManager(run).checkpoints():
            load_checkpoint(p)
