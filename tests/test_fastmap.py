"""Fast-mapping task family (embodied/tasks/fastmap/): phases, naming, rewards, levels, splits, expert."""
from __future__ import annotations

import numpy as np
import pytest

from embodied.tasks import TASKS, make_env
from embodied.tasks.fastmap import (
    FASTMAP_ACTIONS,
    LEVELS,
    NONSENSE_WORDS,
    FastMapConfig,
    decode_text,
    object_in_split,
)

LIFT, PUT = FASTMAP_ACTIONS.index("lift"), FASTMAP_ACTIONS.index("put")


def make(level: str, scenes: str = "symbolic", **kw):
    return make_env({"name": f"fastmap/{level}", "scenes": scenes, "width": 32, "height": 24, **kw})


def run_expert(env, seed=None):
    env.reset(seed=seed)
    return finish_with_expert(env)


def finish_with_expert(env):
    total, done, info = 0.0, False, {}
    while not done:
        obs, r, te, tr, info = env.step(env.oracle_action())
        total += r
        done = te or tr
    return info, total


def expert_until_instruction(env, seed):
    env.reset(seed=seed)
    while env.phase != "instruction":
        env.step(env.oracle_action())


def test_all_29_levels_registered_with_configs():
    from pathlib import Path

    names = [n for n in TASKS if n.startswith("fastmap/")]
    assert len(names) == 29 and len(LEVELS) == 29
    root = Path(__file__).resolve().parents[1] / "configs" / "task"
    for n in names:
        assert (root / f"{n}.yaml").is_file(), n
    import yaml

    table = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "fastmap.yaml").read_text())
    assert set(table["levels"]) == set(LEVELS)
    for name, entry in table["levels"].items():
        assert entry["role"] == LEVELS[name].split_role
        for train in entry.get("train_levels", []):
            assert LEVELS[train].split_role == "train"


def test_name_shown_in_discovery_is_bound_to_the_object_lifted():
    env = make("architecture_comparison/fast_map_three_objs")
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        seen = {}
        while env.phase == "discovery":
            action = env.oracle_action()
            in_front = env.object_at(env.front_cell())
            obs, *_ = env.step(action)
            text = decode_text(obs["text"])
            if action == LIFT:
                assert env.held == in_front >= 0
                assert text == f"this is a {env.objects[in_front].name}"
                assert obs["holding"][0] == 1.0
                seen[in_front] = text.split()[-1]
            elif env.held < 0 and env.phase == "discovery":
                assert text == ""
        assert len(seen) == 3 and len(set(seen.values())) == 3


def test_symbolic_map_draws_a_held_object_as_it_looks_on_the_floor():
    env = make("architecture_comparison/fast_map_three_objs")
    px = env.cfg.cell_pixels
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        centre = (env.room - 1) * px
        lifted = 0
        while env.phase == "discovery":
            action = env.oracle_action()
            in_front = env.object_at(env.front_cell())
            row, col = env.view_position(env.front_cell())
            assert (row, col) == (env.room - 2, env.room - 1)  # the cell in front is just above the agent
            before = obs["rgb"][row * px:(row + 1) * px, col * px:(col + 1) * px].copy()
            obs, *_ = env.step(action)
            held_tile = obs["rgb"][centre:centre + px, centre:centre + px]
            if action == LIFT and in_front >= 0:
                np.testing.assert_array_equal(held_tile, before)  # same tile, now at the agent's cell
                lifted += 1
            elif env.held < 0:
                assert (held_tile == held_tile[0, 0]).all()  # an empty hand: the agent's plain colour
        assert lifted == 3


def test_view_position_finds_every_object_where_the_map_draws_it():
    env = make("architecture_comparison/fast_map_three_objs")
    px = env.cfg.cell_pixels
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        for _ in range(6):
            obs, *_ = env.step(env.oracle_action())
            for o in env.objects:
                if o.cell is None:
                    continue
                row, col = env.view_position(o.cell)
                tile = obs["rgb"][row * px:(row + 1) * px, col * px:(col + 1) * px]
                assert (tile == o.colour).all(axis=-1).any(), (seed, o.cell)


