"""`-m launcher=local` runs a sweep through hydra-submitit-launcher (submitit_local): 2 jobs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embodied.config import compose
from embodied.loading import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_launcher_configs_select_submitit():
    assert compose("train", ["launcher=slurm"]) is not None
    from hydra import compose as hcompose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        slurm = hcompose("train", ["launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
        local = hcompose("train", ["launcher=local"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.partition == "gpu" and slurm.hydra.launcher.gpus_per_node == 1
    assert local.hydra.launcher._target_.endswith("LocalLauncher")


@pytest.mark.slow
def test_local_multirun_runs_two_jobs(tmp_path):
    cmd = [sys.executable, "-m", "embodied.train", "-m", "launcher=local", "seed=0,1",
           "task.name=toy/corridor", "task.max_steps=24", "memory.hidden=16", "agent.hidden=16",
           "trainer.rollout_steps=8", "num_envs=2", "num_workers=0", "device=cpu", "quiet=true",
           "total_steps=32", "run_dir=runs/seed${seed}", "hydra.sweep.dir=sweep"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (0, 1):
        ckpt = load_checkpoint(tmp_path / "runs" / f"seed{seed}" / "latest.pt")
        assert ckpt["config"]["seed"] == seed and ckpt["counters"]["env_steps"] >= 32
    assert len(list((tmp_path / "sweep" / ".submitit").iterdir())) >= 2  # one submitit job folder each
