"""The household in a procedural apartment (`task.world=apartment`, embodied/tasks/household/apartment.py):
staging, reach, the oracle, the same symbolic rules, the Optimus agent through its navigation controller."""
from __future__ import annotations

import math

import numpy as np
import pytest

from embodied.agents.household import run_episode
from embodied.agents.household_nav import NavigationController, household_agent
from embodied.config import ConfigError
from embodied.eval.household import learn, learning_envs, open_memory
from embodied.tasks import make_env
from embodied.tasks.household import ACTION_TABLE, STATIONS
from embodied.tasks.household.apartment import APARTMENT_ACTION_ID, APARTMENT_ACTION_TABLE, MOVES, stage_household


def apartment_env(tier: int = 3, **options):
    return make_env({"name": f"household/tier{tier}", "world": "apartment", **options})


def test_same_world_seed_same_apartment_and_same_episode():
    env = apartment_env(3)
    apt = env.apartment
    json, views = apt.scene.spec.to_json(), [s.viewpoint.copy() for s in apt.containers]
    stage_household.cache_clear()  # stage it again from scratch
    other = apartment_env(3)
    assert other.apartment is not apt and other.apartment.scene.spec.to_json() == json
    assert all(np.array_equal(a, s.viewpoint) for a, s in zip(views, other.apartment.containers))
    for e in (env, other):
        e.obs = [e.reset(seed=5)[0]]
        for _ in range(40):
            e.obs.append(e.step(e.oracle_action())[0])
    for a, b in zip(env.obs, other.obs):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(env.obs[0]["rgb"], env.reset(seed=6)[0]["rgb"])  # another episode starts elsewhere


def test_observations_actions_and_budget():
    env = apartment_env(3)
    obs, info = env.reset(seed=0)
    assert obs["rgb"].shape == (64, 64, 3) and obs["depth"].shape == (64, 64, 1) and obs["semantic"].shape == (64, 64)
    assert np.allclose(obs["pose"], 0) and env.observation_space.contains(obs)
    names = env.action_names
    assert tuple(names[:len(MOVES)]) == MOVES and not any(n.startswith("goto") for n in names)
    assert len(names) == len(MOVES) + sum(v != "goto" for v, _ in ACTION_TABLE)
    # The budget: the tier's symbolic budget x the mean steps of a room-to-room walk.
    assert env.max_episode_steps == env.level.max_steps * env.apartment.walk_steps and env.apartment.walk_steps > 5
    assert obs["steps_left"][0] == env.max_episode_steps
    # What is observed of containers and stations is only what is within reach and in view.
    reach = [env.sees(s) for s in env.apartment.containers]
    assert list(obs["containers"] > 0) == reach
    assert list(obs["stations"]) == [int(env.sees(env.apartment.stations[s])) for s in STATIONS]


def test_every_container_and_station_has_a_reachable_viewpoint():
    env = apartment_env(1)
    apt, grid = env.apartment, env.scene.grid
    start = grid.distance_field_to_points(apt.room_points[0])
    spots = apt.containers + list(apt.stations.values())
    assert len(spots) == 24 and len({s.item for s in spots}) == 24
    for spot in spots:
        x, y = spot.viewpoint
        assert grid.is_navigable(spot.viewpoint) and math.isfinite(start.at(spot.viewpoint))
        assert apt.room_at(spot.viewpoint) == spot.room
        assert env.scene.spec.item(spot.item).category == spot.category
        d = spot.points - spot.viewpoint
        near = d[np.argmin(np.hypot(*d.T))]
        facing = math.atan2(near[1], near[0])
        # Within reach facing it, and within half a turn of facing it; never from behind.
        for turn in (-15, 0, 15):
            assert apt.reaches(spot, x, y, facing + math.radians(turn), env.cfg.reach, env.half_fov)
        assert not apt.reaches(spot, x, y, facing + math.pi, env.cfg.reach, env.half_fov)


