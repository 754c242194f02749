"""PPO: learns (toy corridor fast; pointnav slow), config errors, NaN stops with a good checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

import embodied.train  # noqa: F401  (registers the config schemas)
from embodied.config import compose
from embodied.config import ConfigError
from embodied.loading import load_checkpoint
from embodied.train.checkpoint import NonFiniteError
from embodied.train.run import train

TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory.hidden=32", "agent.hidden=32",
       "trainer.rollout_steps=32", "num_envs=8", "num_workers=0", "device=cpu", "quiet=true",
       "trainer.lr=3e-3", "trainer.epochs=4", "trainer.anneal_lr=false"]


def toy_cfg(tmp_path, *extra):
    return compose("train", [*TOY, f"run_dir={tmp_path / 'run'}", *extra])


@pytest.mark.slow
def test_ppo_learns_toy_corridor(tmp_path):
    from embodied.eval import evaluate

    result = train(toy_cfg(tmp_path, "total_steps=6144", "ckpt_every=8"))
    assert result["status"] == "finished"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in lines] == list(range(1, len(lines) + 1))
    early, late = lines[0]["episode/success"], lines[-1]["episode/success"]
    ev = compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "episodes=64", "num_workers=0",
                          "quiet=true", "device=cpu", f"out={tmp_path / 'r.json'}"])
    trained = evaluate(OmegaConf.merge(ev, {"ckpt": str(tmp_path / "run" / "latest.pt")}))["results"][0]
    random = evaluate(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "episodes=64",
                                       "num_workers=0", "quiet=true", "agent=random",
                                       f"out={tmp_path / 'r2.json'}"]))["results"][0]
    print(f"toy corridor: rolling success {early:.2f} -> {late:.2f}; eval trained "
          f"{trained['success']['mean']:.2f} vs random {random['success']['mean']:.2f}")
    assert late > early + 0.3
    assert trained["success"]["ci_low"] > random["success"]["ci_high"]


@pytest.mark.parametrize("override,key", [("num_envs=0", "num_envs"), ("trainer.lr=-1", "trainer.lr"),
                                          ("device=tpu", "device"), ("trainer.amp=fp8", "trainer.amp"),
                                          ("trainer.num_minibatches=9", "trainer.num_minibatches")])
def test_bad_values_fail_at_start_with_one_line(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        train(toy_cfg(tmp_path, override))
    message = str(err.value)
    assert message.startswith(f"{key}:") and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigError, match="trainer.lr_typo"):
        compose("train", ["trainer.lr_typo=1"])


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from embodied.train import ppo as ppo_module

    real_update = ppo_module.PPO.update
    calls = {"n": 0}

    def poisoned_update(self, rollout):
        calls["n"] += 1
        if calls["n"] == 3:  # diverged returns make the loss NaN
            rollout["returns"][0, 0] = float("nan")
        return real_update(self, rollout)

    monkeypatch.setattr(ppo_module.PPO, "update", poisoned_update)
    with pytest.raises(NonFiniteError, match="last good checkpoint"):
        train(toy_cfg(tmp_path, "total_steps=100000", "ckpt_every=1"))
    ckpt = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert ckpt["counters"]["update"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_ppo_learns_pointnav_small_scene(tmp_path):
    """A few minutes of CPU PPO on pointnav with GPS+compass (the agent reads only `pointgoal`;
    nearby goals, short episodes) beats the random policy clearly."""
    from embodied.eval import evaluate

    common = ["task=nav/pointnav", "task.width=16", "task.height=16", "task.sensors=[depth]",
              "task.max_steps=30", "task.max_goal_distance=1.5", "task.min_goal_distance=0.5"]
    train(compose("train", [*common, "agent.ignore=[depth,pose]", "memory.hidden=32", "agent.hidden=32",
                            "trainer.rollout_steps=32", "num_envs=8", "num_workers=2", "device=cpu", "quiet=true",
                            "trainer.lr=1e-3", "trainer.entropy_coef=0.05", "trainer.epochs=4",
                            "trainer.anneal_lr=false", "total_steps=30720", f"run_dir={tmp_path / 'run'}"]))

    def evaluate_on(*overrides):
        cfg = compose("eval", [*common, "episodes=60", "num_workers=2", "quiet=true", "split=train", "device=cpu",
                               f"out={tmp_path / 'e.json'}", *overrides])
        return evaluate(cfg)["results"][0]["success"]

    # Sampled actions (measured on the 2-core machine: 10k steps -> 0.18, 40k steps -> 0.97 [0.92, 0.99];
    # the rolling training success passes 0.85 by about 25k steps).
    trained = evaluate_on(f"ckpt={tmp_path / 'run' / 'latest.pt'}", "deterministic=false")
    random = evaluate_on("agent=random")
    print(f"pointnav success: trained {trained} vs random {random}")
    assert trained["ci_low"] > random["ci_high"]
    assert trained["mean"] >= 0.5


def test_intrinsic_reward_needs_a_memory_that_defines_it(tmp_path):
    with pytest.raises(ConfigError, match="^trainer.intrinsic_coef:"):
        train(toy_cfg(tmp_path, "trainer.intrinsic_coef=0.5"))


def test_dcem_intrinsic_reward_is_credited_to_the_step_before_new_text():
    from embodied.envs import make_vector_env
    from embodied.train.ppo import PPO, PPOConfig
    from embodied.loading import build_agent_from_config

    torch.manual_seed(0)
    task = {"name": "fastmap/architecture_comparison/fast_map_three_objs", "scenes": "symbolic", "sensors": ["rgb"]}
    envs = make_vector_env(task, num_envs=2, seed=3, num_workers=0)
    cfg = compose("train", ["task=fastmap/cpu/fast_map_three_objs", "memory=dcem", "memory.capacity=32",
                            "agent.hidden=32", "device=cpu"])
    agent = build_agent_from_config(cfg, envs.single_observation_space, envs.single_action_space, torch.device("cpu"))
    ppo = PPO(agent, PPOConfig(rollout_steps=96, num_minibatches=1, intrinsic_coef=0.5), num_envs=2, total_steps=192)
    try:
        ppo.reset_envs(envs, seed=3)
        rollout = ppo.collect(envs)
    finally:
        envs.close()
    intrinsic, text, first = rollout["intrinsic"], rollout["obs"]["text"], rollout["first"]
    assert intrinsic.shape == (96, 2) and (intrinsic >= 0).all() and (intrinsic <= 0.5 + 1e-6).all()
    said_next = (text[1:] != 0).any(-1) & ~first[1:]  # step t's action led to a non-empty text at t + 1
    assert (intrinsic[:-1][~said_next] == 0).all()  # nothing new said, nothing paid
    # The instruction phase starts within the 90-step episode: its text is new to the memory once,
    # then the memory holds it and repeating it pays (about) nothing.
    assert intrinsic.max() == pytest.approx(0.5)  # the first text of an episode: nothing like it stored
    repeated = said_next & (text[1:] == text[:-1]).all(-1)  # the same words as at step t
    assert repeated.any() and (intrinsic[:-1][repeated] < 1e-3).all()


@pytest.mark.slow
def test_cpu_bf16_autocast_is_opt_in_and_learns(tmp_path):
    from embodied.train.ppo import PPO, PPOConfig

    def linear_dtype(cpu_bf16: bool) -> torch.dtype:
        ppo = PPO(torch.nn.Linear(4, 4), PPOConfig(cpu_bf16=cpu_bf16), num_envs=2, total_steps=100)
        with ppo._autocast():
            return ppo.agent(torch.zeros(1, 4)).dtype

    assert linear_dtype(False) == torch.float32 and linear_dtype(True) == torch.bfloat16
    result = train(toy_cfg(tmp_path, "total_steps=6144", "trainer.cpu_bf16=true"))
    assert result["status"] == "finished"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    early, late = lines[0]["episode/success"], lines[-1]["episode/success"]
    print(f"toy corridor with cpu_bf16: rolling success {early:.2f} -> {late:.2f}")
    assert late > early + 0.3


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_trainer_keeps_freed_cpu_memory_so_big_activations_are_not_paged_in_again():
    """A freed 64 MB tensor stays in the heap once keep_freed_cpu_memory() ran (the next minibatch's
    activations reuse it); by default glibc unmaps it. Each case in a fresh process."""
    script = textwrap.dedent("""
        import sys, psutil, torch
        from embodied.train.run import keep_freed_cpu_memory
        if sys.argv[1] == "tuned":
            assert keep_freed_cpu_memory()
        rss = lambda: psutil.Process().memory_info().rss
        x = torch.ones(16 << 20)  # 64 MB
        before = rss()
        del x
        print((before - rss()) / 2**20)
    """)
    released = {case: float(subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True,
                                           check=True).stdout) for case in ("default", "tuned")}
    assert released["default"] > 50, released
    assert released["tuned"] < 10, released


@pytest.mark.parametrize("workers, setting, expected", [(1, 0, 1), (0, 0, 2), (1, 3, 3)])
def test_rollout_forward_threads(workers, setting, expected):
    """Env workers need the cores: with them, the rollout's forward runs on one torch thread (auto);
    the update and everything after collect keep torch's setting."""
    from embodied.envs import make_vector_env
    from embodied.train.ppo import PPO, PPOConfig
    from embodied.loading import build_agent_from_config

    task = {"name": "fastmap/architecture_comparison/fast_map_three_objs", "scenes": "symbolic", "sensors": ["rgb"]}
    envs = make_vector_env(task, num_envs=2, seed=3, num_workers=workers)
    cfg = compose("train", ["task=fastmap/cpu/fast_map_three_objs", "memory=gru", "agent.hidden=32", "device=cpu"])
    agent = build_agent_from_config(cfg, envs.single_observation_space, envs.single_action_space, torch.device("cpu"))
    seen = []
    act = agent.act
    agent.act = lambda *a, **k: seen.append(torch.get_num_threads()) or act(*a, **k)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ppo = PPO(agent, PPOConfig(rollout_steps=4, num_minibatches=1, rollout_threads=setting), num_envs=2,
                  total_steps=8)
        ppo.reset_envs(envs, seed=3)
        ppo.collect(envs)
        assert seen and set(seen) == {expected}
        assert torch.get_num_threads() == 2  # restored for the update
    finally:
        torch.set_num_threads(before)
        envs.close()
    with pytest.raises(ConfigError, match="^trainer.rollout_threads:"):
        PPOConfig(rollout_threads=-1).validate(2)