def test_names_differ_across_episodes_and_come_from_the_vocabulary():
    env = make("architecture_comparison/fast_map_three_objs")
    env.reset(seed=0)
    draws = []
    for _ in range(6):
        env.reset()
        draws.append(tuple(o.name for o in env.objects))
        assert all(n in NONSENSE_WORDS[: env.cfg.vocab_size] for n in draws[-1])
    assert len(set(draws)) == len(draws)


def test_familiar_levels_use_category_names():
    env = make("fast_slow/two_phase_slow_learn_three_objs_bed_tray_putting_on")
    env.reset(seed=3)
    assert [o.name for o in env.objects] == [o.category for o in env.objects]


@pytest.mark.parametrize("level", ["architecture_comparison/fast_map_three_objs",
                                   "fast_slow/fast_map_three_objs_bed_tray_putting_near",
                                   "fast_slow/slow_learn_three_objs_bed_tray_putting_on"])
def test_instruction_names_an_object_present(level):
    env = make(level)
    for seed in range(5):
        expert_until_instruction(env, seed)
        words = env.text_string().split()
        assert words[0] in ("lift", "put")
        names = [o.name for o in env.objects]
        assert words[2] in names and words[2] == env.objects[env.target].name
        if words[0] == "put":
            assert words[-1] in ("bed", "tray") and words[3] in ("on", "near")


def _go_and(env, goal_cells, final):
    """Drive the agent with the lattice planner until it faces a goal cell, then do `final`."""
    for _ in range(60):
        if env.front_cell() in goal_cells:
            return env.step(final)
        env.step(env._approach(set(goal_cells), None))
    raise AssertionError("goal not reached")


def test_reward_only_for_the_right_object_lift():
    env = make("architecture_comparison/fast_map_three_objs")
    for seed in range(4):
        expert_until_instruction(env, seed)
        wrong = (env.target + 1) % 3
        _, r, te, _, info = _go_and(env, {env.objects[wrong].cell}, LIFT)
        assert te and r == 0.0 and info["success"] == 0.0
        expert_until_instruction(env, seed)
        _, r, te, _, info = _go_and(env, {env.objects[env.target].cell}, LIFT)
        assert te and r == 1.0 and info["success"] == 1.0


def test_reward_only_for_the_right_act_put_on():
    env = make("fast_slow/fast_map_three_objs_bed_tray_putting_on")
    for seed in range(4):
        expert_until_instruction(env, seed)
        _, r, te, _, _ = _go_and(env, {env.objects[env.target].cell}, LIFT)
        assert not te and r == 0.0  # a lift does not end a put instruction
        fixture = env.instruction[1]
        other = "tray" if fixture == "bed" else "bed"
        free_other = {c for c in env._fixture_cells(other) if env.object_at(c) < 0}
        _, r, te, _, info = _go_and(env, free_other, PUT)  # right object, wrong place
        assert te and r == 0.0 and info["success"] == 0.0
        expert_until_instruction(env, seed)
        wrong = (env.target + 1) % 3
        _go_and(env, {env.objects[wrong].cell}, LIFT)
        _, r, te, _, info = _go_and(env, set(env._fixture_cells(fixture)), PUT)  # wrong object, right place
        assert te and r == 0.0
        expert_until_instruction(env, seed)
        while True:
            _, r, te, tr, info = env.step(env.oracle_action())
            if te or tr:
                break
        assert te and r == 1.0 and info["success"] == 1.0


def test_shaping_reward_once_per_object_and_none_without_shaping():
    env = make("architecture_comparison/fast_map_three_objs")
    env.reset(seed=1)
    shaping = 0.0
    while env.phase == "discovery":
        _, r, *_ = env.step(env.oracle_action())
        shaping += r
    assert shaping == pytest.approx(0.3)
    env = make("intrinsic_motivation/fast_map_three_objs_no_shaping_reward")
    env.reset(seed=1)
    shaping = 0.0
    while env.phase == "discovery":
        _, r, *_ = env.step(env.oracle_action())
        shaping += r
    assert shaping == 0.0


