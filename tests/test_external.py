"""Envs, tasks, memories and configs from outside the project: `task.name=gym:<id>`, entry-point
plugins, extra config folders, and the generic measures they bring."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from embodied.config import ConfigError, compose, group_options
from embodied.tasks import make_env
from embodied.train.checkpoint import CheckpointManager
from embodied.train.ppo import EpisodeStats

REPO = Path(__file__).resolve().parents[1]
EMBODIED = [sys.executable, "-m", "embodied"]


class ProbeEnv(gym.Env):
    """A gymnasium env with one of each space the adapter maps; its step echoes the env action."""

    def __init__(self, text: bool = True, action: str = "multidiscrete"):
        obs = {"camera": spaces.Box(0, 255, (8, 6, 3), np.uint8), "mode": spaces.Discrete(3, start=1),
               "vel": spaces.Box(-1.0, 1.0, (2,), np.float32), "flags": spaces.MultiBinary(2)}
        if text:
            obs["note"] = spaces.Text(8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = {"multidiscrete": spaces.MultiDiscrete([2, 3]), "discrete": spaces.Discrete(4, start=-1),
                             "box": spaces.Box(-1, 1, (2,), np.float32)}[action]
        self.last_action = None

    def _obs(self):
        return {"camera": np.full((8, 6, 3), 7, np.uint8), "mode": 3, "vel": np.array([0.5, -0.25], np.float32),
                "flags": np.array([1, 0], np.int8), **({"note": "hi"} if "note" in self.observation_space.spaces else {})}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {"level": 2, "name": "probe", "grid": np.zeros(3)}

    def step(self, action):
        self.last_action = action
        return self._obs(), 0.5, True, False, {"success": True, "grid": np.zeros(3), "level": 2}


class GrayEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (5, 4), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.arange(20, dtype=np.uint8).reshape(5, 4), {}

    def step(self, action):
        return np.zeros((5, 4), np.uint8), 0.0, True, False, {}


class ReachEnv(gym.Env):
    """One-step continuous control: observe a target in [-1, 1]^2, act; reward -|action - target|
    (an action in the env's bounds [-2, 2], which the agent's [-1, 1] is scaled to)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        return self.target.copy(), -float(np.abs(np.asarray(action) - self.target).sum()), True, False, {}


for _id, _kwargs in (("EmbodiedTest/Probe-v0", {}), ("EmbodiedTest/ProbeDiscrete-v0", {"action": "discrete", "text": False}),
                     ("EmbodiedTest/ProbeBox-v0", {"action": "box", "text": False})):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=ProbeEnv, kwargs=_kwargs)
if "EmbodiedTest/Reach-v0" not in gym.registry:
    gym.register(id="EmbodiedTest/Reach-v0", entry_point=ReachEnv)
if "EmbodiedTest/Gray-v0" not in gym.registry:
    gym.register(id="EmbodiedTest/Gray-v0", entry_point=GrayEnv)


def test_gym_adapter_maps_each_space_to_the_platform_keys():
    env = make_env({"name": "gym:EmbodiedTest/Probe-v0", "drop": ["note"]})
    assert set(env.observation_space.spaces) == {"rgb", "state"}
    assert env.observation_space["rgb"].shape == (8, 6, 3)
    # state: flags (2), mode one-hot (3, start 1), vel (2), in the order of the env's Dict space (sorted)
    assert env.observation_space["state"].shape == (7,)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs["state"], [1, 0, 0, 0, 1, 0.5, -0.25])
    assert obs["rgb"].dtype == np.uint8 and int(obs["rgb"][0, 0, 0]) == 7
    assert info == {"level": 2.0, "name": "probe"}  # numbers and strings are measures; arrays stay with the env
    # MultiDiscrete [2, 3] is one Discrete(6): action 5 is (1, 2)
    assert env.action_space == spaces.Discrete(6)
    _, reward, terminated, _, info = env.step(5)
    np.testing.assert_array_equal(env.env.unwrapped.last_action, [1, 2])
    assert (reward, terminated, info["success"]) == (0.5, True, 1.0)
    with pytest.raises(ValueError, match="outside 0..5"):
        env.reset()
        env.step(6)


