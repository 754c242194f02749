"""Episode recordings in rerun's `.rrd` format: what the agent saw, did, was told and remembered.

One recording per episode, on the timeline `step` (0 = the reset observation, t = after the t-th
action) and `env_step` (the env's own step counter). Entities:

  static    world                       view coordinates (z up)
            world/scene                 the scene mesh (Mesh3D, vertex colours), logged once
            world/goals                 goals as labelled boxes (point goal or goal-category objects)
            world/agent/camera          Pinhole (camera axes forward-left-up) + class legend
            map/navigable               top-down navigable grid (Image; north up, 1 px = 1 cell)
            map/goals                   goals on the map (Points2D, labelled)
            episode/info                task, scene, seed, policy and action names (TextDocument)
  each step world/agent                 agent pose (Transform3D: translation, yaw about z)
            world/agent/camera/rgb      Image            (the sensors the agent observes, plus
            world/agent/camera/depth    DepthImage        `extra_sensors` rendered from the same
            world/agent/camera/semantic SegmentationImage camera)
            map/explored                cells newly seen in depth this step (Points2D; accumulated
                                        by the map view's visible time range)
            text/log                    TextLog: the step's action, reward and measure changes
            measures                    Scalars, one series per numeric `info` key (success, spl,
                                        distance_to_goal, ...; names in a static SeriesLines)
  on change world/agent/camera          camera mount and tilt (Transform3D; step 0 and each tilt)
  (views show world/trajectory          LineStrips3D of the path so far (step 0 and each move)
  the latest) map/agent                 agent position (Points2D; the map view keeps its history)
            text/instruction            TextLog: the instruction / goal as the agent is told it
  steps>=1  agent/action                TextLog: the action's name and id, e.g. "move_forward (1)"
            scalars/reward, scalars/return
  when the policy reports them (at the step of the observation the agent read):
            scalars/value               value estimate
            memory/weights              BarChart over memory slots (Memory.introspect contract)
            memory/slot_step, memory/slot_place, memory/slot_modality, memory/slot_keyframe,
            memory/chunk_selected       BarCharts of the slot metadata
            memory/peak_slot, memory/peak_step   Scalars: most-read slot and when it was written

`record_episode` picks the recorder from the env: keyframe manipulation envs (MemoryBench) get a
ManipulationRecorder (embodied/viewer/manipulation.py), navigation envs (a `scene` with a navigable
`grid` and an `agent`) this EpisodeRecorder, and every other Dict-observation env (Ballet, Room
Ballet, fast-mapping) a GenericRecorder (embodied/viewer/generic.py): on the same timeline it logs
each image-like observation under `cameras/{key}` (RGB, depth, or a semantic grid with its class
legend), the text channel in words (`text/instruction` on change, and in every `text/log` line),
named actions, reward, return, value, measures, other numeric observations under `obs/{key}` and the
memory introspection above. The words come from the task's viewer protocol (`action_names`,
`observation_text(obs)`, `classes`), with token ids and "action i" where a task has none.

The recorders here only gather rows; what turns them into rerun data, and where that runs (a writer
process by default, or inline), is embodied/viewer/stream.py.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from embodied.viewer.stream import (TIMELINE, ImageColumns, Points2DColumns, StripColumns,
                                    _rr, check_writer, markdown, open_stream, scalar_columns, sync, text_columns,
                                    text_log, transform_columns, world_z_up)

if TYPE_CHECKING:
    from embodied.render import Camera

MEMORY_SLOT_KEYS = ("weights", "slot_step", "slot_place", "slot_modality", "slot_keyframe", "chunk_selected")


def class_colors(n: int) -> np.ndarray:
    """[n, 3] uint8 distinct colours for semantic class ids (id 0 = nothing is black)."""
    colors = np.zeros((n, 3), np.uint8)
    for i in range(1, n):
        hue = (i * 0.618033988749895) % 1.0  # golden-ratio hues stay apart for any n
        colors[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, 0.65, 0.95)) * 255)
    return colors


@dataclass
class PolicyOutput:
    """What a policy did at one step: the action and, when it has them, its value and memory."""

    action: Any  # int (discrete tasks) or an array (keyframe tasks)
    value: float | None = None
    memory: dict[str, np.ndarray] | None = None  # Memory.introspect for this env's row, numpy


class Policy(Protocol):
    """`reset(env)` after env.reset, `act(obs, env)` each step; a policy that also needs the env's
    info (e.g. failure feedback) has `observe(obs, info)`, called after the reset and after each step."""

    name: str

    def reset(self, env) -> None: ...

    def act(self, obs: dict, env) -> PolicyOutput: ...


class _Columns:
    """Per-step rows kept in Python and sent as columns (`send_columns`) every `every` steps and at
    close: one Arrow batch per entity instead of one `log` call per entity per step. A `log` call
    (archetype construction, Arrow conversion, batcher) cost about 80 µs, a dozen per step, which made
    recording cost 41-76% of a 64x64 evaluation; batching removes nearly all of it. Rows wait at most
    `every` steps, so a crash loses at most that many steps of the episode."""

    def __init__(self, stream, every: int):
        self.stream, self.every = stream, every
        self.rows: dict[str, tuple[Callable, list]] = {}
        self.pending = 0

    def add(self, entity: str, build: Callable[[list], Any], step: int, env_step: int, value) -> None:
        self.rows.setdefault(entity, (build, []))[1].append((step, env_step, value))

    def end_step(self) -> None:
        self.pending += 1
        if self.pending >= self.every:
            self.flush()

    def flush(self) -> None:
        self.stream.columns([(entity, build, list(rows)) for entity, (build, rows) in self.rows.items() if rows])
        for _, rows in self.rows.values():
            rows.clear()
        self.stream.flush()
        self.pending = 0


def camera_mount(height: float, tilt_deg: float):
    """The camera's transform below the agent: mount height, tilt about the camera's y axis."""
    rr = _rr()
    return rr.Transform3D(translation=(0.0, 0.0, height),
                          rotation=rr.RotationAxisAngle(axis=(0, 1, 0), radians=-math.radians(tilt_deg)))


def pinhole(focal_px: float, width: int, height: int):
    rr = _rr()
    return rr.Pinhole(focal_length=focal_px, width=width, height=height, camera_xyz=rr.ViewCoordinates.FLU,
                      image_plane_distance=0.5)


def goal_boxes(boxes: list):
    """(centre, size, yaw, label) rows -> labelled Boxes3D."""
    rr = _rr()
    centers, sizes, yaws, labels = zip(*boxes)
    return rr.Boxes3D(centers=centers, sizes=sizes, labels=labels, colors=[(255, 200, 0)] * len(labels),
                      rotation_axis_angles=[rr.RotationAxisAngle(axis=(0, 0, 1), radians=y) for y in yaws])


def labelled_points(xy: np.ndarray, labels: list):
    return _rr().Points2D(xy, labels=labels, colors=[(255, 200, 0)] * len(labels), radii=2.0)


def class_legend(names) -> Any:
    rr = _rr()
    palette = class_colors(len(names))
    return rr.AnnotationContext([rr.AnnotationInfo(id=i, label=name, color=tuple(int(c) for c in palette[i]))
                                 for i, name in enumerate(names)])


def scene_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray):
    return _rr().Mesh3D(vertex_positions=vertices, triangle_indices=faces, vertex_colors=colors)


def map_image(image: np.ndarray):
    return _rr().Image(image)


def nav_blueprint():
    import rerun.blueprint as rrb

    history = rrb.VisibleTimeRange(TIMELINE, start=rrb.TimeRangeBoundary.infinite(),
                                   end=rrb.TimeRangeBoundary.cursor_relative())
    camera = "world/agent/camera"
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial3DView(origin="world", name="scene"),
                rrb.Horizontal(
                    rrb.Spatial2DView(origin=camera, contents=f"{camera}/rgb", name="rgb"),
                    rrb.Spatial2DView(origin=camera, contents=f"{camera}/depth", name="depth"),
                    rrb.Spatial2DView(origin=camera, contents=f"{camera}/semantic", name="semantic"),
                ),
                row_shares=[3, 2],
            ),
            rrb.Vertical(
                rrb.Spatial2DView(origin="map", name="map", time_ranges=history),
                rrb.TimeSeriesView(origin="/", contents=["scalars/**", "measures"], name="scalars"),
                rrb.BarChartView(origin="memory/weights", name="memory weights"),
                rrb.TextLogView(origin="/", contents=["text/**", "agent/**"], name="text"),
            ),
            column_shares=[3, 2],
        ),
        collapse_panels=False,
    )


class ExploredColumns:
    """Queued (x, y, yaw, ray directions, sampled depth) rows -> for each step the grid cells it saw
    first, as map points: one vectorised pass per flush (per step it was ~0.2 ms). Stateful (the cells
    seen so far), so one instance serves one recording; the stream keeps it per entity."""

    def __init__(self, origin, cell: float, shape):
        self.origin, self.cell, self.shape = (float(origin[0]), float(origin[1])), float(cell), tuple(shape)
        self.explored: np.ndarray | None = None

    def map_xy(self, xy: np.ndarray) -> np.ndarray:
        """World xy [N, 2] -> map image pixel coordinates (x right, y down; north up)."""
        px = (xy[:, 0] - self.origin[0]) / self.cell
        py = self.shape[0] - (xy[:, 1] - self.origin[1]) / self.cell
        return np.stack([px, py], -1)

    def __call__(self, rows: list):
        shape, cell, origin = self.shape, self.cell, self.origin
        if self.explored is None:
            self.explored = np.zeros(shape, bool)
        n = len(rows)
        pose = np.array([r[:3] for r in rows], np.float32)  # [n, 3] x, y, yaw; float32 halves the work
        if all(r[3] is rows[0][3] for r in rows):  # one camera setup (pickling keeps shared arrays shared)
            dx, dy = rows[0][3][:, 0], rows[0][3][:, 1]
            sampled = np.stack([r[4] for r in rows])
        else:  # the tilt changed within the batch: pad to one shape
            width = max(len(r[4]) for r in rows)
            directions = np.zeros((n, width, 3), np.float32)
            sampled = np.zeros((n, width), np.float32)
            for i, r in enumerate(rows):
                directions[i, : len(r[4])], sampled[i, : len(r[4])] = r[3], r[4]
            dx, dy = directions[..., 0], directions[..., 1]
        fx, fy = dx * sampled, dy * sampled  # agent frame, z-depth scaled
        c, s = np.cos(pose[:, 2:3]), np.sin(pose[:, 2:3])
        wx, wy = pose[:, :1] + c * fx - s * fy, pose[:, 1:2] + s * fx + c * fy
        r = np.floor((wy - np.float32(origin[1])) * np.float32(1 / cell)).astype(np.int32)
        col = np.floor((wx - np.float32(origin[0])) * np.float32(1 / cell)).astype(np.int32)
        keep = (sampled > 0) & (r >= 0) & (r < shape[0]) & (col >= 0) & (col < shape[1])
        cells_n = shape[0] * shape[1]
        flat = np.where(keep, r * shape[1] + col, cells_n).ravel()  # misses go to a spare cell, not a mask copy
        step = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], r.shape).ravel()
        # The step that saw each cell first: a per-cell minimum, no sort of every hit.
        first = np.full(cells_n + 1, n, np.int32)
        np.minimum.at(first, flat, step)
        explored = self.explored.reshape(-1)
        first[:cells_n][explored] = n  # seen in an earlier batch
        cells = np.flatnonzero(first[:cells_n] < n)
        explored[cells] = True
        first_step = first[cells]
        cells = cells[np.argsort(first_step, kind="stable")]
        counts = np.bincount(first_step, minlength=n)
        if len(cells):  # cell centres, as NavGrid.grid_to_world
            xy = np.stack([origin[0] + (cells % shape[1] + 0.5) * cell, origin[1] + (cells // shape[1] + 0.5) * cell], -1)
            xy = self.map_xy(xy)
        else:
            xy = np.zeros((0, 2))
        # One row per step (possibly empty), as before.
        return _EXPLORED(np.split(xy, np.cumsum(counts)[:-1]))


@dataclass
class _EpisodeState:
    step: int = 0
    episode_return: float = 0.0
    trajectory: list = field(default_factory=list)
    explored: ExploredColumns | None = None  # this episode's explored-area builder
    measures: dict = field(default_factory=dict)
    measure_names: list | None = None
    rays: tuple | None = None  # (camera key, pixel subset, ray directions) of the last camera
    tilt: float | None = None
    camera: Any = None  # the agent's Camera at `tilt`
    instruction: str | None = None
    household: dict = field(default_factory=dict)  # the household agent's last logged sub-goal and graph


class EpisodeRecorder:
    """Writes one episode of a navigation env to `path` (.rrd).

    recorder = EpisodeRecorder(path); recorder.start(env, obs, info)
    each step: recorder.agent(value=..., memory=...) (optional), then recorder.step(action, obs, reward, info)
    recorder.close()   # the file is complete; close(wait=False) returns at once (see writer)

    extra_sensors: sensors ("rgb", "depth", "semantic") rendered from the agent's camera at the
    observation size when the env does not observe them, so the recording has all three views.
    writer: "process" (default) converts and writes in a writer process shared by the recordings of
    this process, so recording overlaps the episode; "inline" does it all here (embodied/viewer/stream.py).
    With the writer process, `close(wait=False)` lets the next episode start while this file is being
    finished; `embodied.viewer.stream.sync()` then waits for every such file.
    """

    def __init__(self, path: str | Path, *, extra_sensors: tuple[str, ...] = ("semantic",),
                 recording_id: str | None = None, meta: dict[str, Any] | None = None, flush_every: int = 64,
                 writer: str = "process"):
        bad = [s for s in extra_sensors if s not in ("rgb", "depth", "semantic")]
        if bad:
            raise ValueError(f"extra_sensors: {bad[0]!r}; allowed: rgb, depth, semantic")
        check_writer(writer)
        self.path = Path(path)
        if self.path.suffix != ".rrd":
            raise ValueError(f"{self.path}: a recording file must end in .rrd")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.extra_sensors = tuple(extra_sensors)
        self.meta = dict(meta or {})
        self.recording_id = recording_id or self.path.stem
        if not (isinstance(flush_every, int) and flush_every >= 1):
            raise ValueError(f"flush_every must be an int >= 1, got {flush_every!r}")
        self.flush_every = flush_every
        self.writer = writer
        self.stream = None
        self.columns: _Columns | None = None
        self.env = None
        self.state = _EpisodeState()
        self._time = (0, 0)

    # -- public API --------------------------------------------------------------------------
    def start(self, env, obs: dict, info: dict) -> None:
        """Static scene content and the reset observation (step 0)."""
        self._open(env)
        self.stream.blueprint(nav_blueprint)
        self._log_static()
        self._set_time(info)
        self._log_observation(obs, info)
        self._add("text/log", text_columns, f"episode start: scene {info.get('scene', '?')}")
        self.columns.end_step()

    def agent(self, value: float | None = None, memory: dict | None = None) -> None:
        """What the agent computed from the current observation (logged at its step)."""
        self._require_started()
        if value is not None:
            self._add("scalars/value", scalar_columns, float(value))
        if memory:
            self._log_memory(memory)

    def step(self, action: int, obs: dict, reward: float, info: dict) -> None:
        """The result of one env.step: logged at the next step."""
        self._require_started()
        s = self.state
        s.step += 1
        s.episode_return += float(reward)
        self._set_time(info)
        name = self._action_name(action)
        self._add("agent/action", text_columns, self._action_text(action))
        self._add("scalars/reward", scalar_columns, float(reward))
        self._add("scalars/return", scalar_columns, s.episode_return)
        changes = self._log_observation(obs, info)
        text = f"step {s.step}: {name}, reward {reward:+.3f}"
        if changes:
            text += "; " + ", ".join(changes)
        self._add("text/log", text_columns, text)
        self.columns.end_step()

    def close(self, wait: bool = True) -> Path:
        if self.stream is not None:
            self.columns.flush()
            self.stream.close()
            self.stream = None
        if wait:
            sync()
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _open(self, env) -> None:
        if self.stream is not None:
            raise RuntimeError(f"{self.path}: recorder already started")
        self.env = env
        self.stream = open_stream(self.path, self.recording_id, self.writer)
        self.columns = _Columns(self.stream, self.flush_every)
        self.state = _EpisodeState()

    def _require_started(self) -> None:
        if self.stream is None:
            raise RuntimeError(f"{self.path}: call start(env, obs, info) first")

    def _set_time(self, info: dict) -> None:
        self._time = (self.state.step, int(info.get("steps", self.state.step)))

    def _add(self, entity: str, build: Callable, value) -> None:
        self.columns.add(entity, build, *self._time, value)

    def _log(self, entity: str, factory: Callable, *args, **kwargs) -> None:
        """One row at the current step, logged directly (values that change rarely)."""
        self.stream.log(entity, factory, *args, time=self._time, **kwargs)

    def _action_text(self, action) -> str:
        return f"{self._action_name(action)} ({int(action)})"

    def _action_names(self) -> tuple[str, ...]:
        """The env's action names (viewer protocol), else the navigation actions."""
        from embodied.sim import ACTIONS

        return tuple(getattr(self.env, "action_names", None) or ACTIONS)

    def _action_name(self, action) -> str:
        names, index = self._action_names(), int(action)
        return names[index] if 0 <= index < len(names) else f"action {index}"

    def _camera(self) -> Camera:
        from embodied.render import Camera

        c = self.env.cfg
        return Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height,
                      tilt_deg=self.env.agent.tilt_deg)

    def _log_static(self) -> None:
        env, stream = self.env, self.stream
        stream.log("world", world_z_up, static=True)
        scene = env.scene
        classes = tuple(getattr(env, "classes", ()) or scene.geometry.semantic_classes)
        # Built (and, with a writer process, sent) once per scene: episodes reuse scenes.
        key = (scene.key, id(scene.geometry))
        stream.log_cached("world/scene", key + ("mesh",), scene_mesh, lambda: _mesh_arrays(scene.geometry))
        stream.log_cached("world/agent/camera", ("legend", classes), class_legend, lambda: (classes,))
        stream.log_cached("map/navigable", key + ("map",), map_image,  # row 0 = north, as on a map
                          lambda: (np.where(scene.grid.navigable, 200, 60).astype(np.uint8)[::-1].copy(),))
        cam = self._camera()
        stream.log("world/agent/camera", pinhole, cam.focal_px, cam.width, cam.height, static=True)
        boxes = self._goal_boxes()
        if boxes:
            stream.log("world/goals", goal_boxes, boxes, static=True)
            stream.log("map/goals", labelled_points, self._map_xy(np.array([b[0][:2] for b in boxes])),
                       [b[3] for b in boxes], static=True)
        lines = [f"# {env.cfg.name}", "", f"- scene: {scene.key}",
                 *(f"- {k}: {v}" for k, v in self.meta.items()),
                 f"- actions: {', '.join(f'{i} {a}' for i, a in enumerate(self._action_names()))}"]
        stream.log("episode/info", markdown, "\n".join(lines), static=True)

    def _goal_boxes(self) -> list[tuple]:
        """(centre xyz, size xyz, yaw, label) of every goal of the episode, in goal order."""
        from embodied.world import OBJECT_CATEGORIES

        env = self.env
        boxes = []
        for index, goal in enumerate(env.goals):
            prefix = f"goal {index + 1}" if len(env.goals) > 1 else "goal"
            if goal.point is not None:
                x, y = goal.point
                z = float(env.scene.grid.floor_height_at((x, y)))
                side = 2 * goal.tolerance
                boxes.append(((x, y, z + 0.5), (side, side, 1.0), 0.0, prefix))
            elif goal.category >= 0 and env.scene.spec is not None:
                name = OBJECT_CATEGORIES[goal.category]
                for o in env.scene.spec.objects():
                    if o.category == name:
                        px, py, pz = o.position
                        sx, sy, sz = o.size
                        boxes.append(((px, py, pz + sz / 2), (sx, sy, sz), float(o.yaw), f"{prefix}: {name}"))
        return boxes

    def _explored_builder(self) -> ExploredColumns:
        grid = self.env.scene.grid
        if self.state.explored is None:
            self.state.explored = ExploredColumns(grid.origin, grid.cell, grid.shape)
        return self.state.explored

    def _map_xy(self, xy: np.ndarray) -> np.ndarray:
        return self._explored_builder().map_xy(xy)

    def _instruction(self) -> str:
        from embodied.world import OBJECT_CATEGORIES

        env = self.env
        told = getattr(env, "instruction", None)
        if isinstance(told, str) and told:
            return told
        goal = env.goal
        n = len(env.goals)
        which = f" (goal {min(env.goals_reached, n - 1) + 1} of {n})" if n > 1 else ""
        if goal.point is not None:
            return f"go to the point ({goal.point[0]:.2f}, {goal.point[1]:.2f}) and stop{which}"
        return f"find a {OBJECT_CATEGORIES[goal.category]} and stop{which}"

    def _log_observation(self, obs: dict, info: dict) -> list[str]:
        """Images, pose, map and measures of the current step; returns the measure changes as text.
        This runs in the evaluating process at every step: it only copies rows (the writer converts)."""
        env, s = self.env, self.state
        pose = env.agent.pose
        x, y, z, yaw = (float(v) for v in pose)
        self._add("world/agent", transform_columns, (x, y, z, yaw))
        tilt = env.agent.tilt_deg
        # Views query the latest value at the cursor, so values that rarely change (tilt, position
        # after a turn) are logged only when they change: fewer log calls, same picture.
        if s.tilt != tilt:
            s.camera = self._camera()
            self._log("world/agent/camera", camera_mount, s.camera.mount_height, tilt)
            s.tilt = tilt
        cam = s.camera
        images = {k: obs[k] for k in ("rgb", "depth", "semantic") if k in obs}
        missing = tuple(k for k in self.extra_sensors if k not in images)
        if missing:
            rendered = env.scene.renderer.render(pose[None].astype(np.float32), [cam], outputs=missing)
            images.update({k: v[0, 0] for k, v in rendered.items()})
        # Copies: the env may reuse its observation buffers before the rows are sent.
        if "rgb" in images:
            self._add("world/agent/camera/rgb", _RGB, np.array(images["rgb"], np.uint8).reshape(cam.height, cam.width, 3))
        if "depth" in images:
            depth = np.array(images["depth"], np.float32).reshape(cam.height, cam.width)
            self._add("world/agent/camera/depth", _DEPTH, depth)
            self._log_explored(depth, cam, x, y, yaw)
        if "semantic" in images:
            semantic = np.asarray(images["semantic"]).reshape(cam.height, cam.width).astype(np.uint16)
            self._add("world/agent/camera/semantic", _SEMANTIC, semantic)
        point = (x, y, z + 0.05)
        if not s.trajectory or s.trajectory[-1] != point:
            s.trajectory.append(point)
            self._add("world/trajectory", _TRAJECTORY, np.asarray(s.trajectory, np.float32))
            self._add("map/agent", _MAP_AGENT, self._map_xy(np.array([[x, y]])))
        instruction = self._instruction()
        if instruction != s.instruction:
            self._log("text/instruction", text_log, instruction)
            s.instruction = instruction
        numeric = {k: float(v) for k, v in info.items() if isinstance(v, (bool, int, float, np.number))}
        if s.measure_names is None:  # the series names are fixed by the reset's info
            s.measure_names = list(numeric)
            self.stream.log("measures", _rr().SeriesLines, names=s.measure_names, static=True)
        # One entity with one series per measure: one row per step instead of one per measure.
        self._add("measures", scalar_columns, [numeric.get(k, float("nan")) for k in s.measure_names])
        changes = []
        for key in ("success", "goals_reached", "collisions"):
            old, value = s.measures.get(key), numeric.get(key)
            if old is not None and value is not None and old != value:
                changes.append(f"{key} {old:g} -> {value:g}")
        s.measures = numeric
        return changes

    def _log_explored(self, depth: np.ndarray, cam: Camera, x: float, y: float, yaw: float) -> None:
        """Queue this step's sampled depth; ExploredColumns turns the queued steps into the cells each
        one saw first when the rows are sent."""
        key = (cam.tilt_deg, cam.width, cam.height)
        if self.state.rays is None or self.state.rays[0] != key:
            # Every other row and column: neighbouring pixels mostly land in the same grid cell.
            pixels = (np.arange(cam.height)[::2, None] * cam.width + np.arange(cam.width)[None, ::2]).reshape(-1)
            self.state.rays = (key, pixels, cam.ray_directions()[pixels])
        _, pixels, directions = self.state.rays
        self._add("map/explored", self._explored_builder(), (x, y, yaw, directions, depth.reshape(-1)[pixels]))

    def _log_memory(self, memory: dict) -> None:
        rr = _rr()
        if "household" in memory:  # the hybrid memory agent (Optimus-1): plan, sub-goal, cases, reflection, graph
            self._log_household(memory["household"])
            if "walk_map" in memory:  # in the apartment: the map its navigation controller built from depth
                self._log("memory/walk_map", rr.Image, np.asarray(memory["walk_map"]))
            return
        if "scene_map" in memory:  # a structured scene memory (3D-Mem): its map, snapshots, frontiers, choice
            self._log("memory/scene_map", rr.Image, np.asarray(memory["scene_map"]))
            self._log("memory/choice", rr.TextLog, str(memory.get("choice", "")))
            for key in ("snapshots", "frontiers", "objects"):
                if key in memory:
                    self._log(f"memory/{key}", rr.Scalars, float(memory[key]))
            return
        report = {k: np.asarray(v) for k, v in memory.items() if k in MEMORY_SLOT_KEYS}
        if "weights" not in report:
            return
        weights = report["weights"].astype(np.float32).reshape(-1)
        for key, value in report.items():
            self._log(f"memory/{key}", rr.BarChart, value.reshape(-1).astype(np.float32))
        if weights.size and weights.max() > 0:
            peak = int(weights.argmax())
            self._log("memory/peak_slot", rr.Scalars, float(peak))
            if "slot_step" in report:
                self._log("memory/peak_step", rr.Scalars, float(report["slot_step"].reshape(-1)[peak]))

    def _log_household(self, report: dict) -> None:
        rr = _rr()
        last = self.state.household
        if not last:  # a household in an apartment keeps its camera views and map beside the panels
            self.stream.blueprint(household_blueprint, is_nav_env(self.env))
        plan = [tuple(p) for p in report["plan"]]
        # Logged when they change: in the apartment most steps are walking under one decision.
        texts = {"memory/plan": household_plan_text(report), "memory/cases": household_cases_text(report["cases"])}
        for entity, text in texts.items():
            if text != last.get(entity):
                self._log(entity, markdown, text)
        if plan[:1] != last.get("subgoal"):
            self._log("memory/subgoal", rr.TextLog, " ".join(plan[0]) if plan else "goal held")
        if report["reflection"] is not None:
            r = report["reflection"]
            votes = ", ".join(f"{d} {v:.2f}" for d, v in sorted(r["votes"].items())) or "no cases"
            self._log("memory/reflection", rr.TextLog, f"{r['reason']} ({r['item']}): {r['decision']}; votes: {votes}")
        case, frames = report.get("case_frames", (None, []))
        if case != last.get("case_frames"):  # the key frames of the most similar retrieved case (apartment)
            if frames:
                self._log("memory/case_frames", rr.Image, frame_strip(frames))
            else:
                self._log("memory/case_frames", rr.Clear, recursive=False)
        graph = household_graph(report)
        if graph != last.get("graph"):
            nodes, colors, edges = graph
            self._log("memory/graph", rr.GraphNodes, node_ids=list(nodes), labels=list(nodes), colors=list(colors))
            self._log("memory/graph", rr.GraphEdges, edges=[e[:2] for e in edges], graph_type="directed")
        self.state.household = {"subgoal": plan[:1], "graph": graph, "case_frames": case, **texts}


