"""habitat-lab PointNav/ObjectNav episode files: frame conversion, checks, round trip, playing them."""
import gzip
import json
import math

import numpy as np
import pytest

from embodied.config import ConfigError, InputError
from embodied.tasks import NavConfig, make_env
from embodied.tasks.habitat_episodes import (
    check_episodes,
    export_episodes,
    habitat_to_ours,
    ours_to_habitat,
    quaternion_from_yaw,
    read_habitat_episodes,
    summary,
    yaw_from_quaternion,
)
from embodied.tasks.scenes import SceneSource
from embodied.world import OBJECT_CATEGORIES

S = math.sqrt(0.5)
SCENE = "data/scene_datasets/embodied/apt_0003.glb"  # a pinned apartment, found by its stem


def write(path, data):
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    return path


def pointnav_file(tmp_path):
    # apt_0003: rooms 0 ([0, 3] x [0, 3.3]) and 5 ([0, 3] x [3.3, 6.7]); (2, 2) and (1.5, 4) are navigable.
    good = {"episode_id": "a", "scene_id": SCENE, "start_position": [2.0, 0.0, -2.0],
            "start_rotation": [0.0, 0.0, 0.0, 1.0],  # identity: facing habitat -z = our +y, yaw pi/2
            "goals": [{"position": [1.5, 0.0, -4.0], "radius": 0.2}], "info": {"geodesic_distance": 2.2}}
    return write(tmp_path / "pointnav.json.gz", {"episodes": [
        good,
        {**good, "episode_id": "off", "start_position": [20.0, 0.0, -20.0]},
        {**good, "episode_id": "far", "info": {"geodesic_distance": 0.5}},
        {**good, "episode_id": "high", "start_position": [2.0, 2.0, -2.0]},
        {**good, "episode_id": "goal_off", "goals": [{"position": [1.0, 0.0, -1.0], "radius": 0.2}]},
        {**good, "episode_id": "mp3d", "scene_id": "data/scene_datasets/mp3d/17DRP5sb8fy/17DRP5sb8fy.glb"},
    ]})


def objectnav_file(tmp_path):
    # apt_0003's mug (item 21) stands at (2.68, 2.30) in room 0; view points at (2.2, 2.3) and (2.3, 2.0),
    # which is off our grid (ignored)
    vp = lambda x, y: {"agent_state": {"position": [x, 0.0, -y], "rotation": [0, 0, 0, 1]}, "iou": 0.5}  # noqa: E731
    return write(tmp_path / "objectnav.json.gz", {
        "episodes": [{"episode_id": "0", "scene_id": SCENE, "object_category": "mug", "goals": [],
                      "start_position": [1.0, 0.0, -2.0], "start_rotation": [0.0, S, 0.0, S],  # 90 deg about y
                      "info": {"geodesic_distance": 1.2}}],
        "goals_by_category": {"apt_0003.glb_mug": [{"object_id": "21", "object_category": "mug",
                                                    "position": [2.68, 0.8, -2.3], "view_points": [vp(2.2, 2.3), vp(2.3, 2.0)]}]},
        "category_to_task_category_id": {"mug": 0}, "category_to_scene_annotation_category_id": {"mug": 1},
    })


def scenes():
    return SceneSource("train", None, 0.18, 1.5, cache_size=4)


def test_frame_conversion_by_hand():
    assert np.allclose(habitat_to_ours([1.0, 0.5, -2.0]), [1.0, 2.0, 0.5])  # y up -> z up, -z -> +y
    assert np.allclose(ours_to_habitat([1.0, 2.0, 0.5]), [1.0, 0.5, -2.0])
    assert np.allclose(habitat_to_ours([1.0, 1.5, -2.0], ground_shift=1.0), [1.0, 2.0, 0.5])
    # identity faces habitat -z, our +y; 90 deg about +y turns -z to -x (our yaw pi); -90 deg to +x (0)
    assert yaw_from_quaternion([0, 0, 0, 1]) == pytest.approx(math.pi / 2)
    assert abs(yaw_from_quaternion([0, S, 0, S])) == pytest.approx(math.pi)
    assert yaw_from_quaternion([0, -S, 0, S]) == pytest.approx(0.0, abs=1e-9)
    assert yaw_from_quaternion([0, 2.0, 0, 0]) == pytest.approx(-math.pi / 2)  # 180 deg, unnormalised
    for yaw in np.linspace(-3.1, 3.1, 9):
        assert yaw_from_quaternion(quaternion_from_yaw(yaw)) == pytest.approx(yaw)
    with pytest.raises(ValueError, match="straight up or down"):
        yaw_from_quaternion([S, 0, 0, S])  # 90 deg about x: looking up, no heading


