"""Behaviour cloning on oracle demos (sequences) and DAgger relabelling, on the toy corridor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import embodied.train  # noqa: F401
from embodied.cli import compose
from embodied.train.bc import collect_labelled, load_demos, pad_batch, write_demo_shard
from embodied.train.checkpoint import load_checkpoint
from embodied.train.run import train
from embodied.train.toy import CorridorVectorEnv

TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=32", "agent.hidden=32", "num_envs=4",
       "num_workers=0", "device=cpu", "quiet=true", "trainer=bc", "trainer.lr=3e-3"]


def test_demo_shards_round_trip_and_reject_bad_data(tmp_path):
    envs = CorridorVectorEnv(3, seed=0)
    episodes, measures = collect_labelled(envs, None, torch.device("cpu"), steps=200, beta=1.0,
                                          rng=np.random.default_rng(0), seed=0)
    assert episodes and all(m["success"] == 1.0 for m in measures)  # the oracle always succeeds
    write_demo_shard(tmp_path / "d.npz", episodes)
    loaded = load_demos(tmp_path)
    assert len(loaded) == len(episodes)
    for a, b in zip(loaded, episodes):
        assert np.array_equal(a["actions"], b["actions"])
        assert np.array_equal(a["obs"]["pointgoal"], b["obs"]["pointgoal"])
    np.savez(tmp_path / "bad.npz", actions=np.zeros(3), first=np.zeros(3, bool), **{"obs/x": np.zeros(3)})
    with pytest.raises(ValueError, match="bad.npz: first"):
        load_demos(tmp_path / "bad.npz")


def test_padding_masks_and_resets():
    seqs = [{"obs": {"x": np.ones((3, 2), np.float32)}, "actions": np.array([1, 2, 0])},
            {"obs": {"x": np.ones((1, 2), np.float32)}, "actions": np.array([4])}]
    b = pad_batch(seqs, torch.device("cpu"))
    assert b["mask"].tolist() == [[True, True], [True, False], [True, False]]
    assert b["first"].tolist() == [[True, True], [False, True], [False, True]]
    assert b["prev_actions"][:, 0].tolist() == [0, 1, 2]


def test_bc_then_dagger_learns_the_oracle(tmp_path):
    from embodied.eval import evaluate

    run = tmp_path / "run"
    result = train(compose("train", [*TOY, f"run_dir={run}", "trainer.record_episodes=48", "trainer.epochs=15",
                                     "trainer.dagger_rounds=1", "trainer.dagger_steps=256"]))
    assert result["status"] == "finished"
    assert result["metrics"]["accuracy"] > 0.9
    assert result["metrics"]["dataset_episodes"] > 48  # DAgger added relabelled episodes
    assert (run / "data" / "dagger-001.npz").exists()
    assert load_checkpoint(run / "latest.pt")["trainer"]["round"] == 2
    ev = evaluate(OmegaConf.merge(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "episodes=40",
                                                   "num_workers=0", "quiet=true", "device=cpu",
                                                   f"out={tmp_path / 'e.json'}"]),
                                  {"ckpt": str(run / "latest.pt")}))
    assert ev["results"][0]["success"]["mean"] >= 0.9
