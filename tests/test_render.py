"""RaycastRenderer on hand-built scenes (trimesh boxes), independent of the world generator."""
import math

import numpy as np
import pytest
import trimesh

from embodied.render.raycast import Camera, RaycastRenderer
from embodied.world.geometry import MeshPart, SceneGeometry

CLASSES = ["void", "floor", "wall", "ceiling", "door_frame", "mesh", "red_thing", "blue_thing", "ball"]
RED, BLUE, BALL = 6, 7, 8


def box(name, size, center, color=(0.5, 0.5, 0.5), semantic=2, instance=0, movable=False, vertex_colors=None):
    mesh = trimesh.creation.box(size).apply_translation(center)
    return MeshPart(
        name=name,
        vertices=np.asarray(mesh.vertices, np.float32),
        faces=np.asarray(mesh.faces, np.int32),
        color=color,
        semantic=semantic,
        instance=instance,
        movable=movable,
        vertex_colors=None if vertex_colors is None else np.broadcast_to(vertex_colors, mesh.vertices.shape).copy(),
    )


def floor():
    return box("floor", (40, 40, 0.1), (0, 0, -0.05), (0.6, 0.5, 0.4), semantic=1)


def columns_of(mask):
    return np.nonzero(mask.any(0))[0]


def rows_of(mask):
    return np.nonzero(mask.any(1))[0]


CAM = Camera(width=64, height=48, hfov_deg=90.0, mount_height=1.25)


def test_depth_of_fronto_parallel_wall_is_constant_z_depth():
    wall = box("wall", (0.2, 40, 40), (3.1, 0, 0), semantic=2)  # near face at x = 3
    r = RaycastRenderer(SceneGeometry([wall], CLASSES))
    depth = r.render_one((0, 0, 0, 0), CAM)["depth"]
    assert depth.shape == (CAM.height, CAM.width) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, 3.0, atol=1e-4)  # z-depth: same in every pixel, corners too
    # clipped at max_depth
    far = RaycastRenderer(SceneGeometry([wall], CLASSES), max_depth=2.0).render_one((0, 0, 0, 0), CAM)["depth"]
    np.testing.assert_allclose(far, 2.0)
    # moving the agent back 1.5 m adds 1.5 m
    back = r.render_one((-1.5, 0, 0, 0), CAM)["depth"]
    np.testing.assert_allclose(back, 4.5, atol=1e-4)