def test_interactions_work_only_within_reach_and_in_view():
    env = apartment_env(3, move_prob=0.0, stuck_prob=0.0)
    env.reset(seed=1)
    # Far from everything at the start? Then opening any container says so.
    far = [c for c in range(18) if not env.sees(env.apartment.containers[c])]
    _, _, _, _, info = env.step(APARTMENT_ACTION_ID["open", far[0]])
    assert info["feedback"] == "nothing in reach" and "not within reach" in info["message"]
    # Walk with the oracle until it opens a container; turned away (180 degrees) the same open fails.
    for _ in range(600):
        action = env.oracle_action()
        verb, target = APARTMENT_ACTION_TABLE[action]
        if verb == "open":
            break
        env.step(action)
    assert verb == "open" and env.sees(env.apartment.containers[target])
    turn = int(round(180 / env.cfg.turn_angle))
    for _ in range(turn):
        env.step(APARTMENT_ACTION_ID["turn_left", -1])
    _, _, _, _, info = env.step(action)
    assert info["feedback"] == "nothing in reach"
    for _ in range(turn):
        env.step(APARTMENT_ACTION_ID["turn_right", -1])
    _, _, _, _, info = env.step(action)
    assert info["feedback"] in ("ok", "locked") and info["feedback"] != "nothing in reach"
    # A make with no station within reach.
    if not any(env.sees(s) for s in env.apartment.stations.values()):
        _, _, _, _, info = env.step(APARTMENT_ACTION_ID["make", 30])
        assert info["feedback"] == "nothing in reach" and info["message"] == "no station within reach"


@pytest.mark.parametrize("tier", [1, 2, 3, 4, 5])
def test_oracle_solves_pinned_tasks_within_budget(tier):
    """Pinned tasks of world 0, with every perturbation on in one of them; deterministic. Seed 8 walks
    through a tight spot where the path follower alone turned left and right for ever."""
    for seed, probs in ((0, {}), (1, {}), (2, {"move_prob": 1.0, "stuck_prob": 1.0}), (8, {})):
        env = apartment_env(tier, sensors=[], **probs)  # the oracle reads no pixels: rendering off for speed
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.oracle_action())
            done = terminated or truncated
        assert info["success"] == 1.0 and terminated and info["steps"] < env.max_episode_steps / 2, (tier, seed, info)


@pytest.mark.parametrize("world_seed", [0, 1])
def test_the_symbolic_rules_are_the_same_in_both_worlds(world_seed):
    sym = make_env({"name": "household/tier2", "world_seed": world_seed})
    apt = apartment_env(2, world_seed=world_seed, sensors=[])
    assert apt.world.recipes == sym.world.recipes and apt.world.homes == sym.world.homes
    assert apt.world.containers == sym.world.containers and apt.world.station_room == sym.world.station_room
    plan = apt.floor_plan()
    assert plan["containers"] == sym.floor_plan()["containers"] and plan["stations"] == sym.floor_plan()["stations"]
    for seed in range(4):
        o1, i1 = sym.reset(seed=seed)
        o2, i2 = apt.reset(seed=seed)
        assert (i1["goal"], i1["context"], i1["subgoals_total"]) == (i2["goal"], i2["context"], i2["subgoals_total"])
        assert o1["room"][0] == o2["room"][0] and sym.perturbations == apt.perturbations
        assert apt.apartment.room_at(apt.agent.pose[:2]) == int(o2["room"][0])  # starts in the drawn room


