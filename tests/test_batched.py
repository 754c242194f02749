"""The batched navigation simulator (task.batched=true) against the per-env envs, trace for trace."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied.config import ConfigError
from embodied.envs import make_vector_env
from embodied.sim import NavAgent
from embodied.sim.batched import GridBatch
from embodied.tasks.config import NavConfig
from embodied.tasks.nav import MEASURE_NAMES, PointNav

SMALL = dict(scenes="train", sensors=["rgb", "depth", "semantic"], width=24, height=24, max_steps=60)


def _pair(name: str, n: int, seed: int, **extra):
    ref = make_vector_env(NavConfig(name=name, **SMALL, **extra), n, seed=seed, num_workers=0)
    bat = make_vector_env(NavConfig(name=name, **SMALL, **extra, batched=True, sim_device="cpu"), n, seed=seed)
    return ref, bat


@pytest.mark.parametrize("name", ["nav/pointnav", "nav/objectnav", "nav/multigoal"])
def test_same_trace_as_per_env_envs(name):
    """Mixed oracle and random actions (stops, moves into walls, looks up and down): every observation,
    reward, flag and measure equal the per-env envs', episodes ending and restarting in both alike."""
    n = 3
    ref, bat = _pair(name, n, seed=5, num_goals=2)
    rng = np.random.default_rng(0)
    ends = successes = collisions = 0
    try:
        for t in range(260):
            oracle = np.asarray(ref.call("oracle_action"))
            np.testing.assert_array_equal(oracle, bat.call("oracle_action"))
            noise = rng.choice(6, n, p=[0.04, 0.6, 0.14, 0.14, 0.04, 0.04])
            action = np.where(rng.random(n) < 0.75, oracle, noise)
            o1, r1, te1, tr1, i1 = ref.step(action)
            o2, r2, te2, tr2, i2 = bat.step(action)
            assert set(o1) == set(o2)
            for k in ("rgb", "semantic", "objectgoal"):
                if k in o1:
                    np.testing.assert_array_equal(o1[k], o2[k].numpy(), err_msg=f"step {t}: {k}")
            for k in ("depth", "pose", "pointgoal"):
                if k in o1:
                    np.testing.assert_allclose(o1[k], o2[k].numpy(), atol=1e-5, err_msg=f"step {t}: {k}")
            np.testing.assert_allclose(r1, r2, atol=1e-5, err_msg=f"step {t}: reward")
            np.testing.assert_array_equal(te1, te2)
            np.testing.assert_array_equal(tr1, tr2)
            for k in MEASURE_NAMES:
                np.testing.assert_allclose(i1[k], i2[k], atol=1e-9, err_msg=f"step {t}: {k}")
            np.testing.assert_array_equal(i1["scene"], i2["scene"])
            assert ("final_info" in i1) == ("final_info" in i2)
            if "final_info" in i1:
                np.testing.assert_array_equal(i1["_final_info"], i2["_final_info"])
                done = i1["_final_info"]
                for k in (*MEASURE_NAMES, "return", "length"):
                    np.testing.assert_allclose(i1["final_info"][k][done], i2["final_info"][k][done], atol=1e-6)
                ends += int(done.sum())
                successes += int(i1["final_info"]["success"][done].sum())
            collisions = max(collisions, int(i2["collisions"].max()))
    finally:
        ref.close(), bat.close()
    # the trace went through what it claims to compare: successes, failures, slides along walls
    assert successes >= 2 and ends > successes and collisions >= 1


def test_grid_motion_and_lookup_equal_navagent_and_field():
    """GridBatch.resolve_move and .distance against NavAgent.resolve_move and DistanceField.at at
    random points and moves, many into walls."""
    env = PointNav(NavConfig(name="nav/pointnav", **SMALL))
    env.reset(seed=1)
    grid, field = env.scene.grid, env.goal.field
    agent = NavAgent(grid)
    rng = np.random.default_rng(0)
    start = grid.sample_navigable(rng, 400)
    angle, length = rng.uniform(-math.pi, math.pi, 400), rng.choice([0.25, 0.6, 1.3], 400)
    dx, dy = length * np.cos(angle), length * np.sin(angle)
    gb = GridBatch(400)
    for i in range(400):
        gb.set_grid(i, grid)
        gb.set_field(i, field)
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    # sample counts with Python's math, as the batched env passes them (a 0.25 m move is 20 spacings exactly)
    n = torch.tensor([int(math.hypot(u, v) / (0.25 * grid.cell)) + 1 for u, v in zip(dx, dy)])
    x, y, hit = gb.resolve_move(torch.arange(400), t(start[:, 0]), t(start[:, 1]), t(dx), t(dy), n)
    want = np.array([agent.resolve_move(*start[i], dx[i], dy[i]) for i in range(400)])
    np.testing.assert_allclose(torch.stack([x, y], 1).numpy(), want[:, :2], atol=1e-12)
    np.testing.assert_array_equal(hit.numpy(), want[:, 2].astype(bool))
    assert 50 < hit.sum() < 390  # both free moves and slides
    pts = np.concatenate([start, field.goal_points + rng.normal(0, 0.04, (1, 2)), want[:, :2]])[:400]
    got = gb.distance(t(pts[:, 0]), t(pts[:, 1])).numpy()
    np.testing.assert_allclose(got, [field.at(p) for p in pts], atol=1e-12)