def test_gym_adapter_shifts_discrete_actions_and_repeats_gray_images():
    env = make_env({"name": "gym:EmbodiedTest/ProbeDiscrete-v0"}, seed=0)
    assert env.action_space == spaces.Discrete(4)
    env.step(0)
    assert env.env.unwrapped.last_action == -1  # Discrete(4, start=-1): the agent's 0 is the env's -1
    gray = make_env({"name": "gym:EmbodiedTest/Gray-v0"})
    obs, _ = gray.reset(seed=0)
    assert set(obs) == {"rgb"} and obs["rgb"].shape == (5, 4, 3)
    assert obs["rgb"][1, 2].tolist() == [6, 6, 6]


@pytest.mark.parametrize("task, message", [
    ({"name": "gym:EmbodiedTest/Probe-v0"}, "task.drop: observation 'note' has a Text space"),
    ({"name": "gym:EmbodiedTest/Probe-v0", "drop": ["note", "nope"]}, "task.drop: ['nope'] not observations"),
    ({"name": "gym:ALE/Pong-v5"}, "not a registered gymnasium env"),
    ({"name": "gym:CartPole-v9"}, "'CartPole-v9' is not a registered gymnasium env; closest: CartPole-v1"),
    ({"name": "gym:no_such_module:Env-v0"}, "cannot import 'no_such_module'"),
    ({"name": "gym:"}, "allowed: gym:<id>"),
    ({"name": "gym:CartPole-v1", "wrappers": ["gymnasium.wrappers:NoSuchWrapper"]}, "task.wrappers"),
    ({"name": "gym:CartPole-v1", "wrappers": ["numpy:ndarray"]}, "is not a gymnasium.Wrapper class"),
    ({"name": "gym:CartPole-v1", "kwargs": {"gravity": 1}}, "task.kwargs: CartPole-v1"),
    ({"name": "gym:CartPole-v1", "max_episode_steps": 0}, "task.max_episode_steps"),
    ({"name": "gym:CartPole-v1", "width": 64}, "task.width: not a key of gym tasks"),
])
def test_gym_task_bad_input_is_one_line_naming_the_key(task, message):
    with pytest.raises(ConfigError, match=None) as exc:
        make_env(task)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_box_actions_are_scaled_from_the_unit_box_to_the_env_bounds():
    env = make_env({"name": "gym:EmbodiedTest/Reach-v0"}, seed=0)
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    np.testing.assert_allclose(env.actions(np.array([1.0, -0.5])), [2.0, -1.0])
    np.testing.assert_allclose(env.actions(np.array([3.0, 0.0])), [2.0, 0.0])  # clipped to the bounds first
    with pytest.raises(ValueError, match="expected 2"):
        env.actions(np.zeros(3))


def test_ppo_learns_continuous_actions_through_the_adapter(tmp_path):
    """A Gaussian policy (Agent.continuous) trained by PPO moves its actions onto the target: the mean
    return (-L1 distance, window of 100 episodes) rises from -2.7 for the initial policy (std 1 in the
    unit box, 2 in the env's units) to -1.6 after 8,192 steps on this seed."""
    from embodied.train.run import train

    cfg = compose("train", ["task=gym_schema", "task.name=gym:EmbodiedTest/Reach-v0", "memory=none", "num_envs=16",
                            "num_workers=0", "device=cpu", "quiet=true", "trainer.amp=none", "trainer.rollout_steps=16",
                            "trainer.lr=3e-3", "trainer.epochs=4", "trainer.entropy_coef=0", "trainer.anneal_lr=false", "total_steps=8192",
                            "agent.hidden=32", f"run_dir={tmp_path / 'run'}"])
    assert train(cfg)["status"] == "finished"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    early, late = lines[0]["episode/return"], lines[-1]["episode/return"]
    assert early < -2.0 and late > early + 0.6, (early, late)


def test_old_gym_api_envs_run_through_shimmy():
    # gym 0.26's env checker calls np.bool8, which numpy 2 removed: gym.make is told to skip it.
    env = make_env({"name": "gym:shimmy:GymV26Environment-v0",
                    "kwargs": {"env_id": "CartPole-v1", "make_kwargs": {"disable_env_checker": True}}}, seed=3)
    assert env.observation_space["state"].shape == (4,) and env.action_space == spaces.Discrete(2)
    steps = 0
    while True:
        _, reward, terminated, truncated, _ = env.step(1)  # always right: the pole falls in a few steps
        steps += 1
        if terminated or truncated:
            break
    assert reward == 1.0 and terminated and 5 <= steps <= 20


