"""household/tier<t>: worlds and episodes deterministic per seed, every tier's goals at their depth,
the oracle solves every pinned task, failures say why, bad keys are one line."""
from __future__ import annotations

import numpy as np
import pytest

from embodied.config import ConfigError
from embodied.tasks import TASKS, make_env
from embodied.tasks.household import (ACTION_ID, GOALS_PER_TIER, ITEM_ID, LEVELS, MAX_TIER, PRODUCTS, generate_world)

# Pinned tasks: (tier, episode seed) on world 0; the oracle must solve each within the tier's budget.
PINNED = [(t, s) for t in range(1, MAX_TIER + 1) for s in range(12)]


def run_oracle(env, seed):
    obs, info = env.reset(seed=seed)
    actions = []
    done = False
    while not done:
        actions.append(env.oracle_action())
        obs, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    return info, actions


def test_tiers_are_registered_and_each_world_has_its_goals_at_every_depth():
    assert {f"household/tier{t}" for t in range(1, 6)} <= set(TASKS)
    for seed in range(30):
        w = generate_world(seed)
        for t in range(1, MAX_TIER + 1):
            assert len(w.goals(t)) == GOALS_PER_TIER, (seed, t)
        for p in PRODUCTS:  # depth = 1 + deepest requirement (a chain, not a flat list)
            r = w.recipes[p]
            assert w.depth[p] == 1 + max(w.depth[x] for x in r.inputs + ((r.tool,) if r.tool else ()))
            assert w.tree(p)[-1] == p and len(set(w.tree(p))) == len(w.tree(p))
    a, b = generate_world(3), generate_world(3)
    assert a.recipes == b.recipes and a.homes == b.homes and a.containers == b.containers
    assert generate_world(4).recipes != a.recipes  # the seed draws the rules


@pytest.mark.parametrize("tier", range(1, MAX_TIER + 1))
def test_the_oracle_solves_every_pinned_task_deterministically(tier):
    env = make_env({"name": f"household/tier{tier}"})
    for t, seed in PINNED:
        if t != tier:
            continue
        info, actions = run_oracle(env, seed)
        assert info["success"] == 1.0 and info["steps"] <= LEVELS[f"tier{tier}"].max_steps, (tier, seed, info)
        assert info["subgoals_done"] == info["subgoals_total"] >= tier
        again, actions2 = run_oracle(env, seed)
        assert actions2 == actions and again == info


def test_perturbations_happen_and_the_oracle_still_solves():
    env = make_env({"name": "household/tier3", "move_prob": 1.0, "stuck_prob": 1.0})
    feedback = []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        assert any("moved" in p for p in env.perturbations) and any("stuck" in p for p in env.perturbations)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(env.oracle_action())
            feedback.append(info["feedback"])
            done = term or trunc
        assert info["success"] == 1.0
    assert "stuck" in feedback


def test_failures_say_why_and_successes_say_what_happened():
    env = make_env({"name": "household/tier2", "move_prob": 0.0, "stuck_prob": 0.0})
    obs, _ = env.reset(seed=0)
    w = env.world
    locked = next(i for i, c in enumerate(w.containers) if c.key)
    env.step(ACTION_ID[("goto", w.containers[locked].room)])
    _, _, _, _, info = env.step(ACTION_ID[("open", locked)])
    assert info["feedback"] == "locked" and "locked" in info["message"]
    other = next(i for i, c in enumerate(w.containers) if c.room != env.room)
    assert env.step(ACTION_ID[("open", other)])[4]["feedback"] == "not here"
    product = env.goal
    recipe = w.recipes[product]
    env.step(ACTION_ID[("goto", w.station_room[recipe.station])])
    info = env.step(ACTION_ID[("make", ITEM_ID[product])])[4]
    assert info["feedback"] == "missing" and info["event"]["station"] == recipe.station
    assert set(info["event"]["missing"]) == set(recipe.inputs) and "missing: " in info["message"]
    _, _, term, trunc, info = env.step(ACTION_ID[("take", ITEM_ID["flour"])])
    assert info["feedback"] == "absent" and not term


def test_observation_fits_its_space_and_steps_are_budgeted():
    env = make_env({"name": "household/tier1", "max_steps": 5})
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    for i in range(5):
        obs, _, term, trunc, _ = env.step(ACTION_ID[("goto", 0)])
        assert env.observation_space.contains(obs)
    assert trunc and not term and int(obs["steps_left"][0]) == 0


@pytest.mark.parametrize("cfg, message", [
    ({"name": "household/tier9"}, "task.name: unknown task 'household/tier9'"),
    ({"name": "household/tier1", "move_prob": 1.5}, "task.move_prob: 1.5; allowed: 0..1"),
    ({"name": "household/tier1", "max_steps": 0}, "task.max_steps: 0; allowed: >= 1 or null"),
    ({"name": "household/tier1", "scenes": "train"}, "task.scenes: not a key of household tasks; allowed: "),
    ({"name": "household/tier1", "world_seed": "a"}, "task.world_seed: 'a'; allowed: an integer")])
def test_bad_config_is_one_line(cfg, message):
    with pytest.raises(ConfigError) as err:
        make_env(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_action_is_refused():
    env = make_env({"name": "household/tier1"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        env.step(np.int64(env.action_space.n))
