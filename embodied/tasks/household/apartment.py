"""The household in a procedural apartment (`task=household/tier<t> task.world=apartment`).

The symbolic world of the world seed (embodied.tasks.household.world: locks, keys, homes, recipes,
the stations' rooms) is unchanged; this module only adds where things are in space, and a body
that walks:

- **Staging** (`stage_household(world_seed)`): one procedural apartment of 6 rooms per world seed
  (`generate_apartment`, the first of seeds 100·w, 100·w + 1, ... on which everything below fits).
  The household's rooms take the apartment's rooms by size (the room holding the most pieces the
  largest room; type matching first left small bathrooms with six pieces, which no seed could
  furnish). Each room's 3 containers and its stations are furniture of a fitting category
  (`CONTAINER_FURNITURE`, `STATION_FURNITURE`) placed against a wall, kept approachable, then
  decor of the room's name (`ROOM_DECOR`) where it fits; no small objects. Each container and
  station gets an approach viewpoint: the navigable cell of its room (at least ROOM_MARGIN inside
  it, in the grid's largest component) within APPROACH of its footprint, nearest to the spot
  FRONT metres in front of it.
- **Reach** (`HouseholdApartment.reaches`): a container or station is within reach and in view when
  the agent stands in its room and some point of its footprint lies within `task.reach` (1.5 m) of
  the agent's centre and inside the camera's horizontal field of view (|bearing - yaw| <= hfov / 2).
  Other furniture does not occlude (a simplification). Things put on the floor lie at the agent's
  spot (within SAME_SPOT of an earlier pile: that pile) and are within reach in the same room
  within `task.reach`, whatever the heading.
- **Actions**: the nav tasks' moves (move_forward, turn_left, turn_right, look_up, look_down; no
  stop), then the symbolic table's interactions without `goto` (open / close <container>, take /
  place / make <item>), each on a target within reach ("nothing in reach" otherwise).
- **Budget**: the tier's symbolic budget x `walk_steps`, the mean steps of a room-to-room walk
  (ceil of the mean geodesic distance between the rooms' centre points over forward_step, plus 2
  turns); `task.max_steps` overrides it.

The rules, feedback, measures and the oracle's plan are the symbolic env's: `ApartmentHouseholdEnv`
composes a HouseholdEnv (its state machine) and gives it an `ApartmentBody` (what is within reach,
where a thing put down lies). `oracle_action()` takes the symbolic oracle's next interaction and
walks there first: `approach_action` (shortest path on the env's navigable grid to the place's
viewpoint, then turn to face it). The agent's navigation controller (embodied.agents.household_nav)
walks the same way on a map of its own, built from depth.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace

import numpy as np
from gymnasium import spaces

from embodied.render import Camera, RaycastRenderer
from embodied.sim import NavAgent, NavigableGrid, ShortestPathFollower
from embodied.tasks.answer import checked_action
from embodied.tasks.config import HouseholdConfig
from embodied.tasks.household.env import ACTION_TABLE, HouseholdEnv, RoomBody
from embodied.tasks.household.spec import CONTEXTS, ROOMS, STATIONS
from embodied.tasks.household.world import World, generate_world
from embodied.tasks.nav import relative_pose, sensor_observations, sensor_spaces
from embodied.tasks.registry import TaskEnv
from embodied.tasks.room_ballet.apartment import inside_rect, room_rects
from embodied.tasks.scenes import NavScene
from embodied.world import build_geometry, generate_apartment, semantic_classes
from embodied.world.apartment import ROOM_FURNITURE

MOVES = ("move_forward", "turn_left", "turn_right", "look_up", "look_down")  # the nav tasks' actions but stop
APARTMENT_ACTION_TABLE: list[tuple[str, int]] = [(m, -1) for m in MOVES] + [a for a in ACTION_TABLE if a[0] != "goto"]
APARTMENT_ACTION_ID = {a: i for i, a in enumerate(APARTMENT_ACTION_TABLE)}
CONTAINER_FURNITURE = {"drawer": "dresser", "cabinet": "cabinet", "fridge": "fridge", "box": "nightstand",
                       "wardrobe": "wardrobe", "shelf": "shelf"}
STATION_FURNITURE = {"toaster": "counter", "stove": "stove", "oven": "stove", "blender": "counter",
                     "workbench": "table", "sewing machine": "desk"}
ROOM_DECOR = {"kitchen": "kitchen", "living room": "living_room", "bedroom": "bedroom", "bathroom": "bathroom",
              "study": "corridor", "garage": "corridor"}
_HOUSEHOLD_CATEGORIES = set(CONTAINER_FURNITURE.values()) | set(STATION_FURNITURE.values())
SEEDS_PER_WORLD = 100  # world w's apartment: the first usable of seeds 100w .. 100w + 99
APPROACH = 0.9  # a viewpoint lies within this of its footprint, so arriving within ARRIVAL keeps it within 1.2 m
ARRIVAL = 0.25  # the walk to a viewpoint ends this close (geodesic) to it
FRONT = 0.55  # preferred distance of a viewpoint in front of its furniture
ROOM_MARGIN = 0.3  # viewpoints lie at least this far inside their room
SAME_SPOT = 0.3  # a thing put down within this of a pile joins it
FOOTPRINT_STEP = 0.05  # spacing of the footprint points the reach test uses


class HouseholdStagingError(RuntimeError):
    """No apartment among a world's seeds fits its containers and stations."""


