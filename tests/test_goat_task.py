"""nav/goat: lifelong multi-modal instance navigation (GOAT-Bench style)."""
import numpy as np
import pytest

from embodied.config import ConfigError, compose
from embodied.render import Camera
from embodied.tasks import TASKS, GoatConfig, make_env
from embodied.tasks.goat import MAX_WORDS, MODALITIES, VOCAB, GoatNav, decode, describe, encode
from embodied.world import COLOUR_NAMES, OBJECT_CATEGORIES, colour_name, semantic_classes

SIZE = 48


def goat(**kw):
    base = dict(width=SIZE, height=SIZE, scenes="procedural", n_rooms=4, num_goals=3, sensors=["rgb"],
                min_image_pixels=10)
    base.update(kw)
    return make_env(GoatConfig(**base))


def test_colour_names_are_coarse_hsv_bins():
    assert colour_name((0.9, 0.1, 0.1)) == "red" and colour_name((0.9, 0.1, 0.3)) == "red"  # hue wraps
    assert colour_name((0.9, 0.5, 0.1)) == "orange" and colour_name((0.2, 0.3, 0.8)) == "blue"
    assert colour_name((0.05, 0.05, 0.05)) == "black" and colour_name((0.95, 0.95, 0.93)) == "white"
    assert colour_name((0.3, 0.3, 0.3)) == "gray"
    # Shading scales rgb (hue and saturation stay): a lit and a shaded face get the same name.
    for c in ((0.8, 0.2, 0.6), (0.1, 0.7, 0.3), (0.93, 0.93, 0.91)):
        assert colour_name(c) == colour_name(0.55 * np.asarray(c))
    assert set(COLOUR_NAMES) <= set(VOCAB)
    with pytest.raises(ValueError):
        colour_name((255, 0, 0))


def test_registered_and_composed_through_its_schema():
    from omegaconf import OmegaConf

    assert TASKS["nav/goat"] is GoatNav and GoatNav.config_class is GoatConfig
    node = compose("train", ["task=nav/goat", "task.num_goals=2"]).task
    assert OmegaConf.get_type(node) is GoatConfig
    env = make_env(node)
    c = env.cfg
    assert (type(c), c.scenes, c.n_rooms, c.num_goals, c.max_steps) == (GoatConfig, "procedural", 6, 2, 2 * 300)
    assert c.sensors == ["rgb", "depth", "semantic", "instance"] and c.modalities == list(MODALITIES)
    space = env.observation_space
    assert space["instance"].shape == (128, 128) and space["goal_image"].shape == (128, 128, 3)
    assert space["goal_text"].shape == (MAX_WORDS,) and space["goal_semantic"].dtype == np.int32
    assert make_env({"name": "nav/goat", "max_steps": 7}).cfg.max_steps == 7


@pytest.mark.parametrize("key, value, match", [
    ("num_goals", 11, r"^task.num_goals: 11; allowed: 1..10$"),
    ("num_goals", 0, r"^task.num_goals: 0; allowed: 1..10$"),
    ("modalities", ["smell"],
     r"^task.modalities: \['smell'\]; allowed: a non-empty subset of category, description, image$"),
    ("modalities", [], r"^task.modalities: \[\]; allowed: a non-empty subset"),
    ("steps_per_goal", 0, r"^task.steps_per_goal: 0; allowed: >= 1$"),
    ("min_image_pixels", 0, r"^task.min_image_pixels: 0; allowed: >= 1$"),
    ("sensors", ["sonar"], r"^task.sensors: unknown sensor\(s\) \['sonar'\]; allowed: rgb, depth, semantic, instance$"),
])
def test_bad_values_are_one_line_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        make_env({"name": "nav/goat", key: value})
    with pytest.raises(ConfigError, match=match):
        GoatConfig(**{key: value}).validate()


def test_same_seed_same_goals_images_and_first_observations():
    a, b = goat(modalities=["image", "description"]), goat(modalities=["image", "description"])
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    assert a.scene.key == b.scene.key and a.start_pose.tolist() == b.start_pose.tolist()
    assert [(g.modality, g.instance) for g in a.goals] == [(g.modality, g.instance) for g in b.goals]
    for ga, gb in zip(a.goals, b.goals):
        for k in ("image", "semantic", "text"):
            va, vb = getattr(ga, k), getattr(gb, k)
            assert (va is None and vb is None) or np.array_equal(va, vb), k
    assert set(oa) == set(ob) and all(np.array_equal(oa[k], ob[k]) for k in oa)
    assert a.observation_space.contains(oa)
    oc, _ = a.reset(seed=8)
    assert a.scene.key != b.scene.key and not np.array_equal(oc["rgb"], ob["rgb"])


