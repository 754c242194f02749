"""Room Ballet's apartment world (`task.world: apartment`): a procedural apartment staged for the
task (`stage_apartment`: a dancer's home and dance floor in every room, a viewpoint that sees it, the
paths between viewpoints, and a renderer with one movable figure per dancer colour)."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from embodied.sim import NavigableGrid
from embodied.tasks.ballet import COLOUR_RGB
from embodied.tasks.room_ballet.spec import NUM_COLOURS
from embodied.world import MeshPart, SceneGeometry, SceneSpec, build_geometry, generate_apartment

DEFAULT_APARTMENTS = 16
SEEDS_PER_APARTMENT = 1000  # apartment k is the first usable layout among seeds k*1000, k*1000+1, ...
DANCER_INSTANCE = 10_000  # instance id of the dancer of colour c: DANCER_INSTANCE + c (items start at 1)
DANCER_BODY = (0.32, 0.32, 1.2)  # metres; a head box sits on top, so body + head colours make 8 x 4 = 32 dancers
DANCER_HEAD = (0.24, 0.24, 0.3)
DANCE_STEP = (0.15, 0.25)  # metres per dance offset: the room's open space picks a value in this range
DANCE_MARGIN = 0.05  # kept between the swept dance floor and the nearest obstacle
VIEW_DISTANCE = (1.0, 3.5, 1.8)  # viewpoint to dancer: (min, max, preferred), metres
ROOM_MARGIN = 0.3  # every frame is taken with the agent at least this far inside its room


class ApartmentError(RuntimeError):
    """An apartment in which Room Ballet cannot be staged (no open spot or viewpoint in a room)."""


def dancer_colours(colour: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(body, head) rgb of the dancer of `colour` (0..31): Ballet's 8 colours, the head one of the
    next four after the body's, so every colour id is a distinct pair."""
    if not 0 <= colour < NUM_COLOURS:
        raise ValueError(f"colour {colour!r}; allowed: 0..{NUM_COLOURS - 1}")
    body = colour % len(COLOUR_RGB)
    return COLOUR_RGB[body], COLOUR_RGB[(body + 1 + colour // len(COLOUR_RGB)) % len(COLOUR_RGB)]


def apartment_neighbours(spec: SceneSpec) -> list[list[int]]:
    """Rooms sharing a door with each room (room id = index in spec.rooms)."""
    out: list[set[int]] = [set() for _ in spec.rooms]
    for door in spec.doors:
        a, b = door.rooms
        out[a].add(b)
        out[b].add(a)
    return [sorted(n) for n in out]


def room_rects(spec: SceneSpec) -> np.ndarray:
    """[R, 4] (x0, y0, x1, y1) of each room's wall centre-line rectangle."""
    return np.array([[*room.polygon[0], *room.polygon[2]] for room in spec.rooms], np.float64)


def inside_rect(rect: np.ndarray, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """[...] bool: which of the points [..., 2] lie at least `margin` inside rect (x0, y0, x1, y1)."""
    x, y = points[..., 0], points[..., 1]
    return (x >= rect[0] + margin) & (x <= rect[2] - margin) & (y >= rect[1] + margin) & (y <= rect[3] - margin)


@dataclass
class ApartmentStage:
    """One apartment set up for Room Ballet. `homes` are the dancers' resting spots (open floor in
    each room), `dance_steps` their dance's offset scale (metres), `viewpoints` where the agent stands
    to watch (clear line of sight to the home), `paths[(q, r)]` the walk from room q's viewpoint to
    room r's: a shortest path on the navigable grid with room r's dance floor blocked, points at
    most half a grid cell apart. `renderer` holds the apartment (static, built once) and one movable
    figure per dancer colour, all hidden until shown."""

    seed: int
    spec: SceneSpec
    neighbours: list[list[int]]
    rects: np.ndarray
    homes: np.ndarray | None = None
    dance_steps: np.ndarray | None = None
    viewpoints: np.ndarray | None = None
    paths: dict | None = None
    renderer: object | None = None
    shown: tuple | None = None  # (colour, x, y) of the dancer posed in the renderer now

    def show_dancer(self, colour: int | None, xy=None) -> None:
        """Pose the dancer of `colour` standing at xy (None: no dancer); others are hidden. Only a
        change is passed to the renderer (each one rebuilds its small dynamic scene)."""
        want = None if colour is None else (int(colour), float(xy[0]), float(xy[1]))
        if want == self.shown:
            return
        if self.shown is not None and (want is None or want[0] != self.shown[0]):
            self.renderer.set_object_pose(DANCER_INSTANCE + self.shown[0], None)
        if want is not None:
            tf = np.eye(4)
            tf[:2, 3] = want[1:]
            self.renderer.set_object_pose(DANCER_INSTANCE + want[0], tf)
        self.shown = want


def _dancer_parts(semantic: int) -> list[MeshPart]:
    """One figure per colour (body and head boxes, one instance), centred on the origin at floor level."""
    import trimesh

    def box(name, size, z0, colour, instance):
        mesh = trimesh.creation.box(extents=size)
        mesh.apply_translation((0.0, 0.0, z0 + size[2] / 2))
        return MeshPart(name, np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), colour,
                        semantic, instance, movable=True)

    parts = []
    for colour in range(NUM_COLOURS):
        body, head = dancer_colours(colour)
        parts.append(box(f"dancer_{colour}_body", DANCER_BODY, 0.0, body, DANCER_INSTANCE + colour))
        parts.append(box(f"dancer_{colour}_head", DANCER_HEAD, DANCER_BODY[2], head, DANCER_INSTANCE + colour))
    return parts


def _viewpoint(open_grid: NavigableGrid, grid: NavigableGrid, centres: np.ndarray, in_room: np.ndarray,
               home: np.ndarray) -> np.ndarray | None:
    """The navigable cell of the room nearest the preferred distance from home with a clear line of
    sight to it (every cell on the way navigable: nothing up to agent height), or None."""
    cells = np.argwhere(in_room & grid.navigable)
    d = np.hypot(*(centres[cells[:, 0], cells[:, 1]] - home).T)
    lo, hi, preferred = VIEW_DISTANCE
    ok = (d >= lo) & (d <= hi)
    cells, d = cells[ok], d[ok]
    for i in np.lexsort((np.arange(len(d)), np.abs(d - preferred))):
        point = centres[cells[i, 0], cells[i, 1]]
        if open_grid.segment_clear(point, home):
            return point
    return None


def _stage_room(open_grid: NavigableGrid, centres: np.ndarray, in_room: np.ndarray, rect: np.ndarray,
                tries: int = 10):
    """(home, dance step, grid with the dance floor blocked, viewpoint) of one room, or None. Homes are
    tried from the most open spot down; one is taken when blocking its dance floor cuts nothing
    outside the room off from the viewpoint (a corner of the room behind the dancer may be)."""
    half = math.hypot(DANCER_BODY[0], DANCER_BODY[1]) / 2
    clearance = np.where(in_room & open_grid.navigable, open_grid.clearance, -1.0)
    tried: list[np.ndarray] = []
    for flat in np.argsort(-clearance, axis=None, kind="stable"):
        # The dance sweeps a disc of radius sqrt(2) * step + half, which must stay clear of obstacles.
        step = min(DANCE_STEP[1], (float(clearance.flat[flat]) - DANCE_MARGIN - half) / math.sqrt(2))
        if step < DANCE_STEP[0] or len(tried) >= tries:
            return None
        home = centres.reshape(-1, 2)[flat]
        if any(np.hypot(*(home - t)) < 0.5 for t in tried):
            continue
        tried.append(home)
        reach = math.sqrt(2) * step + half
        free = open_grid.free_space & (np.hypot(centres[..., 0] - home[0], centres[..., 1] - home[1]) > reach)
        grid = NavigableGrid(free, open_grid.floor_height, open_grid.origin, open_grid.cell, open_grid.agent_radius,
                             open_grid.agent_height, open_grid.max_step)
        viewpoint = _viewpoint(open_grid, grid, centres, in_room & open_grid.largest_component(), home)
        if viewpoint is None:
            continue
        reachable = np.isfinite(open_grid.distance_field_to_points(viewpoint).values)
        lost = reachable & grid.navigable & ~np.isfinite(grid.distance_field_to_points(viewpoint).values)
        if np.any(lost & ~inside_rect(rect, centres)):
            continue
        return home, step, grid, viewpoint
    return None


def stage_apartment(seed: int, n_rooms: int, agent_radius: float = 0.18, agent_height: float = 1.5,
                    render: bool = True) -> ApartmentStage:
    """Generate apartment `seed` with `n_rooms` rooms and set it up for Room Ballet. Without
    `render` only the room graph is built (symbolic observations). Raises ApartmentError when a
    room has no open spot for a dancer with a viewpoint, or the viewpoints are not all connected."""
    spec = generate_apartment(seed, n_rooms=n_rooms)
    stage = ApartmentStage(seed, spec, apartment_neighbours(spec), room_rects(spec))
    if not render:
        return stage
    from embodied.render import RaycastRenderer

    geometry = build_geometry(spec)
    open_grid = NavigableGrid.from_geometry(geometry, agent_radius=agent_radius, agent_height=agent_height)
    rows, cols = np.mgrid[0:open_grid.shape[0], 0:open_grid.shape[1]]
    centres = open_grid.grid_to_world(np.stack([rows, cols], -1))  # [ny, nx, 2]
    staged = []
    for room, rect in enumerate(stage.rects):
        found = _stage_room(open_grid, centres, inside_rect(rect, centres, ROOM_MARGIN), rect)
        if found is None:
            raise ApartmentError(f"apartment {seed}: room {room} has no open spot for a dancer with a viewpoint")
        staged.append(found)
    viewpoints = np.array([v for *_, v in staged])
    if not np.isfinite(open_grid.distance_field_to_points(viewpoints[0]).values[
            tuple(open_grid.world_to_grid(viewpoints).T)]).all():
        raise ApartmentError(f"apartment {seed}: the rooms' viewpoints are not all connected")
    paths = {}
    for room, (_, _, grid, viewpoint) in enumerate(staged):
        for other in range(len(staged)):
            if other != room:
                path = grid.shortest_path(viewpoints[other], viewpoint)
                if not len(path):
                    raise ApartmentError(f"apartment {seed}: no path from room {other}'s viewpoint to room {room}'s")
                paths[other, room] = _densify(path, 0.5 * grid.cell)
    classes = list(geometry.semantic_classes) + ["dancer"]
    # Objects never move here: keep them in the static scene; the dancers are the only movables.
    parts = [replace(p, movable=False) if p.movable else p for p in geometry.parts] + _dancer_parts(len(classes) - 1)
    renderer = RaycastRenderer(SceneGeometry(parts, classes), nthreads=1, bake_movables=False)
    for colour in range(NUM_COLOURS):
        renderer.set_object_pose(DANCER_INSTANCE + colour, None)
    stage.homes = np.array([h for h, *_ in staged])
    stage.dance_steps = np.array([s for _, s, *_ in staged])
    stage.viewpoints, stage.paths, stage.renderer = viewpoints, paths, renderer
    return stage


def _densify(waypoints: np.ndarray, spacing: float) -> np.ndarray:
    """Points every <= `spacing` metres along a polyline (its vertices included)."""
    out = [waypoints[:1]]
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / spacing)))
        out.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
    return np.concatenate(out)



class ApartmentPool:
    """A level's `size` apartments (apartment k: the first of seeds 1000k, 1000k + 1, ... that stages),
    built on first use; the `cache` most recently used are kept."""

    def __init__(self, num_rooms: int, agent_radius: float, agent_height: float, render: bool, cache: int):
        self.num_rooms, self.agent_radius, self.agent_height = num_rooms, agent_radius, agent_height
        self.render, self.cache = render, max(1, cache)
        self._stages: OrderedDict[int, ApartmentStage] = OrderedDict()

    def __getitem__(self, index: int) -> ApartmentStage:
        if index in self._stages:
            self._stages.move_to_end(index)
            return self._stages[index]
        for seed in range(index * SEEDS_PER_APARTMENT, (index + 1) * SEEDS_PER_APARTMENT):
            try:
                stage = stage_apartment(seed, self.num_rooms, self.agent_radius, self.agent_height, render=self.render)
                break
            except ApartmentError:
                continue
        else:  # pragma: no cover - a usable layout comes within a few seeds
            raise ApartmentError(f"room_ballet: no usable apartment among seeds {index * SEEDS_PER_APARTMENT}..")
        self._stages[index] = stage
        while len(self._stages) > self.cache:
            self._stages.popitem(last=False)
        return stage
