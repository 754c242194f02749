"""The end-to-end baselines on nav/goat (docs/goat.md, "Baselines"): a GRU agent trained with PPO on
category goals (+experiment=goat_ppo_gru) reads goal_category and ignores the other goal keys; its
checkpoint plays the goat eval's episodes with the same per-goal records; the same agent trained by
imitation (+experiment=goat_bc_gru) records only what it reads and plays them too; a wrong checkpoint
or a scene-memory option with it is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import embodied.train  # noqa: F401  (registers the config schemas)
from embodied.config import ConfigError, compose
from embodied.loading import build_agent_from_config
from embodied.tasks import make_env

# The recipe, shrunk: one goal of 12 steps in a 2-room apartment, 32x32 images, one env.
SMALL_TASK = ["task.num_goals=1", "task.steps_per_goal=12", "task.n_rooms=2", "task.width=32", "task.height=32"]
TINY = ["+experiment=goat_ppo_gru", *SMALL_TASK, "num_envs=1", "total_steps=16", "trainer.rollout_steps=8",
        "trainer.num_minibatches=1", "trainer.epochs=1", "agent.cnn_channels=[8]", "agent.image_dim=16",
        "agent.hidden=16", "memory.hidden=16", "quiet=true"]


def _recipe_agent(task_overrides=()):
    cfg = compose("train", ["+experiment=goat_ppo_gru", *SMALL_TASK, *task_overrides, "agent.cnn_channels=[8]",
                            "agent.image_dim=16", "agent.hidden=16", "memory.hidden=16"])
    config = OmegaConf.to_container(cfg, resolve=True)
    env = make_env(config["task"])
    agent = build_agent_from_config(config, env.observation_space, env.action_space, torch.device("cpu"))
    return agent, env


def test_the_agent_reads_the_goal_category_and_ignores_the_other_goal_keys():
    agent, env = _recipe_agent()
    assert set(agent.encoder.input_keys) == {"rgb", "depth", "semantic", "pose", "goal_category"}
    obs, _ = env.reset(seed=0)
    assert int(obs["goal_category"][0]) >= 0  # category goals only
    batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}
    first, prev = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.long)

    def logits(o):
        with torch.no_grad():
            return agent.forward_step(o, agent.initial_state(1), first, prev)[0]

    base = logits(batch)
    noise = {**batch, "goal_text": torch.randint(1, 50, batch["goal_text"].shape),
             "goal_image": torch.randint(0, 255, batch["goal_image"].shape, dtype=torch.uint8),
             "goal_modality": torch.full_like(batch["goal_modality"], 2)}
    assert torch.equal(logits(noise), base)  # what the agent ignores changes nothing
    other = {**batch, "goal_category": (batch["goal_category"] + 1) % 24}
    assert not torch.allclose(logits(other), base)  # the goal it reads does
    state, steps, done = agent.initial_state(1), 0, False
    while not done:  # it plays an episode (a stop or the 12-step budget ends it)
        action, _, _, state = agent.act({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}, state, first, prev)
        obs, _, terminated, truncated, info = env.step(int(action[0]))
        first, prev, done, steps = torch.zeros(1, dtype=torch.bool), action, terminated or truncated, steps + 1
    assert 1 <= steps <= 12 and len(info["goal_records"]) == 1
    env.close()


def test_a_goal_given_otherwise_is_an_id_of_its_own_and_out_of_range_ids_are_errors():
    agent, env = _recipe_agent(["task.modalities=[category,description]"])
    env.close()
    encoder = agent.encoder.categories["goal_category"]
    assert encoder.num == 25 and encoder.low == -1  # -1 (not a category goal) and the 24 categories
    ids = torch.tensor([[-1], [0], [23]])
    out = encoder(ids)
    assert out.shape == (3, 32)  # goal_embed
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])
    with pytest.raises(ValueError, match=r"'goal_category' has ids in \[-2, -2\]; allowed -1..23"):
        encoder(torch.tensor([[-2]]))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from embodied.train.run import train

    run = tmp_path_factory.mktemp("goat_ppo") / "run"
    train(compose("train", [*TINY, f"run_dir={run}"]))
    return run / "latest.pt"


def test_eval_plays_the_checkpoint_and_writes_per_goal_records(tiny_checkpoint, tmp_path):
    from embodied.eval import evaluate

    out = tmp_path / "eval.json"
    report = evaluate(compose("eval", ["task=nav/goat", *SMALL_TASK, "task.width=64", "task.height=64",
                                       "task.modalities=[category]", f"ckpt={tiny_checkpoint}", "episodes=1",
                                       "quiet=true", f"out={out}"]))
    saved = json.loads(out.read_text())
    (result,) = saved["results"]
    assert result["method"] == "ppo gru (argmax)" and result["episodes"] == 1 and saved["modalities"] == ["category"]
    assert saved["image"] == [32, 32]  # the layout the checkpoint was trained with, not the command's 64x64
    (episode,) = result["per_episode"]
    (goal,) = episode["goals"]
    assert goal["modality"] == "category" and goal["seed"] == 0 and 1 <= goal["steps"] <= 12
    assert result["all"]["goals"] == 1 and result["all"]["success"]["n"] == 1
    assert "update_ms" not in result and "memory" not in result and episode["questions"] == []  # no scene memory
    assert saved["training"]["counters"] and report["path"] == str(out)
    # The same episode as the scene-memory agent's: the goal's category and start distance.
    scenemem = evaluate(compose("eval", ["task=nav/goat", *SMALL_TASK, "task.modalities=[category]", "agent=scenemem",
                                         "agent.variants=[kept]", "agent.questions=0", "episodes=1", "quiet=true",
                                         f"out={tmp_path / 'scenemem.json'}"]))
    other = scenemem["results"][0]["per_episode"][0]["goals"][0]
    assert (other["category"], other["start_distance"]) == (goal["category"], goal["start_distance"])
    # The scene memory's cost, as the report's memory-efficiency comparison reads it.
    row = scenemem["results"][0]
    assert row["memory"]["state_bytes"] == round(row["bytes"]) > 0
    assert row["memory"]["read_s_per_env_step"] == row["update_ms"] / 1000 > 0


def test_the_imitation_recipe_records_only_what_the_agent_reads_and_eval_plays_it(tmp_path):
    from embodied.eval import evaluate
    from embodied.train.run import train

    run = tmp_path / "run"
    train(compose("train", ["+experiment=goat_bc_gru", *SMALL_TASK, "num_envs=1", "trainer.record_episodes=2",
                            "trainer.dagger_rounds=1", "trainer.dagger_steps=24", "trainer.eval_episodes=1",
                            "trainer.epochs=1", "trainer.seq_len=8", "agent.cnn_channels=[8]", "agent.image_dim=16",
                            "agent.hidden=16", "memory.hidden=16", f"run_dir={run}", "quiet=true"]))
    for shard in ("demos.npz", "dagger-001.npz"):  # the oracle's episodes and the learner's visits
        with np.load(run / "data" / shard) as data:
            assert {k[4:] for k in data.files if k.startswith("obs/")} == {"rgb", "depth", "semantic", "pose", "goal_category"}
    out = tmp_path / "eval.json"
    evaluate(compose("eval", ["task=nav/goat", *SMALL_TASK, "task.modalities=[category]", f"ckpt={run / 'latest.pt'}",
                              "episodes=1", "quiet=true", f"out={out}"]))
    (result,) = json.loads(out.read_text())["results"]
    assert result["method"] == "bc gru (argmax)" and result["all"]["goals"] == 1


def _teacher_env():
    return make_env({"name": "nav/goat", "n_rooms": 2, "num_goals": 2, "steps_per_goal": 40, "width": 48, "height": 48,
                     "modalities": ["category"], "sensors": ["rgb", "depth", "semantic", "instance"],
                     "tilt_angle": 20.0})  # not the default 30: the agent must take the task's


def test_the_3d_mem_teacher_acts_as_the_agent_alone_and_follows_what_a_learner_did():
    from embodied.agents.goat import ACTIONS, GoatAgent, GoatTeacher

    env = _teacher_env()
    cfg = env.unwrapped.cfg
    alone, obs, done = GoatAgent.for_task(cfg, "kept"), env.reset(seed=3)[0], False
    expected = []
    while not done:
        expected.append(alone.act(obs))
        obs, _, terminated, truncated, _ = env.step(expected[-1])
        done = terminated or truncated
    teacher = GoatTeacher(cfg, 1)
    teacher.reset()
    obs, labels, done = env.reset(seed=3)[0], [], False
    while not done:  # the batch wrapper labels the same episode step for step
        labels.append(int(teacher.actions({k: np.asarray(v)[None] for k, v in obs.items()})[0]))
        obs, _, terminated, truncated, _ = env.step(labels[-1])
        done = terminated or truncated
        teacher.stepped([labels[-1]], [done])
    assert labels == expected and len(labels) > 10
    obs, _ = env.reset(seed=4)  # a learner looks up four times where the teacher chose otherwise (the env stops at +40)
    for _ in range(4):
        chosen = int(teacher.actions({k: np.asarray(v)[None] for k, v in obs.items()})[0])
        assert ACTIONS[chosen] != "look_up"
        obs, *_ = env.step(ACTIONS.index("look_up"))
        teacher.stepped([ACTIONS.index("look_up")], [False])
    assert teacher.agents[0].tilt == pytest.approx(env.unwrapped.agent.tilt_deg)
    assert teacher.agents[0].last_action == "look_up"


def test_the_3d_mem_teachers_recipe_records_only_what_the_learner_reads(tmp_path):
    from embodied.train.run import train

    run = tmp_path / "run"
    train(compose("train", ["+experiment=goat_bc_gru_scenemem", *SMALL_TASK, "task.steps_per_goal=30",
                            "task.width=48", "task.height=48", "num_envs=1", "trainer.record_episodes=1",
                            "trainer.dagger_rounds=1", "trainer.dagger_steps=30", "trainer.eval_episodes=1",
                            "trainer.epochs=1", "trainer.seq_len=8", "agent.cnn_channels=[8]", "agent.image_dim=16",
                            "agent.hidden=16", "memory.hidden=16", f"run_dir={run}", "quiet=true"]))
    for shard in ("demos.npz", "dagger-001.npz"):  # the teacher's episodes and the learner's visits, labelled
        with np.load(run / "data" / shard) as data:
            assert {k[4:] for k in data.files if k.startswith("obs/")} == {"rgb", "depth", "semantic", "pose", "goal_category"}
            assert len(data["actions"]) > 0


@pytest.mark.parametrize("argv,expected", [
    (["+experiment=goat_bc_gru_scenemem", "trainer.expert=human"], "trainer.expert: 'human'; allowed: oracle, scenemem"),
    (["task=nav/pointnav", "trainer=bc", "trainer.expert=scenemem"],
     "trainer.expert: 'scenemem' with task=nav/pointnav"),
    (["+experiment=goat_pointer", "trainer.expert=scenemem"], "trainer.expert: 'scenemem' with agent=goat_pointer"),
    (["+experiment=goat_bc_gru_scenemem", "task.sensors=[rgb,depth,semantic]"],
     "task.sensors: ['rgb', 'depth', 'semantic'] lacks ['instance']; trainer.expert=scenemem"),
    (["+experiment=goat_pointer", "trainer.inflection_weight=2"],
     "trainer.inflection_weight: PointerChooser computes its own imitation loss"),
])
def test_a_wrong_expert_or_step_weight_is_one_line(capsys, tmp_path, argv, expected):
    from test_cli_errors import fails

    line = fails(capsys, "train", *argv, f"run_dir={tmp_path / 'run'}")
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_record_plays_the_checkpoint(tiny_checkpoint, tmp_path):
    from embodied.cli import main

    main(["record", "task=nav/goat", *SMALL_TASK, "task.modalities=[category]", f"ckpt={tiny_checkpoint}",
          f"out={tmp_path / 'rec'}", "quiet=true"])
    assert (tmp_path / "rec" / "episode_000.rrd").stat().st_size > 0


@pytest.mark.parametrize("argv,expected", [
    (["agent=scenemem"], "agent: scenemem with ckpt="),
    (["+agent.variants=[kept]"], "agent.variants: an option of agent=scenemem with ckpt="),
    (["task.modalities=[category,image]"], "task.modalities: [category,image]: "),
])
def test_scene_memory_options_or_other_goals_with_a_policy_checkpoint_are_one_line(capsys, tiny_checkpoint, argv, expected):
    from test_cli_errors import fails

    line = fails(capsys, "eval", "task=nav/goat", *SMALL_TASK, f"ckpt={tiny_checkpoint}", "episodes=1", *argv)
    assert expected in line


def test_a_checkpoint_of_another_kind_is_one_line(capsys):
    from embodied.eval.goat import goat_checkpoint
    from embodied.loading import resolve_checkpoint
    from test_cli_errors import fails

    line = fails(capsys, "eval", "task=nav/goat", "ckpt=pretrained:fastmap_lstm", "episodes=1")
    assert "ckpt: " in line and "agent trained on fastmap/" in line
    assert "allowed with task=nav/goat: a goat_pointer checkpoint" in line and "a policy trained on nav/goat" in line
    with pytest.raises(ConfigError, match="'lstm' agent trained on fastmap"):
        goat_checkpoint(str(resolve_checkpoint("pretrained:fastmap_lstm")))
