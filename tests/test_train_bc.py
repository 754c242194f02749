"""Behaviour cloning on oracle demos (sequences) and DAgger relabelling, on the toy corridor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import embodied.train  # noqa: F401
from embodied.config import compose
from embodied.tasks.episodes import read_episodes, write_episodes
from embodied.train.bc import collect_labelled, pad_batch
from embodied.loading import load_checkpoint
from embodied.train.run import train
from embodied.envs.toy import CorridorVectorEnv

TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=32", "agent.hidden=32", "num_envs=4",
       "num_workers=0", "device=cpu", "quiet=true", "trainer=bc", "trainer.lr=3e-3"]


def test_oracle_demos_round_trip_and_reject_bad_data(tmp_path):
    envs = CorridorVectorEnv(3, seed=0)
    episodes, measures = collect_labelled(envs, None, torch.device("cpu"), steps=200, beta=1.0,
                                          rng=np.random.default_rng(0), seed=0)
    assert episodes and all(m["success"] == 1.0 for m in measures)  # the oracle always succeeds
    write_episodes(tmp_path / "d.npz", episodes)
    loaded = read_episodes(tmp_path)
    assert len(loaded) == len(episodes)
    for a, b in zip(loaded, episodes):
        assert np.array_equal(a["actions"], b["actions"])
        assert np.array_equal(a["obs"]["pointgoal"], b["obs"]["pointgoal"])
    assert set(loaded[0]) == {"obs", "actions"} and loaded[0]["actions"].dtype == np.int64
    bad = write_episodes(tmp_path / "bad.npz", episodes[:1])
    with np.load(bad) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["first"][:] = False
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="bad.npz: first"):
        read_episodes(bad)


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


def test_fresh_expert_rounds_train_on_their_own_episodes_and_eval_reports_the_learner(tmp_path):
    """beta=1, aggregate=false: every round trains on new oracle episodes only (nothing written to
    disk); with eval_episodes the logged episode/* measures are the greedy learner's."""
    run = tmp_path / "run"
    common = [*TOY, "trainer.record_episodes=16", "trainer.epochs=1", "trainer.dagger_rounds=2",
              "trainer.dagger_steps=160", "trainer.beta=1.0", "trainer.beta_decay=1.0", "trainer.aggregate=false"]
    result = train(compose("train", [*common, f"run_dir={run}", "trainer.eval_episodes=6"]))
    metrics = result["metrics"]
    assert metrics["dagger_episodes"] > 0 and metrics["dataset_episodes"] == metrics["dagger_episodes"]
    assert not list((run / "data").glob("dagger-*.npz"))
    assert 0.0 <= metrics["episode/success"] <= 1.0
    # Without eval_episodes, the oracle's own measures (success 1.0) are not reported as the learner's.
    quiet = train(compose("train", [*common, f"run_dir={tmp_path / 'run2'}"]))
    assert "episode/success" not in quiet["metrics"]


def test_freeze_keeps_named_parameters_and_upweight_is_checked(tmp_path):
    from embodied.config import ConfigError

    run = tmp_path / "run"
    freeze = "trainer.freeze=[encoder.vectors.pointgoal,prev_action_embedding]"
    result = train(compose("train", [*TOY, f"run_dir={run}", "trainer.record_episodes=8", "trainer.epochs=2",
                                     "trainer.dagger_rounds=1", "trainer.dagger_steps=96", freeze]))
    assert result["status"] == "finished"
    first, second = (load_checkpoint(run / f"ckpt-{u:08d}.pt")["model"] for u in (1, 2))
    for name in ("encoder.vectors.pointgoal.net.0.weight", "prev_action_embedding.weight"):
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["fuse.0.weight"], second["fuse.0.weight"])
    with pytest.raises(ValueError, match="trainer.freeze: 'encoder.txt' matches no parameter"):
        train(compose("train", [*TOY, f"run_dir={tmp_path / 'bad'}", "trainer.record_episodes=4",
                                "trainer.freeze=[encoder.txt]"]))
    with pytest.raises(ConfigError, match="trainer.upweight"):
        train(compose("train", [*TOY, f"run_dir={tmp_path / 'bad2'}", "trainer.upweight=no/such_selector"]))


def test_inflection_weight_weighs_the_steps_where_the_expert_changes_its_action(tmp_path):
    from embodied.config import ConfigError
    from embodied.loading import build_agent_from_config, env_spaces
    from embodied.train.bc import BCConfig, BehaviourCloning

    envs = CorridorVectorEnv(3, seed=0)
    episodes, _ = collect_labelled(envs, None, torch.device("cpu"), steps=150, beta=1.0,
                                   rng=np.random.default_rng(0), seed=0)
    cfg = compose("train", TOY)
    agent = build_agent_from_config(OmegaConf.to_container(cfg, resolve=True), *env_spaces(cfg.task), torch.device("cpu"))
    batch = pad_batch(episodes, torch.device("cpu"))
    with torch.no_grad():
        torch.manual_seed(0)
        for p in agent.parameters():  # far from uniform: each step's cross-entropy its own
            p.normal_(0.0, 0.5)
        out = agent.evaluate_sequence(batch["obs"], agent.initial_state(len(episodes), "cpu"), batch["first"],
                                      batch["prev_actions"], batch["actions"])
    ce = -out["log_prob"][batch["mask"]]  # time-major, as the inflections below
    inflection = []
    for t in range(batch["actions"].shape[0]):
        for e in episodes:
            if t < len(e["actions"]):
                inflection.append(t == 0 or e["actions"][t] != e["actions"][t - 1])
    inflection = torch.tensor(inflection)
    assert 0 < int(inflection.sum()) < len(inflection)  # the oracle both keeps and changes its action
    for w in (1.0, 3.0):
        loss, stats = BehaviourCloning(agent, BCConfig(inflection_weight=w).validate()).loss(batch)
        weights = torch.where(inflection, w, 1.0)
        assert stats["bc_loss"] == pytest.approx(float((weights * ce).sum() / weights.sum()), rel=1e-5)
        assert ("inflection_frac" in stats) == (w != 1.0)
    assert stats["inflection_frac"] == pytest.approx(float(inflection.float().mean()))
    with pytest.raises(ConfigError, match=r"^trainer.inflection_weight: 0.0; allowed: > 0"):
        BCConfig(inflection_weight=0.0).validate()


def test_a_stop_signal_during_a_round_leaves_within_one_step_and_the_rerun_redoes_that_round(tmp_path, monkeypatch):
    """A round can take many minutes (Ballet: ~10 on 2 cores), longer than a cluster's grace period: SIGTERM
    stops the trainer before the next gradient step, not at the end of the round."""
    import os
    import signal

    from embodied.train.bc import BehaviourCloning

    run = tmp_path / "run"
    args = [*TOY, f"run_dir={run}", "trainer.record_episodes=16", "trainer.epochs=4", "trainer.batch_episodes=4",
            "trainer.dagger_rounds=1", "trainer.dagger_steps=64"]
    real_loss, calls = BehaviourCloning.loss, []

    def loss(self, batch):
        calls.append(self.round)
        if self.round == 1 and calls.count(1) == 2:  # the second step of round 1: the cluster asks to stop
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(self, batch)

    monkeypatch.setattr(BehaviourCloning, "loss", loss)
    result = train(compose("train", args))
    assert result["status"] == "preempted"
    assert calls.count(1) == 2  # no step after the signal (a round here has 4 epochs x ~4 steps)
    assert load_checkpoint(run / "latest.pt")["trainer"]["round"] == 1  # round 0's checkpoint; round 1 not saved
    monkeypatch.setattr(BehaviourCloning, "loss", real_loss)
    finished = train(compose("train", args))
    assert finished["status"] == "finished" and load_checkpoint(run / "latest.pt")["trainer"]["round"] == 2