def test_floor_depth_follows_pinhole_geometry_and_miss_is_zero():
    r = RaycastRenderer(SceneGeometry([floor()], CLASSES), max_depth=100.0)
    out = r.render_one((0, 0, 0, 0), CAM)
    f = CAM.focal_px
    for row in range(CAM.height // 2 + 2, CAM.height):
        below = (row + 0.5 - CAM.height / 2) / f  # tangent of the angle below the optical axis
        np.testing.assert_allclose(out["depth"][row], CAM.mount_height / below, rtol=1e-4)
        assert np.all(out["semantic"][row] == 1)
    # the upper half sees nothing: depth miss_depth (0), class 0, sky colour
    top = slice(0, CAM.height // 2)
    assert np.all(out["depth"][top] == 0) and np.all(out["semantic"][top] == 0)
    assert np.all(out["instance"] == 0)
    sky = np.round(255 * np.asarray(r.sky_color)).astype(np.uint8)
    assert np.all(out["rgb"][top] == sky)


def two_boxes():
    red = box("red", (0.5, 1.0, 1.0), (3, 1.0, 1.25), (0.9, 0.1, 0.1), semantic=RED, instance=11)
    blue = box("blue", (0.5, 1.0, 1.0), (3, -1.0, 1.25), (0.1, 0.1, 0.9), semantic=BLUE, instance=12)
    return SceneGeometry([floor(), red, blue], CLASSES)


def test_semantic_and_instance_ids_match_the_part_hit_and_left_is_plus_y():
    out = RaycastRenderer(two_boxes()).render_one((0, 0, 0, 0), CAM)
    sem, inst = out["semantic"], out["instance"]
    assert sem.dtype == np.int32 and inst.dtype == np.int32
    red, blue = inst == 11, inst == 12
    assert red.sum() > 50 and blue.sum() > 50
    assert np.all(sem[red] == RED) and np.all(sem[blue] == BLUE)
    assert np.all((sem == RED) == red) and np.all((sem == BLUE) == blue)
    # red sits at +y (agent's left): left half of the image; blue on the right half
    assert columns_of(red).max() < CAM.width // 2 <= columns_of(blue).min()
    centre_row = CAM.height // 2
    # the box centres' projections (near face at x = 2.75, y = +-1): column = W/2 - f*y/x - 0.5
    col = lambda y: int(round(CAM.width / 2 - CAM.focal_px * y / 2.75 - 0.5))
    assert inst[centre_row, col(1.0)] == 11 and inst[centre_row, col(-1.0)] == 12
    assert inst[centre_row, CAM.width // 2] == 0  # the gap between them


def test_high_object_is_in_top_rows_and_tilt_up_moves_it_down():
    high = box("lamp", (0.3, 0.3, 0.3), (3, 0, 2.6), semantic=RED, instance=5)
    r = RaycastRenderer(SceneGeometry([floor(), high], CLASSES))
    level = r.render_one((0, 0, 0, 0), CAM)["instance"] == 5
    assert level.any() and rows_of(level).max() < CAM.height // 2
    tilted = r.render_one((0, 0, 0, 0), Camera(64, 48, 90.0, 1.25, tilt_deg=20.0))["instance"] == 5
    assert tilted.any() and rows_of(tilted).mean() > rows_of(level).mean() + 5
    # raising the floor under the agent (z_floor) also lowers it in the image
    raised = r.render_one((0, 0, 1.0, 0), CAM)["instance"] == 5
    assert rows_of(raised).mean() > rows_of(level).mean() + 5


def test_yaw_turns_the_view_counter_clockwise():
    red_ahead = box("red", (1.0, 0.5, 1.0), (0, 3, 1.25), (0.9, 0.1, 0.1), semantic=RED, instance=11)
    r = RaycastRenderer(SceneGeometry([floor(), red_ahead], CLASSES))
    assert not (r.render_one((0, 0, 0, 0.0), CAM)["instance"] == 11).any()  # +y is 90 deg to the left
    seen = r.render_one((0, 0, 0, math.pi / 2), CAM)["instance"] == 11  # yaw +90 looks along +y
    cols = columns_of(seen)
    assert seen.any() and cols.min() < CAM.width / 2 < cols.max()
    # turning a bit less than 90 deg leaves the object to the left of the centre
    left = columns_of(r.render_one((0, 0, 0, math.radians(70)), CAM)["instance"] == 11)
    assert left.mean() < cols.mean()


def test_lit_face_colour_is_part_colour_times_diffuse_shading():
    color = (0.8, 0.3, 0.1)
    wall = box("wall", (0.2, 40, 40), (3.1, 0, 0), color)
    r = RaycastRenderer(SceneGeometry([wall], CLASSES))
    rgb = r.render_one((0, 0, 0, 0), CAM)["rgb"]
    assert rgb.shape == (CAM.height, CAM.width, 3) and rgb.dtype == np.uint8
    normal = np.array([-1.0, 0, 0])  # the face towards the camera
    shade = r.ambient + (1 - r.ambient) * abs(normal @ r.light_dir)
    expected = 255 * np.asarray(color) * shade
    assert np.all(np.abs(rgb.astype(float) - expected) <= 1.0)
    assert np.all(rgb[..., 0] > rgb[..., 1]) and np.all(rgb[..., 1] > rgb[..., 2])  # hue kept
    # a face with another orientation gets another brightness
    r2 = RaycastRenderer(SceneGeometry([floor()], CLASSES))
    floor_rgb = r2.render_one((0, 0, 0, 0), CAM)["rgb"][-1, 0].astype(float)
    floor_shade = r2.ambient + (1 - r2.ambient) * abs(r2.light_dir[2])
    np.testing.assert_allclose(floor_rgb, 255 * np.array([0.6, 0.5, 0.4]) * floor_shade, atol=1.0)


def test_vertex_colours_override_part_colour():
    wall = box("scan", (0.2, 40, 40), (3.1, 0, 0), (0.9, 0.0, 0.0), vertex_colors=(0.0, 0.8, 0.0))
    r = RaycastRenderer(SceneGeometry([wall], CLASSES))
    rgb = r.render_one((0, 0, 0, 0), CAM)["rgb"].astype(float)
    shade = r.ambient + (1 - r.ambient) * abs(r.light_dir[0])
    np.testing.assert_allclose(rgb[..., 1], 255 * 0.8 * shade, atol=1.0)
    assert np.all(rgb[..., 0] == 0)


def test_movable_object_moves_hides_and_static_scene_is_not_rebuilt_per_step():
    ball = box("ball", (0.4, 0.4, 0.4), (3, 1.0, 1.25), (0.2, 0.9, 0.2), semantic=BALL, instance=20, movable=True)
    wall = box("wall", (0.2, 40, 40), (6.1, 0, 0), semantic=2)
    geo = SceneGeometry([floor(), wall, ball], CLASSES)
    for bake in (True, False):
        r = RaycastRenderer(geo, bake_movables=bake)
        assert r.movable_instances == [20]
        before = r.render_one((0, 0, 0, 0), CAM)["instance"] == 20
        assert before.any() and columns_of(before).max() < CAM.width // 2  # at +y: left
        shift = np.eye(4)
        shift[1, 3] = -2.0  # to y = -1: the right half
        r.set_object_pose(20, shift)
        after = r.render(np.array([[0, 0, 0, 0]]), [CAM])["instance"][0, 0] == 20
        assert after.any() and columns_of(after).min() >= CAM.width // 2
        builds = r.static_builds
        for step in range(10):  # an object carried along: no static rebuilds per step
            shift[0, 3] = 0.1 * step
            r.set_object_pose(20, shift)
            r.render_one((0, 0, 0, 0), CAM)
        assert r.static_builds == builds == (2 if bake else 1)
        r.set_object_pose(20, None)
        hidden = r.render_one((0, 0, 0, 0), CAM)
        assert not (hidden["instance"] == 20).any() and not (hidden["semantic"] == BALL).any()
        assert r.static_builds == builds
        # behind the wall it is occluded; in front of it, it occludes the wall (nearest hit wins)
        shift = np.eye(4)
        shift[0, 3], shift[1, 3] = 5.0, -1.0
        r.set_object_pose(20, shift)
        assert not (r.render_one((0, 0, 0, 0), CAM)["instance"] == 20).any()
        r.set_object_pose(20, np.eye(4))
        assert np.array_equal(r.render_one((0, 0, 0, 0), CAM)["instance"] == 20, before)
    # dynamic scene rebuilt lazily: two moves, one rebuild at the next render
    builds = r.dynamic_builds
    r.set_object_pose(20, shift)
    r.set_object_pose(20, np.eye(4))
    r.render_one((0, 0, 0, 0), CAM)
    assert r.dynamic_builds == builds + 1
    with pytest.raises(ValueError, match="instance_id"):
        r.set_object_pose(99, np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        r.set_object_pose(20, np.eye(3))


def cluttered_scene(seed=0):
    rng = np.random.default_rng(seed)
    parts = [floor(), box("wall", (0.2, 40, 40), (8.1, 0, 0))]
    for i in range(12):
        size = rng.uniform(0.2, 0.8, 3)
        centre = (*rng.uniform(-4, 4, 2), size[2] / 2 + rng.uniform(0, 1.5))
        parts.append(box(f"b{i}", size, centre, tuple(rng.uniform(0, 1, 3)), BALL, 30 + i, movable=i % 2 == 0))
    parts[2].vertex_colors = rng.uniform(0, 1, parts[2].vertices.shape)  # a movable "scan"
    return SceneGeometry(parts, CLASSES)


def test_moved_objects_render_exactly_like_static_ones():
    # the dynamic scene only casts pixels inside projected bounding rectangles; that culling must
    # be conservative: the same geometry rendered as static or as moved objects is identical
    geo = cluttered_scene()
    baked = RaycastRenderer(geo, bake_movables=True)
    moved = RaycastRenderer(geo, bake_movables=False)
    for iid in moved.movable_instances:
        moved.set_object_pose(iid, np.eye(4) + 0.0)  # forces them out of any static scene
    rng = np.random.default_rng(1)
    poses = np.column_stack([rng.uniform(-4, 4, (40, 2)), rng.uniform(0, 0.5, 40), rng.uniform(-np.pi, np.pi, 40)])
    # plus poses right beside moved objects, where a bounding sphere reaches behind the camera
    near = [p.vertices.mean(0) for p in geo.parts if p.movable][:4]
    poses = np.vstack([poses, [(c[0] - 0.3, c[1], max(c[2] - 1.0, 0.0), 0.2 * i) for i, c in enumerate(near)]])
    cams = [Camera(40, 30, 100.0, 1.0, -20.0, "low"), Camera(40, 30, 60.0, 1.5, 25.0, "high")]
    a, b = baked.render(poses, cams), moved.render(poses, cams)
    assert moved._dynamic is not None and baked._dynamic is None
    assert (a["instance"] >= 30).sum() > 1000
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_of_poses_and_cameras_equals_single_renders():
    geo = cluttered_scene(seed=3)
    r = RaycastRenderer(geo, bake_movables=False)
    r.set_object_pose(30, None)
    tf = np.eye(4)
    tf[:3, 3] = (0.5, -0.3, 0.2)
    r.set_object_pose(32, tf)
    rng = np.random.default_rng(2)
    poses = np.column_stack([rng.uniform(-3, 3, (5, 2)), np.zeros(5), rng.uniform(-np.pi, np.pi, 5)])
    cams = [Camera(32, 24, 90.0, 1.25, 0.0, "head"), Camera(32, 24, 70.0, 0.5, -30.0, "chest")]
    batch = r.render(poses, cams)
    assert batch["rgb"].shape == (5, 2, 24, 32, 3) and batch["depth"].shape == (5, 2, 24, 32)
    for i, pose in enumerate(poses):
        for j, cam in enumerate(cams):
            one = r.render_one(pose, cam)
            for key in batch:
                np.testing.assert_array_equal(batch[key][i, j], one[key], err_msg=f"{key} pose {i} cam {j}")


def test_output_subset_and_bad_inputs():
    r = RaycastRenderer(two_boxes())
    out = r.render(np.zeros((2, 4)), CAM, outputs=("depth", "semantic"))
    assert set(out) == {"depth", "semantic"} and out["depth"].shape == (2, 1, CAM.height, CAM.width)
    with pytest.raises(ValueError, match="outputs"):
        r.render(np.zeros((1, 4)), CAM, outputs=("normals",))
    with pytest.raises(ValueError, match="width and height"):
        r.render(np.zeros((1, 4)), [CAM, Camera(32, 32)])
    with pytest.raises(ValueError, match="poses"):
        r.render(np.zeros((1, 3)), CAM)
    with pytest.raises(ValueError, match="pose"):
        r.render_one((0, 0, 0), CAM)
    with pytest.raises(ValueError, match="hfov"):
        Camera(hfov_deg=180)
    with pytest.raises(ValueError, match="faces"):
        bad = box("bad", (1, 1, 1), (0, 0, 0))
        bad.faces = bad.faces + 100
        RaycastRenderer(SceneGeometry([bad], CLASSES))


def test_bench_reports_frames_per_second():
    from embodied.render.bench import bench_render, synthetic_scene

    geo = synthetic_scene(target_triangles=3000)
    result = bench_render(geo, sizes=(16,), frames=20, repeats=1)
    assert result["16"] > 0 and result["triangles"] == geo.num_triangles()
    moved = bench_render(geo, sizes=(16,), frames=20, move_objects=True, repeats=1)
    assert moved["16"] > 0


def test_first_instance_names_the_first_surface_on_each_segment():
    """A wall (structure) between two points blocks the line of sight; a segment ending inside a thing
    meets that thing; one that ends short of everything meets nothing; a moved object is met where it
    is now, not where it stood."""
    wall = box("wall", (0.2, 4, 3), (2.0, 0, 1.5))
    red = box("red", (0.4, 0.4, 0.4), (4.0, 0, 0.2), semantic=RED, instance=5)
    ball = box("ball", (0.2, 0.2, 0.2), (0.0, 3.0, 0.5), semantic=BALL, instance=9, movable=True)
    r = RaycastRenderer(SceneGeometry([floor(), wall, red, ball], CLASSES))
    eye = (0.0, 0.0, 1.25)
    starts = np.array([eye, eye, eye, (3.0, 0.0, 1.25), eye])
    ends = np.array([(4.0, 0.0, 0.2), (1.0, 0.0, 1.25), (0.0, 3.0, 0.5), (4.0, 0.0, 0.2), (0.0, -2.0, 0.5)])
    assert r.first_instance(starts, ends).tolist() == [0, -1, 9, 5, -1]
    tf = np.eye(4)
    tf[:3, 3] = (0.0, -5.0, 0.0)  # the ball now at y = -2
    r.set_object_pose(9, tf)
    assert r.first_instance(starts, ends).tolist() == [0, -1, -1, 5, 9]
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        r.first_instance(starts[:, :2], ends[:, :2])
