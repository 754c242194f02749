"""3D-Mem's scene memory (Yang et al., CVPR 2025; shared/reference/3dmem-sat-optimus.md §(a);
docs/goat.md): objects fused in 3D, memory snapshots chosen by co-visibility clustering, frontiers
from the agent's own occupancy map, and prefiltering of what reaches a chooser.

A structured memory (DESIGN.md): a plain object per env, not tensor state; no torch. It sees only
what the agent observes: depth, its pose (GPS + compass, in the episode-start frame), the camera
tilt, and a detector. The detector is declared ground truth: the renderer's instance ids segment
the objects and the semantic image names them (3D-Mem uses YOLO-World + SAM + CLIP here). Options
degrade it so the memory's gain is not bought by perfect perception: `miss_rate` drops a detection,
`confusion_rate` gives a wrong category, to an object for the whole episode or to one detection
(`confusion`; fused objects keep their most common label, as 3D-Mem's do), `depth_noise` perturbs
depth.

What follows the released code (3D-Mem @f5a88d2, hierarchy_clustering.py, scene_aeqa.py):
- every kept frame lists the objects it saw with a confidence (here: the fraction of the image
  they cover); a memory snapshot is a frame plus the cluster of objects it "owns";
- clustering: bisecting 2-means over object floor positions; the largest leaf becomes a snapshot
  when a frame sees all its objects (most objects first, then the summed confidence; a frame that
  is already a snapshot is preferred, which merges clusters into fewer images); otherwise it splits;
- incremental: each step re-clusters only the objects detected this step (and those within
  `recluster_radius` of the agent) and the snapshots holding any of them; every other snapshot stays.
Invariant (checked by tests, asserted by 3D-Mem every step): every object with at least
`min_detections` detections is in exactly one snapshot, and that snapshot's frame sees it.

Where it differs: frontiers are the free/unknown boundary of a 2D occupancy grid built from depth
(3D-Mem: a TSDF and an "explored within 1.7 m" rule), grouped by connected components rather than
DBSCAN. A frontier's snapshot is rendered facing it from where the agent stands when a chooser
that looks at images asks (GoatAgent.look, as 3D-Mem renders frontier views); without a renderer the
last frame that faced it stands in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from embodied.render import Camera
from embodied.world import FURNITURE_CATEGORIES, OBJECT_CATEGORIES, colour_name, semantic_classes

UNKNOWN, FREE, OCCUPIED = 0, 1, 2
DETECTABLE = OBJECT_CATEGORIES + FURNITURE_CATEGORIES  # what the detector names (structure is background)


@dataclass
class SceneMemoryConfig:
    """Options of the scene memory; every one documented, checked by `validate`."""

    cell: float = 0.1
    """Occupancy-grid cell, metres (3D-Mem's TSDF voxel: 0.1)."""
    map_radius: float = 20.0
    """The grid spans +-map_radius metres around the episode start."""
    map_range: float = 3.0
    """Depth beyond this is not integrated into the grid, metres (3D-Mem: 3)."""
    explored_range: float = 1.7
    """Free cells seen within this distance of the camera are explored; frontiers lie between
    explored cells and the rest, so the agent walks close enough to detect small objects (3D-Mem: 1.7)."""
    detect_range: float = 3.5
    """Detections whose centre is farther from the camera are dropped, metres (3D-Mem obj_include_dist)."""
    min_pixels: int = 8
    """A detection covers at least this many pixels."""
    min_detections: int = 1
    """Objects seen fewer times are not clustered into snapshots (3D-Mem min_detection)."""
    recluster_radius: float = 0.0
    """Objects within this distance of the agent are re-clustered every step, besides those detected
    (3D-Mem: 3.5 + 0.5, as its detections merge and move objects; a ground-truth track does not
    move, so 0 re-clusters only what this step saw, at a fraction of the cost)."""
    obstacle_height: float = 0.1
    """Points higher above the floor than this (and below the agent's height) are obstacles."""
    agent_height: float = 1.5
    """Points higher than this above the floor do not block the agent."""
    min_frontier_cells: int = 6
    """Smaller free/unknown boundary groups are not frontiers (3D-Mem: 20 cells, with DBSCAN)."""
    top_k_classes: int = 10
    """Prefiltering keeps the snapshots holding one of this many most relevant classes (3D-Mem: 10)."""
    max_snapshots: int = 0
    """Snapshot budget: at most this many snapshots reach the chooser, the most relevant first (0: no budget)."""
    miss_rate: float = 0.0
    """Probability that a detection is dropped (per object, per frame)."""
    confusion_rate: float = 0.0
    """Probability of a wrong category: for an object for the whole episode, or for one detection
    (`confusion`)."""
    confusion: str = "object"
    """Where confusion strikes: "object" (a systematic error: every detection of that object carries the
    same wrong label, so fusing labels cannot undo it) or "detection" (each detection drawn anew; the
    object keeps its most common label, as 3D-Mem's fused objects do)."""
    depth_noise: float = 0.0
    """Standard deviation of multiplicative Gaussian depth noise (0.05 = 5 % of the depth)."""
    keep_images: bool = True
    """Keep the RGB image of every frame that holds objects (snapshot images for a viewer or a VLM)."""
    seed: int = 0
    """Seeds the perception noise; episode e draws from (seed, e)."""

    @classmethod
    def from_options(cls, options: dict, key: str = "agent.memory") -> "SceneMemoryConfig":
        """A checked config from a config node's options; an unknown key or a bad value is one line
        naming `key`.<name>."""
        from embodied.config import check

        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        check(not unknown, f"{key}.{unknown[0] if unknown else ''}",
              f"unknown key; allowed: {', '.join(sorted(cls.__dataclass_fields__))}")
        return cls(**options).validate(key)

    def validate(self, key: str = "memory") -> "SceneMemoryConfig":
        """Self, checked; a bad value is one line naming `key`.<name>."""
        from embodied.config import check

        def bad(name: str, ok: bool, allowed: str) -> None:
            check(ok, f"{key}.{name}", f"{getattr(self, name)!r}; allowed: {allowed}")

        bad("recluster_radius", self.recluster_radius >= 0, ">= 0")
        for name in ("cell", "map_radius", "map_range", "explored_range", "detect_range", "agent_height"):
            bad(name, getattr(self, name) > 0, "> 0")
        for name in ("min_pixels", "min_detections", "min_frontier_cells", "top_k_classes"):
            bad(name, int(getattr(self, name)) >= 1, ">= 1")
        bad("max_snapshots", self.max_snapshots >= 0, ">= 0 (0: no budget)")
        for name in ("miss_rate", "confusion_rate"):
            bad(name, 0.0 <= getattr(self, name) < 1.0, "[0, 1)")
        bad("depth_noise", self.depth_noise >= 0, ">= 0")
        bad("confusion", self.confusion in ("object", "detection"), "object, detection")
        return self


@dataclass
class SceneObject:
    id: int  # the detector's track id (the renderer's instance id)
    category: str
    position: np.ndarray  # [3] mean of its back-projected pixels, episode-start frame
    colour: np.ndarray  # [3] mean RGB in [0, 1] of its pixels
    pixels: int = 0  # pixels fused into position and colour
    detections: int = 0
    frames: set = field(default_factory=set)
    labels: dict = field(default_factory=dict)  # category -> detections that named it

    def vote(self, category: str) -> None:
        """Fuse one detection's label: the object keeps its most common label (3D-Mem's merged objects;
        a tie keeps the current one)."""
        self.labels[category] = self.labels.get(category, 0) + 1
        if self.labels[category] > self.labels.get(self.category, 0):
            self.category = category

    @property
    def colour_name(self) -> str:
        return colour_name(self.colour)


@dataclass
class Frame:
    id: int  # the step at which it was observed
    pose: np.ndarray  # [4] camera floor pose (x, y, z, yaw)
    objects: dict  # object id -> confidence (fraction of the image it covers)
    image: np.ndarray | None = None


@dataclass
class Snapshot:
    frame: int
    objects: list  # object ids it owns


@dataclass
class Frontier:
    id: int
    cells: np.ndarray  # [n, 2] (row, col) of its free cells bordering unknown space
    centre: np.ndarray  # [2] xy of the cell nearest to the group's mean
    size: int
    frame: int | None  # the last frame whose camera faced it, or None
    key: tuple = ()  # its first cell: the same frontier keeps it (and its snapshot) while that cell does


class SceneMemory:
    """`reset()`, `observe(obs, tilt_deg)`, `candidates(goal)`, `state_dict()`; see the module doc."""

    def __init__(self, camera: Camera, config: SceneMemoryConfig | None = None):
        self.cfg = (config or SceneMemoryConfig()).validate()
        self.camera = camera
        self.classes = semantic_classes()
        self._detectable = np.zeros(len(self.classes), bool)
        for name in DETECTABLE:
            self._detectable[self.classes.index(name)] = True
        self._rays: dict[float, np.ndarray] = {}
        n = int(round(2 * self.cfg.map_radius / self.cfg.cell))
        self.shape = (n, n)
        self.origin = np.array([-self.cfg.map_radius, -self.cfg.map_radius])
        self.episode = -1
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self, episode: int | None = None) -> None:
        """A new episode: forget everything, and the detector's errors are drawn afresh."""
        self.episode = self.episode + 1 if episode is None else int(episode)
        self.rng = np.random.default_rng([self.cfg.seed, self.episode])
        self.clear()

    def clear(self) -> None:
        """Forget everything within the episode (the cleared-memory ablation at every goal). The
        detector stays the episode's: an object mislabelled per object is mislabelled again."""
        self.objects: dict[int, SceneObject] = {}
        self.glimpsed: set[int] = set()  # objects held, seen in the last observation below min_pixels
        self.frames: dict[int, Frame] = {}
        self.snapshots: dict[int, Snapshot] = {}  # frame id -> snapshot
        self.frontiers: list[Frontier] = []
        self.grid = np.zeros(self.shape, np.int8)
        self.explored = np.zeros(self.shape, bool)  # seen free within explored_range of the camera
        self.given_up = np.zeros(self.shape, bool)  # unexplored cells the agent could not see from up close
        self._facing: dict[tuple, int] = {}
        # frontier key -> its frontier snapshot (rgb rendered facing it, GoatAgent.look), kept while it lasts
        self.frontier_images: dict[tuple, np.ndarray] = {}
        self.step = 0
        self.pose = np.zeros(4)
        self.update_seconds = 0.0

    # ------------------------------------------------------------------ observation
    def observe(self, obs: dict, tilt_deg: float = 0.0) -> list[int]:
        """Fuse one observation: `depth` [H,W(,1)], `pose` [4], `instance` [H,W], `semantic` [H,W],
        `rgb` [H,W,3] (optional). Returns the ids of the objects detected in it."""
        t0 = time.perf_counter()
        points, depth, pose = self._fuse_depth(obs, tilt_deg)
        detected = self._detect(obs, points, depth, pose)
        self._update_snapshots(detected)
        self._update_frontiers(pose)
        self.step += 1
        self.update_seconds = time.perf_counter() - t0
        return detected

    def observe_map(self, obs: dict, tilt_deg: float = 0.0) -> None:
        """Fuse one observation's `depth` and `pose` into the occupancy map only: no objects, snapshots
        or frontiers (an agent that plans its walks on its own map, as the household's navigation
        controller does, needs nothing else)."""
        t0 = time.perf_counter()
        self._fuse_depth(obs, tilt_deg)
        self.step += 1
        self.update_seconds = time.perf_counter() - t0

    def _fuse_depth(self, obs: dict, tilt_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        depth = np.asarray(obs["depth"], np.float32).reshape(self.camera.height, self.camera.width)
        if self.cfg.depth_noise:
            depth = depth * (1.0 + self.cfg.depth_noise * self.rng.standard_normal(depth.shape)).astype(np.float32)
        pose = np.asarray(obs["pose"], np.float64).reshape(4)
        self.pose = pose
        points = self._back_project(depth, pose, tilt_deg)  # [H, W, 3]
        self._integrate(points, depth, pose)
        return points, depth, pose

    def mark_blocked(self, xy) -> None:
        """The agent bumped into something at xy that depth did not show (e.g. a thin leg)."""
        r, c = self.cell_of(xy)
        if 0 <= r < self.shape[0] and 0 <= c < self.shape[1]:
            self.grid[r, c] = OCCUPIED

    def give_up(self, xy, radius: float) -> None:
        """Give up on the unexplored cells within `radius` of xy: the agent stood there and still
        could not see them (behind furniture, under a bed); they border no frontier any more."""
        r, c = self.cell_of(xy)
        k = int(math.ceil(radius / self.cfg.cell))
        rr, cc = np.mgrid[max(r - k, 0):min(r + k + 1, self.shape[0]), max(c - k, 0):min(c + k + 1, self.shape[1])]
        near = (rr - r) ** 2 + (cc - c) ** 2 <= k * k
        self.given_up[rr[near], cc[near]] = True

    def reexplore(self) -> None:
        """Mark every cell unexplored again (and nothing given up), keeping the occupancy and the
        objects: frontiers reappear around what the agent sees next, for a second sweep."""
        self.explored[:] = False
        self.given_up[:] = False
        self.frontiers = []
        self.frontier_images = {}

    def _back_project(self, depth: np.ndarray, pose: np.ndarray, tilt_deg: float) -> np.ndarray:
        rays = self._rays.get(tilt_deg)
        if rays is None:
            cam = Camera(width=self.camera.width, height=self.camera.height, hfov_deg=self.camera.hfov_deg,
                         mount_height=self.camera.mount_height, tilt_deg=tilt_deg)
            rays = self._rays[tilt_deg] = cam.ray_directions().reshape(cam.height, cam.width, 3).astype(np.float64)
        c, s = math.cos(pose[3]), math.sin(pose[3])
        world = np.empty_like(rays)
        world[..., 0] = c * rays[..., 0] - s * rays[..., 1]
        world[..., 1] = s * rays[..., 0] + c * rays[..., 1]
        world[..., 2] = rays[..., 2]
        eye = np.array([pose[0], pose[1], pose[2] + self.camera.mount_height])
        return eye + world * depth[..., None]

    def _integrate(self, points: np.ndarray, depth: np.ndarray, pose: np.ndarray) -> None:
        """Free cells along each ray up to what it hit; obstacles stay (a later ray over a table
        must not clear it); the agent's own cell is free."""
        cfg = self.cfg
        grid, explored = self.grid.reshape(-1), self.explored.reshape(-1)
        start = pose[:2]
        # Cells are marked in two masks and written once: rays cross the same cells many times over,
        # and carving or a floor hit only ever frees a cell that was not occupied before this step.
        notocc = grid != OCCUPIED
        free = np.zeros(grid.size, bool)
        close = np.zeros(grid.size, bool)
        # Carve: one sample per cell from the camera to each hit of every third row and column
        # (neighbouring rays cross the same cells), stopping half a cell short of the hit.
        q = points[::3, ::3][depth[::3, ::3] > 0.05][:, :2]  # far hits carve too, up to map_range
        d = q - start
        length = np.hypot(d[:, 0], d[:, 1])
        reach = np.minimum(length - 0.5 * cfg.cell, cfg.map_range)
        steps = int(np.ceil(reach.max() / cfg.cell)) + 1 if len(reach) else 0
        if steps > 0:
            t = np.arange(steps) * cfg.cell
            unit = d / np.maximum(length, 1e-9)[:, None]
            ray, k = np.nonzero(t[None, :] < reach[:, None])
            tk = t[k]
            cells, ok = self._flat_cells(start[0] + unit[ray, 0] * tk, start[1] + unit[ray, 1] * tk)
            free[cells[ok]] = True
            close[cells[ok & (tk <= cfg.explored_range)]] = True
        valid = (depth > 0.05) & (depth <= cfg.map_range)
        p = points[valid]
        height = p[:, 2] - pose[2]
        cells, ok = self._flat_cells(p[:, 0], p[:, 1])
        floor = ok & (height <= cfg.obstacle_height)
        free[cells[floor]] = True
        near = np.hypot(p[floor, 0] - start[0], p[floor, 1] - start[1]) <= cfg.explored_range
        close[cells[floor][near]] = True
        grid[free & notocc] = FREE
        explored[close & notocc] = True
        grid[cells[ok & (height > cfg.obstacle_height) & (height < cfg.agent_height)]] = OCCUPIED
        r, c = self.cell_of(start)
        self.grid[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = FREE
        self.explored[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = True

    def _detect(self, obs: dict, points: np.ndarray, depth: np.ndarray, pose: np.ndarray) -> list[int]:
        cfg = self.cfg
        inst = np.asarray(obs["instance"]).reshape(depth.shape)
        sem = np.asarray(obs["semantic"]).reshape(depth.shape)
        rgb = obs.get("rgb")
        ids, counts = np.unique(inst[inst > 0], return_counts=True)
        seen: dict[int, float] = {}
        total = float(inst.size)
        self.glimpsed = set()
        for oid, count in zip(ids.tolist(), counts.tolist()):
            if count < cfg.min_pixels:
                # Too few pixels to add an object, enough to see again one it holds (3D-Mem keeps
                # masks from 25 px of 1280 x 1280, a quarter pixel at 128 x 128).
                if oid in self.objects and not (cfg.miss_rate and self.rng.random() < cfg.miss_rate):
                    self.glimpsed.add(oid)
                continue
            mask = inst == oid
            cls = int(np.bincount(sem[mask]).argmax())
            if not self._detectable[cls]:
                continue
            if cfg.miss_rate and self.rng.random() < cfg.miss_rate:
                continue
            pts = points[mask]
            centre = pts.mean(0)
            if math.hypot(centre[0] - pose[0], centre[1] - pose[1]) > cfg.detect_range:
                continue
            obj = self.objects.get(oid)
            if obj is None or cfg.confusion == "detection":
                category = self.classes[cls]
                if cfg.confusion_rate:
                    # Per object the error is systematic: drawn from the episode and the object alone,
                    # not from the order of detections, so every memory of the episode meets the same one.
                    rng = (self.rng if cfg.confusion == "detection"
                           else np.random.default_rng([cfg.seed, self.episode, oid]))
                    if rng.random() < cfg.confusion_rate:
                        others = [c for c in DETECTABLE if c != category]
                        category = others[int(rng.integers(len(others)))]
            if obj is None:
                obj = self.objects[oid] = SceneObject(oid, category, np.zeros(3), np.zeros(3))
            obj.vote(category if cfg.confusion == "detection" else obj.category)
            colour = rgb[mask].astype(np.float64).mean(0) / 255.0 if rgb is not None else np.zeros(3)
            w = obj.pixels / (obj.pixels + count)
            obj.position = w * obj.position + (1 - w) * centre
            obj.colour = w * obj.colour + (1 - w) * colour
            obj.pixels += count
            obj.detections += 1
            obj.frames.add(self.step)
            seen[oid] = count / total
        if seen:
            image = np.asarray(rgb).copy() if (rgb is not None and cfg.keep_images) else None
            self.frames[self.step] = Frame(self.step, pose.copy(), seen, image)
        return sorted(seen)

    # ------------------------------------------------------------------ memory snapshots
    def _update_snapshots(self, detected: list[int]) -> None:
        cfg = self.cfg
        near = [o.id for o in self.objects.values() if cfg.recluster_radius
                and math.hypot(o.position[0] - self.pose[0], o.position[1] - self.pose[1]) <= cfg.recluster_radius]
        targets = set(detected) | set(near)
        if not targets:
            return
        redo = set(targets)
        for fid in [f for f, s in self.snapshots.items() if targets & set(s.objects)]:
            redo |= set(self.snapshots.pop(fid).objects)
        redo = sorted(o for o in redo if self.objects[o].detections >= cfg.min_detections)
        for fid, objs in self.cluster(redo).items():
            snap = self.snapshots.get(fid)
            if snap is None:
                self.snapshots[fid] = Snapshot(fid, sorted(objs))
            else:
                snap.objects = sorted(set(snap.objects) | set(objs))

    def cluster(self, object_ids: list[int]) -> dict[int, list[int]]:
        """{frame id: object ids} covering `object_ids` (3D-Mem's SceneHierarchicalClustering.fit)."""
        result: dict[int, list[int]] = {}
        leaves = [list(object_ids)] if object_ids else []
        while leaves:
            i = max(range(len(leaves)), key=lambda k: (len(leaves[k]), -k))
            node = leaves.pop(i)
            sets = sorted((self.objects[o].frames for o in node), key=len)
            frames = sets[0].intersection(*sets[1:])
            if frames:
                def rank(f):
                    objs = self.frames[f].objects
                    return (-len(objs), -sum(objs[o] for o in node), f)
                ordered = sorted(frames, key=rank)
                chosen = next((f for f in ordered if f in result or f in self.snapshots), ordered[0])
                result.setdefault(chosen, []).extend(node)
                continue
            leaves.extend(self._split(node))
        return result

    def _split(self, node: list[int]) -> list[list[int]]:
        """Two-means on floor positions (a 2-object node splits 1/1); deterministic."""
        if len(node) == 2:
            return [[node[0]], [node[1]]]
        xy = np.array([self.objects[o].position[:2] for o in node])
        axis = xy - xy.mean(0)
        direction = np.linalg.svd(axis, full_matrices=False)[2][0] if len(node) > 1 else np.array([1.0, 0.0])
        proj = axis @ direction
        centres = np.stack([xy[int(np.argmin(proj))], xy[int(np.argmax(proj))]])
        label = np.zeros(len(node), int)
        for _ in range(20):
            d = ((xy[:, None, :] - centres[None]) ** 2).sum(-1)
            new = d.argmin(1)
            if new.min() == new.max():  # coincident points: split by the projection's order
                new = (np.argsort(np.argsort(proj, kind="stable")) >= len(node) // 2).astype(int)
            if np.array_equal(new, label) and _ > 0:
                break
            label = new
            centres = np.stack([xy[label == k].mean(0) for k in (0, 1)])
        return [[o for o, l in zip(node, label) if l == k] for k in (0, 1)]

    # ------------------------------------------------------------------ frontiers
    def _update_frontiers(self, pose: np.ndarray) -> None:
        known = self.grid != UNKNOWN
        rows, cols = np.nonzero(known.any(1))[0], np.nonzero(known.any(0))[0]
        r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, self.shape[0])  # known cells' box, one cell wider
        c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, self.shape[1])
        grid = self.grid[r0:r1, c0:c1]
        explored = self.explored[r0:r1, c0:c1]
        free = (grid == FREE) & explored
        open_ = ~explored & (grid != OCCUPIED) & ~self.given_up[r0:r1, c0:c1]
        near_unknown = ndimage.binary_dilation(open_, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
        labels, n = ndimage.label(free & near_unknown, structure=np.ones((3, 3), bool))
        frontiers = []
        if n:
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            half_fov = math.radians(self.camera.hfov_deg) / 2
            big = np.flatnonzero(sizes >= self.cfg.min_frontier_cells)
            big = big[big > 0]
            cells_of = ndimage.find_objects(labels)
            for k in big:
                window = cells_of[k - 1]
                local = np.argwhere(labels[window] == k)
                cells = local + np.array([window[0].start + r0, window[1].start + c0])
                xy = self.centres_of(cells)
                centre = xy[int(np.argmin(((xy - xy.mean(0)) ** 2).sum(1)))]
                key = (int(cells[0, 0]), int(cells[0, 1]))
                bearing = math.atan2(centre[1] - pose[1], centre[0] - pose[0]) - pose[3]
                bearing = (bearing + math.pi) % (2 * math.pi) - math.pi
                if abs(bearing) <= half_fov and self.step in self.frames:
                    self._facing[key] = self.step
                frontiers.append(Frontier(len(frontiers), cells, centre, int(len(cells)), self._facing.get(key), key))
        self.frontiers = frontiers
        live = {f.key for f in frontiers}
        self.frontier_images = {k: v for k, v in self.frontier_images.items() if k in live}



    # ------------------------------------------------------------------ queries
    def candidates(self, relevant_classes: list[str] | None = None) -> tuple[list[Snapshot], list[Frontier]]:
        """Prefiltering: the snapshots holding one of the first `top_k_classes` of
        `relevant_classes` (most relevant first; None keeps all), at most `max_snapshots` of them
        (those with the most relevant class first), and the frontiers."""
        snaps = [s for _, s in sorted(self.snapshots.items())]
        if relevant_classes is not None:
            keep = list(relevant_classes)[: self.cfg.top_k_classes]
            rank = {c: i for i, c in enumerate(keep)}

            def best(s):
                return min((rank[self.objects[o].category] for o in s.objects if self.objects[o].category in rank),
                           default=None)
            snaps = [s for s in snaps if best(s) is not None]
            snaps.sort(key=lambda s: (best(s), -s.frame))
        if self.cfg.max_snapshots:
            snaps = snaps[: self.cfg.max_snapshots]
        return snaps, list(self.frontiers)

    def nbytes(self) -> int:
        """Bytes held: grid, objects, frames (with images), snapshots, frontier snapshots."""
        total = self.grid.nbytes + self.explored.nbytes + self.given_up.nbytes
        total += sum(24 + 48 + 8 * len(o.frames) for o in self.objects.values())
        total += sum(32 + 16 * len(f.objects) + (f.image.nbytes if f.image is not None else 0)
                     for f in self.frames.values())
        total += sum(8 + 8 * len(s.objects) for s in self.snapshots.values())
        total += sum(image.nbytes for image in self.frontier_images.values())
        return total

    def state_dict(self) -> dict:
        """Plain data (for tests, the viewer and a recording); images left out."""
        return {
            "step": self.step,
            "grid": self.grid.copy(),
            "explored": self.explored.copy(),
            "given_up": self.given_up.copy(),
            "objects": {o.id: {"category": o.category, "position": o.position.round(4).tolist(),
                               "colour": o.colour_name, "detections": o.detections, "frames": sorted(o.frames)}
                        for o in self.objects.values()},
            "frames": {f.id: dict(sorted(f.objects.items())) for f in self.frames.values()},
            "snapshots": {f: list(s.objects) for f, s in sorted(self.snapshots.items())},
            "frontiers": [{"centre": fr.centre.round(4).tolist(), "size": fr.size, "frame": fr.frame}
                          for fr in self.frontiers],
        }

    # ------------------------------------------------------------------ grid geometry
    def cells_of(self, xy: np.ndarray) -> np.ndarray:
        return np.floor((np.asarray(xy)[..., :2] - self.origin) / self.cfg.cell).astype(np.int64)[..., ::-1]

    def _flat_cells(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row-major flat index, inside the grid) of the cells under world points (x, y): `cells_of`
        without stacking, for the per-step integration (an index that is not inside is not valid)."""
        h, w = self.shape
        col = np.floor((x - self.origin[0]) / self.cfg.cell).astype(np.int64)
        row = np.floor((y - self.origin[1]) / self.cfg.cell).astype(np.int64)
        return row * w + col, (row >= 0) & (row < h) & (col >= 0) & (col < w)

    def cell_of(self, xy) -> tuple[int, int]:
        r, c = self.cells_of(np.asarray(xy, np.float64)[:2])
        return int(r), int(c)

    def centres_of(self, rc: np.ndarray) -> np.ndarray:
        rc = np.asarray(rc)
        return self.origin + (rc[..., ::-1] + 0.5) * self.cfg.cell