def test_episode_stats_average_each_measure_over_the_episodes_that_report_it():
    stats = EpisodeStats(window=3)
    stats.add({"return": 1.0, "length": 10, "success": True, "question": "where"})
    stats.add({"return": 3.0, "length": 20, "cue": 1})
    stats.add({"return": 5.0, "length": 30, "success": False, "cue": 0, "bad": float("nan")})
    keys = stats.keys()
    assert keys == ["cue", "length", "return", "success"]
    sums, counts = stats.sums(keys)
    assert dict(zip(keys, sums)) == {"cue": 1.0, "length": 60.0, "return": 9.0, "success": 1.0}
    assert dict(zip(keys, counts)) == {"cue": 2.0, "length": 3.0, "return": 3.0, "success": 2.0}


def test_best_metric_auto_is_success_where_reported_else_return(tmp_path):
    with_success = CheckpointManager(tmp_path / "a", best_metric="auto")
    assert with_success.best_of({"loss": 1.0}) is None and with_success.best_metric == "auto"
    assert with_success.best_of({"episode/success": 0.5, "episode/return": 3.0}) == 0.5
    assert with_success.best_metric == "episode/success"
    without = CheckpointManager(tmp_path / "b", best_metric="auto")
    assert without.best_of({"episode/return": 3.0, "episode/length": 9.0}) == 3.0
    assert without.best_metric == "episode/return"


def test_user_config_folder_adds_to_the_project_configs(tmp_path, monkeypatch):
    (tmp_path / "task" / "mine").mkdir(parents=True)
    (tmp_path / "task" / "mine" / "cartpole.yaml").write_text(
        "defaults:\n  - /task/gym_schema@_here_\n  - _self_\nname: gym:CartPole-v1\nmax_episode_steps: 50\n")
    monkeypatch.setenv("EMBODIED_CONFIGS", str(tmp_path))
    options = group_options("task")
    assert "mine/cartpole" in options and "nav/pointnav" in options
    cfg = compose("train", ["task=mine/cartpole"])
    assert cfg.task.name == "gym:CartPole-v1" and cfg.task.max_episode_steps == 50
    assert compose("train", ["task=nav/objectnav"]).task.name == "nav/objectnav"  # the project's still there
    (tmp_path / "task" / "nav").mkdir()
    (tmp_path / "task" / "nav" / "pointnav.yaml").write_text(
        "defaults:\n  - /task/nav_schema@_here_\n  - _self_\nname: nav/objectnav\n")
    assert compose("train", ["task=nav/pointnav"]).task.name == "nav/pointnav"  # the project's file is found first
    monkeypatch.setenv("EMBODIED_CONFIGS", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="EMBODIED_CONFIGS: no config directory"):
        group_options("task")


