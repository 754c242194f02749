"""habitat-lab PointNav / ObjectNav episode files, read against our scenes and written from ours.

The format (read from habitat-lab @0fb6f43: core/dataset.py, tasks/nav/nav.py, tasks/nav/object_nav_task.py,
datasets/pointnav/pointnav_dataset.py, datasets/object_nav/object_nav_dataset.py): a gzip JSON file
{"episodes": [...]}; each episode has `episode_id`, `scene_id`, `start_position` [x, y, z],
`start_rotation` (a unit quaternion [x, y, z, w]), `goals` [{position, radius}] and `info`
(the PointNav generator writes {"geodesic_distance": d}). ObjectNav episodes add `object_category`;
their goals usually sit in the file's top-level `goals_by_category["<basename of scene_id>_<category>"]`
as objects {object_id, object_category, position, view_points: [{agent_state: {position, rotation}, iou}]},
with `category_to_task_category_id` and `category_to_scene_annotation_category_id` maps.

Frames. habitat: y up, the agent looks along -z (PointGoalSensor: "the forward direction is along
negative-z"). Ours (embodied.world, NavAgent): z up, the floor is the x-y plane, yaw about +z
counter-clockwise from +x. The rotation is the one our GLB export applies in reverse
(embodied.world.geometry: glTF (x, y, z) -> ours (x, -z, y)), so a habitat position of a scene
exported by us, or of a user's y-up GLB loaded by load_mesh_scene, is

    ours = (x_h, -z_h, y_h - ground_shift)        habitat = (x, z + ground_shift, -y)

with ground_shift the height load_mesh_scene moved the mesh down by (0 for our apartments). The
heading: the quaternion rotates habitat's forward (0, 0, -1); its projection on the floor, in our
frame, gives yaw = atan2(-f_z, f_x). A pure heading [0, sin(t/2), 0, cos(t/2)] (as the PointNav
generator writes) is yaw = t + pi/2; we write yaw as that quaternion with t = yaw - pi/2.

What is recomputed: the geodesic distance from the start to the goal on our navigable grid (point
goals: to the nearest goal position; object goals: to the region of navigable cells within
VIEW_POINT_RADIUS of a view point, habitat's ObjectNav success_distance being 0.1 m to view points).
What is reported, per episode (`check_episodes`): a scene we do not have, a start off the grid or
not on the floor, goals off the grid, an unreachable goal, a geodesic far from info.geodesic_distance,
an object category we cannot name. Nothing is dropped silently: envs play the episodes with no
problem and warn how many they skip.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from embodied.config import InputError
from embodied.tasks.episodes import write_atomically
from embodied.world.spec import SceneFormatError

VIEW_POINT_RADIUS = 0.1  # an object goal's region: navigable cells within this of a view point, metres
HEIGHT_TOLERANCE = 0.5  # a start further than this above/below our floor is reported, metres
GEODESIC_TOLERANCE = (0.5, 0.1)  # (metres, fraction of the file's distance): larger gaps are reported
EXPORT_VIEW_POINT_SPACING = 2  # cells: written view points sample each object's goal region on this lattice
PROBLEMS = ("scene", "start_off_grid", "start_height", "goal_off_grid", "unreachable", "geodesic", "category")


# -- frames -------------------------------------------------------------------------------------
def habitat_to_ours(p, ground_shift: float = 0.0) -> np.ndarray:
    """habitat [x, y, z] (y up) -> ours [x, y, z] (z up)."""
    x, y, z = (float(v) for v in p)
    return np.array([x, -z, y - ground_shift])


def ours_to_habitat(p, ground_shift: float = 0.0) -> list[float]:
    """ours [x, y, z] (z up) -> habitat [x, y, z] (y up)."""
    x, y, z = (float(v) for v in p)
    return [x, z + ground_shift, -y]


def yaw_from_quaternion(q) -> float:
    """Our yaw (about +z, from +x) of a habitat rotation [x, y, z, w]: where it turns habitat's
    forward (0, 0, -1), projected on the floor."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 1e-9:
        raise ValueError(f"rotation {list(q)} is not a unit quaternion [x, y, z, w]")
    x, y, z, w = x / n, y / n, z / n, w / n
    # Third column of the rotation matrix, negated: R @ (0, 0, -1).
    fx = -(2 * (x * z + w * y))
    fz = -(1 - 2 * (x * x + y * y))
    if math.hypot(fx, fz) < 1e-6:
        raise ValueError(f"rotation {list(q)} points the agent straight up or down; no heading")
    return math.atan2(-fz, fx)


