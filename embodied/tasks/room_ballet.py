"""Room Ballet (SAT's place-centric Ballet, Cho, Yoon, Ahn 2024): `room_ballet/...`.

An apartment of rooms. The agent is walked through it (its actions are ignored during the walk, as
in Ballet's show); in each room a dancer performs one of Ballet's 13 dances
(embodied.tasks.ballet.DANCES) in a loop. After the walk a question is asked and the agent answers
with one action: +1 for the right answer, 0 for a wrong one (either ends the episode);
`ANSWER_STEPS` steps to answer, else 0. The memory budget of a level (`memory_budget` tokens, one
token per step) is smaller than the walk, so what a memory keeps decides what it can answer.

Two kinds of levels:
- Budget levels (`budget`, `budget_grid`; SAT's Short-Stay with a budget): one dancer per room, each
  room a distinct dance; a random walk from room to neighbouring room, staying `stay_min..stay_max`
  steps in each. Questions: `room_dance` ("which dance was in room r?", r a visited room) and
  `dance_room` ("in which room was dance d?", d a dance seen). A FIFO memory forgets the rooms of
  the early walk; evicting from the place that fills most of the memory (mvfo) keeps every room.
- Multi-task levels (`multi`, `multi_<type>`; SAT's Room Ballet Multi-Task): `segments` dancers, each
  a distinct colour, seen one after another for `segment_steps` steps each, in rooms drawn with a
  skewed (per-episode Dirichlet) preference, so some rooms are busy and some rare. The question
  type is announced from the first step (the instruction) and the question names a dancer by
  colour: "which dance did the <colour> dancer do?". The type says which dancer can be asked:
  `recent`, `early`, `rare_room`, `busy_room`. As in the released code (answer labels guaranteed to
  survive a heuristic), the asked dancer is drawn among those whose steps survive the level's
  budget under exactly one write strategy: recent -> fifo, early -> lifo, rare_room -> mvfo,
  busy_room -> lvfo (`BEST_STRATEGY`); episodes without such a dancer are redrawn. So each type
  has one write strategy that can answer it, and an allocator (AMA) has something to pick.

The strategies are simulated here (`kept_steps`) with the semantics of the SAT memory
(embodied/memory/sat.py: free slot first; fifo evicts the oldest, lifo the newest stored, mvfo /
lvfo the oldest token of the place holding the most / fewest stored tokens, ties to the lowest
place id); tests check the two agree.

Worlds (`task.options.world`, validated against OPTIONS like Ballet's):
- `grid` (default): the rooms are a rooms_wide x rooms_high grid graph (neighbours share a door)
  and observations are symbolic only.
- `apartment`: the rooms are those of a procedural apartment (`embodied.world.generate_apartment`
  with the level's room count: 8 for budget levels, 5 for multi levels; apartments have 2..8 rooms,
  so a level needing more is refused at construction). Place id = room index in the SceneSpec;
  neighbours are the rooms a door joins (`apartment_neighbours`). Each episode draws one of
  `apartments` layouts (default 16; layout k is the first of seeds 1000k, 1000k + 1, ... on which
  `stage_apartment` can place a dancer with a viewpoint in every room; an env keeps up to
  `task.scene_cache` of them built). With `rgb` (default true here) the walk is navigated: the body
  follows shortest paths on the apartment's navigable grid (`NavigableGrid`, with the entered
  room's dance floor blocked so it walks round the dancer) from viewpoint to viewpoint; during a
  stay it walks the part of the path inside the room over the first half of the stay, then stands at
  the room's viewpoint (a clear line of sight to the dancer), always turned to face the dancer.
  The dancer of the current step is a movable figure (body and head boxes whose two colours, from
  Ballet's COLOUR_RGB, encode the 32 colour ids; `dancer_colours`) posed at the room's most open
  spot plus its dance offset x `dance_steps[room]` (0.15-0.25 m) with `set_object_pose`; the
  apartment's static scene is built once. With `rgb: false` only the room graph is taken from the
  apartment (no geometry, for fast CPU runs; layout k is then seed 1000k, unstaged).

Observation (Dict):
    text  int [4]   tokens (0 = padding). Walk: [type, room, colour, dance] in `tokens` mode (what
                    is visible, perception abstracted), [type, 0, 0, 0] in `grid` mode and
                    whenever `rgb` is on (the frames show room, dancer and dance).
                    Question: [type, marker, asked room | colour | dance (the walk's token), 0].
    place int [1]   the room the agent is in (SAT's place id; the agent hands it to the memory).
    semantic int [9, 9]  `grid` mode only: the room seen from above: walls drawn in the room's
                    class (the room is recognisable), the dancer in its colour's class, moving
                    through its dance; the dance is only identifiable from several frames.
    rgb uint8 [height, width, 3]  apartment world with `rgb` only: the first-person view
                    (task.width x task.height, task.hfov, camera at task.camera_height). During
                    the question the dancer has gone and the agent stands where the walk ended.
Actions: 0 waits; 1 + d answers dance d; 1 + NUM_DANCES + r answers room r.

Simplifications (documented, not hidden): the walk is scripted (the agent's actions are ignored
until the question), and between two stays only the part of the path inside the entered room is
shown (the way out of the previous room and through rooms in between is walked but not observed,
so the step schedule, and with it the levels' budgets and questions, is that of the grid world);
only the dancer of the current step is present (others rest out of sight), so a frame shows one
dance as the symbolic views do; the `grid` world is a grid graph of rooms.
`oracle_action()` is the scripted expert: it reads the ground truth.
Viewer protocol (words for recordings; no effect on the task): `action_names`, `classes` (names of
the grid view's ids) and `observation_text(obs)` (the text tokens in words, `describe_text`).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from gymnasium import spaces

from embodied.sim import NavigableGrid
from embodied.tasks.ballet import COLOUR_NAMES, COLOUR_RGB, DANCE_NAMES, DANCE_STEPS, DANCES
from embodied.tasks.registry import TaskEnv, register_task
from embodied.world import MeshPart, SceneGeometry, SceneSpec, build_geometry, generate_apartment
from embodied.world.apartment import MAX_ROOMS as APARTMENT_MAX_ROOMS

NUM_DANCES = len(DANCES)
MAX_ROOMS = 16
NUM_COLOURS = 32
ANSWER_STEPS = 4
ROOM_GRID = 9
STRATEGIES = ("fifo", "lifo", "mvfo", "lvfo")
BUDGET_TYPES = ("room_dance", "dance_room")
MULTI_TYPES = ("recent", "early", "rare_room", "busy_room")
QUESTION_TYPES = BUDGET_TYPES + MULTI_TYPES
BEST_STRATEGY = {"recent": "fifo", "early": "lifo", "rare_room": "mvfo", "busy_room": "lvfo"}

# Text vocabulary: disjoint id ranges per field, so a mean of token embeddings keeps them apart.
TYPE_TOKEN = 1
ROOM_TOKEN = TYPE_TOKEN + len(QUESTION_TYPES)
COLOUR_TOKEN = ROOM_TOKEN + MAX_ROOMS
DANCE_TOKEN = COLOUR_TOKEN + NUM_COLOURS
# The question is a marker ("which room / which dancer / which dance") and the same token the walk
# showed, so what is asked and what was seen share an embedding.
ASK_ROOM_TOKEN = DANCE_TOKEN + NUM_DANCES
ASK_COLOUR_TOKEN = ASK_ROOM_TOKEN + 1
ASK_DANCE_TOKEN = ASK_COLOUR_TOKEN + 1
VOCAB = ASK_DANCE_TOKEN + 1
TEXT_LENGTH = 4

# Semantic classes of the grid view: 0 floor, 1 + r walls of room r, 1 + MAX_ROOMS + c dancer colour c.
WALL_CLASS = 1
DANCER_CLASS = WALL_CLASS + MAX_ROOMS
NUM_CLASSES = DANCER_CLASS + NUM_COLOURS

# Apartment world (task.options.world=apartment).
OPTIONS = ("world", "rgb", "apartments")
WORLDS = ("grid", "apartment")
DEFAULT_APARTMENTS = 16
SEEDS_PER_APARTMENT = 1000  # apartment k is the first usable layout among seeds k*1000, k*1000+1, ...
DANCER_INSTANCE = 10_000  # instance id of the dancer of colour c: DANCER_INSTANCE + c (items start at 1)
DANCER_BODY = (0.32, 0.32, 1.2)  # metres; a head box sits on top, so body + head colours make 8 x 4 = 32 dancers
DANCER_HEAD = (0.24, 0.24, 0.3)
DANCE_STEP = (0.15, 0.25)  # metres per dance offset: the room's open space picks a value in this range
DANCE_MARGIN = 0.05  # kept between the swept dance floor and the nearest obstacle
VIEW_DISTANCE = (1.0, 3.5, 1.8)  # viewpoint to dancer: (min, max, preferred), metres
ROOM_MARGIN = 0.3  # every frame is taken with the agent at least this far inside its room


def kept_steps(places: Sequence[int], capacity: int, strategy: str) -> list[int]:
    """Steps (indices into `places`) a `capacity`-token memory holds after writing every step."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if capacity < 1:
        raise ValueError(f"capacity={capacity}: must be >= 1")
    stored: list[int] = []
    for step in range(len(places)):
        if len(stored) == capacity:
            if strategy == "fifo":
                victim = stored[0]
            elif strategy == "lifo":
                victim = stored[-1]
            else:
                counts: dict[int, int] = {}
                for s in stored:
                    counts[places[s]] = counts.get(places[s], 0) + 1
                best = (max if strategy == "mvfo" else min)(counts.values())
                target = min(p for p, c in counts.items() if c == best)
                victim = next(s for s in stored if places[s] == target)
            stored.remove(victim)
        stored.append(step)
    return stored