def _run(args, env=None, cwd=None, timeout=600):
    return subprocess.run([*EMBODIED, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("EMBODIED_CONFIGS", None)
    return env


@pytest.mark.slow
def test_gym_env_trains_evaluates_and_records_from_the_command_line(tmp_path):
    """MiniGrid (a package nobody here wrote) through the CLI with worker processes; it has no success:
    training logs and evaluation reports return and length."""
    run = tmp_path / "run"
    out = _run(["train", "task=gym/minigrid_memory", "memory=lstm", "total_steps=1024", "num_envs=4", "num_workers=2",
                f"run_dir={run}", "quiet=true", "trainer.rollout_steps=128"], env=_env())
    assert out.returncode == 0, out.stderr
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "episode/return" in last and "episode/length" in last and "episode/success" not in last
    assert (run / "best.pt").exists()  # best_metric auto: episode/return
    report = tmp_path / "eval.json"
    out = _run(["eval", "task=gym/minigrid_memory", f"ckpt={run}/latest.pt", "episodes=4", "num_envs=2", "num_workers=2",
                f"out={report}", "quiet=true"], env=_env())
    assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())["results"][0]
    assert "success" not in result and result["episodes"] == 4
    assert result["return"]["ci_low"] <= result["return"]["mean"] <= result["return"]["ci_high"]
    assert result["length"]["n"] == 4 and "return [95% CI], length [95% CI]" in out.stdout
    out = _run(["record", "task=gym/minigrid_memory", f"ckpt={run}/latest.pt", f"out={tmp_path / 'rec'}", "quiet=true"],
               env=_env())
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "rec" / "episode_000.rrd").stat().st_size > 0 and "success=" not in out.stdout


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """tests/plugin_example installed (pip --target) as a third-party package would be."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    shutil.copytree(REPO / "tests" / "plugin_example", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = root / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                          "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return site


@pytest.mark.slow
def test_plugin_task_memory_and_configs_reach_the_cli_and_its_workers(plugin_site, tmp_path):
    env = _env(PYTHONPATH=str(plugin_site))
    run = tmp_path / "run"
    # task.name / memory.name alone pick the plugin's schemas; its env runs in 2 worker processes
    out = _run(["train", "task.name=cue/recall", "memory.name=cue_gru", "total_steps=512", "num_envs=4",
                "num_workers=2", f"run_dir={run}", "quiet=true"], env=env)
    assert out.returncode == 0, out.stderr
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"episode/success", "episode/cue", "episode/length"} <= set(last)  # the task's own measures
    assert "episode/spl" not in last
    report = tmp_path / "eval.json"
    # task=cue/recall_long lives in the plugin's config folder (entry point embodied.configs)
    out = _run(["eval", "task=cue/recall_long", f"ckpt={run}/latest.pt", "episodes=6", "num_workers=2",
                f"out={report}", "quiet=true"], env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    assert data["results"][0]["task"] == "cue/recall" and data["config"]["task"]["delay"] == 6
    assert 0.0 <= data["results"][0]["success"]["mean"] <= 1.0
    # without the package the same command fails in one line naming the task
    out = _run(["train", "task.name=cue/recall", f"run_dir={tmp_path / 'other'}", "quiet=true"], env=_env())
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown task 'cue/recall'" in out.stderr


def test_plugin_agent_kind_is_built_from_a_run_config(plugin_site):
    code = ("from embodied.agents import AGENT_KINDS, build_agent_kind\n"
            "print(AGENT_KINDS['cue_probe'])\n"
            "agent = build_agent_kind({'agent': {'name': 'cue_probe'}, 'task': {'name': 'cue/recall'},"
            " 'memory': {'name': 'cue_gru', 'hidden': 8}})\n"
            "print(type(agent).__name__, type(agent.memory).__name__, agent.memory.output_dim)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=_env(PYTHONPATH=str(plugin_site)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["embodied_cue.agent:build_from_run_config", "Agent CueGRUMemory 8"]


def test_a_broken_plugin_is_one_line_naming_its_entry_point(plugin_site, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(plugin_site, broken)
    (broken / "embodied_cue" / "tasks.py").write_text("raise RuntimeError('boom')\n")
    out = _run(["train", "task=nav/pointnav", f"run_dir={tmp_path / 'run'}"], env=_env(PYTHONPATH=str(broken)))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "entry point embodied.tasks:cue = embodied_cue.tasks: RuntimeError: boom" in out.stderr


def test_task_and_memory_names_alone_pick_their_configs():
    from embodied.cli import _select_by_name

    assert _select_by_name(["task.name=gym:CartPole-v1"]) == ["task=gym_schema", "task.name=gym:CartPole-v1"]
    assert _select_by_name(["task.name=nav/objectnav"])[0] == "task=nav/objectnav"  # its YAML, not the default's
    assert _select_by_name(["task=nav/pointnav", "task.name=nav/objectnav"]) == ["task=nav/pointnav", "task.name=nav/objectnav"]
    assert _select_by_name(["task.name=toy/corridor"]) == ["task.name=toy/corridor"]  # a whole vector env: as given
    assert _select_by_name(["memory.name=sat"]) == ["memory=sat", "memory.name=sat"]
    with pytest.raises(ConfigError, match="memory.name: 'nope'; allowed: .*gru"):
        _select_by_name(["memory.name=nope"])
