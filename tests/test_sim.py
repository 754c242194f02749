"""Navigation simulator: navigable grid, agent collisions and sliding, geodesics, oracle."""
import math

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from embodied.sim import ACTIONS, NavAgent, NavigableGrid, ShortestPathFollower
from embodied.world import MeshPart, SceneGeometry, build_geometry, generate_apartment

RADIUS, HEIGHT, CELL, MAX_STEP = 0.18, 1.5, 0.05, 0.1
CLASSES = ["void", "floor", "wall", "ceiling", "door_frame", "mesh", "table", "wardrobe", "rug"]


def _box(name, lo, hi, sem=2, inst=0):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    m = trimesh.creation.box(extents=hi - lo)
    m.apply_translation((lo + hi) / 2)
    return MeshPart(name, m.vertices.astype(np.float32), m.faces.astype(np.int32), (0.5, 0.5, 0.5), sem, inst)


def _quad(name, corner, u, v, sem):
    """One-sided rectangle corner, corner+u, corner+u+v, corner+v with normal u x v."""
    c, u, v = (np.asarray(a, np.float32) for a in (corner, u, v))
    verts = np.stack([c, c + u, c + u + v, c + v])
    return MeshPart(name, verts, np.array([[0, 1, 2], [0, 2, 3]], np.int32), (0.5, 0.5, 0.5), sem, 0)


# Obstacles of the two-room scene as xy rectangles (x0, y0, x1, y1), for checks independent of the grid.
def two_rooms(door_width=0.9, ceiling=False):
    """8 x 4 m, wall at x=4 with a door centred at y=2; a table, a tall wardrobe and a rug."""
    W, H, t, h = 8.0, 4.0, 0.1, 2.5
    parts = [_box("floor", (0, 0, -0.05), (W, H, 0), 1)]
    walls = [(0, 0, W, t), (0, H - t, W, H), (0, 0, t, H), (W - t, 0, W, H)]
    d0, d1 = 2.0 - door_width / 2, 2.0 + door_width / 2
    walls += [(4 - t / 2, 0, 4 + t / 2, d0), (4 - t / 2, d1, 4 + t / 2, H)]
    parts += [_box(f"wall{i}", (x0, y0, 0), (x1, y1, h)) for i, (x0, y0, x1, y1) in enumerate(walls)]
    table = (1.0, 2.5, 2.2, 3.3)
    parts.append(_box("table_top", (table[0], table[1], 0.70), (table[2], table[3], 0.75), 6, 1))
    for x in (table[0] + 0.02, table[2] - 0.07):
        for y in (table[1] + 0.02, table[3] - 0.07):
            parts.append(_box("table_leg", (x, y, 0), (x + 0.05, y + 0.05, 0.70), 6, 1))
    wardrobe = (6.0, 0.1, 7.0, 0.9)
    parts.append(_box("wardrobe", (wardrobe[0], wardrobe[1], 0), (wardrobe[2], wardrobe[3], 2.0), 7, 2))
    parts.append(_box("rug", (0.8, 0.5, 0), (2.8, 1.8, 0.03), 8, 3))
    if ceiling:
        parts.append(_box("ceiling", (0, 0, h), (W, H, h + 0.1), 3))
    return SceneGeometry(parts, list(CLASSES)), walls + [table, wardrobe]


def scan_room():
    """Open one-sided surfaces like a scanned mesh: floor, ceiling, walls facing in, and a
    zero-thickness partition at x=3 over a continuous floor, with a 0.9 m door at y in [2, 2.9]."""
    W, H, h = 6.0, 4.0, 2.6
    parts = [_quad("floor", (0, 0, 0), (W, 0, 0), (0, H, 0), 1),
             _quad("ceiling", (0, 0, h), (0, H, 0), (W, 0, 0), 3),
             _quad("wall_s", (0, 0, 0), (0, 0, h), (W, 0, 0), 2),
             _quad("wall_n", (0, H, 0), (W, 0, 0), (0, 0, h), 2),
             _quad("wall_w", (0, 0, 0), (0, H, 0), (0, 0, h), 2),
             _quad("wall_e", (W, 0, 0), (0, 0, h), (0, H, 0), 2),
             _quad("partition_a", (3, 0, 0), (0, 2.0, 0), (0, 0, h), 2),
             _quad("partition_b", (3, 2.9, 0), (0, 1.1, 0), (0, 0, h), 2)]
    return SceneGeometry(parts, list(CLASSES)), [(3.0, 0.0, 3.0, 2.0), (3.0, 2.9, 3.0, 4.0)]