def test_pointnav_file_read_against_a_pinned_apartment_with_reasons(tmp_path):
    data = read_habitat_episodes(pointnav_file(tmp_path))
    assert data.kind == "pointnav" and [e.scene_name for e in data.episodes][:2] == ["apt_0003"] * 2
    checks = check_episodes(data, scenes())
    good = checks[0]
    assert good.navigable, good.problems
    assert np.allclose(good.start, [2.0, 2.0, 0.0]) and good.episode.yaw == pytest.approx(math.pi / 2)
    assert np.allclose(good.episode.goals()[0].position, [1.5, 4.0, 0.0])
    assert math.hypot(0.5, 2.0) <= good.geodesic < math.hypot(0.5, 2.0) * 1.1  # through the door between the rooms
    problems = {c.episode.episode_id: [p.split(":")[0] for p in c.problems] for c in checks}
    assert problems == {"a": [], "off": ["start_off_grid"], "far": ["geodesic"], "high": ["start_height"],
                        "goal_off": ["goal_off_grid"], "mp3d": ["scene"]}
    assert "not navigable here (nearest navigable cell" in checks[1].problems[0]
    assert summary(checks) == {"episodes": 6, "navigable": 1, "not_navigable": 5, "problems": {
        "scene": 1, "start_off_grid": 1, "start_height": 1, "goal_off_grid": 1, "geodesic": 1}}


def test_objectnav_file_goals_come_from_goals_by_category(tmp_path):
    data = read_habitat_episodes(objectnav_file(tmp_path))
    assert data.kind == "objectnav" and data.category_to_task_category_id == {"mug": 0}
    ep = data.episodes[0]
    assert ep.object_category == "mug" and abs(ep.yaw) == pytest.approx(math.pi)
    goal = ep.goals()[0]
    assert np.allclose(goal.position, [2.68, 2.3, 0.8]) and np.allclose(goal.view_points[:, :2], [[2.2, 2.3], [2.3, 2.0]])
    (check,) = check_episodes(data, scenes())
    assert check.navigable, check.problems
    # to the cells within 0.1 m of the one navigable view point (1.27 m from the start to its centre)
    assert 1.27 - 0.15 <= check.geodesic <= 1.272