def test_agent_with_learned_memory_succeeds_and_the_reactive_agent_on_fewer(tmp_path):
    base = {"world": "apartment", "sensors": ["depth"]}  # the agent maps from depth; no other image
    envs = learning_envs(base)
    plan = {k: v for k, v in envs["household/tier1"].floor_plan().items() if k != "grid"}  # it walks on its own map
    memory = open_memory("full", tmp_path, "0", fresh=True)
    agent = household_agent("full", memory, plan)
    assert isinstance(agent, NavigationController)
    learn(agent, envs, {"tasks_per_epoch": 10, "teacher_every": 5})
    assert memory.graph.recipes and sum(memory.store.count_cases("0").values()) > 0
    memory.close()
    memory = open_memory("full", tmp_path, "0", fresh=False, readonly=True)
    env = make_env({**base, "name": "household/tier2", "max_steps": 800})
    full = [run_episode(env, household_agent("full", memory, plan), s)["success"] for s in range(4)]
    reactive = [run_episode(env, household_agent("reactive", None, plan), s)["success"] for s in range(4)]
    assert sum(full) >= 3 and sum(reactive) < sum(full), (full, reactive)
    memory.close()


def test_cases_learned_in_the_apartment_keep_the_key_frames_of_their_attempt(tmp_path):
    envs = learning_envs({"world": "apartment", "sensors": ["rgb", "depth"]})
    plan = envs["household/tier1"].floor_plan()
    memory = open_memory("full", tmp_path, "0", fresh=True)
    agent = household_agent("full", memory, plan)
    learn(agent, envs, {"tasks_per_epoch": 3, "teacher_every": 3})
    cases = memory.store.db.execute("SELECT id, kind FROM cases").fetchall()
    subgoal_cases = [(i, memory.pool.frames(i)) for i, kind in cases if kind != "task"]
    assert subgoal_cases and all(memory.pool.frames(i) == [] for i, kind in cases if kind == "task")
    for _, frames in subgoal_cases:
        assert 1 <= len(frames) <= 4 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    # Walking to a container shows more than one view: most attempts keep several frames, all different.
    assert np.mean([len(f) > 1 for _, f in subgoal_cases]) > 0.5
    assert all(len({x.tobytes() for x in f}) == len(f) for _, f in subgoal_cases)
    memory.close()
    # The symbolic world has no camera: its cases keep none.
    symbolic = open_memory("full", tmp_path / "symbolic", "0", fresh=True)
    learn(household_agent("full", symbolic, make_env({"name": "household/tier1"}).floor_plan()),
          learning_envs({}), {"tasks_per_epoch": 3, "teacher_every": 3})
    assert symbolic.store.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
    assert symbolic.store.db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] > 0
    symbolic.close()


@pytest.mark.parametrize("cfg, message", [
    ({"world": "moon"}, "task.world: 'moon'; allowed: symbolic, apartment"),
    ({"world": "apartment", "reach": 0.5}, "task.reach: 0.5; allowed: 1.2..3.0"),
    ({"world": "apartment", "turn_angle": 120.0}, "task.turn_angle: 120.0; allowed: (0, hfov=90]"),
    ({"world": "apartment", "sensors": ["sound"]}, "task.sensors: unknown sensor(s) ['sound']"),
    ({"world": "apartment", "n_rooms": 4}, "task.n_rooms: not a key of household tasks")])