@dataclass
class Spot:
    """A container or station standing in the apartment."""

    name: str
    room: int  # household room index (ROOMS)
    item: int  # SceneSpec item id (the instance id in renders)
    category: str  # furniture category
    footprint: tuple  # ((x, y), (size_x, size_y), yaw)
    points: np.ndarray  # [k, 2] points covering the footprint (the reach test)
    viewpoint: np.ndarray  # [2] approach viewpoint on the navigable grid


@dataclass
class HouseholdApartment:
    """One world seed's apartment: the scene (spec, geometry, renderer, navigable grid), which SceneSpec
    room each household room is (`rooms`), the containers and stations as `Spot`s, a navigable point
    near each room's centre (`room_points`) and the budget's walk factor (`walk_steps`)."""

    world_seed: int
    seed: int
    scene: NavScene
    rooms: list[int]
    rects: np.ndarray  # [len(ROOMS), 4] wall centre-line rectangle of each household room
    containers: list[Spot]
    stations: dict[str, Spot]
    room_points: np.ndarray
    walk_steps: int

    def room_at(self, xy) -> int | None:
        """The household room whose rectangle holds xy (None: none)."""
        p = np.asarray(xy, np.float64)[:2]
        for r, rect in enumerate(self.rects):
            if inside_rect(rect, p):
                return r
        return None

    def reaches(self, spot: Spot, x: float, y: float, yaw: float, reach: float, half_fov: float) -> bool:
        """Whether `spot` is within reach and in view of an agent at (x, y) facing yaw (module doc)."""
        if self.room_at((x, y)) != spot.room:
            return False
        d = spot.points - (x, y)
        near = np.einsum("ij,ij->i", d, d) <= reach * reach
        if not near.any():
            return False
        bearing = np.arctan2(d[near, 1], d[near, 0]) - yaw
        return bool(np.any(np.abs((bearing + math.pi) % (2 * math.pi) - math.pi) <= half_fov + 1e-9))


def _room_mapping(world: World, rooms) -> list[int]:
    """SceneSpec room of each household room: the most furnished household room takes the largest room."""
    need = [sum(c.room == h for c in world.containers) + sum(r == h for r in world.station_room.values())
            for h in range(len(ROOMS))]
    area = [(r.polygon[2][0] - r.polygon[0][0]) * (r.polygon[2][1] - r.polygon[0][1]) for r in rooms]
    by_need = sorted(range(len(ROOMS)), key=lambda h: (-need[h], h))
    by_area = sorted(range(len(rooms)), key=lambda i: (-area[i], i))
    out = [0] * len(ROOMS)
    for h, i in zip(by_need, by_area):
        out[h] = i
    return out


