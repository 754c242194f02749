"""Navigation tasks: point goal, object goal, and a lifelong sequence of object goals.

One env class carries the shared episode loop (scene sampling, the kinematic agent, rendering,
measures); each task only decides what its goals are and what it tells the agent about them.
A goal is a set of navigable grid cells with a geodesic distance field; `stop` inside the goal
tolerance reaches it.

Randomisations (what the seed draws, in this order): the scene (a spec of `task.scenes` and, for
procedural apartments, its generation seed), the goals - pointnav: a navigable point (or one of the
scene's fixed `goal_pool` points); objectnav: an object category with a reachable instance;
multigoal: `num_goals` categories in a random order (repeating only when the scene has fewer) -
then the start cell, redrawn until its geodesic distance to the first goal lies in
[min_goal_distance, max_goal_distance], and the start heading; an episode that cannot be drawn
moves to another scene (20 tries).
Success (measure `success`: every goal reached): `stop` within the goal's tolerance reaches it -
pointnav: within `success_distance` of the point; object goals: within 1.5 grid cells of the view
points of an instance (`NavScene.view_cells`: navigable cells within `success_distance` of its
footprint from which the camera height sees it; not the far side of a wall) - paying `success_reward` (multigoal then moves
to the next goal); a `stop` elsewhere ends the episode unsuccessful; `max_steps` truncates it.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from embodied.config import InputError
from embodied.render import Camera
from embodied.sim import ACTIONS, DistanceField, NavAgent, ShortestPathFollower
from embodied.tasks.config import NavConfig
from embodied.tasks.measures import efficiency, progress, soft_progress
from embodied.tasks.registry import MEASURES, TaskEnv, register_task
from embodied.tasks.scenes import NavScene, SceneSource
from embodied.world import OBJECT_CATEGORIES, semantic_classes
from embodied.world.spec import SceneFormatError

MEASURE_NAMES = ("distance_to_goal", "success", "spl", "soft_spl", "collisions", "steps", "goals_reached")


class EpisodeError(RuntimeError):
    """A scene in which no valid episode could be sampled."""


def sensor_spaces(cfg, num_classes: int) -> dict[str, spaces.Space]:
    """Observation spaces of the image sensors `cfg.sensors` (a RenderConfig): rgb, depth, semantic, instance."""
    h, w = cfg.height, cfg.width
    obs = {}
    if "rgb" in cfg.sensors:
        obs["rgb"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
    if "depth" in cfg.sensors:
        obs["depth"] = spaces.Box(0.0, cfg.max_depth, (h, w, 1), np.float32)
    if "semantic" in cfg.sensors:
        obs["semantic"] = spaces.Box(0, num_classes - 1, (h, w), np.int32)
    if "instance" in cfg.sensors:  # item ids of the SceneSpec (0: structure or nothing)
        obs["instance"] = spaces.Box(0, np.iinfo(np.int32).max, (h, w), np.int32)
    return obs


def sensor_observations(images: dict[str, np.ndarray], sensors) -> dict[str, np.ndarray]:
    """The sensors' observations from one camera's rendered images (the layout of `sensor_spaces`)."""
    obs = {}
    if "rgb" in sensors:
        obs["rgb"] = images["rgb"]
    if "depth" in sensors:
        obs["depth"] = images["depth"][..., None]
    if "semantic" in sensors:
        obs["semantic"] = images["semantic"].astype(np.int32, copy=False)
    if "instance" in sensors:
        obs["instance"] = images["instance"].astype(np.int32, copy=False)
    return obs


def relative_pose(start_pose, pose) -> np.ndarray:
    """GPS+compass: [4] pose (x, y, z, yaw) in the frame of the start pose."""
    x0, y0, z0, yaw0 = start_pose
    x, y, z, yaw = pose
    c, s = math.cos(-yaw0), math.sin(-yaw0)
    dx, dy = x - x0, y - y0
    dyaw = (yaw - yaw0 + math.pi) % (2 * math.pi) - math.pi
    return np.array([c * dx - s * dy, s * dx + c * dy, z - z0, dyaw], np.float32)


@dataclass
class Goal:
    field: DistanceField  # geodesic distance (m) from every grid cell to the goal region
    tolerance: float  # reached when field[agent] <= tolerance
    category: int = -1  # object category index for object goals
    point: np.ndarray | None = None  # xy of a point goal


class NavEnv(TaskEnv):
    """Shared episode loop. Subclasses implement `_sample_goals` and `_goal_observation`."""

    metadata = {"render_modes": ["rgb_array"]}
    config_class = NavConfig
    goal_space: dict[str, spaces.Space] = {}

    def __init__(self, cfg: NavConfig) -> None:
        self.cfg = cfg.validate()
        self.scenes = SceneSource(cfg.scenes, cfg.n_rooms, cfg.agent_radius, cfg.agent_height, cfg.scene_cache,
                                  cfg.max_depth)
        self.classes = semantic_classes()
        obs = sensor_spaces(cfg, len(self.classes))
        obs["pose"] = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        obs.update(self.goal_space)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.measures = {name: MEASURES[name]() for name in MEASURE_NAMES}
        self.rng = np.random.default_rng()
        self.scene: NavScene | None = None
        self.agent: NavAgent | None = None
        self._follower: ShortestPathFollower | None = None
        self._cameras: dict[float, Camera] = {}
        # Render the observation of a step that ends the episode. A vector env that resets at once
        # and discards it sets this False; that step then returns the previous observation (an
        # untrained policy ends an episode every few steps: a sixth of all renders).
        self.final_observation = True
        self._last_obs: dict[str, np.ndarray] | None = None
        self._next_episode: tuple | Exception | None = None  # drawn ahead by prefetch()
        self.episode_id: str | None = None  # the episode file's episode_id of the episode under way
        self.playlist: list = []  # EpisodeChecks of task.episodes_file's navigable episodes
        self._cursor = 0  # index into playlist of the next episode
        if cfg.episodes_file:
            self._load_episodes_file(cfg.episodes_file)

    # -- gymnasium API ---------------------------------------------------------------------
    def next_episode(self, seed: int | None = None) -> tuple:
        """(scene, start_xy, start_yaw, goals[, episode_id]) of the episode a reset with this seed plays:
        a seed restarts the episode stream, None takes its next (drawn ahead by `prefetch` if it ran).
        The batched simulator draws its envs' episodes here, so both play the same episodes."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self._next_episode = None
            self._cursor = seed
        episode, self._next_episode = self._next_episode or self._draw_episode(), None
        if isinstance(episode, Exception):
            raise episode
        return episode

    def _reset(self, seed: int | None, options: dict | None):
        self.scene, start, yaw, self.goals, *episode_id = self.next_episode(seed)
        self.episode_id = episode_id[0] if episode_id else None
        c = self.cfg
        self.agent = NavAgent(self.scene.grid, radius=c.agent_radius, height=c.agent_height,
                              forward_step=c.forward_step, turn_angle=c.turn_angle, tilt_angle=c.tilt_angle,
                              max_tilt=2 * c.tilt_angle, camera_height=c.camera_height)
        self._follower = None
        self.agent.reset(start, yaw)
        self.start_pose = self.agent.pose.copy()
        self.num_goals = len(self.goals)
        self.goals_reached = 0
        self._dist_key = None
        self.goal_spl = np.zeros(self.num_goals)
        self.goal_soft_spl = np.zeros(self.num_goals)  # at each goal's success: progress x efficiency
        self.last_collided = False
        self.called_stop = False
        self._begin_leg()
        for m in self.measures.values():
            m.reset_metric(self)
        return self._observe(), self._info()

    def _step(self, action):
        name = self._action_name(action)
        prev = self.agent.pose[:2].copy()
        terminated = False
        reward = self.cfg.slack_reward
        d_before = self.distance_to_goal()
        self.last_collided = False
        if name == "stop":
            self.called_stop = True
            if self.distance_to_goal() <= self.goal.tolerance:
                self.goal_spl[self.goals_reached] = efficiency(self.leg_start_distance, self.leg_path_length)
                self.goal_soft_spl[self.goals_reached] = soft_progress(self) * self.goal_spl[self.goals_reached]
                self.goals_reached += 1
                reward += self.cfg.success_reward
                if self.goals_reached == self.num_goals:
                    terminated = True
                else:
                    self._begin_leg()
                    d_before = self.distance_to_goal()
            else:
                terminated = True  # a wrong stop ends the episode, as in habitat and GOAT-Bench
        else:
            self.last_collided = bool(self.agent.step(name))
            self.leg_path_length += float(np.linalg.norm(self.agent.pose[:2] - prev))
        if not terminated:
            reward += progress(d_before, self.distance_to_goal())
        for m in self.measures.values():
            m.update_metric(self)
        truncated = not terminated and self.measures["steps"].value >= self.cfg.max_steps
        skip = (terminated or truncated) and not self.final_observation and self._last_obs is not None
        return self._last_obs if skip else self._observe(), float(reward), terminated, truncated, self._info()

    # -- task protocol used by measures and the oracle -------------------------------------
    @property
    def goal_index(self) -> int:
        """Index of the goal under way: goals are visited in order and only a success moves on here
        (nav/goat also moves on after a failed goal and overrides this)."""
        return self.goals_reached

    @property
    def goal(self) -> Goal:
        return self.goals[min(self.goal_index, self.num_goals - 1)]

    def distance_to_goal(self) -> float:
        # Measures, reward and the oracle all ask each step; the answer changes only when the agent
        # moves or the goal advances.
        key = (self.agent.x, self.agent.y, self.goal_index)
        if key != self._dist_key:
            self._dist_key, self._dist = key, float(self.goal.field.at((self.agent.x, self.agent.y)))
        return self._dist

    def oracle_action(self) -> int:
        """The shortest-path oracle's next action (for imitation, DAgger and `agent=oracle`)."""
        goal = self.goal
        if self._follower is None or self._follower.field is not goal.field:
            self._follower = ShortestPathFollower(self.scene.grid, goal.field, success_distance=goal.tolerance)
        return ACTIONS.index(self._follower.next_action(self.agent))

    def measure_values(self) -> dict[str, float]:
        return {k: float(m.value) for k, m in self.measures.items()}

    def render(self):
        return self._render_images(("rgb",))["rgb"]

    def prefetch(self) -> bool:
        """Draw the next episode (scene, start, goals and their geodesic fields) now; the next
        seedless reset uses it. A vector env's worker calls this while it waits for actions, so a
        reset's Dijkstra (a few ms) falls in time its core would idle. Episodes come from self.rng
        in the same order either way, so they are identical whether or not this ran; an error is
        raised by the reset that would have met it. Returns whether there was anything to draw."""
        if self._next_episode is not None or self.agent is None:
            return False
        try:
            self._next_episode = self._draw_episode()
        except Exception as e:  # noqa: BLE001 - re-raised by reset()
            self._next_episode = e
        return True

    def prebuild_scenes(self) -> int:
        """Build the split's scenes now (see SceneSource.prebuild); `VectorEnv.call` reaches it."""
        return self.scenes.prebuild()

    # -- internals -------------------------------------------------------------------------
    def _action_name(self, action) -> str:
        if isinstance(action, str):
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
            return action
        try:
            index = int(action)
        except (TypeError, ValueError):
            raise ValueError(f"action {action!r} is not an int or a name; allowed: 0..{len(ACTIONS) - 1} or {ACTIONS}") from None
        if not 0 <= index < len(ACTIONS) or index != action:
            raise ValueError(f"action {action!r} out of range; allowed: 0..{len(ACTIONS) - 1} ({', '.join(ACTIONS)})")
        return ACTIONS[index]

    def _begin_leg(self) -> None:
        self.leg_start_distance = self.distance_to_goal()
        self.leg_path_length = 0.0

    def _load_episodes_file(self, path: str) -> None:
        """Read a habitat-lab episode file against our scenes; keep its navigable episodes (a warning
        counts the others; none navigable is an InputError)."""
        import warnings

        from embodied.tasks.habitat_episodes import check_episodes, read_habitat_episodes, summary

        data = read_habitat_episodes(path)
        kind = self.cfg.name.split("/")[1]
        if data.kind != kind:
            raise InputError(f"{path}: a {'PointNav' if data.kind == 'pointnav' else 'ObjectNav'} episode file; "
                             f"task {self.cfg.name} plays {'PointNav' if kind == 'pointnav' else 'ObjectNav'} files")
        checks = check_episodes(data, self.scenes, kind)
        self.playlist = [c for c in checks if c.navigable]
        s = summary(checks)
        bad = next((c for c in checks if not c.navigable), None)
        if bad is not None:
            detail = f"first: episode {bad.episode.episode_id}: {bad.problems[0]}"
            if not self.playlist:
                raise InputError(f"{path}: none of its {s['episodes']} episodes is navigable here ({detail})")
            warnings.warn(f"{path}: {s['not_navigable']} of {s['episodes']} episodes are not navigable here and are "
                          f"skipped ({detail}); `embodied episodes check {path}` lists them", stacklevel=2)
        for c in self.playlist:  # the grid caches one field per goal: room for every episode's
            c.scene.grid.field_cache_size = max(c.scene.grid.field_cache_size, len(self.playlist) + 8)
        self.scenes.cache_size = max(self.scenes.cache_size, len({c.scene.key for c in self.playlist}))

    def _file_episode(self) -> tuple:
        """(scene, start_xy, start_yaw, goals, episode_id) of the next episode of task.episodes_file."""
        from embodied.tasks.habitat_episodes import goal_field

        check = self.playlist[self._cursor % len(self.playlist)]
        self._cursor += 1
        ep, scene = check.episode, self.scenes.named(check.episode.scene_name)
        fld = goal_field(scene, ep, self.cfg.name.split("/")[1])
        if ep.object_category is None:
            point = ep.goals(scene.geometry.ground_shift)[0].position[:2]
            goal = Goal(field=fld, tolerance=self.cfg.success_distance, point=point)
        else:  # reached anywhere in the view points' region, with ObjectNav's one-cell slack
            goal = Goal(field=fld, tolerance=scene.grid.cell * 1.5, category=OBJECT_CATEGORIES.index(ep.object_category))
        return scene, check.start[:2].copy(), ep.yaw, [goal], ep.episode_id

    def _draw_episode(self) -> tuple:
        """(scene, start_xy, start_yaw, goals) of a new episode, drawn from self.rng (or, with
        task.episodes_file, the file's next episode and its episode_id)."""
        if self.playlist:
            return self._file_episode()
        reason = None
        for _ in range(20):
            scene = self.scenes.sample(self.rng)
            try:
                return (scene, *self._sample_episode(scene))
            except EpisodeError as e:
                reason = e
        if self.scenes.path is not None:  # the user's scene file cannot host this task: bad input
            raise SceneFormatError(f"{self.scenes.path}: no valid {self._task_label()} episode in this scene "
                                   f"({reason})")
        raise EpisodeError(f"no valid episode in 20 scenes from {self.cfg.scenes!r}")

    def _sample_episode(self, scene: NavScene):
        """Returns (start_xy, start_yaw, goals)."""
        grid = scene.grid
        goals = self._sample_goals(scene)
        for _ in range(100):
            start = grid.sample_navigable(self.rng, 1)[0]
            d = grid.lookup(goals[0].field, start)
            if self.cfg.min_goal_distance <= d <= self.cfg.max_goal_distance:
                return start, float(self.rng.uniform(-math.pi, math.pi)), goals
        raise EpisodeError("no start position at a valid distance from the goal")

    def _sample_goals(self, scene: NavScene) -> list[Goal]:
        raise NotImplementedError

    def _goal_observation(self) -> dict[str, np.ndarray]:
        return {}

    # Images the task itself needs every step besides the agent's sensors (rendered in the same
    # call, handed to `_saw`, not observed unless they are sensors too).
    task_outputs: tuple[str, ...] = ()

    def _saw(self, images: dict[str, np.ndarray]) -> None:
        """Called with every step's rendered images (sensors + task_outputs) before they are observed."""

    def _camera(self) -> Camera:
        # One Camera per tilt: building and hashing a fresh one every step is a few percent of a frame.
        tilt = self.agent.tilt_deg
        cam = self._cameras.get(tilt)
        if cam is None:
            c = self.cfg
            cam = self._cameras[tilt] = Camera(width=c.width, height=c.height, hfov_deg=c.hfov,
                                               mount_height=c.camera_height, tilt_deg=tilt)
        return cam

    def _render_images(self, sensors) -> dict[str, np.ndarray]:
        out = self.scene.renderer.render(self.agent.pose[None], (self._camera(),), outputs=tuple(sensors))
        return {k: v[0, 0] for k, v in out.items()}

    def _observe(self) -> dict[str, np.ndarray]:
        obs = {}
        sensors = self.cfg.sensors
        outputs = tuple(sensors) + tuple(o for o in self.task_outputs if o not in sensors)
        if outputs:
            images = self._render_images(outputs)
            self._saw(images)
            obs.update(sensor_observations(images, sensors))
        obs["pose"] = relative_pose(self.start_pose, self.agent.pose)
        obs.update(self._goal_observation())
        self._last_obs = obs
        return obs

    def _info(self) -> dict:
        return {"scene": self.scene.key, **self.measure_values()}