def frame_strip(frames: list, gap: int = 2) -> np.ndarray:
    """Frames of one height side by side, `gap` white columns apart: one uint8 image."""
    h = frames[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts = [p for f in frames for p in (np.asarray(f, np.uint8)[..., :3], sep)][:-1]
    return np.concatenate(parts, axis=1)


def household_plan_text(report: dict) -> str:
    """Markdown: the goal, the plan with its current sub-goal first, what is held."""
    lines = [f"**obtain {report['goal']}** ({report['context']}; variant {report['variant']}, "
             f"{report['replans']} replans so far)", ""]
    for i, (verb, item) in enumerate(report["plan"], 1):
        lines.append(f"{i}. **{verb} {item}** (current)" if i == 1 else f"{i}. {verb} {item}")
    if not report["plan"]:
        lines.append("(the goal is held)")
    held = ", ".join(f"{k} {v}" for k, v in sorted(report["inventory"].items())) or "nothing"
    return "\n".join(lines + ["", f"holding: {held}"])


def household_cases_text(cases: list) -> str:
    """Markdown table of the experience-pool cases retrieved at this step, most similar first."""
    if not cases:
        return "no cases retrieved at this step"
    seen: dict[tuple, list] = {}  # the pool keeps every attempt: identical cases are one row with a count
    for kind, score, outcome, record in sorted(cases, key=lambda c: -c[1]):
        f = record.get("fields", {})
        case = " ".join(str(f[k]) for k in ("subgoal", "item", "reason") if f.get(k)) + f" ({f.get('context', '?')})"
        if kind == "fetch":
            says = f"{record.get('reason', 'found')} in the {record['container']}"
        elif kind == "reflect":
            says = f"decided {record['decision']}"
        elif kind == "task":
            says = "plan: " + ", ".join(f"{v} {x}" for v, x, _ in record.get("plan", []))
        else:
            says = ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("fields", "id"))
        seen.setdefault((outcome, kind, case, says), [score, 0])[1] += 1
    rows = ["| similarity | outcome | kind | case | says | cases |", "|---|---|---|---|---|---|"]
    rows += [f"| {score:.2f} | {o} | {k} | {c} | {s} | {n} |" for (o, k, c, s), (score, n) in seen.items()]
    return "\n".join(rows)


