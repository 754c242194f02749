"""The learned chooser of the 3D-Mem agent (embodied/agents/goat_chooser.py): the oracle's labels are
right, the pointer network learns through the behaviour-cloning trainer, and its checkpoints train,
load and evaluate through the commands."""
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from embodied.agents.goat import GoalQuery
from embodied.agents.goat_chooser import (CLASSES, CONTEXT, FEATURES, N_FLOAT, PointerChooser, PointerChooserConfig, build_from_run_config,
                                          featurize, load_decisions, oracle_targets, save_decisions)
from embodied.config import ConfigError, InputError
from embodied.memory.scene import Frontier, SceneMemory
from embodied.render import Camera
from embodied.train.bc import BCConfig, BehaviourCloning
from embodied.world import OBJECT_CATEGORIES

from test_goat_agent import _env, _oracle_memory


def test_oracle_targets_the_goal_instances_among_the_candidates():
    """After the task's oracle walked an episode (every goal instance seen), each goal's candidates
    are labelled at exactly the objects that are its instances."""
    env = _env()
    mem, firsts = _oracle_memory(env, 0)
    task = env.unwrapped
    for obs, goal in zip(firsts, task.goals):
        query = GoalQuery.from_observation(obs)
        snaps, frontiers = mem.candidates(query.relevant_classes())
        pose = np.asarray(obs["pose"], np.float64)
        arrays, choices = featurize(query, mem, snaps, frontiers, pose)
        assert arrays["cand_int"].shape == (len(choices), 5) and arrays["cand_float"].shape == (len(choices), N_FLOAT)
        target = oracle_targets(SimpleNamespace(goal=goal, start_pose=task.start_pose), choices, frontiers, mem, pose)
        truth = [c.kind == "object" and c.object in goal.instances for c in choices]
        assert target.tolist() == truth and any(truth), goal.modality
    env.close()


class _Field:
    """A goal field on a 1 m grid over [-5, 5]^2 whose values are the distance to `goal`."""

    def __init__(self, goal):
        xs = np.arange(-5, 5) + 0.5
        self.values = np.hypot(*np.meshgrid(xs - goal[0], xs - goal[1], indexing="xy"))
        self.grid = self

    def world_to_grid(self, xy):
        return np.floor(np.asarray(xy)[..., ::-1] + 5).astype(np.int64)


@pytest.mark.parametrize("yaw0", [0.0, math.pi])
def test_without_the_goal_in_view_the_oracle_labels_the_frontier_toward_it(yaw0):
    """Two frontiers, east and west of the agent in its own frame; the goal lies 4 m west in the
    world. With the episode started facing +x the west frontier is labelled; started facing -x
    (the agent's frame turned half round) the east one."""
    mem = SceneMemory(Camera(width=32, height=32))
    frontiers = [Frontier(0, mem.cells_of(np.array([[2.0, 0.0]])), np.array([2.0, 0.0]), 10, None),
                 Frontier(1, mem.cells_of(np.array([[-2.0, 0.0]])), np.array([-2.0, 0.0]), 10, None)]
    query = GoalQuery("category", OBJECT_CATEGORIES[0])
    pose = np.zeros(4)
    _, choices = featurize(query, mem, [], frontiers, pose)
    task = SimpleNamespace(goal=SimpleNamespace(instances=(7,), field=_Field((-4.0, 0.0))), start_pose=np.array([0, 0, 0, yaw0]))
    target = oracle_targets(task, choices, frontiers, mem, pose)
    assert target.tolist() == ([False, True] if yaw0 == 0.0 else [True, False])


def _synthetic(rng, n):
    """Decisions whose answer is the one object candidate of the goal's category (six objects of
    distinct categories, three frontiers): a chooser that ignores the goal is right 1 in 9."""
    out = []
    for _ in range(n):
        cats = rng.choice(len(OBJECT_CATEGORIES), 6, replace=False)
        ints = np.zeros((9, 5), np.int64)
        ints[:6, 1] = [CLASSES.index(OBJECT_CATEGORIES[c]) + 1 for c in cats]
        ints[6:, 0] = 1
        goal = np.array([0, ints[int(rng.integers(6)), 1], 0, 0, 0])
        perm = rng.permutation(9)
        out.append({"goal_int": goal, "goal_ctx": np.zeros(len(CONTEXT), np.float32), "cand_int": ints[perm],
                    "cand_float": rng.normal(size=(9, N_FLOAT)).astype(np.float32), "target": ints[perm, 1] == goal[1]})
    return out


def test_the_pointer_network_learns_to_point_at_the_goal_through_the_trainer():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out = _synthetic(rng, 1500), _synthetic(rng, 300)
    chooser = PointerChooser(PointerChooserConfig(d_model=32, layers=1, heads=4))
    bc = BehaviourCloning(chooser, BCConfig(batch_episodes=64, epochs=8, lr=3e-3), seed=0)
    first = chooser.imitation_loss(chooser.imitation_batch(held_out, None, "cpu"))[1]
    bc.fit(train)
    chooser.eval()
    last = chooser.imitation_loss(chooser.imitation_batch(held_out, None, "cpu"))[1]
    assert first["accuracy"] < 0.3
    assert last["accuracy"] > 0.9, last


def test_decisions_file_round_trip_and_a_bad_file(tmp_path):
    rng = np.random.default_rng(1)
    decisions = _synthetic(rng, 5)
    save_decisions(tmp_path / "d.npz", decisions)
    back = load_decisions(tmp_path / "d.npz")
    assert len(back) == 5
    for a, b in zip(decisions, back):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(InputError, match="not a nav/goat decisions file"):
        load_decisions(tmp_path / "bad.npz")