def test_oracle_reaches_every_goal_and_records_each_with_seen_from_the_views():
    env = goat(modalities=list(MODALITIES), sensors=["instance"])
    modalities = set()
    for seed in (1, 2):
        obs, info = env.reset(seed=seed)
        assert "goal_records" not in info and info["goals_reached"] == 0.0
        seen, seen_at_start = set(), []
        index, done = -1, False
        while not done:
            if int(obs["goal_index"][0]) != index:  # a goal begins: what was seen before this view
                index = int(obs["goal_index"][0])
                seen_at_start.append(set(seen))
            ids, counts = np.unique(obs["instance"], return_counts=True)
            seen |= {int(i) for i, c in zip(ids, counts) if i and c >= 10}
            obs, r, te, tr, info = env.step(env.oracle_action())
            done = te or tr
            if not done:
                assert not te and obs["goal_index"][0] >= index
        assert te and not tr and info["success"] == 1.0 and info["goals_reached"] == 1.0
        records = info["goal_records"]
        assert records == env.goal_records and [r["index"] for r in records] == [0, 1, 2]
        assert len(seen_at_start) == 3 and not records[0]["seen"]
        for rec, goal, before in zip(records, env.goals, seen_at_start):
            assert rec["success"] and 0.0 < rec["spl"] <= 1.0 and rec["steps"] >= 1
            assert rec["modality"] == goal.modality and rec["category"] == OBJECT_CATEGORIES[goal.category]
            assert rec["instance"] == (-1 if goal.modality == "category" else goal.instance)
            assert rec["seen"] == bool(before & set(rec["instances"]))
            modalities.add(rec["modality"])
        assert info["spl"] == pytest.approx(np.mean([r["spl"] for r in records]))
    assert len(modalities) >= 2


def test_a_wrong_stop_fails_the_goal_and_the_next_one_begins():
    env = goat(num_goals=2)
    obs, _ = env.reset(seed=3)
    assert obs["goal_index"][0] == 0 and env.distance_to_goal() >= env.cfg.min_goal_distance
    pose = env.agent.pose.copy()
    obs, r, te, tr, info = env.step("stop")
    assert not te and not tr and obs["goal_index"][0] == 1 and "goal_records" not in info
    assert r == env.cfg.slack_reward  # free by default: no distance is walked
    assert np.array_equal(env.agent.pose, pose)  # the next goal starts where the agent stands
    assert env.goal_records[0]["success"] is False and env.goal_records[0]["spl"] == 0.0
    assert info["goals_reached"] == 0.0 and info["success"] == 0.0
    while not (te or tr):  # the oracle still reaches the second goal
        obs, r, te, tr, info = env.step(env.oracle_action())
    assert te and [rec["success"] for rec in info["goal_records"]] == [False, True]
    assert info["goals_reached"] == 0.5 and info["success"] == 0.0


def test_a_wrong_stop_pays_wrong_stop_reward_and_a_right_one_success_reward():
    env = goat(num_goals=2, wrong_stop_reward=-2.0)
    env.reset(seed=3)
    _, r, *_ = env.step("stop")
    assert r == pytest.approx(env.cfg.slack_reward - 2.0)
    while env.distance_to_goal() > env.goal.tolerance:
        env.step(env.oracle_action())
    _, r, te, _, info = env.step("stop")
    assert te and r == pytest.approx(env.cfg.slack_reward + env.cfg.success_reward)
    assert [rec["success"] for rec in info["goal_records"]] == [False, True]


def test_the_step_budget_exhausts_a_goal():
    env = goat(num_goals=2, steps_per_goal=3)
    assert env.cfg.max_steps == 6
    env.reset(seed=4)
    for i in range(3):
        obs, r, te, tr, info = env.step("turn_left")
    assert obs["goal_index"][0] == 1 and not te and not tr
    assert env.goal_records[0]["steps"] == 3 and not env.goal_records[0]["success"]
    for i in range(3):
        obs, r, te, tr, info = env.step("turn_left")
    assert te and not tr and [rec["steps"] for rec in info["goal_records"]] == [3, 3]


def test_description_names_the_instance_category_colour_and_room():
    env = goat(modalities=["description"], sensors=[])
    for seed in (5, 6):
        obs, _ = env.reset(seed=seed)
        spec = env.scene.spec
        for k, goal in enumerate(env.goals):
            item = spec.item(goal.instance)
            words = decode(goal.text).split()
            room = next(r.type for r in spec.rooms if r.id == item.room)
            assert words[:3] == ["the", colour_name(item.color), item.category] and words[-2:] == ["the", room]
            assert ("on" in words) == (item.receptacle is not None)
            if item.receptacle is not None:
                assert spec.item(item.receptacle).category in words
            assert decode(encode(describe(spec, item))) == describe(spec, item)
        assert decode(obs["goal_text"]) == describe(spec, spec.item(env.goals[0].instance))
        assert obs["goal_category"][0] == -1 and obs["goal_modality"][0] == MODALITIES.index("description")
        assert not obs["goal_image"].any() and not obs["goal_semantic"].any()
    with pytest.raises(ValueError, match="vocabulary"):
        encode("the dax")
    assert encode("").tolist() == [0] * MAX_WORDS