def test_start_line_says_how_many_whole_updates_run(tmp_path, caplog):
    # It said "16 env steps" and then ran one whole update of 256 (8 envs x 32 rollout steps).
    import logging

    with caplog.at_level(logging.INFO):
        result = train(toy_cfg(tmp_path, "total_steps=16"))
    assert result["env_steps"] == 256
    assert "16 env steps (1 update of 256 = 8 envs x 32 rollout steps: 256 env steps); fresh start" in caplog.text


def test_ppo_plan_counts_whole_updates_over_every_process(tmp_path):
    from embodied.train.run import _ppo_plan

    cfg = toy_cfg(tmp_path, "total_steps=600")  # 8 envs x 32 rollout steps = 256 per process and update
    assert _ppo_plan(cfg, None)[0] == "600 env steps (3 updates of 256 = 8 envs x 32 rollout steps: 768 env steps)"
    assert _ppo_plan(cfg, None, world_size=2)[0] == ("600 env steps (2 updates of 512 = 2 processes x 8 envs x "
                                                     "32 rollout steps: 1024 env steps)")
    resumed = {"counters": {"env_steps": 512, "update": 2}}
    assert _ppo_plan(cfg, resumed) == ("600 env steps (1 more update of 256 = 8 envs x 32 rollout steps: "
                                       "768 env steps)", 600, "step", 512)
    assert _ppo_plan(toy_cfg(tmp_path, "total_steps=512"), None)[0] == "512 env steps"  # whole updates: as asked
    # the straggler cut-off may shorten rollouts (more updates): the range of where the run ends
    cut = toy_cfg(tmp_path, "total_steps=600", "trainer.preempt_fraction=0.6")
    assert _ppo_plan(cut, None, world_size=4)[0] == ("600 env steps (whole updates of up to 1024 = 4 processes x "
                                                     "8 envs x 32 rollout steps: 600 to 1623 env steps)")