def _pieces(world: World, h: int) -> list[tuple[str, str, str]]:
    """(kind, name, furniture category) of household room h's containers, then its stations."""
    return ([("container", c.name, CONTAINER_FURNITURE[c.kind]) for c in world.containers if c.room == h]
            + [("station", s, STATION_FURNITURE[s]) for s in STATIONS if world.station_room[s] == h])


def _footprint_points(footprint) -> np.ndarray:
    (x, y), (sx, sy), yaw = footprint
    u = np.linspace(-sx / 2, sx / 2, max(2, int(math.ceil(sx / FOOTPRINT_STEP)) + 1))
    v = np.linspace(-sy / 2, sy / 2, max(2, int(math.ceil(sy / FOOTPRINT_STEP)) + 1))
    U, V = (a.ravel() for a in np.meshgrid(u, v))
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([x + c * U - s * V, y + s * U + c * V], -1)


def _try_stage(world: World, seed: int, agent_radius: float, agent_height: float, forward_step: float,
               max_depth: float) -> HouseholdApartment | None:
    mapping: list[int] = []

    def furniture(rooms):
        mapping[:] = _room_mapping(world, rooms)
        household_of = {i: h for h, i in enumerate(mapping)}
        entries = []
        for room in rooms:
            h = household_of[room.id]
            decor = tuple(e for e in ROOM_FURNITURE[ROOM_DECOR[ROOMS[h]]] if e[0] not in _HOUSEHOLD_CATEGORIES)
            entries.append(tuple((cat, 1.0, "wall", True) for _, _, cat in _pieces(world, h)) + decor)
        return entries

    spec = generate_apartment(seed, n_rooms=len(ROOMS), objects_per_room=(0, 0), furniture=furniture)
    placed = {}
    for h, i in enumerate(mapping):
        pieces = _pieces(world, h)
        items = [it for it in spec.furniture() if it.room == i][:len(pieces)]
        if [it.category for it in items] != [cat for *_, cat in pieces]:
            return None  # a piece did not fit (decor never shares a household category)
        placed.update({(kind, name): (h, it) for (kind, name, _), it in zip(pieces, items)})
    geometry = build_geometry(spec)
    grid = NavigableGrid.from_geometry(geometry, agent_radius=agent_radius, agent_height=agent_height)
    grid.field_cache_size = 96  # the viewpoints', the rooms' and the piles' fields stay cached
    rows, cols = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
    centres = grid.grid_to_world(np.stack([rows, cols], -1))
    main = grid.largest_component()
    rects = room_rects(spec)[mapping]
    spots = {}
    for (kind, name), (h, it) in placed.items():
        footprint = (tuple(it.position[:2]), tuple(it.size[:2]), float(it.yaw))
        cells = grid.goal_cells_near_footprints([footprint], APPROACH) & main & inside_rect(rects[h], centres, ROOM_MARGIN)
        if not cells.any():
            return None
        front = np.array(it.position[:2]) + (it.size[1] / 2 + FRONT) * np.array([math.sin(it.yaw), -math.cos(it.yaw)])
        rc = np.argwhere(cells)
        d = np.hypot(*(centres[rc[:, 0], rc[:, 1]] - front).T)
        viewpoint = centres[tuple(rc[int(np.argmin(d))])]
        spots[kind, name] = Spot(name, h, it.id, it.category, footprint, _footprint_points(footprint), viewpoint)
    room_points = []
    for h in range(len(ROOMS)):
        cells = main & inside_rect(rects[h], centres, ROOM_MARGIN)
        if not cells.any():
            return None
        centre = (rects[h][:2] + rects[h][2:]) / 2
        room_points.append(grid.nearest_navigable(centre, cells))
    room_points = np.array(room_points)
    walks = [grid.distance_field_to_points(room_points[a]).at(room_points[b])
             for a in range(len(ROOMS)) for b in range(len(ROOMS)) if a != b]
    walk_steps = int(math.ceil(float(np.mean(walks)) / forward_step + 2))
    renderer = RaycastRenderer(geometry, nthreads=int(os.environ.get("EMBODIED_RENDER_THREADS", "0")), max_depth=max_depth)
    scene = NavScene(f"household_world{world.seed}_{spec.name}", spec, geometry, renderer, grid)
    return HouseholdApartment(world.seed, seed, scene, list(mapping), rects,
                              [spots["container", c.name] for c in world.containers],
                              {s: spots["station", s] for s in STATIONS}, room_points, walk_steps)


