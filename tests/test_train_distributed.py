"""Data-parallel PPO on CPU with gloo: identical parameters on both ranks, clean exit (rc 0)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from embodied.loading import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=16", "agent.hidden=16",
       "trainer.rollout_steps=16", "num_envs=4", "num_workers=0", "device=cpu", "quiet=true",
       "trainer.lr=3e-3", "total_steps=1024"]

WORKER = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    import embodied.train
    from embodied.config import compose
    from embodied.train import distributed as du
    from embodied.train.config import trainer_config
    from embodied.train.ppo import PPO
    from embodied.loading import build_agent_from_config, make_envs
    from embodied.train.run import derived_seed, seed_everything
    from omegaconf import OmegaConf
    out, overrides = sys.argv[1], sys.argv[2:]
    cfg = compose("train", overrides)
    ctx = du.setup("cpu")
    seed_everything(ctx.rank)  # different initial weights per rank: the broadcast must fix that
    envs = make_envs(cfg.task, cfg.num_envs, derived_seed(0, ctx.rank), 0)
    agent = build_agent_from_config(OmegaConf.to_container(cfg, resolve=True), envs.single_observation_space,
                                    envs.single_action_space, ctx.device)
    du.broadcast_parameters(agent, ctx)
    ppo = PPO(agent, trainer_config(cfg), cfg.num_envs, cfg.total_steps, ctx, seed=ctx.rank)
    ppo.reset_envs(envs, derived_seed(0, ctx.rank, 1))
    obs_sums = []
    for _ in range(5):
        rollout = ppo.collect(envs)
        obs_sums.append(float(rollout["obs"]["pointgoal"].sum()))
        ppo.update(rollout)
    flat = torch.cat([p.detach().flatten() for p in agent.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    data = [None] * ctx.world_size
    dist.all_gather_object(data, obs_sums)
    if ctx.rank == 0:
        json.dump({"max_diff": max((gathered[0] - g).abs().max().item() for g in gathered),
                   "data_differs": data[0] != data[1], "env_steps": ppo.env_steps}, open(out, "w"))
    du.exit_worker(ctx)
""")



def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_rank_gloo_training_keeps_ranks_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "result.json"
    proc = torchrun(str(script), str(out), *TOY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["data_differs"]  # ranks saw different episodes ...
    assert result["max_diff"] == 0.0  # ... yet hold identical parameters
    assert result["env_steps"] == 5 * 2 * 4 * 16


@pytest.mark.slow
def test_module_entry_point_under_torchrun_with_straggler_cutoff(tmp_path):
    proc = torchrun("-m", "embodied.train", *TOY, "trainer.preempt_fraction=0.5", f"run_dir={tmp_path / 'run'}",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert ckpt["counters"]["env_steps"] >= 1024
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all(4 <= json.loads(x)["rollout_len"] <= 16 for x in lines)


@pytest.mark.slow
def test_cli_distributed_flag_spawns_workers(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "embodied.train", *TOY, "distributed=true", "nproc=2",
                           f"run_dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["counters"]["env_steps"] >= 1024