@pytest.fixture(scope="module")
def rooms():
    geometry, obstacles = two_rooms()
    return NavigableGrid.from_geometry(geometry, RADIUS, HEIGHT, CELL, MAX_STEP), obstacles


@pytest.fixture(scope="module")
def apartment_grids():
    return [NavigableGrid.from_geometry(build_geometry(generate_apartment(seed))) for seed in range(3)]


def _free_at(grid, xy):
    r, c = grid.world_to_grid(np.asarray(xy, float))
    return 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1] and bool(grid.free_space[r, c])


def _rect_distance(p, rect):
    x0, y0, x1, y1 = rect
    return math.hypot(max(x0 - p[0], 0.0, p[0] - x1), max(y0 - p[1], 0.0, p[1] - y1))


# ---------------------------------------------------------------------------- grid
def test_grid_blocks_walls_and_furniture_and_keeps_open_floor(rooms):
    grid, _ = rooms
    for blocked in [(4.0, 3.0), (0.05, 2.0), (1.6, 2.9), (6.5, 0.5), (9.0, 2.0), (-0.3, 1.0)]:
        assert not _free_at(grid, blocked), blocked  # wall, outer wall, under the table, inside the wardrobe, off the map
        assert not grid.is_navigable(blocked)
    for free in [(1.0, 1.0), (3.0, 1.0), (5.5, 3.0), (6.5, 2.0), (1.5, 1.2)]:  # (1.5, 1.2) is on the rug
        assert _free_at(grid, free), free
        assert grid.is_navigable(free)
    # erosion: a cell free of obstacles but closer than the radius to the wall is not navigable
    assert _free_at(grid, (3.9, 1.0)) and not grid.is_navigable((3.9, 1.0))
    assert np.all(grid.navigable <= grid.free_space)


def test_door_is_traversable_and_narrow_gap_is_not():
    for width, connected in ((0.9, True), (0.3, False)):
        geometry, _ = two_rooms(door_width=width)
        grid = NavigableGrid.from_geometry(geometry, RADIUS, HEIGHT, CELL, MAX_STEP)
        left, right = grid.world_to_grid(np.array([[2.0, 1.0], [6.0, 2.5]]))
        same = grid.components[tuple(left)] == grid.components[tuple(right)] != 0
        assert same == connected, width
        d = grid.geodesic_distance((2.0, 1.0), (6.0, 2.5))
        assert math.isfinite(d) == connected
        if connected:  # a corridor of navigable cells through the door
            rows = grid.world_to_grid(np.array([[4.0, y] for y in np.arange(1.6, 2.4, 0.05)]))
            assert grid.navigable[rows[:, 0], rows[:, 1]].any()


def test_ceiling_does_not_change_the_grid(rooms):
    grid, _ = rooms
    geometry, _ = two_rooms(ceiling=True)
    with_ceiling = NavigableGrid.from_geometry(geometry, RADIUS, HEIGHT, CELL, MAX_STEP)
    assert np.array_equal(with_ceiling.free_space, grid.free_space)
    assert np.array_equal(with_ceiling.navigable, grid.navigable)