def quaternion_from_yaw(yaw: float) -> list[float]:
    """habitat rotation [x, y, z, w] about habitat's up axis for our yaw."""
    t = yaw - math.pi / 2
    return [0.0, math.sin(t / 2), 0.0, math.cos(t / 2)]


# -- reading ------------------------------------------------------------------------------------
@dataclass
class HabitatGoal:
    position: np.ndarray  # [3] ours
    radius: float | None = None
    view_points: np.ndarray | None = None  # [k, 3] ours (object goals)
    object_id: str | None = None


@dataclass
class HabitatEpisode:
    index: int  # position in the file
    episode_id: str
    scene_id: str
    start_h: list[float]  # as in the file (habitat frame): converted once the scene is known
    rotation: list[float]
    yaw: float
    goals_h: list[dict]  # as in the file
    object_category: str | None = None
    geodesic_distance: float | None = None  # info.geodesic_distance, when the file has it
    info: dict = field(default_factory=dict)

    @property
    def scene_name(self) -> str:
        """The scene's name: scene_id's file name without extensions (apt_0003.glb, x.basis.glb -> x)."""
        return os.path.basename(self.scene_id).split(".")[0]

    def start(self, ground_shift: float = 0.0) -> np.ndarray:
        return habitat_to_ours(self.start_h, ground_shift)

    def goals(self, ground_shift: float = 0.0) -> list[HabitatGoal]:
        out = []
        for g in self.goals_h:
            vps = g.get("view_points") or []
            out.append(HabitatGoal(
                position=habitat_to_ours(g["position"], ground_shift), radius=g.get("radius"),
                view_points=np.array([habitat_to_ours(v["agent_state"]["position"], ground_shift) for v in vps])
                .reshape(-1, 3) if vps else None,
                object_id=None if g.get("object_id") is None else str(g["object_id"])))
        return out


@dataclass
class HabitatDataset:
    path: Path
    kind: str  # "pointnav" | "objectnav"
    episodes: list[HabitatEpisode]
    category_to_task_category_id: dict[str, int] = field(default_factory=dict)


def _bad(path, what: str) -> InputError:
    return InputError(f"{path}: not a habitat episode file ({what})")