@register_task("nav/pointnav")
class PointNav(NavEnv):
    """Go to a point given relative to the agent (distance, cos, sin of the bearing)."""

    goal_space = {"pointgoal": spaces.Box(-np.inf, np.inf, (3,), np.float32)}

    def _sample_goals(self, scene: NavScene) -> list[Goal]:
        n = self.cfg.goal_pool
        if n:
            point = self.goal_pool(scene)[int(self.rng.integers(n))]
        else:
            point = scene.grid.sample_navigable(self.rng, 1)[0]
        field = scene.grid.distance_field_to_points(point[None])
        return [Goal(field=field, tolerance=self.cfg.success_distance, point=point)]

    def goal_pool(self, scene: NavScene) -> np.ndarray:
        """[goal_pool, 2] goal points of a scene: the same in every process and run (seeded by the
        scene alone), made once per scene object."""
        n = self.cfg.goal_pool
        pool = scene.goal_pools.get(n)
        if pool is None:
            pool = scene.goal_pools[n] = scene.grid.sample_navigable(np.random.default_rng(zlib.crc32(scene.key.encode())), n)
            scene.grid.field_cache_size = max(scene.grid.field_cache_size, n + 8)
        return pool

    def prebuild_scenes(self) -> int:
        """As NavEnv's, and with goal_pool > 0 also each cached scene's goal fields (one Dijkstra each)."""
        built = super().prebuild_scenes()
        if self.cfg.goal_pool:
            for scene in self.scenes.cache.values():
                for point in self.goal_pool(scene):
                    scene.grid.distance_field_to_points(point[None])
        return built

    def _goal_observation(self):
        x, y, _, yaw = self.agent.pose
        dx, dy = self.goal.point - (x, y)
        rho, phi = math.hypot(dx, dy), math.atan2(dy, dx) - yaw
        return {"pointgoal": np.array([rho, math.cos(phi), math.sin(phi)], np.float32)}