def test_scanned_style_mesh_with_ceiling_and_thin_partition():
    geometry, _ = scan_room()
    grid = NavigableGrid.from_geometry(geometry, RADIUS, HEIGHT, CELL, MAX_STEP)
    assert grid.is_navigable((1.5, 1.0)) and grid.is_navigable((4.5, 1.0))
    assert not grid.is_navigable((3.0, 1.0)) and grid.is_navigable((3.0, 2.45))
    # the zero-thickness partition is a wall: the way around goes through the door
    d = grid.geodesic_distance((2.5, 1.0), (3.5, 1.0))
    expected = 2 * math.hypot(0.5, 2.0 + RADIUS - 1.0)
    assert expected * 0.97 < d < expected * 1.15


def test_grid_is_deterministic_and_coordinates_round_trip(rooms):
    grid, _ = rooms
    again = NavigableGrid.from_geometry(two_rooms()[0], RADIUS, HEIGHT, CELL, MAX_STEP)
    assert np.array_equal(grid.navigable, again.navigable)
    rng = np.random.default_rng(0)
    xy = grid.sample_navigable(rng, 200)
    assert grid.is_navigable(xy).all()
    assert grid.largest_component()[tuple(grid.world_to_grid(xy).T)].all()
    centres = grid.grid_to_world(grid.world_to_grid(xy))
    assert np.abs(centres - xy).max() <= CELL / 2 + 1e-9
    np.testing.assert_array_equal(grid.world_to_grid(centres), grid.world_to_grid(xy))


def test_bad_grid_inputs_raise(rooms):
    grid, _ = rooms
    with pytest.raises(ValueError, match="agent_radius"):
        NavigableGrid.from_geometry(two_rooms()[0], agent_radius=-1.0)
    with pytest.raises(ValueError, match="not navigable"):
        grid.distance_field((4.0, 3.0))  # inside the wall
    with pytest.raises(ValueError, match="no navigable"):
        grid.distance_field(np.zeros(grid.shape, bool))


# ---------------------------------------------------------------------------- geodesics
def test_geodesic_is_straight_in_open_space_and_longer_around_a_wall(rooms):
    grid, _ = rooms
    for a, b in [((0.6, 0.6), (3.3, 1.9)), ((4.6, 1.2), (7.4, 3.4)), ((0.5, 0.5), (0.5, 2.0))]:
        euclid = math.dist(a, b)
        d = grid.geodesic_distance(a, b)
        assert euclid - 1e-6 <= d <= euclid * 1.03, (a, b, d, euclid)
    a, b = (3.5, 3.5), (4.5, 3.5)
    d = grid.geodesic_distance(a, b)
    # Any path dips below the door's upper jamb (y = 2.45) by about the radius; one with ample
    # clearance goes through (3.65, 2.15) and (4.35, 2.15).
    lower = 2 * math.hypot(0.5, 3.5 - (2.45 - RADIUS + CELL))
    upper = 2 * math.hypot(0.15, 3.5 - 2.15) + 0.7
    assert lower < d < upper
    path = grid.shortest_path(a, b)
    np.testing.assert_allclose(path[0], a)
    np.testing.assert_allclose(path[-1], b)
    length = np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))
    assert lower < length <= d + 1e-6
    assert all(grid.segment_clear(p, q) for p, q in zip(path[:-1], path[1:]))
    # fields are cached by goal; multi-goal is the min over goals
    assert grid.distance_field(b) is grid.distance_field(np.array(b))
    two = grid.geodesic_distance(a, [b, (3.0, 3.5)])
    assert two == pytest.approx(0.5, abs=0.02)


def test_region_goal_around_an_object_on_furniture(rooms):
    grid, _ = rooms
    mug = (1.6, 2.9)  # on the table: not navigable itself
    assert not grid.is_navigable(mug)
    region = grid.goal_cells_near(mug, 1.0)
    assert region.any() and not (region & ~grid.navigable).any()
    field = grid.distance_field_to_region(region)
    inside = grid.grid_to_world(np.argwhere(region)[0])
    assert field.at(inside) == 0.0
    assert grid.geodesic_distance((6.0, 3.0), region) > 3.0
    footprint = grid.goal_cells_near_footprints([((1.6, 2.9), (1.2, 0.8), 0.0)], 0.5)
    assert footprint.any() and (footprint <= grid.navigable).all()