def question_tokens(kind: str, value: int) -> tuple[int, int]:
    """The two text tokens of a question: its marker and the asked room / colour / dance."""
    if kind == "room":
        return ASK_ROOM_TOKEN, ROOM_TOKEN + value
    if kind == "colour":
        return ASK_COLOUR_TOKEN, COLOUR_TOKEN + value
    if kind == "dance":
        return ASK_DANCE_TOKEN, DANCE_TOKEN + value
    raise ValueError(f"question kind {kind!r}; allowed: room, colour, dance")


def colour_name(colour: int) -> str:
    """Words for dancer colour id `colour`: "body/head" colour names (`dancer_colours`)."""
    if not 0 <= colour < NUM_COLOURS:
        raise ValueError(f"colour {colour!r}; allowed: 0..{NUM_COLOURS - 1}")
    body = colour % len(COLOUR_RGB)
    return f"{COLOUR_NAMES[body]}/{COLOUR_NAMES[(body + 1 + colour // len(COLOUR_RGB)) % len(COLOUR_RGB)]}"


def describe_text(tokens) -> str:
    """The words of a Room Ballet text observation: "<type>: <what is seen>" during the walk (just
    "watch" when the tokens hide it), "<type>: <question>" after it."""
    t = [int(v) for v in np.asarray(tokens).reshape(-1)]
    if len(t) != TEXT_LENGTH or not 0 <= t[0] - TYPE_TOKEN < len(QUESTION_TYPES):
        raise ValueError(f"room_ballet text {t}: expected {TEXT_LENGTH} tokens starting with a question type")
    kind = QUESTION_TYPES[t[0] - TYPE_TOKEN]
    marker, value = t[1], t[2]
    if marker == ASK_ROOM_TOKEN:
        return f"{kind}: which dance was in room {value - ROOM_TOKEN}?"
    if marker == ASK_DANCE_TOKEN:
        return f"{kind}: in which room was dance {DANCE_NAMES[value - DANCE_TOKEN]}?"
    if marker == ASK_COLOUR_TOKEN:
        return f"{kind}: which dance did the {colour_name(value - COLOUR_TOKEN)} dancer do?"
    if t[1:] == [0, 0, 0]:
        return f"{kind}: watch"
    return (f"{kind}: watch room {t[1] - ROOM_TOKEN}, {colour_name(t[2] - COLOUR_TOKEN)} dancer, "
            f"dance {DANCE_NAMES[t[3] - DANCE_TOKEN]}")