def test_bad_agent_options_and_tasks_are_one_line():
    with pytest.raises(ValueError, match="allowed: nav/goat"):
        build_from_run_config({"task": {"name": "nav/pointnav"}, "agent": {"name": "goat_pointer"}})
    with pytest.raises(ValueError, match="unknown goat_pointer agent option 'width'"):
        build_from_run_config({"task": {"name": "nav/goat"}, "agent": {"name": "goat_pointer", "width": 3}})
    with pytest.raises(ConfigError, match="agent.heads"):
        build_from_run_config({"task": {"name": "nav/goat"}, "agent": {"name": "goat_pointer", "d_model": 30, "heads": 4}})
    with pytest.raises(ConfigError, match="agent.memory.nosuch"):
        build_from_run_config({"task": {"name": "nav/goat"}, "agent": {"name": "goat_pointer", "memory": {"nosuch": 1}}})


def test_eval_rejects_a_checkpoint_of_another_agent():
    from embodied.eval.goat import goat_checkpoint
    from embodied.loading import resolve_checkpoint

    with pytest.raises(ConfigError, match="allowed with task=nav/goat: a goat_pointer checkpoint"):
        goat_checkpoint(str(resolve_checkpoint("pretrained:fastmap_lstm")))


@pytest.mark.slow
def test_train_then_eval_through_the_commands(tmp_path):
    """A tiny run of the recipe (two recorded episodes of one goal) writes a checkpoint that `embodied
    eval task=nav/goat` plays with the learned chooser and `embodied record` records."""
    small = ["task.num_goals=1", "task.steps_per_goal=60", "task.width=64", "task.height=64"]
    run = subprocess.run([sys.executable, "-m", "embodied", "train", "+experiment=goat_pointer", f"run_dir={tmp_path}/run",
                          "trainer.record_episodes=2", "trainer.dagger_rounds=1", "quiet=true", *small],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "run" / "data").glob(f"decisions-v{FEATURES}-2-*.npz"))
    ev = subprocess.run([sys.executable, "-m", "embodied", "eval", "task=nav/goat", "agent=scenemem",
                         f"ckpt={tmp_path}/run/latest.pt", "episodes=1", "agent.variants=[kept]", "agent.questions=0",
                         f"out={tmp_path}/eval.json", "quiet=true", *small], capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    import json

    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["chooser"] == "learned" and report["results"][0]["method"] == "scenemem learned chooser (kept)"
    assert report["results"][0]["episodes"] == 1
    rec = subprocess.run([sys.executable, "-m", "embodied", "record", "task=nav/goat", f"ckpt={tmp_path}/run/latest.pt",
                          f"out={tmp_path}/rec", "quiet=true", *small], capture_output=True, text=True, timeout=600)
    assert rec.returncode == 0, rec.stderr[-2000:]
    assert (tmp_path / "rec" / "episode_000.rrd").stat().st_size > 0


def test_in_training_rollouts_play_the_chooser_in_the_agent():
    """The trainer's monitoring episodes (trainer.eval_episodes > 0) play the chooser inside the
    3D-Mem agent and report per-episode success and SPL."""
    chooser = PointerChooser(PointerChooserConfig(d_model=16, layers=1, heads=2))
    task = {"name": "nav/goat", "scenes": "procedural", "n_rooms": 4, "width": 64, "height": 64, "num_goals": 1,
            "steps_per_goal": 40}
    out = chooser.imitation_rollouts(task, 1)
    assert len(out) == 1 and set(out[0]) == {"success", "spl"} and 0.0 <= out[0]["spl"] <= out[0]["success"] <= 1.0
    assert chooser.training


def test_a_stat_some_batches_lack_is_averaged_over_those_that_have_it():
    """object_accuracy is NaN on a batch without object-labelled decisions; the epoch's figure is
    the mean over the batches that have some, not NaN."""
    rng = np.random.default_rng(2)
    decisions = _synthetic(rng, 6)
    for d in decisions[:3]:  # frontier-labelled: the first frontier is the answer
        d["target"] = d["cand_int"][:, 0] == 1
        d["target"][np.flatnonzero(d["target"])[1:]] = False
    chooser = PointerChooser(PointerChooserConfig(d_model=16, layers=1, heads=2))
    stats = BehaviourCloning(chooser, BCConfig(batch_episodes=1, epochs=1), seed=0).fit(decisions)
    assert 0.0 <= stats["object_accuracy"] <= 1.0 and 0.0 <= stats["accuracy"] <= 1.0


def test_object_tokens_carry_how_they_match_the_goal():
    """The last five numbers of an object token are the scripted chooser's match features (colour,
    furniture, room, image context) and the same category; a frontier's are zero."""
    from embodied.memory.scene import SceneObject, Snapshot

    mem = SceneMemory(Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25))
    colours = {"red": (0.9, 0.1, 0.1), "blue": (0.1, 0.2, 0.9)}
    for oid, (cat, colour, xy) in enumerate([("mug", "red", (1.0, 0.0)), ("mug", "blue", (2.0, 0.0)),
                                              ("book", "red", (3.0, 0.0))], start=1):
        mem.objects[oid] = SceneObject(oid, cat, np.array([*xy, 0.8]), np.array(colours[colour]))
    frontier = Frontier(0, np.zeros((1, 2), np.int64), np.array([0.0, 3.0]), 20, None)
    arrays, choices = featurize(GoalQuery("description", "mug", "red"), mem, [Snapshot(0, [1, 2, 3])], [frontier],
                                np.zeros(4))
    match = arrays["cand_float"][:, -5:]
    assert [c.kind for c in choices] == ["object"] * 3 + ["frontier"]
    assert match[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]  # colour
    assert match[:, 4].tolist() == [1.0, 1.0, 0.0, 0.0]  # same category
    assert not match[3].any() and arrays["cand_float"].shape[1] == N_FLOAT