def test_image_goals_show_the_instance_and_category_goals_name_the_category():
    env = goat(modalities=["image", "category"], sensors=[], num_goals=4, image_distance=1.0)
    classes = semantic_classes()
    images = categories = 0
    for seed in (10, 11, 12):
        obs, _ = env.reset(seed=seed)
        for k, goal in enumerate(env.goals):
            assert obs["goal_index"][0] == k
            if goal.modality == "image":
                images += 1
                item = env.scene.spec.item(goal.instance)
                assert (obs["goal_semantic"] == classes.index(item.category)).sum() >= env.cfg.min_image_pixels
                assert obs["goal_image"].any() and obs["goal_category"][0] == -1 and not obs["goal_text"].any()
                d = np.hypot(*(goal.viewpoint[:2] - np.asarray(item.position[:2])))
                assert abs(d - env.cfg.image_distance) <= 0.5 + env.scene.grid.cell
                # The image frames the instance: its pixels are centred (within ~1 degree of tilt rounding).
                cam = Camera(width=env.cfg.width, height=env.cfg.height, hfov_deg=env.cfg.hfov,
                             mount_height=env.cfg.camera_height, tilt_deg=goal.tilt)
                view = env.scene.renderer.render_one(goal.viewpoint, cam, ("rgb", "instance"))
                assert np.array_equal(view["rgb"], obs["goal_image"])  # the recorded pose and tilt took it
                rows, cols = np.nonzero(view["instance"] == item.id)
                assert abs(rows.mean() - (cam.height - 1) / 2) < 3 and abs(cols.mean() - (cam.width - 1) / 2) < 3
            elif goal.modality == "category":
                categories += 1
                assert obs["goal_category"][0] == goal.category and not obs["goal_image"].any()
                assert not obs["goal_text"].any() and not obs["goal_semantic"].any()
            else:  # an image goal without a good enough view falls back to a description
                assert obs["goal_text"].any() and obs["goal_category"][0] == -1
            obs, r, te, tr, info = env.step("stop")  # ends this goal (reached or not): the next begins
            assert te == (k == len(env.goals) - 1)
    assert images >= 2 and categories >= 1


def _through_a_wall(spec, a, b) -> bool:
    """Whether the floor segment a -> b crosses a wall of the SceneSpec away from its doors."""
    for w in spec.walls:
        (x0, y0), (x1, y1) = w.start, w.end
        horizontal = abs(y1 - y0) < 1e-9  # walls are axis-aligned
        c, lo, hi = (y0, min(x0, x1), max(x0, x1)) if horizontal else (x0, min(y0, y1), max(y0, y1))
        pa, pb = (a[1], b[1]) if horizontal else (a[0], b[0])
        if (pa - c) * (pb - c) >= 0:
            continue
        t = (c - pa) / (pb - pa)
        along = (a[0] + t * (b[0] - a[0])) if horizontal else (a[1] + t * (b[1] - a[1]))
        if not lo <= along <= hi:
            continue
        door = any(abs(d.position[1 if horizontal else 0] - c) < 0.2
                   and abs(d.position[0 if horizontal else 1] - along) < 0.5 * d.width + 0.1 for d in spec.doors)
        if not door:
            return True
    return False


def test_a_goals_region_holds_only_view_points_never_the_far_side_of_a_wall():
    """Success needs a stop at a view point of the instance (habitat ObjectNav's rule): a navigable cell
    within success_distance of its footprint from which it is seen. Cells that near but behind a wall
    (the room next door) are left out of the region, the others near it stay."""
    env = goat(n_rooms=6, num_goals=3)
    behind = kept = 0
    for seed in (0, 1):
        env.reset(seed=seed)
        scene, grid, cfg = env.unwrapped.scene, env.unwrapped.scene.grid, env.unwrapped.cfg
        for item in scene.spec.objects():
            near = grid.goal_cells_near_footprints([(item.position[:2], item.size[:2], item.yaw)], cfg.success_distance)
            view = scene.view_cells([item], cfg.success_distance, cfg.camera_height)
            assert not (view & ~near).any()
            for r, c in np.argwhere(near):
                if _through_a_wall(scene.spec, grid.grid_to_world(np.array([r, c])), item.position[:2]):
                    assert not view[r, c], (seed, item.id, r, c)
                    behind += 1
            kept += int(view.sum())
        for goal in env.unwrapped.goals:  # the goals' fields are distances to these regions
            items = [scene.spec.item(i) for i in goal.instances]
            region = scene.view_cells(items, cfg.success_distance, cfg.camera_height)
            assert np.all(goal.field.values[region] <= 1e-6) and np.all(goal.field.values[~region & grid.navigable] > 0)
    assert behind > 50 and kept > 2 * behind