@pytest.mark.parametrize("open_side", [False, True])
def test_grid_batch_passes_a_corner_exactly_when_navagent_does(open_side):
    """Moves and segments across a corner whose side cells are blocked (or one open), on the grid of
    tests/test_sim.py's corner test: GridBatch agrees with NavAgent and NavigableGrid move by move."""
    from test_sim import _corner_grid
    grid = _corner_grid(open_side)
    agent, gb, m = NavAgent(grid), GridBatch(300), 300
    rng = np.random.default_rng(1)
    start = np.array([0.8, 0.8]) - rng.uniform(0.01, 0.12, (m, 2))  # in room A, near the corner
    angle = rng.uniform(math.pi / 8, 3 * math.pi / 8, m)  # towards room B
    length = rng.uniform(0.05, 0.4, m)
    dx, dy = length * np.cos(angle), length * np.sin(angle)
    for i in range(m):
        gb.set_grid(i, grid)
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    b = torch.arange(m)
    x, y, hit = gb.resolve_move(b, t(start[:, 0]), t(start[:, 1]), t(dx), t(dy))
    want = np.array([agent.resolve_move(*start[i], dx[i], dy[i]) for i in range(m)])
    np.testing.assert_allclose(torch.stack([x, y], 1).numpy(), want[:, :2], atol=1e-12)
    np.testing.assert_array_equal(hit.numpy(), want[:, 2].astype(bool))
    crossed = (want[:, 0] > 0.8) & (want[:, 1] > 0.8)
    assert crossed.any() == open_side and 0 < hit.sum() < m
    clear = gb.segment_clear(b, t(start[:, 0]), t(start[:, 1]), t(start[:, 0] + dx), t(start[:, 1] + dy))
    np.testing.assert_array_equal(clear.numpy(), [grid.segment_clear(start[i], start[i] + (dx[i], dy[i])) for i in range(m)])
    assert clear.numpy()[(start[:, 0] + dx > 0.8) & (start[:, 1] + dy > 0.8)].any() == open_side


def test_warp_renderer_in_the_batched_env():
    """task.renderer=warp on the CPU: the same semantic images as the Embree run of the same episodes."""
    emb = make_vector_env(NavConfig(name="nav/objectnav", **SMALL, batched=True, sim_device="cpu"), 2, seed=3)
    wrp = make_vector_env(NavConfig(name="nav/objectnav", **SMALL, batched=True, sim_device="cpu", renderer="warp"),
                          2, seed=3)
    try:
        for _ in range(5):
            a = np.array([1, 2])
            o1, o2 = emb.step(a)[0], wrp.step(a)[0]
            assert (o1["semantic"] == o2["semantic"]).float().mean() > 0.99
            np.testing.assert_allclose(o1["pose"], o2["pose"])
    finally:
        emb.close(), wrp.close()


@pytest.mark.parametrize("extra, message", [
    (dict(name="nav/goat", batched=True), "task.batched: true for nav/goat"),
    (dict(renderer="optix"), "task.renderer: 'optix'; allowed: auto, embree, warp"),
    (dict(sim_device="tpu"), "task.sim_device: 'tpu'"),
])
def test_bad_options_are_one_line(extra, message):
    from embodied.tasks.config import GoatConfig

    cls = GoatConfig if extra.get("name") == "nav/goat" else NavConfig
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        cls(**{"name": "nav/pointnav", **extra}).validate()


def test_a_missing_warp_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "warp", None)  # as if warp-lang were not installed
    monkeypatch.delitem(sys.modules, "embodied.render.warp", raising=False)
    with pytest.raises(ConfigError, match=r"task.renderer: warp: .*pip install warp-lang"):
        make_vector_env(NavConfig(name="nav/pointnav", **SMALL, batched=True, sim_device="cpu", renderer="warp"), 1)


def test_bad_use_is_one_line():
    with pytest.raises(ConfigError, match="num_workers=2: task.batched steps every env in this process"):
        make_vector_env(NavConfig(name="nav/pointnav", **SMALL, batched=True, sim_device="cpu"), 2, num_workers=2)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="task.sim_device: cuda requested but no CUDA device"):
            make_vector_env(NavConfig(name="nav/pointnav", **SMALL, batched=True, sim_device="cuda"), 2)
    env = make_vector_env(NavConfig(name="nav/pointnav", **SMALL, batched=True, sim_device="cpu"), 2)
    try:
        with pytest.raises(ValueError, match="actions must be 2 ints in 0..5"):
            env.step(np.array([1, 9]))
        with pytest.raises(ValueError, match="actions must be 2 ints"):
            env.step(np.array([1, 1, 1]))
    finally:
        env.close()


