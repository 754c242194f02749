"""Loggers: JSONL always; W&B offline (no network), run id kept in the resume state and reused."""
from __future__ import annotations

import json
import re

import pytest

import embodied.train  # noqa: F401
from embodied.config import compose
from embodied.loading import load_checkpoint
from embodied.train.logger import truncate_jsonl
from embodied.train.run import train

TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=16", "agent.hidden=16",
       "trainer.rollout_steps=8", "num_envs=2", "num_workers=0", "device=cpu", "quiet=true"]


def test_truncate_jsonl_drops_redone_updates_and_torn_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"update": u}) + "\n" for u in range(1, 6)) + '{"update": 6, "x"')
    truncate_jsonl(path, 3)
    assert [json.loads(x)["update"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_wandb_offline_run_id_survives_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # default must be offline by itself
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(compose("train", [*TOY, "logger=wandb", "total_steps=32", f"run_dir={run}"]))
    run_id = load_checkpoint(run / "latest.pt")["wandb_id"]
    assert run_id
    train(compose("train", [*TOY, "logger=wandb", "total_steps=64", f"run_dir={run}"]))  # resumes
    assert load_checkpoint(run / "latest.pt")["wandb_id"] == run_id
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    # one offline-run-<time>-<id> per run; wandb appends -1, -2 ... when a resume starts within the same second
    assert len(offline) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?", name)
                           for name in offline), offline
    updates = [json.loads(x)["update"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert updates == list(range(1, len(updates) + 1)) and updates[-1] == 4
