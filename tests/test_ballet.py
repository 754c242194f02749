"""Ballet: levels, one dancer per instructed dance, expert success, dances distinct, errors."""
from __future__ import annotations

import numpy as np
import pytest

from embodied.tasks import TASKS, make_env
from embodied.tasks.ballet import DANCES, DANCE_STEPS, SLOTS


def run_expert(env, seed: int) -> tuple[float, int]:
    obs, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.oracle_action())
        total += reward
        steps += 1
        if terminated or truncated:
            return total, steps


def test_levels_registered_and_dances_distinct():
    for n in (2, 4, 8):
        for d in (16, 48):
            assert f"ballet/{n}_delay{d}" in TASKS
    assert len(DANCES) >= 13
    assert len({tuple(v) for v in DANCES.values()}) == len(DANCES)
    assert all(len(v) == DANCE_STEPS for v in DANCES.values())


@pytest.mark.parametrize("level", ["2_delay16", "8_delay48"])
def test_instructed_dance_was_performed_by_exactly_one_dancer(level):
    env = make_env({"name": f"ballet/{level}"})
    for seed in range(20):
        env.reset(seed=seed)
        assert list(env.dances).count(env.instructed_dance) == 1
        # The dancer's observed motion over its 16 steps is exactly that dance.
        period = DANCE_STEPS + env.delay
        start = env.target * period
        home = np.asarray(SLOTS[env.slots[env.target]])
        moves = [tuple(env.dancer_offsets(start + k)) for k in range(DANCE_STEPS)]
        expected = [((-dy, dx),) for dx, dy in DANCES[list(DANCES)[env.instructed_dance]]]
        assert [tuple(map(tuple, m[env.target:env.target + 1])) for m in moves] == expected
        assert home.shape == (2,)


def test_observations_show_the_show_then_the_question():
    env = make_env({"name": "ballet/4_delay16"})
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["text"][0] == 1 and (obs["semantic"] >= 2).sum() == 4
    for _ in range(env.show_steps):
        obs, reward, terminated, truncated, _ = env.step(0)
        assert reward == 0 and not terminated
    assert obs["text"][0] == 2 + env.instructed_dance


def test_expert_succeeds_and_wrong_choice_gets_zero():
    env = make_env({"name": "ballet/8_delay16"})
    results = [run_expert(env, seed) for seed in range(100)]
    assert np.mean([r for r, _ in results]) >= 0.99
    assert all(steps == env.show_steps + 1 for _, steps in results)
    env.reset(seed=1)
    for _ in range(env.show_steps):
        env.step(0)
    wrong = next(s for s in range(len(SLOTS)) if s != env.slots[env.target])
    _, reward, terminated, _, info = env.step(1 + wrong)
    assert reward == 0.0 and terminated and info["success"] == 0.0
    with pytest.raises(RuntimeError):
        env.step(0)


def test_same_seed_same_episode_and_bad_action():
    a, b = make_env({"name": "ballet/4_delay48"}), make_env({"name": "ballet/4_delay48"})
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    assert (oa["semantic"] == ob["semantic"]).all() and list(a.dances) == list(b.dances)
    with pytest.raises(ValueError, match="action"):
        a.step(99)


@pytest.mark.parametrize("memory", ["hcam", "sat"])
def test_agents_with_new_memories_train_on_expert_episodes(memory):
    import torch

    from embodied.agents import build_agent
    from embodied.loading import make_envs
    from embodied.train.bc import collect_labelled, pad_batch

    envs = make_envs({"name": "ballet/2_delay16"}, 3, 0, 0)
    episodes, _ = collect_labelled(envs, None, torch.device("cpu"), 10**4, 1.0, np.random.default_rng(0), seed=0,
                                   max_episodes=3)
    space, action_space = envs.single_observation_space, envs.single_action_space
    envs.close()
    batch = pad_batch(episodes, torch.device("cpu"))
    options = dict(dim=16, heads=2, layers=1, ff_dim=16)
    options.update(dict(chunk_size=8, num_chunks=9) if memory == "hcam" else dict(capacity=32, place_embedding=False))
    torch.manual_seed(0)
    agent = build_agent(space, action_space, memory=memory, memory_options=options, hidden=16, text_dim=8,
                        cnn_channels=[8], image_dim=16)
    args = (batch["obs"], agent.initial_state(3), batch["first"], batch["prev_actions"], batch["actions"])
    if memory == "sat":  # Ballet observations carry no place or pose: SAT says so instead of guessing
        with pytest.raises(ValueError, match="place"):
            agent.evaluate_sequence(*args)
        return
    out = agent.evaluate_sequence(*args)
    (-out["log_prob"].mean()).backward()
    assert out["logits"].shape == (batch["actions"].shape[0], 3, 9)
    assert all(p.grad is not None for p in agent.memory.input_proj.parameters())


# The imitation labels (the dancer dancing now, every question at the answer) and the losses that read
# them: tests/test_imitation.py.


def test_rgb_option_renders_each_dancer_at_its_grid_cell_in_its_colour():
    from embodied.tasks.ballet import CELL, COLOUR_RGB, ROOM

    env = make_env({"name": "ballet/4_delay16", "width": 64, "height": 64, "rgb": True})
    palette = np.asarray(COLOUR_RGB)
    palette = palette / np.linalg.norm(palette, axis=1, keepdims=True)
    f = 64 / 2  # focal length in pixels at 90 degrees
    seen_moves = 0
    obs, _ = env.reset(seed=3)
    for t in range(40):
        assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
        grid = obs["semantic"]
        for row, col in zip(*np.nonzero(grid >= 2)):
            # The block's top face is 2.8 m below the camera (3.3 m up, blocks 0.5 m tall).
            v = int(round(32 + (row - ROOM // 2) * CELL * f / 2.8 - 0.5))
            u = int(round(32 + (col - ROOM // 2) * CELL * f / 2.8 - 0.5))
            rgb = obs["rgb"][v, u].astype(float)
            colour = int(np.argmax(palette @ (rgb / np.linalg.norm(rgb))))
            assert colour == grid[row, col] - 2, (t, row, col, rgb)
        previous = obs
        obs, *_ = env.step(0)
        if not np.array_equal(previous["semantic"], obs["semantic"]):
            seen_moves += 1
            assert not np.array_equal(previous["rgb"], obs["rgb"])
        else:
            assert np.array_equal(previous["rgb"], obs["rgb"])
    assert seen_moves >= 10
    with pytest.raises(ValueError, match=r"^task.colour: not a key of ballet tasks; allowed: height, name, rgb, width$"):
        make_env({"name": "ballet/4_delay16", "colour": True})