def room_neighbours(room: int, width: int, height: int) -> list[int]:
    """Rooms sharing a door with `room` in a width x height grid of rooms."""
    row, col = divmod(room, width)
    out = []
    for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = row + d_row, col + d_col
        if 0 <= r < height and 0 <= c < width:
            out.append(r * width + c)
    return out


# --- apartment world ------------------------------------------------------------------------------
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


class RoomBalletEnv(TaskEnv):
    """One Room Ballet level; the class attributes below are set by the registered subclass."""

    metadata = {"render_modes": []}
    mode: str = "budget"  # budget | multi
    obs_mode: str = "tokens"  # tokens | grid
    rooms_wide: int = 4
    rooms_high: int = 2
    walk_steps: int = 96  # budget levels
    stay_min: int = 4
    stay_max: int = 16
    segments: int = 16  # multi levels
    segment_steps: int = 4
    memory_budget: int = 32
    question_types: tuple[str, ...] = BUDGET_TYPES

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.num_rooms = self.rooms_wide * self.rooms_high
        self._parse_options(dict(getattr(cfg, "options", None) or {}))
        if self.mode == "multi":
            self.walk_steps = self.segments * self.segment_steps
        if not 2 <= self.num_rooms <= MAX_ROOMS or (self.mode == "budget" and self.num_rooms > NUM_DANCES):
            raise ValueError(f"room_ballet: {self.num_rooms} rooms; allowed 2..{NUM_DANCES} (budget) or ..{MAX_ROOMS}")
        if self.memory_budget >= self.walk_steps:
            raise ValueError(f"room_ballet: memory_budget={self.memory_budget} must be below the walk ({self.walk_steps})")
        self.max_episode_steps = self.walk_steps + ANSWER_STEPS
        obs = {"text": spaces.Box(0, VOCAB - 1, (TEXT_LENGTH,), dtype=np.int64),
               "place": spaces.Box(0, self.num_rooms - 1, (1,), dtype=np.int64)}
        if self.obs_mode == "grid":
            obs["semantic"] = spaces.Box(0, NUM_CLASSES - 1, (ROOM_GRID, ROOM_GRID), dtype=np.int64)
        if self.rgb:
            from embodied.render import Camera

            c = self._task_config()
            self.camera = Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height)
            obs["rgb"] = spaces.Box(0, 255, (c.height, c.width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(1 + NUM_DANCES + self.num_rooms)
        self._rng = np.random.default_rng()
        self._stages: OrderedDict[int, ApartmentStage] = OrderedDict()
        self.stage: ApartmentStage | None = None
        self._t = 0

    def _parse_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"task.options.{unknown[0]}: unknown room_ballet option; allowed: {', '.join(OPTIONS)}")
        self.world = options.get("world", "grid")
        if self.world not in WORLDS:
            raise ValueError(f"task.options.world={self.world!r}; allowed: {', '.join(WORLDS)}")
        self.rgb = options.get("rgb", self.world == "apartment")
        if not isinstance(self.rgb, bool):
            raise ValueError(f"task.options.rgb={self.rgb!r}; allowed: true, false")
        if self.rgb and self.world != "apartment":
            raise ValueError("task.options.rgb=true needs task.options.world=apartment")
        self.apartments = options.get("apartments", DEFAULT_APARTMENTS)
        if isinstance(self.apartments, bool) or not isinstance(self.apartments, int) or self.apartments < 1:
            raise ValueError(f"task.options.apartments={self.apartments!r}; allowed: an integer >= 1")
        if "apartments" in options and self.world != "apartment":
            raise ValueError("task.options.apartments needs task.options.world=apartment")
        if self.world == "apartment" and self.num_rooms > APARTMENT_MAX_ROOMS:
            raise ValueError(f"room_ballet: {self.num_rooms} rooms; an apartment has at most {APARTMENT_MAX_ROOMS}")

    def _task_config(self):
        from embodied.tasks.config import TaskConfig

        return self.cfg if self.cfg is not None else TaskConfig()

    def _stage(self, index: int) -> ApartmentStage:
        """Apartment `index` of the level's pool, built once per env (kept in a small LRU cache)."""
        if index in self._stages:
            self._stages.move_to_end(index)
            return self._stages[index]
        c = self._task_config()
        for seed in range(index * SEEDS_PER_APARTMENT, (index + 1) * SEEDS_PER_APARTMENT):
            try:
                stage = stage_apartment(seed, self.num_rooms, c.agent_radius, c.agent_height, render=self.rgb)
                break
            except ApartmentError:
                continue
        else:  # pragma: no cover - a usable layout comes within a few seeds
            raise ApartmentError(f"room_ballet: no usable apartment among seeds {index * SEEDS_PER_APARTMENT}..")
        self._stages[index] = stage
        while len(self._stages) > max(1, c.scene_cache):
            self._stages.popitem(last=False)
        return stage

    def _neighbours(self, room: int) -> list[int]:
        if self.stage is not None:
            return self.stage.neighbours[room]
        return room_neighbours(room, self.rooms_wide, self.rooms_high)

    # --- episode ---------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng
        if self.world == "apartment":
            self.stage = self._stage(int(rng.integers(self.apartments)))
        self.task_type = str(self.question_types[int(rng.integers(len(self.question_types)))])
        if self.mode == "budget":
            self._sample_budget_episode(rng)
        else:
            self._sample_multi_episode(rng)
        if self.rgb:
            self._plan_walk()
        self._t = 0
        return self._observation(), self._info(success=0.0)

    def _sample_budget_episode(self, rng: np.random.Generator) -> None:
        rooms = self.num_rooms
        self.room_dance = rng.choice(NUM_DANCES, rooms, replace=False)
        self.room_colour = rng.choice(NUM_COLOURS, rooms, replace=False)
        places: list[int] = []
        room = int(rng.integers(rooms))
        while len(places) < self.walk_steps:
            stay = int(rng.integers(self.stay_min, self.stay_max + 1))
            places.extend([room] * stay)
            room = int(rng.choice(self._neighbours(room)))
        self.places = np.asarray(places[: self.walk_steps], dtype=np.int64)
        # Dance phase at each step: steps since entering the room (the dancer loops its dance).
        entered = np.zeros(self.walk_steps, dtype=np.int64)
        for t in range(1, self.walk_steps):
            entered[t] = entered[t - 1] if self.places[t] == self.places[t - 1] else t
        self.phase = np.arange(self.walk_steps) - entered
        self.step_colour = self.room_colour[self.places]
        self.step_dance = self.room_dance[self.places]
        visited = np.unique(self.places)
        if self.task_type == "room_dance":
            room = int(rng.choice(visited))
            self.question = ("room", room)
            self.answer = 1 + int(self.room_dance[room])
            self.answer_steps = np.flatnonzero(self.places == room)
        else:
            dance = int(self.room_dance[int(rng.choice(visited))])
            self.question = ("dance", dance)
            room = int(np.flatnonzero(self.room_dance == dance)[0])
            self.answer = 1 + NUM_DANCES + room
            self.answer_steps = np.flatnonzero(self.places == room)

    def _sample_multi_episode(self, rng: np.random.Generator) -> None:
        wanted = BEST_STRATEGY[self.task_type]
        length = self.segment_steps
        for _ in range(1000):
            preference = rng.dirichlet(np.ones(self.num_rooms))
            segment_room = rng.choice(self.num_rooms, self.segments, p=preference)
            places = np.repeat(segment_room, length)
            kept = {s: set(kept_steps(list(places) + [int(places[-1])], self.memory_budget, s)) for s in STRATEGIES}
            survives = {s: [any(i * length + k in kept[s] for k in range(length)) for i in range(self.segments)]
                        for s in STRATEGIES}
            candidates = [i for i in range(self.segments)
                          if survives[wanted][i] and not any(survives[s][i] for s in STRATEGIES if s != wanted)]
            if candidates:
                break
        else:  # pragma: no cover - the level parameters make this vanishingly rare
            raise RuntimeError(f"room_ballet: no episode of type {self.task_type!r} in 1000 draws; change the level")
        self.places = places.astype(np.int64)
        self.segment_room = segment_room
        self.segment_colour = rng.choice(NUM_COLOURS, self.segments, replace=False)
        self.segment_dance = rng.integers(0, NUM_DANCES, self.segments)
        self.phase = np.tile(np.arange(length), self.segments)
        self.step_colour = np.repeat(self.segment_colour, length)
        self.step_dance = np.repeat(self.segment_dance, length)
        target = int(rng.choice(candidates))
        self.target_segment = target
        self.question = ("colour", int(self.segment_colour[target]))
        self.answer = 1 + int(self.segment_dance[target])
        self.answer_steps = np.arange(target * length, (target + 1) * length)

    def _plan_walk(self) -> None:
        """The agent's pose at every walk step. Each stay in a room: the body walks the shortest path on
        the navigable grid from the previous room's viewpoint to this one's; the part of the path
        inside this room is played over the first half of the stay (the rest of the way between two
        stays is not shown), then the agent stands at the viewpoint. It always faces the dancer.
        `trajectory` keeps every path walked, for checks."""
        stage = self.stage
        places = self.places
        poses = np.zeros((self.walk_steps, 3))
        self.trajectory: list[np.ndarray] = []
        starts = [0] + [t for t in range(1, self.walk_steps) if places[t] != places[t - 1]] + [self.walk_steps]
        previous = None
        for begin, end in zip(starts[:-1], starts[1:]):
            room = int(places[begin])
            target = stage.viewpoints[room]
            if previous is None:
                inside = target[None]
            else:
                path = stage.paths[previous, room]
                self.trajectory.append(path)
                outside = np.flatnonzero(~inside_rect(stage.rects[room], path, ROOM_MARGIN))
                inside = path[outside[-1] + 1:] if len(outside) else path
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(inside, axis=0), axis=1))])
            arrive = max(1, (end - begin) // 2)
            for f in range(end - begin):
                s = arc[-1] * min(1.0, f / arrive)
                x, y = (np.interp(s, arc, inside[:, k]) for k in range(2))
                dx, dy = stage.homes[room] - (x, y)
                poses[begin + f] = (x, y, math.atan2(dy, dx))
            previous = room
        self.poses = poses

    def dancer_position(self, t: int) -> np.ndarray:
        """World xy of the dancer shown at walk step t (apartment world)."""
        room = int(self.places[t])
        dx, dy = DANCES[DANCE_NAMES[int(self.step_dance[t])]][int(self.phase[t]) % DANCE_STEPS]
        return self.stage.homes[room] + self.stage.dance_steps[room] * np.array([dx, dy], np.float64)

    def _render(self, t: int) -> np.ndarray:
        if t < self.walk_steps:
            self.stage.show_dancer(int(self.step_colour[t]), self.dancer_position(t))
        else:  # the question: the dancer has gone (as in the grid view)
            self.stage.show_dancer(None)
        x, y, yaw = self.poses[min(t, self.walk_steps - 1)]
        return self.stage.renderer.render_one((x, y, 0.0, yaw), self.camera, outputs=("rgb",))["rgb"]

    def _step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} out of range 0..{self.action_space.n - 1}")
        action = int(action)
        reward, terminated = 0.0, False
        if self._t >= self.walk_steps and action > 0:
            terminated = True
            reward = 1.0 if action == self.answer else 0.0
        self._t += 1
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._observation(), reward, terminated, truncated, self._info(success=reward)

    def oracle_action(self) -> int:
        """The expert: wait through the walk, then give the true answer."""
        return self.answer if self._t >= self.walk_steps else 0

    # --- words for viewers (recordings); the task does not use them --------------------------------
    classes: tuple[str, ...] = (("floor",) + tuple(f"room {r} wall" for r in range(MAX_ROOMS))
                                + tuple(f"{colour_name(c)} dancer" for c in range(NUM_COLOURS)))

    @property
    def action_names(self) -> tuple[str, ...]:
        return (("wait",) + tuple(f"answer dance {name}" for name in DANCE_NAMES)
                + tuple(f"answer room {r}" for r in range(self.num_rooms)))

    def observation_text(self, obs: dict) -> str:
        """The text channel of `obs` in words."""
        return describe_text(obs["text"])

    # --- what a memory of the level's budget can answer ------------------------------------------
    def question_places(self) -> np.ndarray:
        """Place of every step up to and including the first question step (what a memory writes)."""
        return np.append(self.places, self.places[-1])

    def answer_kept(self, strategy: str, capacity: int | None = None) -> bool:
        """Whether a memory of `capacity` tokens (default: the level's budget) under `strategy`
        still holds a step that shows the answer when the question is first asked."""
        kept = kept_steps(list(self.question_places()), capacity or self.memory_budget, strategy)
        return bool(set(kept) & set(self.answer_steps.tolist()))

    # --- observation -----------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        t = min(self._t, self.walk_steps)
        type_token = TYPE_TOKEN + QUESTION_TYPES.index(self.task_type)
        text = np.zeros(TEXT_LENGTH, dtype=np.int64)
        text[0] = type_token
        place = int(self.places[min(t, self.walk_steps - 1)])
        if t < self.walk_steps:
            if self.obs_mode == "tokens" and not self.rgb:
                text[1:] = (ROOM_TOKEN + place, COLOUR_TOKEN + int(self.step_colour[t]),
                            DANCE_TOKEN + int(self.step_dance[t]))
        else:
            text[1:3] = question_tokens(*self.question)
        obs = {"text": text, "place": np.array([place], dtype=np.int64)}
        if self.obs_mode == "grid":
            obs["semantic"] = self._grid(t, place)
        if self.rgb:
            obs["rgb"] = self._render(t)
        return obs

    def _grid(self, t: int, place: int) -> np.ndarray:
        grid = np.zeros((ROOM_GRID, ROOM_GRID), dtype=np.int64)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL_CLASS + place
        if t < self.walk_steps:
            dx, dy = DANCES[DANCE_NAMES[int(self.step_dance[t])]][int(self.phase[t]) % DANCE_STEPS]
            centre = ROOM_GRID // 2
            grid[centre - dy, centre + dx] = DANCER_CLASS + int(self.step_colour[t])
        return grid

    def _info(self, success: float) -> dict:
        chance = 1.0 / (self.num_rooms if self.question[0] == "dance" else NUM_DANCES)
        info = {"success": float(success), "chance": chance, "walk_steps": self.walk_steps,
                "memory_budget": self.memory_budget, "question_type": self.task_type}
        if self.stage is not None:
            info["scene"] = self.stage.spec.name
        return info


LEVELS: dict[str, dict] = {
    "budget": dict(mode="budget", obs_mode="tokens"),
    "budget_grid": dict(mode="budget", obs_mode="grid"),
    "multi": dict(mode="multi", rooms_wide=5, rooms_high=1, memory_budget=24, question_types=MULTI_TYPES),
    **{f"multi_{kind}": dict(mode="multi", rooms_wide=5, rooms_high=1, memory_budget=24, question_types=(kind,))
       for kind in MULTI_TYPES},
}
for _level, _attrs in LEVELS.items():
    _name = "RoomBallet" + "".join(part.title() for part in _level.split("_"))
    register_task(f"room_ballet/{_level}")(type(_name, (RoomBalletEnv,), dict(_attrs)))