@functools.lru_cache(maxsize=4)
def stage_household(world_seed: int, agent_radius: float = 0.18, agent_height: float = 1.5,
                    forward_step: float = 0.25, max_depth: float = 10.0) -> HouseholdApartment:
    """The apartment of a world seed (cached: every env of a process shares it; it is read-only)."""
    world = generate_world(world_seed)
    for seed in range(SEEDS_PER_WORLD * world_seed, SEEDS_PER_WORLD * (world_seed + 1)):
        stage = _try_stage(world, seed, agent_radius, agent_height, forward_step, max_depth)
        if stage is not None:
            return stage
    raise HouseholdStagingError(  # pragma: no cover - worlds 0..11 stage within 25 seeds
        f"household world {world_seed}: no apartment among seeds {SEEDS_PER_WORLD * world_seed}.. fits its "
        "containers and stations")


def approach_action(grid: NavigableGrid, agent: NavAgent, viewpoint, points: np.ndarray) -> str:
    """The next move towards interacting with a thing covering `points` [k, 2] from `viewpoint`: the
    shortest-path follower's step towards the viewpoint until within ARRIVAL, then a turn towards the
    thing's nearest point (the env's oracle walks so)."""
    follower = ShortestPathFollower(grid, np.asarray(viewpoint, np.float64), success_distance=ARRIVAL)
    action = follower.next_action(agent)
    if action in ("turn_left", "turn_right"):
        # Keep walking while the heading gains half a step: in a tight spot the follower's look-ahead (at
        # yaw + k * turn) and the heading a turn gives (wrapped) can differ in the last bit and each
        # prefer the other, turning left and right for ever.
        step = agent.forward_step
        ex, ey, _ = agent.resolve_move(agent.x, agent.y, step * math.cos(agent.yaw), step * math.sin(agent.yaw))
        if follower.field.at((agent.x, agent.y)) - follower.field.at((ex, ey)) >= 0.5 * step:
            return "move_forward"
    if action != "stop":
        return action
    return "turn_left" if bearing_to(points, agent.x, agent.y, agent.yaw) > 0 else "turn_right"


def bearing_to(points: np.ndarray, x: float, y: float, yaw: float) -> float:
    """The turn (radians, left positive, in (-pi, pi]) that faces the nearest of `points` [k, 2] from (x, y, yaw)."""
    d = np.asarray(points, np.float64).reshape(-1, 2) - (x, y)
    near = d[int(np.argmin(np.einsum("ij,ij->i", d, d)))]
    return (math.atan2(near[1], near[0]) - yaw + math.pi) % (2 * math.pi) - math.pi


