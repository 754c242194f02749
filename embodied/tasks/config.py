"""TaskConfig: the schema of the `task` config group (configs/task/**.yaml)."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields

from embodied.config import ConfigError, check

SENSORS = ("rgb", "depth", "semantic")


@dataclass
class TaskConfig:
    name: str = "nav/pointnav"
    """Registered task name: nav/pointnav, nav/objectnav or nav/multigoal."""
    scenes: str = "train"
    """Where episodes take place: a pinned split (train, val, test), `procedural` (a new apartment
    generated from each episode's seed), or a path to a SceneSpec JSON or a mesh (GLB/PLY/OBJ)."""
    n_rooms: int | None = None
    """Rooms per procedural apartment (2-8); null draws 2-8 at random."""
    width: int = 64
    """Image width in pixels."""
    height: int = 64
    """Image height in pixels."""
    hfov: float = 90.0
    """Horizontal field of view in degrees."""
    sensors: list[str] = field(default_factory=lambda: ["rgb", "depth"])
    """Image sensors to render, a subset of rgb, depth, semantic."""
    camera_height: float = 1.25
    """Camera height above the floor, metres."""
    max_depth: float = 10.0
    """Depth is clipped to this range, metres; misses read max_depth."""
    max_steps: int = 500
    """Steps before an episode is truncated."""
    success_distance: float | None = None
    """Stop within this distance of the goal to succeed (pointnav: of the point, default 0.2 m;
    object goals: of the nearest goal object's footprint, default 1.0 m as habitat's ObjectNav)."""
    forward_step: float = 0.25
    """move_forward distance, metres."""
    turn_angle: float = 30.0
    """turn_left / turn_right angle, degrees."""
    tilt_angle: float = 30.0
    """look_up / look_down angle, degrees (camera tilt is clamped to +-2 steps)."""
    agent_radius: float = 0.18
    """Radius of the agent's cylinder, metres."""
    agent_height: float = 1.5
    """Height of the agent's cylinder, metres."""
    num_goals: int = 3
    """nav/multigoal: goals per episode, visited in order in the same scene."""
    min_goal_distance: float = 1.0
    """Episodes sample start-goal pairs at least this geodesic distance apart, metres."""
    max_goal_distance: float = 12.0
    """... and at most this far, metres."""
    goal_pool: int = 0
    """nav/pointnav: 0 = a fresh goal point every episode; N > 0 = goals drawn from N points fixed per
    scene (seeded by the scene, as a Habitat episode dataset fixes its goals), starts still fresh.
    A goal's geodesic field (one Dijkstra over the grid, ~3 ms, most of a reset) is then computed
    once per scene and point and cached (N fields per scene, 8 bytes per grid cell each)."""
    success_reward: float = 2.5
    """Reward for a successful stop (per goal in multigoal)."""
    slack_reward: float = -0.01
    """Reward added every step."""
    scene_cache: int = 16
    """Scenes (geometry, renderer, navigable grid; a few MB each) kept in memory per env: covering
    the split avoids rebuilding a scene (~0.3 s) on most resets."""
    options: dict = field(default_factory=dict)
    """Options of one task family, validated by it (fastmap: FastMapOptions keys such as vocab_size,
    room_cells, phase budgets); navigation tasks take none."""

    def _check_types(self) -> None:
        """Each field holds its declared type (the task group has no structured schema, so a YAML
        or `task.height=64.5` arrives unchecked); ints are accepted where a float is declared."""
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

    def validate(self) -> "TaskConfig":
        from embodied.tasks.registry import TASKS

        self._check_types()
        check(self.name in TASKS, "task.name", f"unknown task {self.name!r}; allowed: {', '.join(sorted(TASKS))}")
        check(16 <= self.width <= 1024, "task.width", f"{self.width} out of range; allowed: 16..1024")
        check(16 <= self.height <= 1024, "task.height", f"{self.height} out of range; allowed: 16..1024")
        check(10.0 <= self.hfov <= 170.0, "task.hfov", f"{self.hfov} out of range; allowed: 10..170 degrees")
        bad = [s for s in self.sensors if s not in SENSORS]
        check(not bad, "task.sensors", f"unknown sensor(s) {bad}; allowed: {', '.join(SENSORS)}")
        check(self.n_rooms is None or 2 <= self.n_rooms <= 8, "task.n_rooms", f"{self.n_rooms}; allowed: 2..8 or null")
        check(self.max_steps >= 1, "task.max_steps", f"{self.max_steps}; allowed: >= 1")
        if self.success_distance is None:
            self.success_distance = 0.2 if self.name == "nav/pointnav" else 1.0
        check(self.success_distance > 0, "task.success_distance", f"{self.success_distance}; allowed: > 0")
        check(self.forward_step > 0, "task.forward_step", f"{self.forward_step}; allowed: > 0")
        check(0 < self.turn_angle <= 180, "task.turn_angle", f"{self.turn_angle}; allowed: (0, 180]")
        check(0 < self.tilt_angle <= 45, "task.tilt_angle", f"{self.tilt_angle}; allowed: (0, 45]")
        check(0.05 <= self.agent_radius <= 1.0, "task.agent_radius", f"{self.agent_radius}; allowed: 0.05..1.0")
        check(self.agent_height > self.camera_height > 0, "task.camera_height",
              f"{self.camera_height}; allowed: 0 < camera_height < agent_height ({self.agent_height})")
        check(1 <= self.num_goals <= 20, "task.num_goals", f"{self.num_goals}; allowed: 1..20")
        check(0 <= self.min_goal_distance < self.max_goal_distance, "task.min_goal_distance",
              "allowed: 0 <= min_goal_distance < max_goal_distance")
        check(self.scene_cache >= 1, "task.scene_cache", f"{self.scene_cache}; allowed: >= 1")
        check(self.goal_pool >= 0, "task.goal_pool", f"{self.goal_pool}; allowed: >= 0")
        check(not (self.goal_pool and self.name != "nav/pointnav"), "task.goal_pool",
              f"{self.goal_pool} for {self.name}; allowed: 0, or task nav/pointnav")
        check(isinstance(self.options, dict), "task.options", f"{self.options!r}; allowed: a mapping")
        check(not (self.options and self.name.startswith("nav/")), "task.options",
              f"{sorted(self.options)}: navigation tasks take no options")
        return self

    @classmethod
    def from_any(cls, cfg) -> "TaskConfig":
        """From a TaskConfig, a dict or an omegaconf node; unknown keys are an error."""
        if isinstance(cfg, TaskConfig):
            return cfg.validate()
        if not isinstance(cfg, dict):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ConfigError(f"task.{unknown[0]}: unknown key; allowed: {', '.join(sorted(names))}")
        return cls(**cfg).validate()