# ---------------------------------------------------------------------------- agent
def _random_walk(grid, rng, n, forward_bias):
    agent = NavAgent(grid)
    agent.reset(grid.sample_navigable(rng, 1)[0], rng.uniform(-math.pi, math.pi))
    probs = np.full(len(ACTIONS), (1 - forward_bias) / (len(ACTIONS) - 1))
    probs[ACTIONS.index("move_forward")] = forward_bias
    positions, collisions = np.empty((n, 2)), 0
    for i, a in enumerate(rng.choice(len(ACTIONS), size=n, p=probs)):
        if i % 5 == 4:  # mix in continuous control
            collisions += agent.step_velocity(rng.uniform(-0.5, 1.5), rng.uniform(-2, 2), 0.5)
        else:
            collisions += agent.step(int(a))
        positions[i] = agent.x, agent.y
    return positions, collisions


def _assert_never_in_obstacles(grid, positions):
    xmin, xmax, ymin, ymax = grid.extent
    assert (positions[:, 0] > xmin).all() and (positions[:, 0] < xmax).all()
    assert (positions[:, 1] > ymin).all() and (positions[:, 1] < ymax).all()
    assert grid.is_navigable(positions).all()
    blocked = cKDTree(grid.grid_to_world(np.argwhere(~grid.free_space)))
    dist, _ = blocked.query(positions)
    assert dist.min() >= RADIUS - CELL, dist.min()


def test_random_walks_never_enter_obstacles(rooms, apartment_grids):
    grid, obstacles = rooms
    scan_geometry, scan_obstacles = scan_room()
    scan = NavigableGrid.from_geometry(scan_geometry, RADIUS, HEIGHT, CELL, MAX_STEP)
    rng = np.random.default_rng(0)
    for g, rects in [(grid, obstacles), (scan, scan_obstacles), (apartment_grids[0], None)]:
        for bias in (1 / len(ACTIONS), 0.6):
            positions, collisions = _random_walk(g, rng, 10_000, bias)
            assert collisions > 50  # the walk does press against obstacles
            _assert_never_in_obstacles(g, positions)
            if rects is not None:  # against the true geometry, not the grid
                nearest = min(min(_rect_distance(p, r) for r in rects) for p in positions[::7])
                assert nearest >= RADIUS - CELL, nearest


def test_sliding_along_a_wall(rooms):
    grid, _ = rooms
    agent = NavAgent(grid)
    agent.reset((1.0, 0.1 + RADIUS + 0.06), yaw=math.radians(-45))  # facing diagonally into the south wall
    x0 = agent.x
    collided = [agent.step("move_forward") for _ in range(4)]
    assert collided[-1] and any(collided)
    assert agent.x - x0 > 4 * 0.25 * math.cos(math.radians(45)) * 0.8  # kept moving along the wall
    assert agent.y >= 0.1 + RADIUS - CELL
    assert agent.distance_travelled == pytest.approx(math.hypot(agent.x - x0, agent.y - (0.1 + RADIUS + 0.06)), rel=0.2)
    # head-on into the wall: no motion along it, but still a collision and no penetration
    agent.reset((1.0, 0.1 + RADIUS + 0.06), yaw=-math.pi / 2)
    assert agent.step("move_forward")
    assert abs(agent.x - 1.0) < 0.02 and agent.y >= 0.1 + RADIUS - CELL


def test_long_moves_cannot_tunnel_through_walls(rooms):
    grid, _ = rooms
    agent = NavAgent(grid)
    agent.reset((3.7, 3.0), yaw=0.0)  # facing the partition; (4.7, 3.0) beyond it is navigable
    assert grid.is_navigable((4.7, 3.0))
    assert agent.step_velocity(1.0, 0.0, 1.0)
    assert agent.x < 3.95 - RADIUS + CELL
    agent = NavAgent(grid, forward_step=1.0)
    agent.reset((3.7, 3.0), yaw=0.0)
    assert agent.step("move_forward") and agent.x < 3.95 - RADIUS + CELL