class ApartmentBody(RoomBody):
    """What the walking agent can reach (module doc); the HouseholdEnv state machine asks it."""

    def __init__(self, env: "ApartmentHouseholdEnv"):
        super().__init__(env.core)
        self.outer = env

    def spot(self, place) -> Spot | None:
        apt = self.outer.apartment
        return apt.containers[place[1]] if place[0] == "container" else \
            apt.stations.get(place[1]) if place[0] == "station" else None

    def in_reach(self, place) -> bool:
        env = self.outer
        if place[0] == "hands":
            return True
        if place[0] == "floor":
            xy, room = env.piles[place[1]]
            return env.room_here() == room and math.dist(xy, (env.agent.x, env.agent.y)) <= env.cfg.reach
        return env.sees(self.spot(place))

    def room_of(self, place) -> int:
        return self.outer.piles[place[1]][1] if place[0] == "floor" else super().room_of(place)

    def target(self, place) -> tuple[np.ndarray, np.ndarray]:
        """(viewpoint, points to face) of a place."""
        if place[0] == "floor":
            xy = np.asarray(self.outer.piles[place[1]][0])
            return xy, xy[None]
        spot = self.spot(place)
        return spot.viewpoint, spot.points

    def cost(self, place) -> float:
        if self.in_reach(place):
            return 0.0
        grid, agent = self.outer.scene.grid, self.outer.agent
        return float(grid.distance_field_to_points(self.target(place)[0]).at((agent.x, agent.y)))

    def out_of_reach(self, place) -> tuple[str, str]:
        if place[0] == "station":
            return "nothing in reach", "no station within reach"
        return "nothing in reach", f"the {self.env.world.containers[place[1]].name} is not within reach"

    def stations_in_reach(self) -> list[str]:
        return [s for s in STATIONS if self.outer.sees(self.outer.apartment.stations[s])]

    def containers_in_reach(self) -> list[bool]:
        return [self.outer.sees(spot) for spot in self.outer.apartment.containers]

    def drop_spot(self):
        env = self.outer
        here = (env.agent.x, env.agent.y)
        for key, (xy, room) in enumerate(env.piles):
            if room == env.room_here() and math.dist(xy, here) <= SAME_SPOT:
                return key
        env.piles.append((here, env.room_here()))
        return len(env.piles) - 1