def test_corrupt_or_foreign_files_are_one_line_input_errors(tmp_path):
    good = pointnav_file(tmp_path).read_bytes()
    cases = {"truncated.json.gz": good[: len(good) // 2], "junk.json.gz": b"\x1f\x8b\x08not gzip",
             "list.json.gz": gzip.compress(b"[1, 2]"),
             "norot.json.gz": gzip.compress(json.dumps({"episodes": [{"scene_id": "x", "start_position": [0, 0, 0]}]}).encode()),
             "nan.json.gz": gzip.compress(json.dumps({"episodes": [{"scene_id": "x", "start_position": [0, "a", 0],
                                                                     "start_rotation": [0, 0, 0, 1]}]}).encode())}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(InputError) as e:
            read_habitat_episodes(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(InputError, match="no such episode file"):
        read_habitat_episodes(tmp_path / "missing.json.gz")
    with pytest.raises(InputError, match="missing.json.gz: no such episode file"):
        make_env(NavConfig(name="nav/pointnav", sensors=[], episodes_file=str(tmp_path / "missing.json.gz")))


def test_episodes_file_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="^task.episodes_file: set for nav/multigoal"):
        NavConfig(name="nav/multigoal", episodes_file="x.json.gz").validate()
    with pytest.raises(ConfigError, match="^task.episodes_file: .*goal_pool=0"):
        NavConfig(name="nav/pointnav", episodes_file="x.json.gz", goal_pool=4).validate()
    with pytest.raises(InputError, match="a PointNav episode file; task nav/objectnav plays ObjectNav files"):
        make_env(NavConfig(name="nav/objectnav", sensors=[], episodes_file=str(pointnav_file(tmp_path))))


def test_env_reset_from_a_file_starts_at_its_episode_and_reaches_its_goal(tmp_path):
    with pytest.warns(UserWarning, match="5 of 6 episodes are not navigable here and are skipped"):
        env = make_env(NavConfig(name="nav/pointnav", sensors=[], episodes_file=str(pointnav_file(tmp_path))))
    for seed in (0, 7):  # one navigable episode: every seed plays it
        obs, info = env.reset(seed=seed)
        assert env.episode_id == "a" and info["scene"] == "apt_0003"
        assert np.allclose(env.agent.pose, [2.0, 2.0, 0.0, math.pi / 2])
        # the goal 0.5 m along -x and 2 m along +y, the agent facing +y: bearing atan2(0.5, 2) to the left
        phi = math.atan2(0.5, 2.0)
        assert np.allclose(obs["pointgoal"], [math.hypot(0.5, 2.0), math.cos(phi), math.sin(phi)], atol=1e-5)
    assert info["distance_to_goal"] == pytest.approx(env.leg_start_distance) and 2.06 <= info["distance_to_goal"] < 2.3
    done = False
    while not done:
        obs, _, te, tr, info = env.step(env.oracle_action())
        done = te or tr
    assert info["success"] == 1.0
    env = make_env(NavConfig(name="nav/objectnav", sensors=[], episodes_file=str(objectnav_file(tmp_path))))
    obs, info = env.reset(seed=0)
    assert obs["objectgoal"][0] == OBJECT_CATEGORIES.index("mug")
    assert np.allclose(env.agent.pose[:2], [1.0, 2.0]) and abs(env.agent.pose[3]) == pytest.approx(math.pi)


@pytest.mark.parametrize("name", ["nav/pointnav", "nav/objectnav"])
def test_round_trip_our_episodes_through_a_habitat_file(tmp_path, name):
    cfg = dict(name=name, scenes="test", sensors=[])
    path = export_episodes(cfg, range(3), tmp_path / "ours.json.gz")
    raw = json.loads(gzip.decompress(path.read_bytes()))
    assert raw["episodes"][0]["scene_id"].startswith("apartments/apt_00")
    data = read_habitat_episodes(path)
    assert data.kind == name.split("/")[1]
    checks = check_episodes(data, scenes())
    assert summary(checks)["navigable"] == 3
    ref = make_env(cfg)
    played = make_env({**cfg, "episodes_file": str(path)})
    for seed, check in enumerate(checks):
        ref.reset(seed=seed)
        played.reset(seed=seed)
        assert check.scene.key == ref.scene.key == played.scene.key
        assert np.allclose(check.start[:2], ref.agent.pose[:2], atol=1e-3)
        assert check.episode.yaw == pytest.approx(ref.agent.yaw, abs=1e-3)
        assert np.allclose(played.agent.pose, ref.agent.pose, atol=1e-3)
        d = ref.leg_start_distance
        assert check.episode.geodesic_distance == pytest.approx(d, abs=1e-3)
        if name == "nav/pointnav":
            assert np.allclose(check.episode.goals()[0].position[:2], ref.goal.point, atol=1e-3)
            assert check.geodesic == pytest.approx(d, abs=2e-3)
        else:  # the view points' region covers the objects' (and reaches up to 0.1 m beyond it)
            assert played.goal.category == ref.goal.category
            assert d - 0.15 <= check.geodesic <= d + 1e-6
        assert played.leg_start_distance == pytest.approx(check.geodesic, abs=1e-6)


def test_a_users_y_up_mesh_converts_with_its_ground_shift(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    floor = trimesh.creation.box(extents=(4.0, 0.1, 4.0))  # y-up GLB: a floor slab whose top is at y = 1.0
    floor.apply_translation((2.0, 0.95, -2.0))
    mesh = tmp_path / "my_scan.glb"
    mesh.write_bytes(trimesh.Scene(floor).export(file_type="glb"))
    ep = {"scene_id": "scans/my_scan.glb", "start_rotation": [0, 0, 0, 1],
          "goals": [{"position": [3.0, 1.0, -3.0], "radius": 0.2}]}
    path = write(tmp_path / "mine.json.gz", {"episodes": [
        {**ep, "episode_id": "on_floor", "start_position": [1.0, 1.0, -1.0], "info": {"geodesic_distance": 2.83}},
        {**ep, "episode_id": "in_the_air", "start_position": [1.0, 3.0, -1.0]}]})
    src = SceneSource(str(mesh), None, 0.18, 1.5, cache_size=2)
    checks = check_episodes(read_habitat_episodes(path), src)
    assert src.named("my_scan").geometry.ground_shift == pytest.approx(0.9)
    assert checks[0].navigable, checks[0].problems
    assert np.allclose(checks[0].start, [1.0, 1.0, 0.1]) and checks[0].geodesic == pytest.approx(math.sqrt(8), abs=0.1)
    assert [p.split(":")[0] for p in checks[1].problems] == ["start_height"]