def _vector(path, where: str, value, n: int) -> list[float]:
    if not (isinstance(value, (list, tuple)) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise _bad(path, f"{where}: {str(value)[:60]}; expected {n} finite numbers")
    return [float(v) for v in value]


def read_habitat_episodes(path: str | Path) -> HabitatDataset:
    """A habitat-lab PointNav or ObjectNav episode file (.json.gz, or plain .json). One-line
    InputError naming the file when it is missing, not gzip JSON, or lacks what an episode needs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: a directory; allowed: a habitat-lab PointNav/ObjectNav episode file (.json.gz)"
                         if path.is_dir() else f"{path}: no such episode file (a habitat-lab PointNav/ObjectNav .json.gz)")
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        data = json.loads(text)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise InputError(f"{path}: not readable gzip JSON (truncated or corrupt?): {reason}") from None
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise _bad(path, 'no "episodes" list at the top level')
    if not data["episodes"]:
        raise _bad(path, "no episodes (per-scene content files are not followed: give one content file)")
    by_category = data.get("goals_by_category") or {}
    if not isinstance(by_category, dict):
        raise _bad(path, "goals_by_category is not a mapping")
    objectnav = bool(by_category) or any(isinstance(e, dict) and e.get("object_category") for e in data["episodes"])
    episodes = []
    for i, e in enumerate(data["episodes"]):
        where = f"episode {i}"
        if not isinstance(e, dict):
            raise _bad(path, f"{where} is not a mapping")
        missing = [k for k in ("scene_id", "start_position", "start_rotation") if k not in e]
        if missing:
            raise _bad(path, f"{where} lacks {', '.join(missing)}")
        start = _vector(path, f"{where} start_position", e["start_position"], 3)
        rotation = _vector(path, f"{where} start_rotation", e["start_rotation"], 4)
        try:
            yaw = yaw_from_quaternion(rotation)
        except ValueError as err:
            raise _bad(path, f"{where}: {err}") from None
        category = e.get("object_category")
        goals = e.get("goals") or []
        if objectnav:
            if not isinstance(category, str) and goals and isinstance(goals[0], dict):
                category = goals[0].get("object_category")  # habitat's dedup_goals reads it there
            if not isinstance(category, str):
                raise _bad(path, f"{where}: an ObjectNav episode without object_category")
            if not goals:
                key = f"{os.path.basename(str(e['scene_id']))}_{category}"
                goals = by_category.get(key)
                if goals is None:
                    raise _bad(path, f"{where}: goals_by_category has no {key!r}")
        if not isinstance(goals, list) or not goals:
            raise _bad(path, f"{where}: no goals")
        for j, g in enumerate(goals):
            if not isinstance(g, dict) or "position" not in g:
                raise _bad(path, f"{where} goal {j}: no position")
            _vector(path, f"{where} goal {j} position", g["position"], 3)
            for k, v in enumerate(g.get("view_points") or []):
                try:
                    _vector(path, f"{where} goal {j} view point {k}", v["agent_state"]["position"], 3)
                except (TypeError, KeyError):
                    raise _bad(path, f"{where} goal {j} view point {k}: no agent_state.position") from None
        info = e.get("info") if isinstance(e.get("info"), dict) else {}
        geo = info.get("geodesic_distance")
        geo = float(geo) if isinstance(geo, (int, float)) and not isinstance(geo, bool) and math.isfinite(geo) else None
        episodes.append(HabitatEpisode(i, str(e.get("episode_id", i)), str(e["scene_id"]), start, rotation, yaw,
                                       goals, category if objectnav else None, geo, info))
    cats = data.get("category_to_task_category_id") or {}
    return HabitatDataset(path, "objectnav" if objectnav else "pointnav", episodes,
                          dict(cats) if isinstance(cats, dict) else {})


# -- checking against our scenes ------------------------------------------------------------------
@dataclass
class EpisodeCheck:
    """One episode read against our scene: its problems (empty = navigable here, playable)."""

    episode: HabitatEpisode
    problems: list[str] = field(default_factory=list)  # "<kind>: <detail>", kind in PROBLEMS
    geodesic: float | None = None  # ours, metres
    start: np.ndarray | None = None  # [3] ours
    scene: Any = None  # the NavScene

    @property
    def navigable(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        e = self.episode
        return {"index": e.index, "episode_id": e.episode_id, "scene_id": e.scene_id, "navigable": self.navigable,
                "geodesic_distance": None if self.geodesic is None or not math.isfinite(self.geodesic)
                else round(self.geodesic, 3), "file_geodesic_distance": e.geodesic_distance,
                "problems": self.problems}


def object_goal_region(scene, goals: list[HabitatGoal]) -> tuple[np.ndarray, int, int]:
    """[ny, nx] bool goal region of object goals (navigable cells within VIEW_POINT_RADIUS of a
    navigable view point's cell), with the number of view points and of navigable ones."""
    grid = scene.grid
    vps = [g.view_points for g in goals if g.view_points is not None and len(g.view_points)]
    vps = np.concatenate(vps) if vps else np.zeros((0, 3))
    ok = grid.is_navigable(vps[:, :2]) if len(vps) else np.zeros(0, bool)
    seeds = np.zeros(grid.shape, bool)
    rc = grid.world_to_grid(vps[ok, :2])
    seeds[rc[:, 0], rc[:, 1]] = True
    r = int(math.floor(VIEW_POINT_RADIUS / grid.cell + 1e-9))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    region = ndimage.binary_dilation(seeds, structure=(xx * xx + yy * yy) <= r * r) if r else seeds
    return region & grid.navigable, len(vps), int(ok.sum())


def goal_field(scene, episode: HabitatEpisode, kind: str):
    """The DistanceField of an episode's goals in `scene`; ValueError with a `<kind>: <detail>` reason."""
    grid, shift = scene.grid, scene.geometry.ground_shift
    goals = episode.goals(shift)
    if kind == "pointnav":
        points = np.array([g.position[:2] for g in goals])
        off = [i for i, p in enumerate(points) if not grid.is_navigable(p)]
        if off:
            p = points[off[0]]
            raise ValueError(f"goal_off_grid: goal {off[0]} at ({p[0]:.2f}, {p[1]:.2f}) is not navigable here"
                             f"{_nearest(grid, p)}")
        return grid.distance_field_to_points(points)
    region, n, n_ok = object_goal_region(scene, goals)
    if not n:
        raise ValueError("goal_off_grid: the goals have no view points (object goals are reached at their view points)")
    if not region.any():
        raise ValueError(f"goal_off_grid: none of the {n} view points is navigable here")
    return grid.distance_field_to_region(region)


def _nearest(grid, xy) -> str:
    try:
        d = float(np.hypot(*(grid.nearest_navigable(xy) - np.asarray(xy)[:2])))
    except ValueError:
        return ""
    return f" (nearest navigable cell {d:.2f} m away)"


def check_episodes(dataset: HabitatDataset, scenes, kind: str | None = None,
                   tolerance: tuple[float, float] = GEODESIC_TOLERANCE,
                   height_tolerance: float = HEIGHT_TOLERANCE) -> list[EpisodeCheck]:
    """Read every episode against our scenes (a SceneSource: `named(scene)`): convert its start and
    goals, recompute the geodesic distance on our grid, and list its problems. `kind` (pointnav or
    objectnav, default the file's) is how goals are read; objectnav also needs categories we name."""
    from embodied.world import OBJECT_CATEGORIES

    kind = kind or dataset.kind
    checks = []
    for ep in dataset.episodes:
        c = EpisodeCheck(ep)
        checks.append(c)
        try:
            scene = scenes.named(ep.scene_name)
        except SceneFormatError as e:
            c.problems.append(f"scene: {e}")
            continue
        c.scene = scene
        grid = scene.grid
        c.start = start = ep.start(scene.geometry.ground_shift)
        if kind == "objectnav" and ep.object_category not in OBJECT_CATEGORIES:
            c.problems.append(f"category: {ep.object_category!r} is not one of our object categories "
                              "(embodied.world.OBJECT_CATEGORIES); objectgoal cannot name it")
        if not grid.is_navigable(start[:2]):
            c.problems.append(f"start_off_grid: start ({start[0]:.2f}, {start[1]:.2f}) is not navigable here"
                              f"{_nearest(grid, start[:2])}")
        else:
            floor = grid.floor_height_at(start[:2])
            if abs(start[2] - floor) > height_tolerance:
                c.problems.append(f"start_height: start at height {start[2]:.2f} m, our floor there at {floor:.2f} m")
        try:
            fld = goal_field(scene, ep, kind)
        except ValueError as e:
            c.problems.append(str(e))
            continue
        if not grid.is_navigable(start[:2]):
            continue
        c.geodesic = fld.at(start[:2])
        if not math.isfinite(c.geodesic):
            c.problems.append("unreachable: no path from the start to the goal on our grid")
        elif ep.geodesic_distance is not None:
            gap = abs(c.geodesic - ep.geodesic_distance)
            if gap > max(tolerance[0], tolerance[1] * ep.geodesic_distance):
                c.problems.append(f"geodesic: ours {c.geodesic:.2f} m, the file's {ep.geodesic_distance:.2f} m")
    return checks


def summary(checks: list[EpisodeCheck]) -> dict:
    """{"episodes", "navigable", "not_navigable", "problems": {kind: episodes with it}}."""
    counts = {k: 0 for k in PROBLEMS}
    for c in checks:
        for kind in {p.split(":", 1)[0] for p in c.problems}:
            counts[kind] = counts.get(kind, 0) + 1
    bad = sum(not c.navigable for c in checks)
    return {"episodes": len(checks), "navigable": len(checks) - bad, "not_navigable": bad,
            "problems": {k: v for k, v in counts.items() if v}}


# -- writing ------------------------------------------------------------------------------------
def write_habitat_file(path: str | Path, data: dict) -> Path:
    """gzip JSON, atomically (temp file, fsync, rename)."""
    return write_atomically(path, lambda f: f.write(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)))


def _r(v) -> list[float]:
    return [round(float(x), 4) for x in v]


def scene_id_of(scene) -> str:
    """The scene_id we write: apartments/<name>.glb for a pinned apartment (relative to scenes/, as
    habitat-lab joins scene_id to its scenes_dir), else the scene file's name."""
    return f"apartments/{scene.key}.glb" if scene.spec is not None and scene.key == scene.spec.name \
        else os.path.basename(scene.key)


def object_view_points(scene, item, radius: float, eye_height: float) -> np.ndarray:
    """[k, 2] view points of one object: its goal region (NavScene.view_cells: navigable cells within
    `radius` of its footprint that see it) sampled every EXPORT_VIEW_POINT_SPACING cells, plus every
    region cell farther than VIEW_POINT_RADIUS from the samples, so the view points' region covers
    the object's."""
    grid = scene.grid
    region = scene.view_cells([item], radius, eye_height)
    s = EXPORT_VIEW_POINT_SPACING
    rows, cols = np.indices(grid.shape)
    picked = region & (rows % s == 0) & (cols % s == 0)
    r = int(math.floor(VIEW_POINT_RADIUS / grid.cell + 1e-9))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    covered = ndimage.binary_dilation(picked, structure=(xx * xx + yy * yy) <= r * r)
    picked |= region & ~covered
    return grid.grid_to_world(np.argwhere(picked))


def export_episodes(cfg, seeds, path: str | Path, quiet: bool = True) -> Path:
    """Write the episodes our env draws for `seeds` (task nav/pointnav or nav/objectnav; cfg: a
    NavConfig or dict) as a habitat-lab episode file; info carries `geodesic_distance` (ours) and the
    `seed`. ObjectNav goals are every instance of the category with its view points."""
    from tqdm import tqdm

    from embodied.tasks.config import NavConfig
    from embodied.tasks.registry import make_env
    from embodied.world import OBJECT_CATEGORIES, semantic_classes

    cfg = NavConfig.from_any(cfg)
    if cfg.name not in ("nav/pointnav", "nav/objectnav"):
        raise InputError(f"task.name: {cfg.name}; habitat episode files hold nav/pointnav or nav/objectnav episodes")
    env = make_env({**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "sensors": []})
    objectnav = cfg.name == "nav/objectnav"
    episodes, by_category = [], {}
    for i, seed in enumerate(tqdm(list(seeds), desc="episodes", disable=quiet)):
        env.reset(seed=int(seed))
        scene, agent = env.scene, env.agent
        shift = scene.geometry.ground_shift
        ep = {"episode_id": str(i), "scene_id": scene_id_of(scene),
              "start_position": _r(ours_to_habitat(agent.position, shift)),
              "start_rotation": _r(quaternion_from_yaw(agent.yaw)),
              "info": {"geodesic_distance": round(float(env.leg_start_distance), 4), "seed": int(seed)},
              "goals": [], "start_room": None, "shortest_paths": None}
        if objectnav:
            category = OBJECT_CATEGORIES[env.goal.category]
            ep["object_category"] = category
            key = f"{os.path.basename(ep['scene_id'])}_{category}"
            if key not in by_category:
                by_category[key] = [_object_goal(scene, item, cfg.success_distance, cfg.camera_height, shift)
                                    for item in scene.spec.objects() if item.category == category]
        else:
            p = env.goal.point
            ep["goals"] = [{"position": _r(ours_to_habitat((p[0], p[1], scene.grid.floor_height_at(p)), shift)),
                            "radius": cfg.success_distance}]
        episodes.append(ep)
    data: dict = {"episodes": episodes}
    if objectnav:
        classes = semantic_classes()
        data["goals_by_category"] = by_category
        data["category_to_task_category_id"] = {c: i for i, c in enumerate(OBJECT_CATEGORIES)}
        data["category_to_scene_annotation_category_id"] = {c: classes.index(c) for c in OBJECT_CATEGORIES}
    return write_habitat_file(path, data)


def _object_goal(scene, item, radius: float, eye_height: float, shift: float) -> dict:
    grid = scene.grid
    vps = []
    for xy in object_view_points(scene, item, radius, eye_height):
        facing = math.atan2(item.position[1] - xy[1], item.position[0] - xy[0])
        vps.append({"agent_state": {"position": _r(ours_to_habitat((xy[0], xy[1], grid.floor_height_at(xy)), shift)),
                                    "rotation": _r(quaternion_from_yaw(facing))}, "iou": None})
    centre = (item.position[0], item.position[1], item.position[2] + 0.5 * item.size[2])
    return {"object_id": str(item.id), "object_name": f"{item.category}_{item.id}", "object_category": item.category,
            "room_id": str(item.room), "position": _r(ours_to_habitat(centre, shift)), "radius": None,
            "view_points": vps}