def test_turns_tilt_and_pose(rooms):
    grid, _ = rooms
    agent = NavAgent(grid, forward_step=0.25, turn_angle=30, tilt_angle=30, max_tilt=60)
    agent.reset((2.6, 2.2), yaw=0.0)
    assert not agent.step("move_forward")
    np.testing.assert_allclose(agent.pose, [2.85, 2.2, 0.0, 0.0], atol=1e-6)
    agent.reset((2.0, 1.0), yaw=0.0)
    assert agent.z == pytest.approx(0.03, abs=1e-3)  # standing on the rug
    agent.step("turn_left")
    assert agent.yaw == pytest.approx(math.radians(30))
    for _ in range(12):
        agent.step(ACTIONS.index("turn_right"))
    assert agent.yaw == pytest.approx(math.radians(30))
    for _ in range(3):
        agent.step("look_up")
    assert agent.tilt_deg == pytest.approx(60)
    for _ in range(5):
        agent.step("look_down")
    assert agent.tilt_deg == pytest.approx(-60)
    before = agent.pose.copy()
    assert not agent.step("stop")
    np.testing.assert_array_equal(agent.pose, before)
    with pytest.raises(ValueError, match="not navigable"):
        agent.reset((4.0, 3.0))


@pytest.mark.parametrize("bad", ["jump", "MOVE_FORWARD", 6, -1, 2.0, True, None])
def test_invalid_action_raises(rooms, bad):
    grid, _ = rooms
    agent = NavAgent(grid)
    agent.reset((2.0, 1.0))
    with pytest.raises(ValueError, match="move_forward"):
        agent.step(bad)


def test_agent_size_must_match_grid(rooms):
    grid, _ = rooms
    with pytest.raises(ValueError, match="radius"):
        NavAgent(grid, radius=0.3)


# ---------------------------------------------------------------------------- oracle
def _run_oracle(grid, start, goal, rng, success_distance=0.2, max_steps=500):
    agent = NavAgent(grid)
    agent.reset(start, rng.uniform(-math.pi, math.pi))
    follower = ShortestPathFollower(grid, goal, success_distance)
    for _ in range(max_steps):
        action = follower.next_action(agent)
        if action == "stop":
            break
        agent.step(action)
    success = action == "stop" and grid.geodesic_distance((agent.x, agent.y), goal) <= success_distance
    return success, agent.distance_travelled


def test_oracle_success_and_spl_on_generated_apartments(apartment_grids):
    rng = np.random.default_rng(1)
    successes, spls = [], []
    for episode in range(50):
        grid = apartment_grids[episode % len(apartment_grids)]
        start, goal = grid.sample_navigable(rng, 2)
        # the tighter of two upper bounds on the true shortest length
        path = grid.shortest_path(start, goal)
        shortest = min(grid.geodesic_distance(start, goal), np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))
        success, travelled = _run_oracle(grid, start, goal, rng)
        successes.append(success)
        spls.append(success * shortest / max(shortest, travelled))
    assert np.mean(successes) >= 0.99
    assert np.mean(spls) >= 0.95, np.mean(spls)


def test_oracle_reaches_region_goal_through_the_door(rooms):
    grid, _ = rooms
    rng = np.random.default_rng(2)
    region = grid.goal_cells_near((1.6, 2.9), 1.0)  # viewpoints of an object on the table
    for start in [(6.5, 3.0), (5.0, 0.5), (7.5, 2.0)]:
        success, travelled = _run_oracle(grid, start, region, rng, success_distance=0.0)
        assert success
        assert travelled <= grid.geodesic_distance(start, region) * 1.1 + 0.25
    # unreachable goals: the follower stops rather than wandering
    narrow, _ = two_rooms(door_width=0.3)
    g = NavigableGrid.from_geometry(narrow, RADIUS, HEIGHT, CELL, MAX_STEP)
    agent = NavAgent(g)
    agent.reset((2.0, 1.0))
    assert ShortestPathFollower(g, (6.0, 2.5)).next_action(agent) == "stop"