class ApartmentHouseholdEnv(TaskEnv):
    """A household tier in the world seed's apartment (module doc). Built by the registered tier class
    when `task.world=apartment`; its state machine is that class's symbolic env (`core`)."""

    metadata = {"render_modes": ["rgb_array"]}
    config_class = HouseholdConfig

    def __init__(self, cfg: HouseholdConfig, tier_class: type[HouseholdEnv]):
        self.cfg = cfg
        self.level, self.task_name = tier_class.level, tier_class.task_name
        self.core: HouseholdEnv = tier_class(replace(cfg, world="symbolic", max_steps=None))
        self.world = self.core.world
        self.apartment = stage_household(cfg.world_seed, cfg.agent_radius, cfg.agent_height, cfg.forward_step,
                                         cfg.max_depth)
        self.scene = self.apartment.scene
        self.max_episode_steps = cfg.max_steps or self.level.max_steps * self.apartment.walk_steps
        self.core.max_episode_steps = self.max_episode_steps
        self.core.body = self.body = ApartmentBody(self)
        self.classes = semantic_classes()
        self.half_fov = math.radians(cfg.hfov) / 2
        obs = dict(self.core.observation_space.spaces)
        obs["steps_left"] = spaces.Box(0, self.max_episode_steps, (1,), dtype=np.int64)
        obs.update(sensor_spaces(cfg, len(self.classes)))
        obs["pose"] = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(len(APARTMENT_ACTION_TABLE))
        self.action_names = [v if t < 0 else f"{v} {self.core._target_name(v, t)}" for v, t in APARTMENT_ACTION_TABLE]
        self.goals: list = []  # the viewer's goal boxes (none: the goal is a thing to make)
        self._cameras: dict[float, Camera] = {}
        self.agent: NavAgent | None = None
        self.piles: list[tuple[tuple[float, float], int]] = []

    # --- what the agent can reach -----------------------------------------------------------------------
    def room_here(self) -> int:
        return self.core.room

    def sees(self, spot: Spot | None) -> bool:
        a = self.agent
        return spot is not None and a is not None and self.apartment.reaches(spot, a.x, a.y, a.yaw, self.cfg.reach, self.half_fov)

    def floor_plan(self) -> dict:
        """The symbolic floor plan plus where things stand (public): per container and station its
        footprint and approach viewpoint, each room's rectangle and centre point, the map (the
        navigable grid) that poses (`info["map_pose"]`) refer to, and the body's step and turn."""
        apt = self.apartment
        plan = self.core.floor_plan()

        def where(s: Spot) -> dict:
            return {"footprint": s.footprint, "points": s.points, "viewpoint": s.viewpoint}
        plan.update({"container_spots": [where(s) for s in apt.containers],
                     "station_spots": {n: where(s) for n, s in apt.stations.items()},
                     "room_rects": apt.rects, "room_points": apt.room_points, "grid": self.scene.grid,
                     "reach": self.cfg.reach, "hfov": self.cfg.hfov, "forward_step": self.cfg.forward_step,
                     "turn_angle": self.cfg.turn_angle, "width": self.cfg.width, "height": self.cfg.height,
                     "camera_height": self.cfg.camera_height, "agent_radius": self.cfg.agent_radius,
                     "agent_height": self.cfg.agent_height, "sensors": list(self.cfg.sensors)})
        return plan

    @property
    def goal(self) -> str:
        return self.core.goal

    @property
    def perturbations(self) -> list[str]:
        return self.core.perturbations

    @property
    def instruction(self) -> str:
        return f"obtain {self.core.goal} ({CONTEXTS[self.core.context]})"

    # --- episode ------------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        _, info = self.core.reset(seed=seed)  # the symbolic draws: context, goal, start room, perturbations
        c = self.cfg
        self.agent = NavAgent(self.scene.grid, forward_step=c.forward_step, turn_angle=c.turn_angle,
                              tilt_angle=c.tilt_angle, max_tilt=2 * c.tilt_angle, camera_height=c.camera_height)
        rng = np.random.default_rng(None if seed is None else [seed, 0x5A17])  # where in the start room
        grid, apt = self.scene.grid, self.apartment
        rows, cols = np.nonzero(grid.largest_component())
        xy = grid.grid_to_world(np.stack([rows, cols], -1))
        xy = xy[inside_rect(apt.rects[self.core.room], xy, ROOM_MARGIN)]
        self.agent.reset(xy[int(rng.integers(len(xy)))], float(rng.uniform(-math.pi, math.pi)))
        self.start_pose = self.agent.pose.copy()
        self.piles = []
        self.collided = False
        return self._observation(self.core._observation()), self._info(self.core._info())

    def _step(self, action):
        verb, target = APARTMENT_ACTION_TABLE[checked_action(action, self.action_space)]
        self.collided = False
        if verb in MOVES:
            self.collided = bool(self.agent.step(verb))
            room = self.apartment.room_at((self.agent.x, self.agent.y))
            if room is not None:
                self.core.room = room
            obs, reward, terminated, truncated, info = self.core.act(None)
        else:
            obs, reward, terminated, truncated, info = self.core.act(verb, target)
        return self._observation(obs), reward, terminated, truncated, self._info(info)

    def _camera(self) -> Camera:
        tilt = self.agent.tilt_deg
        if tilt not in self._cameras:
            c = self.cfg
            self._cameras[tilt] = Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height,
                                         tilt_deg=tilt)
        return self._cameras[tilt]

    def _observation(self, obs: dict) -> dict:
        if self.cfg.sensors:
            images = self.scene.renderer.render(self.agent.pose[None], (self._camera(),), outputs=tuple(self.cfg.sensors))
            obs.update(sensor_observations({k: v[0, 0] for k, v in images.items()}, self.cfg.sensors))
        obs["pose"] = relative_pose(self.start_pose, self.agent.pose)
        return obs

    def _info(self, info: dict) -> dict:
        return {**info, "scene": self.scene.key, "map_pose": self.agent.pose.tolist(), "collided": self.collided}

    def render(self):
        return self.scene.renderer.render(self.agent.pose[None], (self._camera(),), outputs=("rgb",))["rgb"][0, 0]

    def observation_text(self, obs=None) -> str:
        return self.core.observation_text(obs)

    # --- the oracle ----------------------------------------------------------------------------------------
    def oracle_action(self) -> int:
        """The symbolic oracle's next interaction, done where it is within reach: walk to its place's
        viewpoint and turn to face it first (`approach_action`)."""
        step = self.core.oracle_interaction()
        if step is None:  # the goal is held
            return APARTMENT_ACTION_ID["turn_left", -1]
        verb, target, place = step
        if self.body.in_reach(place):
            return APARTMENT_ACTION_ID[verb, target]
        viewpoint, points = self.body.target(place)
        return APARTMENT_ACTION_ID[approach_action(self.scene.grid, self.agent, viewpoint, points), -1]