def test_objects_are_replaced_for_the_instruction_phase():
    env = make("architecture_comparison/fast_map_three_objs")
    moved = 0
    for seed in range(5):
        env.reset(seed=seed)
        while env.phase == "discovery":
            before = [o.cell for o in env.objects]
            env.step(env.oracle_action())
        moved += before != [o.cell for o in env.objects]
    assert moved >= 3


def test_distractor_phases_run_before_the_instruction():
    env = make("with_distractors/fast_map_three_objs_two_distractor")
    env.reset(seed=0)
    texts = []
    while env.phase != "instruction":
        env.step(env.oracle_action())
        texts.append(env.text_string())
    distractors = [t for t in texts if t.startswith("go to the")]
    assert distractors and env.distractors_done == 2


def test_multi_episode_levels_keep_names_and_skip_discovery():
    env = make("with_distractors/eval_fast_map_two_episodes_three_objs_five_distractor")
    env.reset(seed=0)
    first = [(o.category, o.exemplar, o.name) for o in env.objects]
    assert env.phase == "discovery"
    finish_with_expert(env)
    env.reset()
    assert env.phase == "distractor" and env.episode_in_block == 1
    assert [(o.category, o.exemplar, o.name) for o in env.objects] == first
    finish_with_expert(env)
    env.reset()
    assert env.phase == "discovery" and [(o.category, o.exemplar, o.name) for o in env.objects] != first


# Every level, 50 episodes, symbolic mode (same task logic as room mode, no rendering).
@pytest.mark.parametrize("level", sorted(LEVELS))
def test_expert_solves_every_level(level):
    env = make(level)
    env.reset(seed=0)
    wins = [run_expert(env)[0]["success"] for _ in range(50)]
    assert np.mean(wins) >= 0.99


@pytest.mark.parametrize("level", ["architecture_comparison/fast_map_three_objs",
                                   "fast_slow/fast_map_three_objs_bed_tray_putting_near"])
def test_expert_solves_rendered_levels(level):
    env = make(level, scenes="room", width=48, height=36)
    env.reset(seed=0)
    wins = [run_expert(env)[0]["success"] for _ in range(5)]
    assert np.mean(wins) == 1.0
    assert env.observation_space["rgb"].shape == (36, 48, 3)


def test_held_out_objects_never_leak_into_training_levels():
    for level, lv in LEVELS.items():
        env = make(level)
        env.reset(seed=11)
        for _ in range(30 if lv.split_role == "train" else 10):
            env.reset()
            for o in env.objects:
                assert object_in_split(o.category, o.exemplar, lv.object_split), (level, o.category, o.exemplar)
                if lv.split_role == "train":
                    assert object_in_split(o.category, o.exemplar, "train"), (level, o.category, o.exemplar)
                    assert not object_in_split(o.category, o.exemplar, "held_out")
    env = make("new_obj_generalization/fast_map_heldout_test_objs")
    env.reset(seed=0)
    for _ in range(10):
        env.reset()
        assert all(not object_in_split(o.category, o.exemplar, "train") for o in env.objects)


def test_global_set_levels_draw_from_a_fixed_set():
    env = make("new_obj_generalization/fast_map_three_objs_global_five")
    env.reset(seed=0)
    seen = set()
    for _ in range(40):
        env.reset()
        seen |= {(o.category, o.exemplar) for o in env.objects}
    assert len(seen) == 5 and seen == set(env.global_objects)


def test_same_seed_same_episode_and_observations():
    a, b = make("fast_slow/fast_map_three_objs_bed_tray_putting_on"), make("fast_slow/fast_map_three_objs_bed_tray_putting_on")
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    for _ in range(15):
        act = a.oracle_action()
        assert act == b.oracle_action()
        oa, *_ = a.step(act)
        ob, *_ = b.step(act)
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="scenes"):
        make("architecture_comparison/fast_map_three_objs", scenes="train")
    with pytest.raises(ValueError, match="vocab_size"):
        FastMapConfig.from_any({"name": "fastmap/architecture_comparison/fast_map_three_objs", "vocab_size": 10})
    with pytest.raises(ValueError, match="task.nope: not a key of fastmap tasks"):
        FastMapConfig.from_any({"name": "fastmap/architecture_comparison/fast_map_three_objs", "nope": 1})
    env = make("architecture_comparison/fast_map_three_objs")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        env.step(99)