HOUSEHOLD_COLORS = {"held": (60, 190, 90), "current": (250, 140, 30), "planned": (240, 210, 60),
                    "goal": (70, 130, 240), "other": (150, 150, 150)}


def household_graph(report: dict) -> tuple[tuple, tuple, tuple]:
    """(node names, node colours by status, edges (u, v, input|tool)) of the goal's known sub-graph."""
    edges = tuple(tuple(e) for e in report["edges"])
    nodes = tuple(dict.fromkeys([report["goal"], *(n for e in edges for n in e[:2]), *(x for _, x in report["plan"])]))
    planned = {x for _, x in report["plan"]}
    current = report["plan"][0][1] if report["plan"] else None

    def status(n: str) -> str:
        if n == current:
            return "current"
        if report["inventory"].get(n):
            return "held"
        if n in planned:
            return "planned"
        return "goal" if n == report["goal"] else "other"

    return nodes, tuple(HOUSEHOLD_COLORS[status(n)] for n in nodes), edges


def household_blueprint(views: bool = False):
    """The household agent's panels: the goal's graph, the plan, the retrieved cases, the text logs;
    with `views` (the apartment world) also the key frames of the most similar case, the camera's
    rgb, depth and semantic views and the map."""
    import rerun.blueprint as rrb

    cases = [rrb.TextDocumentView(origin="memory/cases", name="retrieved cases")]
    if views:  # the apartment's cases keep key frames
        cases.append(rrb.Spatial2DView(origin="memory/case_frames", name="key frames of the most similar case"))
    columns = [
        rrb.Vertical(rrb.GraphView(origin="memory/graph", name="knowledge graph (goal's sub-graph)"),
                     rrb.TextDocumentView(origin="memory/plan", name="plan"), row_shares=[3, 2]),
        rrb.Vertical(*cases,
                     rrb.TextLogView(origin="/", contents=["text/**", "agent/**", "memory/subgoal",
                                                          "memory/reflection"], name="text"),
                     rrb.TimeSeriesView(origin="/", contents=["scalars/**", "measures"], name="measures")),
    ]
    if views:
        camera = "world/agent/camera"
        history = rrb.VisibleTimeRange(TIMELINE, start=rrb.TimeRangeBoundary.infinite(),
                                       end=rrb.TimeRangeBoundary.cursor_relative())
        columns.insert(0, rrb.Vertical(
            rrb.Spatial2DView(origin=camera, contents=f"{camera}/rgb", name="rgb"),
            rrb.Horizontal(rrb.Spatial2DView(origin=camera, contents=f"{camera}/depth", name="depth"),
                           rrb.Spatial2DView(origin=camera, contents=f"{camera}/semantic", name="semantic")),
            rrb.Spatial2DView(origin="map", name="map", time_ranges=history)))
    return rrb.Blueprint(rrb.Horizontal(*columns), collapse_panels=False)