def test_bad_config_is_one_line(cfg, message):
    with pytest.raises(ConfigError) as err:
        make_env({"name": "household/tier1", **cfg})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_recording_shows_the_camera_and_the_agents_panels(tmp_path):
    """`embodied record task=household/... task.world=apartment agent=optimus`: the nav recorder's camera
    views and map with the household agent's plan and graph, the key frames of the cases it retrieves,
    and the household's action names."""
    from embodied.cli import main
    from embodied.memory.hybrid import MemoryStore
    from embodied.viewer.rrd import Recording

    out = tmp_path / "rec"
    main(["record", "task=household/tier1", "task.world=apartment", "agent=optimus", "agent.epochs=1",
          "agent.tasks_per_epoch=4", "episodes=1", f"out={out}", "quiet=true"])
    rec = Recording(out / "episode_000.rrd")
    steps = rec.rows("agent/action")
    assert steps > 80 and rec.rows("world/agent/camera/rgb") == steps + 1
    assert all(e in rec for e in ("world/agent/camera/semantic", "map/navigable", "memory/plan", "memory/graph",
                                  "memory/walk_map"))
    # The strip shown is the stored key frames of one of the cases retrieved at that step, side by side.
    store = MemoryStore(out / "memory" / "full.sqlite", readonly=True)
    strips = rec.images("memory/case_frames") if "memory/case_frames" in rec else {}
    assert strips
    framed = [store.case_frames(i) for (i,) in store.db.execute("SELECT id FROM cases").fetchall()]
    stored = [np.concatenate([np.pad(f, ((0, 0), (0, 2), (0, 0)), constant_values=255) for f in frames],
                             axis=1)[:, :-2] for frames in framed if frames]
    assert all(any(s.shape == img.shape and np.array_equal(s, img) for s in stored) for img in strips.values())
    actions = set(t.split(" (")[0] for t in rec.texts("agent/action").values())
    assert actions <= set(make_env({"name": "household/tier1", "world": "apartment", "sensors": []}).action_names)


def test_a_suites_task_options_are_checked_against_its_family(capsys):
    """`embodied eval suite=household task.world=...`: the overrides are household keys, shared by the tiers."""
    from embodied.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "suite=household", "task.world=moon", "agent=optimus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == ["embodied eval: error: task.world: 'moon'; allowed: symbolic, apartment"]


def test_the_agent_in_the_apartment_needs_depth_for_its_map(capsys, tmp_path):
    """The navigation controller walks on a map it builds from depth: without that sensor, one line
    before anything runs (the oracle, which walks the env's own grid, needs none)."""
    from embodied.cli import main

    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "suite=household", "task.world=apartment", "task.sensors=[rgb]", "agent=optimus", f"out={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("embodied eval: error: task.sensors: ['rgb']")
    assert not out.exists()
    with pytest.raises(ValueError, match="maps from depth"):
        env = make_env({"name": "household/tier1", "world": "apartment", "sensors": ["rgb"]})
        household_agent("full", None, env.floor_plan())


def test_the_controller_walks_on_a_map_it_builds_from_depth():
    """The obstacles on the controller's map are where the env's navigable grid (which its floor plan
    does not hold) has none, and its free cells mostly where it has: it mapped them from depth."""
    from embodied.memory.scene import FREE, OCCUPIED
    from embodied.tasks.nav import relative_pose

    env = make_env({"name": "household/tier1", "world": "apartment", "sensors": ["depth"]})
    plan = {k: v for k, v in env.floor_plan().items() if k != "grid"}
    agent = household_agent("reactive", None, plan)
    assert run_episode(env, agent, 3)["steps"] > 50
    truth = env.scene.grid
    mem = agent.map
    start = env.start_pose

    def navigable(cells):  # the env's grid at the agent map's cells (episode-start frame -> world)
        xy = mem.centres_of(cells)
        c, s = np.cos(start[3]), np.sin(start[3])
        world = np.stack([start[0] + c * xy[:, 0] - s * xy[:, 1], start[1] + s * xy[:, 0] + c * xy[:, 1]], -1)
        rc = truth.world_to_grid(world)
        inside = (rc >= 0).all(1) & (rc < truth.shape).all(1)
        return truth.navigable[rc[inside, 0], rc[inside, 1]]

    occupied, free = np.argwhere(mem.grid == OCCUPIED), np.argwhere(mem.grid == FREE)
    assert len(occupied) > 100 and len(free) > 1000
    assert navigable(occupied).mean() < 0.2  # walls and furniture, not floor the env lets it walk on
    assert navigable(free).mean() > 0.5  # the env's grid leaves the agent's radius off each obstacle
    assert relative_pose(start, env.agent.pose)[:2] == pytest.approx(mem.pose[:2], abs=1e-4)