def test_ppo_trains_on_the_batched_env(tmp_path):
    """`embodied train task.batched=true`: PPO reads the tensor observations and finishes its updates."""
    from embodied.cli import main

    main(["train", "task=nav/pointnav", "task.batched=true", "task.sim_device=cpu", "task.width=24",
          "task.height=24", "num_envs=2", "total_steps=256", f"run_dir={tmp_path / 'run'}", "trainer.rollout_steps=64"])
    import json

    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines and max(x["step"] for x in lines) >= 256


def test_ppo_takes_a_batched_envs_tensors_as_they_are():
    """On CUDA the batched env's observations are device tensors, which cannot pass through numpy; a
    tensor on the meta device (no data, no host copy) stands in for one here."""
    from embodied.train.ppo import obs_to_tensors

    meta = torch.device("meta")
    out = obs_to_tensors({"rgb": torch.empty((2, 4, 4, 3), dtype=torch.uint8, device=meta),
                          "pointgoal": np.zeros((2, 3), np.float32)}, meta)
    assert {k: (v.device.type, v.dtype) for k, v in out.items()} == {"rgb": ("meta", torch.uint8),
                                                                      "pointgoal": ("meta", torch.float32)}


def test_bc_with_dagger_on_the_batched_env_equals_the_per_env_run(tmp_path):
    """trainer=bc records the oracle's episodes and asks `oracle_action` for DAgger through the batched
    env: the same episodes, losses and learner measures as the per-env envs give."""
    import json

    from embodied.cli import main

    runs = {}
    for batched in ("true", "false"):
        run = tmp_path / f"batched_{batched}"
        main(["train", "task=nav/pointnav", f"task.batched={batched}", "task.sim_device=cpu", "task.width=24",
              "task.height=24", "task.max_steps=40", "trainer=bc", "trainer.record_episodes=3", "trainer.epochs=1",
              "trainer.dagger_rounds=1", "trainer.dagger_steps=48", "num_envs=3", "num_workers=0", "quiet=true",
              f"run_dir={run}"])
        runs[batched] = [{k: v for k, v in json.loads(x).items() if "time" not in k and "per_s" not in k}
                         for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert runs["true"] == runs["false"]
    assert runs["true"][-1]["dagger_episodes"] > 0 and runs["true"][-1]["dataset_episodes"] > 3


@pytest.mark.parametrize("renderer", ["embree", "warp"])
def test_procedural_scenes_are_forgotten_once_no_env_uses_them(renderer):
    """A new apartment every episode: the renderer keeps at most num_envs + scene_cache scenes, and the
    images after scenes were dropped (slots renumbered) still equal the per-env envs'."""
    extra = dict(scenes="procedural", n_rooms=2, scene_cache=1, max_steps=6)
    small = {**SMALL, **extra}
    ref = make_vector_env(NavConfig(name="nav/pointnav", **small), 2, seed=2, num_workers=0)
    bat = make_vector_env(NavConfig(name="nav/pointnav", **small, batched=True, sim_device="cpu", renderer=renderer),
                          2, seed=2)
    scenes = set()
    try:
        for t in range(30):
            action = np.array([1, 2]) if t % 4 else np.array([0, 1])
            o1, o2 = ref.step(action)[0], bat.step(action)[0]
            assert len(bat.renderer.keys) <= 2 + 1
            scenes |= set(bat.scene_keys)
            same = (o1["semantic"] == o2["semantic"].numpy()).mean()
            assert same == 1.0 if renderer == "embree" else same > 0.99, t
    finally:
        ref.close(), bat.close()
    assert len(scenes) >= 8  # many apartments went through the renderer


def test_bench_sim_batched_rows_beside_the_worker_baseline(tmp_path):
    from embodied.envs.bench import BATCHED_CPU, WORKERS_8, bench_sim

    r = bench_sim(out=tmp_path / "b.json", quick=True, batched=True)
    rows = set(r["configs"])
    assert {BATCHED_CPU, WORKERS_8} <= rows and all("batched" in k or k == WORKERS_8 for k in rows)
    ratio = r["ratios"]["batched / 2 workers (64x64, 8 envs)"]
    assert ratio == r["configs"][BATCHED_CPU]["steps_per_s"] / r["configs"][WORKERS_8]["steps_per_s"] > 0
    # The ray casting alone is measured beside the batched env (its ceiling), not for the worker env.
    assert r["configs"][BATCHED_CPU]["render_only_steps_per_s"] > 0
    assert "render_only_steps_per_s" not in r["configs"][WORKERS_8]