class ObjectGoalEnv(NavEnv):
    goal_space = {"objectgoal": spaces.Box(0, len(OBJECT_CATEGORIES) - 1, (1,), np.int64)}

    def _object_goal(self, scene: NavScene, category: str) -> Goal:
        objs = [o for o in scene.spec.objects() if o.category == category]
        field = self._view_field(scene, objs)
        # Reached anywhere inside the region: one cell's diagonal of slack for grid quantisation.
        return Goal(field=field, tolerance=scene.grid.cell * 1.5, category=OBJECT_CATEGORIES.index(category))

    def _view_field(self, scene: NavScene, items) -> DistanceField:
        """Distance field to the view points of `items` (NavScene.view_cells within success_distance,
        seen from the camera's height); the grid's ValueError where there is none."""
        return scene.grid.distance_field(scene.view_cells(items, self.cfg.success_distance, self.cfg.camera_height))

    def _reachable_categories(self, scene: NavScene) -> list[str]:
        if scene.spec is None:
            raise EpisodeError("object goals need a SceneSpec scene, not a raw mesh")
        cats = sorted({o.category for o in scene.spec.objects()})
        reachable = []
        for c in cats:
            try:
                field = self._object_goal(scene, c).field
            except ValueError:  # every instance is out of reach (e.g. in a corner behind furniture)
                continue
            if np.isfinite(field.values[scene.grid.largest_component()]).any():
                reachable.append(c)
        return reachable

    def _goal_observation(self):
        return {"objectgoal": np.array([self.goal.category], np.int64)}


@register_task("nav/objectnav")
class ObjectNav(ObjectGoalEnv):
    """Go to any instance of an object category present in the scene (habitat ObjectNav)."""

    def _sample_goals(self, scene: NavScene) -> list[Goal]:
        cats = self._reachable_categories(scene)
        if not cats:
            raise EpisodeError("no reachable object in scene")
        return [self._object_goal(scene, cats[int(self.rng.integers(len(cats)))])]


@register_task("nav/multigoal")
class MultiGoal(ObjectGoalEnv):
    """A lifelong sequence of K object goals in one scene (GOAT-Bench style): what the agent saw
    while looking for earlier goals should make later ones faster. The episode ends on a wrong stop,
    after the last goal, or at max_steps."""

    def _sample_goals(self, scene: NavScene) -> list[Goal]:
        cats = self._reachable_categories(scene)
        if len(cats) < 2:
            raise EpisodeError("multigoal needs at least 2 reachable object categories")
        k = self.cfg.num_goals
        # Repeats are allowed only when the scene has fewer categories than goals.
        order = self.rng.permutation(len(cats))
        picks = [cats[order[i % len(cats)]] for i in range(k)]
        return [self._object_goal(scene, c) for c in picks]
