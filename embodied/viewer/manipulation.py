"""Recordings of keyframe manipulation episodes (MemoryBench): the camera views, the fused point
cloud, the gripper, and each keyframe as predicted (the action's target pose) and as executed.

Same API and timeline as `EpisodeRecorder` (step 0 = the reset observation, step k = after the k-th
keyframe action). Entities, besides the shared ones (text/log, agent/action, scalars/reward,
scalars/return, scalars/value, measures, memory/*):

  static    world                        view coordinates (z up)
            world/workspace              the policy's workspace box
            episode/info                 task, variation, seed, policy, instruction
  each step cameras/{camera}/rgb, cameras/{camera}/depth   the observation of every camera
            world/points                 the cameras' world-frame point clouds, fused, cropped to the
                                         workspace and subsampled, coloured by their RGB
            world/gripper                end-effector pose (Transform3D) from `proprio`
            scalars/gripper_open         1 open, 0 closed
            world/gripper_path           LineStrips3D of the end-effector positions so far
  steps>=1  world/keyframe/predicted     the action's target pose (Transform3D + labelled box)
            world/keyframe/executed      where the end effector ended up (Points3D, labelled)
            scalars/keyframe_error       distance between the two (m)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embodied.viewer.recording import (_DEPTH, _RGB, EpisodeRecorder, StripColumns, _rr, markdown, scalar_columns,
                                       text_columns, text_log, world_z_up)

MAX_POINTS = 4000  # per step: enough to see the scene, small enough to keep recordings light


def _pose_columns(poses: list):
    """(x, y, z, qx, qy, qz, qw) rows -> Transform3D columns."""
    p = np.asarray(poses, np.float32)
    return _rr().Transform3D.columns(translation=p[:, :3], quaternion=p[:, 3:7])


def _points3d_columns(rows: list):
    rr = _rr()
    lengths = [len(points) for points, _ in rows]
    positions = np.concatenate([points for points, _ in rows]).reshape(-1, 3)
    colors = np.concatenate([colors for _, colors in rows]).reshape(-1, 3)
    return rr.Points3D.columns(positions=positions, colors=colors, radii=[0.004] * len(positions)).partition(lengths)


_path_columns = StripColumns((255, 60, 160), 0.004)


class ManipulationRecorder(EpisodeRecorder):
    """Writes one episode of a keyframe manipulation env (observations `{camera}_rgb/_depth/_pcd`,
    `proprio` = ee xyz, quaternion xyzw, gripper_open; actions = target xyz, quaternion xyzw,
    gripper_open, ignore_collisions) to `path` (.rrd)."""

    def __init__(self, path: str | Path, *, recording_id: str | None = None, meta: dict[str, Any] | None = None,
                 flush_every: int = 8, max_points: int = MAX_POINTS, writer: str = "process"):
        # Keyframe episodes are short (<= 25 steps) and each step is heavy: flush more often.
        super().__init__(path, extra_sensors=(), recording_id=recording_id, meta=meta, flush_every=flush_every,
                         writer=writer)
        self.max_points = max_points
        self._path: list = []
        self._last_action: np.ndarray | None = None

    def start(self, env, obs: dict, info: dict) -> None:
        if self.stream is not None:
            raise RuntimeError(f"{self.path}: recorder already started")
        self.cameras = sorted({k[:-4] for k in obs if k.endswith("_rgb")})
        if not self.cameras or "proprio" not in obs:
            raise ValueError(f"{self.path}: a keyframe observation needs {{camera}}_rgb/_pcd and proprio; got {sorted(obs)}")
        self._open(env)
        self.stream.blueprint(manipulation_blueprint, self.cameras)
        self._path = []
        self._log_static(info)
        self._set_time(info)
        self._log_observation(obs, info)
        self._add("text/log", text_columns, f"episode start: variation {info.get('variation', '?')}")
        self.columns.end_step()

    def step(self, action, obs: dict, reward: float, info: dict) -> None:
        self._last_action = np.asarray(action, np.float32).reshape(-1)
        super().step(action, obs, reward, info)

    # -- internals ---------------------------------------------------------------------------
    def _set_time(self, info: dict) -> None:
        self._time = (self.state.step, int(info.get("keyframe", self.state.step)))

    def _action_text(self, action) -> str:
        a = np.asarray(action, np.float32).reshape(-1)
        return (f"keyframe to ({a[0]:+.3f}, {a[1]:+.3f}, {a[2]:+.3f}) quat ({a[3]:+.2f}, {a[4]:+.2f}, {a[5]:+.2f}, "
                f"{a[6]:+.2f}) gripper {'open' if a[7] > 0.5 else 'close'}"
                f"{', ignore collisions' if len(a) > 8 and a[8] > 0.5 else ''}")

    def _action_name(self, action) -> str:
        return "keyframe"

    def _workspace(self):
        from embodied.tasks.memorybench import WORKSPACE

        return np.asarray(WORKSPACE[0], np.float32), np.asarray(WORKSPACE[1], np.float32)

    def _log_static(self, info: dict) -> None:
        rr = _rr()
        stream = self.stream
        stream.log("world", world_z_up, static=True)
        lo, hi = self._workspace()
        stream.log("world/workspace", rr.Boxes3D, centers=[(lo + hi) / 2], sizes=[hi - lo], labels=["workspace"],
                   colors=[(120, 120, 120)], static=True)
        stream.log("world/keyframe/predicted", rr.Boxes3D, half_sizes=[(0.02, 0.02, 0.02)], labels=["predicted"],
                   colors=[(255, 200, 0)], static=True)
        name = getattr(getattr(self.env, "cfg", None), "name", type(self.env).__name__)
        lines = [f"# {name}", "", f"- instruction: {self._instruction()}",
                 f"- variation: {info.get('variation', '?')}", f"- seed: {info.get('seed', '?')}",
                 *(f"- {k}: {v}" for k, v in self.meta.items()), f"- cameras: {', '.join(self.cameras)}"]
        stream.log("episode/info", markdown, "\n".join(lines), static=True)

    def _instruction(self) -> str:
        return str(getattr(self.env, "instruction", "") or "")

    def _log_observation(self, obs: dict, info: dict) -> list[str]:
        rr = _rr()
        s = self.state
        for cam in self.cameras:
            self._add(f"cameras/{cam}/rgb", _RGB, np.array(obs[f"{cam}_rgb"], np.uint8))
            if f"{cam}_depth" in obs:
                self._add(f"cameras/{cam}/depth", _DEPTH, np.array(obs[f"{cam}_depth"], np.float32).reshape(
                    obs[f"{cam}_rgb"].shape[:2]))
        self._add("world/points", _points3d_columns, self._fused_points(obs))
        proprio = np.asarray(obs["proprio"], np.float32).reshape(-1)
        self._add("world/gripper", _pose_columns, proprio[:7])
        self._add("scalars/gripper_open", scalar_columns, float(proprio[7]))
        self._path.append(proprio[:3].copy())
        self._add("world/gripper_path", _path_columns, np.asarray(self._path, np.float32))
        if self._last_action is not None:
            target = self._last_action
            self._add("world/keyframe/predicted", _pose_columns, target[:7])
            self._add("world/keyframe/executed", _points3d_columns,
                      (proprio[None, :3], np.array([[0, 200, 255]], np.uint8)))
            self._add("scalars/keyframe_error", scalar_columns, float(np.linalg.norm(proprio[:3] - target[:3])))
        instruction = self._instruction()
        if instruction != s.instruction:
            self._log("text/instruction", text_log, instruction)
            s.instruction = instruction
        numeric = {k: float(v) for k, v in info.items() if isinstance(v, (bool, int, float, np.number))}
        if s.measure_names is None:
            s.measure_names = list(numeric)
            self.stream.log("measures", rr.SeriesLines, names=s.measure_names, static=True)
        self._add("measures", scalar_columns, [numeric.get(k, float("nan")) for k in s.measure_names])
        changes = [f"{k} {s.measures[k]:g} -> {v:g}" for k, v in numeric.items()
                   if k in ("success", "ik_failure") and k in s.measures and s.measures[k] != v]
        s.measures.update(numeric)
        return changes

    def _fused_points(self, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """World-frame points of every camera inside the workspace, evenly subsampled to max_points."""
        lo, hi = self._workspace()
        points = np.concatenate([np.asarray(obs[f"{c}_pcd"], np.float32).reshape(-1, 3) for c in self.cameras])
        colors = np.concatenate([np.asarray(obs[f"{c}_rgb"], np.uint8).reshape(-1, 3) for c in self.cameras])
        inside = np.all((points >= lo) & (points <= hi), axis=1) & np.all(np.isfinite(points), axis=1)
        points, colors = points[inside], colors[inside]
        if len(points) > self.max_points:
            keep = np.linspace(0, len(points) - 1, self.max_points).astype(np.int64)
            points, colors = points[keep], colors[keep]
        return points, colors


def manipulation_blueprint(cameras: list[str]):
    """The 3D scene over the camera views, beside the scalars, memory weights and text."""
    import rerun.blueprint as rrb

    cams = [rrb.Spatial2DView(origin=f"cameras/{c}", contents=f"cameras/{c}/**", name=c) for c in cameras]
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(rrb.Spatial3DView(origin="world", name="scene"), rrb.Grid(*cams), row_shares=[3, 2]),
            rrb.Vertical(
                rrb.TimeSeriesView(origin="/", contents=["scalars/**", "measures"], name="scalars"),
                rrb.BarChartView(origin="memory/weights", name="memory weights"),
                rrb.TextLogView(origin="/", contents=["text/**", "agent/**"], name="text"),
            ),
            column_shares=[3, 2],
        ),
        collapse_panels=False,
    )