def test_a_point_on_a_cell_boundary_is_in_the_same_cell_for_the_agent_and_the_fields():
    """At x = 0 with origin -2.15 and 5 cm cells, (x - ox) / cell floors to 42 and (x - ox) * (1 / cell)
    to 43. The agent's pose starts exactly on such boundaries in a memory's own map (x = y = 0), so
    if the grid divided while NavAgent multiplies, a free start would read as blocked to every field."""
    cell, ox = 0.05, -2.15
    assert math.floor((0 - ox) / cell) != math.floor((0 - ox) * (1 / cell))  # the case under test
    free = np.zeros((40, 86), bool)
    free[:, 43:] = True  # x >= 0 free, x < 0 a wall
    grid = NavigableGrid(free, np.zeros(free.shape, np.float32), (ox, -1.0), cell, 0.01, 1.5, max_step=0.1,
                         neighbourhood=8)
    p = (0.0, 0.0)
    agent = NavAgent(grid, forward_step=0.25, turn_angle=30)
    agent.reset(p)  # free for the agent ...
    assert tuple(grid.world_to_grid(np.array(p))) == grid._cell_of(*p) == (20, 43)
    field = grid.distance_field(np.array([1.0, 0.0]))
    assert math.isclose(field.at(p), 1.0, abs_tol=0.06)  # ... and for the field measured from it


def _corner_grid(open_side: bool):
    """Room A (rows and columns 2..7) meets room B (8..14) at one corner only, unless `open_side`
    opens the cell beside that corner. 10 cm cells, no erosion."""
    free = np.zeros((18, 18), bool)
    free[2:8, 2:8] = free[8:15, 8:15] = True
    free[7, 8] = open_side
    return NavigableGrid(free, np.zeros(free.shape, np.float32), (0.0, 0.0), 0.1, 0.01, 1.5, max_step=0.1)


@pytest.mark.parametrize("open_side", [False, True])
def test_a_corner_alone_is_no_passage_for_moves_segments_components_or_fields(open_side):
    """A move sampled at a quarter cell could step between two diagonal cells across a corner whose
    two side cells are blocked, onto cells the distance field (no corner cutting) does not reach; an
    agent there had an infinite distance to every goal. Moves, segments and components now agree
    with the field; opening one side cell makes the corner a passage for all of them."""
    grid = _corner_grid(open_side)
    field = grid.distance_field(np.array([0.5, 0.5]))  # a goal in room A
    start, end = (0.652, 0.65), (0.652 + 0.3, 0.65 + 0.3)  # across the corner at (0.8, 0.8), just beside it
    agent = NavAgent(grid, forward_step=0.3 * math.sqrt(2))
    agent.reset(start, yaw=math.pi / 4)
    collided = agent.step("move_forward")
    assert collided != open_side
    assert (agent.x > 0.8 and agent.y > 0.8) == open_side  # in room B only through an open side
    assert math.isfinite(field.at((agent.x, agent.y)))
    assert grid.segment_clear(start, end) == open_side
    assert (grid.components[3, 3] == grid.components[12, 12]) == open_side
    assert math.isfinite(field.values[12, 12]) == open_side
    # a random walk from room A stays on cells the field reaches (GridBatch: tests/test_batched.py)
    rng = np.random.default_rng(0)
    agent = NavAgent(grid, forward_step=0.25)
    agent.reset((0.45, 0.45), yaw=math.pi / 4)
    seen_b = False
    for a in rng.choice([1, 1, 1, 2, 3], size=3000):
        agent.step(int(a))
        assert math.isfinite(field.at((agent.x, agent.y)))
        seen_b |= agent.x > 0.8 and agent.y > 0.8
    assert seen_b == open_side