def _mesh_arrays(geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene's parts as one vertex-coloured mesh: positions, uint32 triangles, uint8 colours."""
    vertices, faces, colors = [], [], []
    offset = 0
    for part in geometry.parts:
        v = np.asarray(part.vertices, np.float32)
        vertices.append(v)
        faces.append(np.asarray(part.faces, np.int64) + offset)
        rgb = part.vertex_colors if part.vertex_colors is not None else np.broadcast_to(part.color, v.shape)
        colors.append(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces).astype(np.uint32), np.concatenate(colors)


_RGB = ImageColumns("Image", "RGB", "U8")
_DEPTH = ImageColumns("DepthImage", None, "F32")
_SEMANTIC = ImageColumns("SegmentationImage", None, "U16")
_MAP_AGENT = Points2DColumns((255, 60, 160), 1.5)
_TRAJECTORY = StripColumns((255, 60, 160), 0.03)
_EXPLORED = Points2DColumns((90, 160, 255), 0.5)


# --- running a policy ----------------------------------------------------------------------------

def record_episode(env, policy: Policy | Callable, path: str | Path, *, seed: int | None = None,
                   extra_sensors: tuple[str, ...] = ("semantic",), meta: dict | None = None,
                   on_step: Callable[[], None] | None = None, writer: str = "process", wait: bool = True) -> dict:
    """Run one episode of `env` with `policy` and write it to `path` (.rrd): keyframe envs with a
    ManipulationRecorder, navigation envs (`is_nav_env`) with an EpisodeRecorder, any other env with a
    Dict observation with a GenericRecorder (embodied/viewer/generic.py).

    `policy` is a Policy (reset(env), act(obs, env) -> PolicyOutput) or a plain function
    `fn(obs, env) -> action`. Returns the final info (measures) plus `return`, `length`, `path`.
    `wait=False` returns while a writer process may still be writing the file: call
    `embodied.viewer.stream.sync()` before reading it (recording several episodes in a row).
    """
    if not hasattr(policy, "act"):
        policy = FunctionPolicy(policy)
    obs, info = env.reset(seed=seed)
    policy.reset(env)
    observe = getattr(policy, "observe", None)
    if observe is not None:
        observe(obs, info)
    meta = {"policy": getattr(policy, "name", "policy"), "seed": seed, **(meta or {})}
    if is_keyframe_env(env):
        from embodied.viewer.manipulation import ManipulationRecorder

        recorder = ManipulationRecorder(path, meta=meta, writer=writer)
    elif is_nav_env(env):
        recorder = EpisodeRecorder(path, extra_sensors=extra_sensors, meta=meta, writer=writer)
    else:
        from embodied.viewer.generic import GenericRecorder

        recorder = GenericRecorder(path, meta=meta, writer=writer)
    total, length = 0.0, 0
    try:
        recorder.start(env, obs, info)
        done = False
        while not done:
            out = policy.act(obs, env)
            recorder.agent(value=out.value, memory=out.memory)
            obs, reward, terminated, truncated, info = env.step(out.action)
            if observe is not None:
                observe(obs, info)
            recorder.step(out.action, obs, reward, info)
            total += float(reward)
            length += 1
            done = terminated or truncated
            if on_step is not None:
                on_step()
    finally:
        recorder.close(wait=wait)
    return {**info, "return": total, "length": length, "path": str(recorder.path)}


def is_keyframe_env(env) -> bool:
    """Manipulation tasks with keyframe actions observe world-frame point clouds (`{camera}_pcd`)."""
    return any(key.endswith("_pcd") for key in getattr(env.observation_space, "spaces", {}))


def is_nav_env(env) -> bool:
    """Navigation envs have a scene with a navigable grid and an embodied agent (EpisodeRecorder
    draws both); every other Dict-observation env gets a GenericRecorder."""
    return hasattr(getattr(env, "scene", None), "grid") and hasattr(env, "agent")


class FunctionPolicy:
    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = getattr(fn, "__name__", "function")

    def reset(self, env) -> None:
        pass

    def act(self, obs, env) -> PolicyOutput:
        action = self.fn(obs, env)
        return PolicyOutput(int(action) if np.ndim(action) == 0 else np.asarray(action))


class OraclePolicy:
    """The env's shortest-path oracle."""

    name = "oracle"

    def reset(self, env) -> None:
        pass

    def act(self, obs, env) -> PolicyOutput:
        action = env.oracle_action()
        return PolicyOutput(int(action) if np.ndim(action) == 0 else np.asarray(action))


class RandomPolicy:
    """Uniformly random actions from a seeded generator (the chance baseline)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def reset(self, env) -> None:
        pass

    def act(self, obs, env) -> PolicyOutput:
        space = env.action_space
        if hasattr(space, "n"):
            return PolicyOutput(int(self.rng.integers(space.n)))
        return PolicyOutput(self.rng.uniform(space.low, space.high).astype(space.dtype))  # continuous (keyframe) actions


class KeyframePolicy:
    """A trained keyframe agent (MemoryBench) on one env: its 9-d keyframe action each step, the
    memory bank reset at the episode's first keyframe, as in evaluation."""

    name = "checkpoint"

    def __init__(self, agent, device="cpu"):
        import torch

        self.agent = agent.eval()
        self.device = torch.device(device)
        self.state, self.first = None, True

    def reset(self, env) -> None:
        self.state, self.first = self.agent.initial_state(1, self.device), True

    def act(self, obs, env) -> PolicyOutput:
        action, self.state, _ = self.agent.act(obs, self.state, first=self.first)
        self.first = False
        return PolicyOutput(np.asarray(action))


class HouseholdPolicy:
    """Optimus-1's agent (embodied.agents.household.HouseholdAgent) on a household task: its action,
    and per step its plan, current sub-goal, retrieved cases, reflection and the goal's graph; in the
    apartment also the map its navigation controller walks on (built from depth)."""

    name = "optimus"

    def __init__(self, agent):
        self.agent = agent
        self.info: dict = {}
        self.started = False

    def reset(self, env) -> None:
        self.started = False

    def observe(self, obs: dict, info: dict) -> None:
        if self.started:
            self.agent.observe(self.agent.last_action, obs, info)
        else:
            self.agent.reset(obs, info)
            self.started = True
        self.info = info

    def act(self, obs, env) -> PolicyOutput:
        action = self.agent.act(obs, self.info)
        out = {"household": self.agent.report()}
        if getattr(self.agent, "map", None) is not None:
            out["walk_map"] = scene_map_image(self.agent.map)
        return PolicyOutput(int(action), None, out)


class SceneMemoryPolicy:
    """The 3D-Mem agent (embodied.agents.goat.GoatAgent) on nav/goat: its action, and per step an
    image of its memory (occupancy map, snapshot objects, frontiers, agent, current choice) with the
    choice in words."""

    name = "scenemem"

    def __init__(self, agent):
        self.agent = agent

    def reset(self, env) -> None:
        self.agent.reset()

    def act(self, obs, env) -> PolicyOutput:
        action = self.agent.act(obs)
        mem, choice = self.agent.memory, self.agent.choice
        text = "looking around" if choice is None else choice.kind
        if choice is not None and choice.kind == "object":
            obj = mem.objects[choice.object]
            text = f"snapshot {choice.index}, object {obj.id}: {obj.colour_name} {obj.category}"
        elif choice is not None and choice.kind == "frontier":
            text = f"frontier {choice.index} at ({choice.target[0]:.1f}, {choice.target[1]:.1f})"
        return PolicyOutput(int(action), None, {"scene_map": scene_map_image(mem, choice), "choice": text,
                                                 "snapshots": len(mem.snapshots), "frontiers": len(mem.frontiers),
                                                 "objects": len(mem.objects)})


def scene_map_image(memory, choice=None, scale: int = 3) -> np.ndarray:
    """uint8 [H, W, 3] top-down picture of a SceneMemory, north up: unknown dark, free light (explored
    lighter), occupied black, frontier cells blue, each snapshot's objects in its own colour, the
    agent red, the current target green."""
    from embodied.memory.scene import FREE, OCCUPIED

    grid = memory.grid
    known = np.argwhere(grid != 0)
    if not len(known):
        return np.zeros((8 * scale, 8 * scale, 3), np.uint8)
    (r0, c0), (r1, c1) = known.min(0) - 2, known.max(0) + 3
    r0, c0 = max(r0, 0), max(c0, 0)
    img = np.full(grid.shape + (3,), 60, np.uint8)
    img[grid == FREE] = (170, 170, 170)
    img[(grid == FREE) & memory.explored] = (215, 215, 215)
    img[grid == OCCUPIED] = (20, 20, 20)
    for f in memory.frontiers:
        img[f.cells[:, 0], f.cells[:, 1]] = (60, 120, 255)
    palette = class_colors(max(len(memory.snapshots), 1) + 2)[2:]

    def dot(xy, colour, radius=1):
        r, c = memory.cell_of(xy)
        img[max(r - radius, 0):r + radius + 1, max(c - radius, 0):c + radius + 1] = colour

    for k, (_, snap) in enumerate(sorted(memory.snapshots.items())):
        for oid in snap.objects:
            dot(memory.objects[oid].position, palette[k % len(palette)])
    if choice is not None and choice.target is not None:
        dot(choice.target, (40, 220, 40), 2)
    dot(memory.pose, (230, 30, 30), 1)
    crop = img[r0:r1, c0:c1][::-1]  # row 0 is north (larger y)
    return np.repeat(np.repeat(crop, scale, 0), scale, 1)


class AgentPolicy:
    """A trained Agent on one env: its action, value and memory introspection at every step."""

    name = "checkpoint"

    def __init__(self, agent, deterministic: bool = True, device="cpu"):
        from embodied.loading import EnvAgent

        self.player = EnvAgent(agent, deterministic, device)
        self.agent = self.player.agent

    def reset(self, env) -> None:
        self.player.reset()

    def act(self, obs, env) -> PolicyOutput:
        import torch

        action, value = self.player.step(obs)
        with torch.no_grad():
            report = self.agent.introspect(self.player.state)
        memory = {k: v[0].detach().cpu().numpy() for k, v in report.items() if k in MEMORY_SLOT_KEYS}
        act = action[0].cpu().numpy() if self.agent.continuous else int(action[0])
        return PolicyOutput(act, float(value[0]), memory or None)