def test_init_from_starts_from_a_checkpoints_weights_and_critic_warmup_trains_only_the_value_head(tmp_path):
    first = train(toy_cfg(tmp_path / "a", "total_steps=512"))
    start = load_checkpoint(first["checkpoint"])["model"]
    warm = train(toy_cfg(tmp_path / "b", "total_steps=512", f"init_from={first['checkpoint']}",
                         "trainer.critic_warmup=4"))
    after = load_checkpoint(warm["checkpoint"])["model"]
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(k.startswith("value_head.") for k in moved)  # 2 updates, both in the warm-up
    free = train(toy_cfg(tmp_path / "c", "total_steps=512", f"init_from={first['checkpoint']}"))
    trained = load_checkpoint(free["checkpoint"])["model"]
    assert any(not torch.equal(start[k], trained[k]) for k in start if k.startswith("policy_head."))
    log = (tmp_path / "b" / "run" / "train.log").read_text()
    assert f"fresh start from the weights of {first['checkpoint']}" in log


@pytest.mark.parametrize("override,expected", [
    ("init_from=nowhere.pt", "init_from: nowhere.pt: no such checkpoint file"),
    ("memory.hidden=8", "/a/run/latest.pt: parameter memory.rnn.weight_ih_l0 has shape (96, 32) in the checkpoint"),
])
def test_init_from_a_missing_file_or_another_model_is_one_line_before_the_envs_start(tmp_path, override, expected):
    from embodied.loading import CheckpointError

    first = train(toy_cfg(tmp_path / "a", "total_steps=256"))
    with pytest.raises(CheckpointError) as err:
        train(toy_cfg(tmp_path / "b", f"init_from={first['checkpoint']}", override))
    assert str(err.value).startswith("init_from: ") and expected in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "b" / "run" / "latest.pt").exists()
