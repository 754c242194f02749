"""Schemas of the `task` config group (configs/task/**.yaml): one dataclass per task family.

A family's schema holds only the keys its tasks read; keys that several families read (the image,
the camera, the agent's body) are declared once, in the base classes below, which the family schemas
inherit. Each task class names its schema (`config_class`); `TaskConfig.from_any` picks it by the task
name. `register_configs` stores each schema in Hydra's ConfigStore as `task/<family>_schema`, which a
task YAML names in its defaults list and overrides with only what differs:

    defaults:
      - /task/nav_schema@_here_
      - _self_
    name: nav/objectnav

Level parameters defined in Python (a task module's LEVELS) are not keys; a key a family does not
read, or a value out of range, is a one-line ConfigError naming it.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields

from embodied.config import MOVED_KEYS, ConfigError, check

SENSORS = ("rgb", "depth", "semantic", "instance")
GOAT_MODALITIES = ("category", "description", "image")  # how a nav/goat goal is given (embodied/tasks/goat.py)
FASTMAP_MODES = ("room", "symbolic")
ROOM_BALLET_WORLDS = ("grid", "apartment")
HOUSEHOLD_WORLDS = ("symbolic", "apartment")


@dataclass
class TaskConfig:
    """Base of every family's schema: the task name, type checks, and `from_any`."""

    family = ""  # `<family>_schema` in the ConfigStore; a class attribute, not a key
    name: str = ""
    """Registered task name; configs/task/<name>.yaml selects it (`task=<name>`)."""

    def _check_types(self) -> None:
        """Each field holds its declared type (a dict, or a YAML read without its schema, arrives
        unchecked); ints are accepted where a float is declared."""
        allowed = {int: "an integer", float: "a number", str: "a string", bool: "true, false",
                   list: "a list", dict: "a mapping"}
        for f, hint in ((f, typing.get_type_hints(type(self))[f.name]) for f in fields(self)):
            value = getattr(self, f.name)
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            kinds = [typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,))]
            if value is None and type(None) in kinds:
                continue
            kind = next(k for k in kinds if k is not type(None))
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok, value = True, float(value)
                setattr(self, f.name, value)
            if kind is list and isinstance(value, tuple):
                ok = True
            check(ok, f"task.{f.name}", f"{value!r}; allowed: {allowed.get(kind, kind.__name__)}"
                  + (" or null" if type(None) in kinds else ""))

    def validate(self):
        """Type checks, then the name: a registered task of this family. Subclasses add their range
        checks and call this first."""
        self._check_types()
        self._check_name()
        return self

    def _check_name(self) -> None:
        from embodied.tasks.registry import TASKS

        names = sorted(n for n, cls in TASKS.items() if getattr(cls, "config_class", None) is type(self))
        check(self.name in names, "task.name", f"{self.name!r} is not a {self.family} task; allowed: {', '.join(names)}")

    @classmethod
    def from_any(cls, cfg) -> "TaskConfig":
        """From a schema instance, a dict or an omegaconf node. On TaskConfig itself the task name picks
        the family's schema; a key that schema does not have is an error naming the allowed keys."""
        if type(cfg) is TaskConfig:  # a bare name: that task's defaults
            cfg = {"name": cfg.name}
        if isinstance(cfg, TaskConfig):
            if cls is not TaskConfig and not isinstance(cfg, cls):
                raise ConfigError(f"task.name: {cfg.name!r} is a {cfg.family} task, not a {cls.family} task")
            return cfg.validate()
        if not isinstance(cfg, dict):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        schema = cls if cls is not TaskConfig else schema_of(cfg.get("name"))
        names = {f.name for f in fields(schema)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            key = f"task.{unknown[0]}"
            hint = f" ({MOVED_KEYS[key]})" if key in MOVED_KEYS else ""
            raise ConfigError(f"{key}: not a key of {schema.family} tasks{hint}; allowed: {', '.join(sorted(names))}")
        return schema(**cfg).validate()


def schema_of(name) -> type[TaskConfig]:
    """The schema of the family of registered task `name`."""
    from embodied.tasks.registry import TASK_PREFIXES, TASKS, task_class

    schema = getattr(task_class(name), "config_class", None)
    if schema is None:
        prefixes = [f"{p}<id>" for p in TASK_PREFIXES]
        raise ConfigError(f"task.name: unknown task {name!r}; allowed: {', '.join(sorted(TASKS) + prefixes)}")
    return schema


def task_schemas() -> dict[str, type[TaskConfig]]:
    """{family: schema} of the registered tasks."""
    from embodied.tasks.registry import TASK_PREFIXES, TASKS

    schemas = {getattr(cls, "config_class", None) for cls in [*TASKS.values(), *TASK_PREFIXES.values()]} - {None}
    return {s.family: s for s in sorted(schemas, key=lambda s: s.family)}


def register_configs() -> None:
    """Store each family's schema as `task/<family>_schema` with Hydra (embodied.config.register_schemas
    calls it for every command that composes a task)."""
    from hydra.core.config_store import ConfigStore

    for family, schema in task_schemas().items():
        ConfigStore.instance().store(group="task", name=f"{family}_schema", node=schema)


# --- keys shared by several families -------------------------------------------------------------------
@dataclass
class ImageConfig(TaskConfig):
    """Tasks with image observations."""

    width: int = 64
    """Image width in pixels."""
    height: int = 64
    """Image height in pixels."""

    def validate(self):
        super().validate()
        check(16 <= self.width <= 1024, "task.width", f"{self.width} out of range; allowed: 16..1024")
        check(16 <= self.height <= 1024, "task.height", f"{self.height} out of range; allowed: 16..1024")
        return self


@dataclass
class CameraConfig(ImageConfig):
    """Tasks seen through a pinhole camera carried by the agent."""

    hfov: float = 90.0
    """Horizontal field of view in degrees."""
    camera_height: float = 1.25
    """Camera height above the floor, metres."""

    def validate(self):
        super().validate()
        check(10.0 <= self.hfov <= 170.0, "task.hfov", f"{self.hfov} out of range; allowed: 10..170 degrees")
        check(self.camera_height > 0, "task.camera_height", f"{self.camera_height}; allowed: > 0")
        return self


@dataclass
class RenderConfig(CameraConfig):
    """First-person views with a choice of sensors and look_up / look_down actions."""

    sensors: list[str] = field(default_factory=lambda: ["rgb", "depth"])
    """Image sensors to render, a subset of rgb, depth, semantic, instance (object instance ids, 0 on
    structure; navigation tasks only)."""
    max_depth: float = 10.0
    """Depth is clipped to this range, metres; misses read max_depth."""
    tilt_angle: float = 30.0
    """look_up / look_down angle, degrees (camera tilt is clamped to +-2 steps)."""

    def validate(self):
        super().validate()
        bad = [s for s in self.sensors if s not in SENSORS]
        check(not bad, "task.sensors", f"unknown sensor(s) {bad}; allowed: {', '.join(SENSORS)}")
        check(self.max_depth > 0, "task.max_depth", f"{self.max_depth}; allowed: > 0")
        check(0 < self.tilt_angle <= 45, "task.tilt_angle", f"{self.tilt_angle}; allowed: (0, 45]")
        return self


@dataclass
class BodyConfig(TaskConfig):
    """Tasks whose agent is a cylinder walking on a navigable grid."""

    agent_radius: float = 0.18
    """Radius of the agent's cylinder, metres."""
    agent_height: float = 1.5
    """Height of the agent's cylinder, metres."""

    def validate(self):
        super().validate()
        check(0.05 <= self.agent_radius <= 1.0, "task.agent_radius", f"{self.agent_radius}; allowed: 0.05..1.0")
        camera = getattr(self, "camera_height", None)
        check(camera is None or self.agent_height > camera, "task.camera_height",
              f"{camera}; allowed: 0 < camera_height < agent_height ({self.agent_height})")
        return self


# --- the families ---------------------------------------------------------------------------------------
@dataclass
class NavConfig(RenderConfig, BodyConfig):
    """nav/pointnav, nav/objectnav, nav/multigoal (embodied/tasks/nav.py)."""

    family = "nav"
    _num_goals_range = (1, 20)  # a class attribute, not a key
    name: str = "nav/pointnav"
    """nav/pointnav, nav/objectnav or nav/multigoal."""
    scenes: str = "train"
    """Where episodes take place: a pinned split (train, val, test), `procedural` (a new apartment
    generated from each episode's seed), or a path to a SceneSpec JSON or a mesh (GLB/PLY/OBJ)."""
    n_rooms: int | None = None
    """Rooms per procedural apartment (2-8); null draws 2-8 at random."""
    max_steps: int = 500
    """Steps before an episode is truncated."""
    success_distance: float | None = None
    """Stop within this distance of the goal to succeed; null: 0.2 m of the point (pointnav), else
    1.0 m of the nearest goal object's footprint (as habitat's ObjectNav)."""
    forward_step: float = 0.25
    """move_forward distance, metres."""
    turn_angle: float = 30.0
    """turn_left / turn_right angle, degrees."""
    num_goals: int = 3
    """nav/multigoal: goals per episode (1-20), visited in order in the same scene (other tasks: one goal)."""
    min_goal_distance: float = 1.0
    """Episodes sample start-goal pairs at least this geodesic distance apart, metres."""
    max_goal_distance: float = 12.0
    """Episodes sample start-goal pairs at most this geodesic distance apart, metres."""
    goal_pool: int = 0
    """nav/pointnav: 0 = a fresh goal point every episode; N > 0 = goals drawn from N points fixed per
    scene (seeded by the scene, as a Habitat episode dataset fixes its goals), starts still fresh.
    A goal's geodesic field (one Dijkstra over the grid, ~3 ms, most of a reset) is then computed
    once per scene and point and cached (N fields per scene, 8 bytes per grid cell each)."""
    episodes_file: str | None = None
    """nav/pointnav, nav/objectnav: a habitat-lab PointNav/ObjectNav episode file (.json.gz; docs/nav.md)
    whose episodes are played instead of drawn: reset(seed=s) plays its navigable episode s mod N,
    seedless resets the next; scene_id names a pinned apartment (any split) or the file of
    task.scenes; min/max_goal_distance do not apply. null: episodes are drawn from the seed."""
    success_reward: float = 2.5
    """Reward for a successful stop (per goal in multigoal)."""
    slack_reward: float = -0.01
    """Reward added every step."""
    scene_cache: int = 16
    """Scenes (geometry, renderer, navigable grid; a few MB each) kept in memory per env: covering
    the split avoids rebuilding a scene (~0.3 s) on most resets."""
    batched: bool = False
    """Step every env of a process in one batched simulator (embodied/envs/batched.py: poses,
    collisions, measures and images as torch tensors on `sim_device`, no worker processes) instead
    of one env object each. The same episodes and measures as the per-env envs. Not for nav/goat."""
    sim_device: str = "auto"
    """Batched simulator: where its tensors and images live: cpu, cuda, cuda:N, or auto (cuda when
    available, else cpu)."""
    renderer: str = "auto"
    """Batched simulator's ray caster: embree (CPU, open3d), warp (NVIDIA Warp: CUDA, or its
    single-threaded CPU backend for parity checks), or auto (warp on CUDA, embree on the CPU)."""

    def validate(self) -> "NavConfig":
        super().validate()
        check(self.renderer in ("auto", "embree", "warp"), "task.renderer",
              f"{self.renderer!r}; allowed: auto, embree, warp")
        check(self.sim_device == "auto" or self.sim_device == "cpu" or self.sim_device.split(":")[0] == "cuda",
              "task.sim_device", f"{self.sim_device!r}; allowed: auto, cpu, cuda, cuda:N")
        check(not self.batched or self.name in ("nav/pointnav", "nav/objectnav", "nav/multigoal"), "task.batched",
              f"true for {self.name}; allowed with nav/pointnav, nav/objectnav, nav/multigoal")
        check(self.n_rooms is None or 2 <= self.n_rooms <= 8, "task.n_rooms", f"{self.n_rooms}; allowed: 2..8 or null")
        check(self.max_steps >= 1, "task.max_steps", f"{self.max_steps}; allowed: >= 1")
        if self.success_distance is None:
            self.success_distance = 0.2 if self.name == "nav/pointnav" else 1.0
        check(self.success_distance > 0, "task.success_distance", f"{self.success_distance}; allowed: > 0")
        check(self.forward_step > 0, "task.forward_step", f"{self.forward_step}; allowed: > 0")
        check(0 < self.turn_angle <= 180, "task.turn_angle", f"{self.turn_angle}; allowed: (0, 180]")
        lo, hi = self._num_goals_range
        check(lo <= self.num_goals <= hi, "task.num_goals", f"{self.num_goals}; allowed: {lo}..{hi}")
        check(0 <= self.min_goal_distance < self.max_goal_distance, "task.min_goal_distance",
              "allowed: 0 <= min_goal_distance < max_goal_distance")
        check(self.scene_cache >= 1, "task.scene_cache", f"{self.scene_cache}; allowed: >= 1")
        check(self.goal_pool >= 0, "task.goal_pool", f"{self.goal_pool}; allowed: >= 0")
        check(not (self.goal_pool and self.name != "nav/pointnav"), "task.goal_pool",
              f"{self.goal_pool} for {self.name}; allowed: 0, or task nav/pointnav")
        if self.episodes_file is not None:
            check(self.name in ("nav/pointnav", "nav/objectnav"), "task.episodes_file",
                  f"set for {self.name}; allowed: null, or a file with task nav/pointnav or nav/objectnav")
            check(bool(self.episodes_file.strip()), "task.episodes_file", "empty; allowed: a path or null")
            check(not self.goal_pool, "task.episodes_file", "the file fixes the goals; allowed with task.goal_pool=0 only")
        return self


@dataclass
class GoatConfig(NavConfig):
    """nav/goat (embodied/tasks/goat.py): a lifelong episode of `num_goals` object instances in one
    scene (GOAT-Bench), each given as a category, a description or an image. The NavConfig keys keep
    their meaning; max_steps defaults to num_goals * steps_per_goal."""

    family = "goat"
    _num_goals_range = (1, 10)
    name: str = "nav/goat"
    """nav/goat."""
    sensors: list[str] = field(default_factory=lambda: ["rgb", "depth", "semantic", "instance"])
    """Image sensors to render, a subset of rgb, depth, semantic, instance (the task renders instance
    ids every step anyway, to know what the agent has seen)."""
    width: int = 128
    """Image width in pixels (128: small objects cover enough pixels to be detected from 3 m)."""
    height: int = 128
    """Image height in pixels."""
    num_goals: int = 5
    """Goals (object instances) per episode, 1-10, given one after another; the pose carries over."""
    max_steps: int | None = None
    """Steps before an episode is truncated; null = num_goals * steps_per_goal (never earlier than
    the goals' budgets)."""
    modalities: list[str] = field(default_factory=lambda: ["category", "description", "image"])
    """How goals are given, a non-empty subset of category (any instance of the category counts),
    description ("the red mug on the table in the kitchen": that instance) and image (a view of
    that instance); each goal draws one uniformly."""
    steps_per_goal: int = 300
    """Step budget of each goal: when it runs out the goal fails and the next one begins (as
    GOAT-Bench evaluates subtasks)."""
    wrong_stop_reward: float = 0.0
    """Reward added when a `stop` fails the goal. 0: a wrong stop costs nothing but the goal (the
    next one begins), so a learner paid for approaching goals can do best by stopping at once."""
    image_distance: float = 1.2
    """Image goals are rendered from a navigable viewpoint about this far (+-0.5 m) from the
    instance, facing it, metres."""
    min_image_pixels: int = 15
    """An image goal's instance covers at least this many pixels of its image; a goal without such a
    viewpoint is given as a description instead."""

    def validate(self) -> "GoatConfig":
        self._check_types()
        check(self.steps_per_goal >= 1, "task.steps_per_goal", f"{self.steps_per_goal}; allowed: >= 1")
        if self.max_steps is None:  # (a bad num_goals is reported by NavConfig's check, not as max_steps)
            self.max_steps = max(self.num_goals, 1) * self.steps_per_goal
        super().validate()
        mods = self.modalities
        check(bool(mods) and all(m in GOAT_MODALITIES for m in mods) and len(set(mods)) == len(mods),
              "task.modalities", f"{mods}; allowed: a non-empty subset of {', '.join(GOAT_MODALITIES)}")
        check(self.image_distance > 0.5, "task.image_distance", f"{self.image_distance}; allowed: > 0.5")
        check(self.min_image_pixels >= 1, "task.min_image_pixels", f"{self.min_image_pixels}; allowed: >= 1")
        return self


@dataclass
class BalletConfig(ImageConfig):
    """ballet/<N>_delay<D> (embodied/tasks/ballet.py); the level (dancers, delay) comes with the name.
    width and height size the `rgb` view."""

    family = "ballet"
    name: str = "ballet/4_delay16"
    """ballet/{2,4,8}_delay{16,48}."""
    rgb: bool = False
    """Also observe `rgb` [height, width, 3]: the room ray cast in 3D from above."""


@dataclass
class RoomBalletConfig(CameraConfig, BodyConfig):
    """room_ballet/<level> (embodied/tasks/room_ballet/); the level comes with the name. The camera
    and body keys are read by the apartment world only."""

    family = "room_ballet"
    name: str = "room_ballet/budget"
    """room_ballet/budget, budget_grid, multi, multi_<question type>."""
    world: str = "grid"
    """grid: the rooms are a grid graph, observations symbolic; apartment: the rooms and doors of a
    procedural apartment (docs/room_ballet.md)."""
    rgb: bool | None = None
    """Apartment world: navigate the walk and observe `rgb` frames (false: only the room graph is
    taken from the apartment); null = true in the apartment world, false in the grid world."""
    apartments: int | None = None
    """Apartment world: layouts an episode draws from; null = 16."""
    scene_cache: int = 16
    """Apartment world: built apartments kept per env."""

    def validate(self) -> "RoomBalletConfig":
        super().validate()
        check(self.world in ROOM_BALLET_WORLDS, "task.world", f"{self.world!r}; allowed: {', '.join(ROOM_BALLET_WORLDS)}")
        check(not (self.rgb and self.world != "apartment"), "task.rgb", "true needs task.world=apartment")
        check(self.apartments is None or self.apartments >= 1, "task.apartments",
              f"{self.apartments}; allowed: an integer >= 1 or null")
        check(self.apartments is None or self.world == "apartment", "task.apartments", "needs task.world=apartment")
        check(self.scene_cache >= 1, "task.scene_cache", f"{self.scene_cache}; allowed: >= 1")
        return self


@dataclass
class FastMapConfig(RenderConfig):
    """fastmap/<group>/<level> (embodied/tasks/fastmap/, docs/fastmap.md); the level (objects,
    split, naming, phases) comes with the name, the keys below are the same for every level."""

    family = "fastmap"
    name: str = "fastmap/architecture_comparison/fast_map_three_objs"
    """One of the 29 levels, fastmap/<group>/<level> (LEVELS)."""
    scenes: str = "room"
    """room: first-person ray-cast render; symbolic: egocentric top-down tile map (fast on CPU)."""
    width: int = 96
    """Room mode: image width in pixels (the original's 96x72)."""
    height: int = 72
    """Room mode: image height in pixels."""
    sensors: list[str] = field(default_factory=lambda: ["rgb"])
    """Room mode: a subset of rgb, depth, semantic; symbolic: rgb only."""
    camera_height: float = 1.0
    """Camera height above the floor, metres (the room's furniture is low)."""
    max_steps: int | None = None
    """Hard cap on an episode's steps; null = the sum of the level's phase budgets (level_max_steps)."""
    success_reward: float = 1.0
    """Reward for the right object and act in the instruction phase."""
    slack_reward: float = 0.0
    """Reward added every step."""
    vocab_size: int = 120
    """Nonsense names a level draws from (100..400)."""
    room_cells: int = 5
    """Interior side of the room in cells (4..10). The same for every level, so observation shapes (the
    symbolic view is (2R-1)^2 cells) do not change between train and test levels."""
    discovery_steps_per_object: int = 20
    """Discovery phase budget per object (steps)."""
    discovery_ends_when_named: bool = True
    """End discovery as soon as every object has been lifted and the hand is empty."""
    distractor_steps: int = 20
    """Budget of each distractor phase (steps)."""
    distractor_reward: float = 0.1
    """Reward for completing a distractor phase."""
    instruction_steps: int = 30
    """Budget of the instruction phase (steps); then the episode is truncated with success 0."""
    cell_pixels: int = 3
    """Symbolic mode: pixels per cell side of the tile map."""
    object_extent: float = 0.35
    """Room mode: objects are scaled (proportions kept) to this largest extent, metres (0.05..0.7), so
    they read at 96x72."""

    def validate(self) -> "FastMapConfig":
        from embodied.tasks.fastmap import NAME_POOL_SIZE

        super().validate()
        check(self.scenes in FASTMAP_MODES, "task.scenes", f"{self.scenes!r}; allowed: {', '.join(FASTMAP_MODES)}")
        check("instance" not in self.sensors, "task.sensors",
              f"{self.sensors}; allowed: a subset of rgb, depth, semantic")
        bad = [s for s in self.sensors if s != "rgb"]
        check(not (bad and self.scenes == "symbolic"), "task.sensors", f"{self.sensors}; allowed with "
              "task.scenes=symbolic: [rgb]")
        check(self.max_steps is None or self.max_steps >= 1, "task.max_steps", f"{self.max_steps}; allowed: >= 1 or null")
        check(100 <= self.vocab_size <= NAME_POOL_SIZE, "task.vocab_size",
              f"{self.vocab_size}; allowed: 100..{NAME_POOL_SIZE}")
        check(4 <= self.room_cells <= 10, "task.room_cells", f"{self.room_cells}; allowed: 4..10")
        for key in ("discovery_steps_per_object", "distractor_steps", "instruction_steps", "cell_pixels"):
            check(getattr(self, key) >= 1, f"task.{key}", f"{getattr(self, key)}; allowed: >= 1")
        check(0.05 <= self.object_extent <= 0.7, "task.object_extent", f"{self.object_extent}; allowed: 0.05..0.7")
        return self


@dataclass
class HouseholdConfig(RenderConfig, BodyConfig):
    """household/tier<t> (embodied/tasks/household/, docs/household.md); the tier (dependency depth
    and step budget) comes with the name. Symbolic by default; `world: apartment` puts the household
    in a procedural apartment with first-person images and navigation actions. The image, camera,
    body and walking keys are read by the apartment world only."""

    family = "household"
    name: str = "household/tier1"
    """household/tier1 .. household/tier5."""
    world: str = "symbolic"
    """symbolic: rooms are places, `goto <room>` moves, all in the room is within reach; apartment: the
    rooms, containers and stations stand in a procedural apartment (one per world seed) that the
    agent walks through, interacting with what is within reach and in view (docs/household.md)."""
    sensors: list[str] = field(default_factory=lambda: ["rgb", "depth", "semantic"])
    """Apartment world: image sensors, a subset of rgb, depth, semantic, instance."""
    forward_step: float = 0.25
    """Apartment world: move_forward distance, metres."""
    turn_angle: float = 30.0
    """Apartment world: turn_left / turn_right angle, degrees."""
    reach: float = 1.5
    """Apartment world: a container or station is within reach when its footprint comes within this
    distance of the agent's centre, in the agent's room and inside the camera's horizontal field of
    view (metres, 1.2..3)."""
    world_seed: int = 0
    """The world: locks and keys, where things are stored, the recipes (a memory is per world)."""
    max_steps: int | None = None
    """Step budget; null = the tier's (LEVELS in embodied/tasks/household/spec.py)."""
    move_prob: float = 0.15
    """Probability that an episode moves a needed thing to an unlocked container of another room."""
    stuck_prob: float = 0.25
    """Probability that an episode makes a container holding a needed thing stuck (opens on the third try)."""

    def validate(self) -> "HouseholdConfig":
        super().validate()
        check(0 <= self.world_seed < 2**31, "task.world_seed", f"{self.world_seed}; allowed: 0..2**31-1")
        check(self.world in HOUSEHOLD_WORLDS, "task.world", f"{self.world!r}; allowed: {', '.join(HOUSEHOLD_WORLDS)}")
        check(self.forward_step > 0, "task.forward_step", f"{self.forward_step}; allowed: > 0")
        # Facing a thing to within half a turn must put it in view.
        check(0 < self.turn_angle <= self.hfov, "task.turn_angle", f"{self.turn_angle}; allowed: (0, hfov={self.hfov:g}]")
        check(1.2 <= self.reach <= 3.0, "task.reach", f"{self.reach}; allowed: 1.2..3.0")
        check(self.max_steps is None or self.max_steps >= 1, "task.max_steps", f"{self.max_steps}; allowed: >= 1 or null")
        for key in ("move_prob", "stuck_prob"):
            check(0 <= getattr(self, key) <= 1, f"task.{key}", f"{getattr(self, key)}; allowed: 0..1")
        return self
