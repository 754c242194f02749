"""CPU ray-cast renderer on open3d's RaycastingScene (Embree): RGB, depth, semantic, instance.

Conventions (shared with the world and sim layers): metres, z up. An agent pose is
(x, y, z_floor, yaw): yaw is about +z, counter-clockwise from +x, so yaw=0 looks along +x and
+y is to the agent's left. Images are as a person sees them: row 0 is the top, column 0 the left.

Design:
- One static Embree scene holds every non-movable part, built once. Movable parts (small objects
  that may be carried or placed) start in it too and leave it the first time they move: at most
  one static rebuild per object, ever, never one per step (`static_builds` counts builds).
- Moved objects live in a second, small scene rebuilt lazily on the next render after
  `set_object_pose` changed something. Only pixels inside a moved object's conservative projected
  bounding rectangle are cast against it; the nearer hit wins.
- Lighting is fixed and shading is flat, so every triangle's shaded colour is precomputed into a
  table: per pixel RGB is one gather from it (no normals or dot products per frame).
- Camera rays are cached per camera in the agent frame with tilt applied; a frame turns them by
  yaw and sets the origin in one small matmul. Ray directions have length 1 along the optical
  axis, so Embree's parametric hit distance is the z-depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from embodied.world.geometry import MeshPart, SceneGeometry

OUTPUTS = ("rgb", "depth", "semantic", "instance")
# open3d's RaycastingScene.INVALID_ID (uint32 max): miss in geometry/primitive ids. open3d itself is
# imported where rays are cast, so symbolic tasks (and GPU machines without open3d) never load it.
_INVALID = np.iinfo(np.uint32).max
# The fixed lighting (RaycastRenderer's defaults; the warp backend shades with the same values).
LIGHT_DIR = (0.45, 0.3, 0.84)
AMBIENT = 0.35
SKY_COLOR = (0.75, 0.85, 1.0)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera mounted on an agent; its world pose follows the agent pose.

    width, height: image size in pixels. hfov_deg: horizontal field of view (pixels are square,
    so the vertical fov follows from the aspect ratio). mount_height: camera height above the
    floor under the agent, metres. tilt_deg: pitch, positive looks up. name: key for callers.
    """

    width: int = 64
    height: int = 64
    hfov_deg: float = 90.0
    mount_height: float = 1.25
    tilt_deg: float = 0.0
    name: str = "camera"

    def __post_init__(self):
        if int(self.width) != self.width or self.width < 1:
            raise ValueError(f"Camera.width must be a positive int, got {self.width!r}")
        if int(self.height) != self.height or self.height < 1:
            raise ValueError(f"Camera.height must be a positive int, got {self.height!r}")
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"Camera.hfov_deg must be in (0, 180), got {self.hfov_deg!r}")
        if not -90.0 < self.tilt_deg < 90.0:
            raise ValueError(f"Camera.tilt_deg must be in (-90, 90), got {self.tilt_deg!r}")
        if not math.isfinite(self.mount_height):
            raise ValueError(f"Camera.mount_height must be finite, got {self.mount_height!r}")

    @property
    def focal_px(self) -> float:
        return 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2)

    def intrinsics(self) -> np.ndarray:
        """3x3 OpenCV-style intrinsic matrix (for back-projecting depth)."""
        f = self.focal_px
        return np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1]], np.float64)

    def ray_directions(self) -> np.ndarray:
        """[H*W, 3] float32 ray directions in the agent frame (x forward, y left, z up), tilt
        applied, each with component 1 along the optical axis (so ray parameter == z-depth)."""
        f = self.focal_px
        cols = (np.arange(self.width) + 0.5 - self.width / 2) / f
        rows = (np.arange(self.height) + 0.5 - self.height / 2) / f
        right, down = np.meshgrid(cols, rows)  # [H, W]; row 0 is the top
        t = math.radians(self.tilt_deg)
        forward = np.array([math.cos(t), 0.0, math.sin(t)])
        left = np.array([0.0, 1.0, 0.0])
        up = np.array([-math.sin(t), 0.0, math.cos(t)])
        d = forward + (-right)[..., None] * left + (-down)[..., None] * up
        return d.reshape(-1, 3).astype(np.float32)


def _as_o3d(vertices: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    return (
        o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)),
    )


class RaycastRenderer:
    """Renders a SceneGeometry from agent-mounted cameras, batched over poses and cameras.

    nthreads: Embree threads per cast (0 = all cores). In a process per env worker on a small
    machine, pass 1. max_depth: depth is clipped to it (metres). miss_depth: depth where a ray
    hits nothing (0 by default, as habitat does). light_dir / ambient / sky_color: the fixed
    lighting; a face with unit normal n has colour `color * (ambient + (1 - ambient) * |n.l|)`.
    bake_movables: movable parts start inside the static scene and leave it the first time they
    move (one static rebuild per object, ever), so scenes whose objects never move pay for one
    cast per frame. With False the static scene holds only non-movable parts and is built once.
    """

    def __init__(
        self,
        geometry: SceneGeometry,
        nthreads: int = 0,
        max_depth: float = 10.0,
        miss_depth: float = 0.0,
        light_dir: Sequence[float] = LIGHT_DIR,
        ambient: float = AMBIENT,
        sky_color: Sequence[float] = SKY_COLOR,
        bake_movables: bool = True,
    ):
        if not isinstance(geometry, SceneGeometry):
            raise ValueError(f"geometry must be a SceneGeometry, got {type(geometry).__name__}")
        if int(nthreads) != nthreads or nthreads < 0:
            raise ValueError(f"nthreads must be an int >= 0, got {nthreads!r}")
        if not max_depth > 0:
            raise ValueError(f"max_depth must be > 0, got {max_depth!r}")
        if not 0.0 <= ambient <= 1.0:
            raise ValueError(f"ambient must be in [0, 1], got {ambient!r}")
        light = np.asarray(light_dir, np.float64)
        if light.shape != (3,) or not np.linalg.norm(light) > 0:
            raise ValueError(f"light_dir must be a non-zero 3-vector, got {light_dir!r}")
        sky = np.asarray(sky_color, np.float64)
        if sky.shape != (3,) or not np.all((sky >= 0) & (sky <= 1)):
            raise ValueError(f"sky_color must be an rgb triple in [0, 1], got {sky_color!r}")
        self.nthreads = int(nthreads)
        self.max_depth = float(max_depth)
        self.miss_depth = float(miss_depth)
        self.light_dir = light / np.linalg.norm(light)
        self.ambient = float(ambient)
        self.sky_color = sky
        self.geometry = geometry
        for i, part in enumerate(geometry.parts):
            _check_part(i, part)

        self._movable_parts = [p for p in geometry.parts if p.movable]
        # instance id -> 4x4 transform applied to the part's stored vertices (None = hidden)
        self._object_pose: dict[int, np.ndarray | None] = {p.instance: np.eye(4) for p in self._movable_parts}
        # movable instances still inside the static scene (never moved since construction)
        self._baked = set(self._object_pose) if bake_movables else set()
        self.static_builds = 0
        self.dynamic_builds = 0
        self._static_dirty = True
        self._dynamic_dirty = True
        self._frame_cache: dict[tuple, _FrameSetup] = {}
        self._sync_scenes()

    # -- scene building ---------------------------------------------------------------------
    def _sync_scenes(self):
        if self._static_dirty:
            self._build_static()
        if self._dynamic_dirty:
            self._build_dynamic()

    def _build_static(self):
        import open3d as o3d

        parts = [p for p in self.geometry.parts if not p.movable or p.instance in self._baked]
        self._static = o3d.t.geometry.RaycastingScene(nthreads=self.nthreads)
        for part in parts:
            self._static.add_triangles(*_as_o3d(part.vertices, part.faces))
        self._static_tables = _Tables.build([(p, p.vertices) for p in parts], self.light_dir, self.ambient)
        self._n_static_geoms = len(parts)
        self.static_builds += 1
        self._static_dirty = False
        self._dynamic_dirty = True  # the combined lookup tables start with the static ones

    def _build_dynamic(self):
        import open3d as o3d

        visible = []
        for part in self._movable_parts:
            tf = self._object_pose[part.instance]
            if tf is None or part.instance in self._baked:
                continue
            v = part.vertices.astype(np.float64) @ tf[:3, :3].T + tf[:3, 3]
            visible.append((part, v.astype(np.float32)))
        self._dynamic = None
        if visible:
            self._dynamic = o3d.t.geometry.RaycastingScene(nthreads=self.nthreads)
            for part, v in visible:
                self._dynamic.add_triangles(*_as_o3d(v, part.faces))
            centers = np.stack([(v.min(0) + v.max(0)) / 2 for _, v in visible]).astype(np.float64)
            self._dyn_centers = centers
            self._dyn_radii = np.array(
                [np.sqrt(((v - c) ** 2).sum(1).max()) for (_, v), c in zip(visible, centers)]
            ) * (1 + 1e-4) + 1e-4
        dyn_tables = _Tables.build(visible, self.light_dir, self.ambient)
        self._tables = _Tables.concat(self._static_tables, dyn_tables, self.sky_color)
        self._dynamic_dirty = False
        self.dynamic_builds += 1

    # -- movable objects ----------------------------------------------------------------------
    @property
    def movable_instances(self) -> list[int]:
        return sorted(self._object_pose)

    def _check_movable(self, instance_id: int):
        if instance_id not in self._object_pose:
            raise ValueError(
                f"instance_id {instance_id!r} is not a movable object; movable: {self.movable_instances}"
            )

    def object_pose(self, instance_id: int) -> np.ndarray | None:
        """The transform last set for a movable object (identity = as stored; None = hidden)."""
        self._check_movable(instance_id)
        tf = self._object_pose[instance_id]
        return None if tf is None else tf.copy()

    def set_object_pose(self, instance_id: int, transform: np.ndarray | None) -> None:
        """Move a movable object: `transform` (4x4) maps the vertices as stored in the
        SceneGeometry to where they are now (identity = original placement; a caller that tracks
        absolute object poses passes `new_pose @ inv(original_pose)`). None hides the object,
        e.g. while it is carried. Scenes are updated lazily on the next render."""
        self._check_movable(instance_id)
        if transform is not None:
            tf = np.asarray(transform, np.float64)
            if tf.shape != (4, 4) or not np.all(np.isfinite(tf)):
                raise ValueError(f"transform must be a finite 4x4 matrix, got shape {tf.shape}")
            transform = tf.copy()
        if instance_id in self._baked:
            if transform is not None and np.array_equal(transform, np.eye(4)):
                return
            self._baked.discard(instance_id)
            self._static_dirty = True
        self._object_pose[instance_id] = transform
        self._dynamic_dirty = True

    # -- rendering ----------------------------------------------------------------------------
    def _setup(self, n: int, cameras: tuple[Camera, ...]) -> "_FrameSetup":
        key = (n, cameras)
        setup = self._frame_cache.get(key)
        if setup is None:
            if len(self._frame_cache) > 32:
                self._frame_cache.clear()
            setup = self._frame_cache[key] = _FrameSetup(n, cameras)
        return setup

    def render(
        self,
        poses: np.ndarray,
        cameras: Camera | Iterable[Camera],
        outputs: Iterable[str] = OUTPUTS,
    ) -> dict[str, np.ndarray]:
        """Render every camera from every agent pose in one cast.

        poses: [N, 4] (x, y, z_floor, yaw radians). cameras: one Camera or a list; all must have
        the same width and height (render groups of different sizes in separate calls).
        outputs: any of "rgb", "depth", "semantic", "instance".
        Returns rgb uint8 [N, C, H, W, 3]; depth float32 [N, C, H, W] z-depth in metres, clipped
        to max_depth, miss_depth where nothing is hit; semantic int32 [N, C, H, W] (0 on miss);
        instance int32 [N, C, H, W] (0 on miss and on structure).
        """
        cams = (cameras,) if isinstance(cameras, Camera) else tuple(cameras)
        if not cams or not all(isinstance(c, Camera) for c in cams):
            raise ValueError("cameras must be a Camera or a non-empty list of Camera")
        h, w = cams[0].height, cams[0].width
        if any((c.height, c.width) != (h, w) for c in cams):
            raise ValueError(
                f"cameras in one render call must share width and height, got {[(c.width, c.height) for c in cams]}"
            )
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        bad = [o for o in outputs if o not in OUTPUTS]
        if bad or not outputs:
            raise ValueError(f"outputs {bad or outputs!r} invalid; choose from {OUTPUTS}")
        poses = np.asarray(poses, np.float64)
        if poses.ndim != 2 or poses.shape[1] != 4 or not np.all(np.isfinite(poses)):
            raise ValueError(f"poses must be a finite [N, 4] array (x, y, z_floor, yaw), got shape {poses.shape}")
        if poses.shape[0] == 0:
            raise ValueError("poses must hold at least one pose, got 0")
        self._sync_scenes()

        n, c = poses.shape[0], len(cams)
        setup = self._setup(n, cams)
        eye, axes = setup.place(poses)
        ans = self._static.cast_rays(setup.rays, nthreads=self.nthreads)
        t = ans["t_hit"].numpy().reshape(-1)
        gid = ans["geometry_ids"].numpy().reshape(-1)
        pid = ans["primitive_ids"].numpy().reshape(-1)
        tables = self._tables
        uv = None
        need_uv = "rgb" in outputs and tables.any_vertex_colors
        if need_uv:
            uv = ans["primitive_uvs"].numpy().reshape(-1, 2)

        if self._dynamic is not None:
            pixels = setup.pixels_near(eye, axes, self._dyn_centers, self._dyn_radii)
            if pixels.size:
                sub = np.take(setup.buf.reshape(-1, 6), pixels, axis=0)
                import open3d as o3d

                dans = self._dynamic.cast_rays(o3d.core.Tensor.from_numpy(sub), nthreads=self.nthreads)
                td = dans["t_hit"].numpy()
                nearer = td < np.take(t, pixels)
                if nearer.any():
                    at = pixels[nearer]
                    t, gid, pid = t.copy(), gid.copy(), pid.copy()
                    t[at] = td[nearer]
                    gid[at] = dans["geometry_ids"].numpy()[nearer] + np.uint32(self._n_static_geoms)
                    pid[at] = dans["primitive_ids"].numpy()[nearer]
                    if need_uv:
                        uv = uv.copy()
                        uv[at] = dans["primitive_uvs"].numpy()[nearer]

        # Geometry id + 1 wraps the miss id (uint32 max) to 0, the "nothing" row of every table.
        gi = gid + np.uint32(1)
        shape = (n, c, h, w)
        out: dict[str, np.ndarray] = {}
        if "depth" in outputs:
            depth = np.minimum(t, np.float32(self.max_depth))
            if self.miss_depth != self.max_depth:
                np.copyto(depth, np.float32(self.miss_depth), where=gi == 0)
            out["depth"] = depth.reshape(shape)
        if "semantic" in outputs:
            out["semantic"] = np.take(tables.semantic, gi).reshape(shape)
        if "instance" in outputs:
            out["instance"] = np.take(tables.instance, gi).reshape(shape)
        if "rgb" in outputs:
            # face_base[0] == 1 and a miss's primitive id is uint32 max, so misses land on row 0 (sky).
            face = np.take(tables.face_base, gi) + pid
            rgb = np.take(tables.face_rgb, face, axis=0)
            if tables.any_vertex_colors:
                _apply_vertex_colors(rgb, gi, pid, uv, tables)
            out["rgb"] = rgb.reshape(shape + (3,))
        return out

    def first_instance(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """int32 [N]: the instance id of the first surface on each segment starts[i] -> ends[i]
        ([N, 3] world points), 0 for structure, -1 where nothing lies between them (line of sight)."""
        import open3d as o3d

        a, b = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
        if a.ndim != 2 or a.shape[1] != 3 or a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"starts and ends must be finite [N, 3] arrays of one shape, got {a.shape} and {b.shape}")
        self._sync_scenes()
        length = np.linalg.norm(b - a, axis=1)
        rays = np.c_[a, (b - a) / np.maximum(length, 1e-12)[:, None]].astype(np.float32)
        tensor = o3d.core.Tensor.from_numpy(rays)
        ans = self._static.cast_rays(tensor, nthreads=self.nthreads)
        t, gid = ans["t_hit"].numpy().copy(), ans["geometry_ids"].numpy().copy()
        if self._dynamic is not None:
            dyn = self._dynamic.cast_rays(tensor, nthreads=self.nthreads)
            nearer = dyn["t_hit"].numpy() < t
            t[nearer] = dyn["t_hit"].numpy()[nearer]
            gid[nearer] = dyn["geometry_ids"].numpy()[nearer] + np.uint32(self._n_static_geoms)
        out = np.take(self._tables.instance, gid + np.uint32(1)).astype(np.int32)
        out[t > length] = -1
        return out

    def render_one(self, pose: Sequence[float], camera: Camera, outputs: Iterable[str] = OUTPUTS) -> dict[str, np.ndarray]:
        """One pose (x, y, z_floor, yaw), one camera: arrays [H, W, ...]."""
        pose = np.asarray(pose, np.float64)
        if pose.shape != (4,):
            raise ValueError(f"pose must be (x, y, z_floor, yaw), got shape {pose.shape}")
        return {k: v[0, 0] for k, v in self.render(pose[None], camera, outputs).items()}


class _FrameSetup:
    """Cached per (number of poses, cameras): ray buffer shared with open3d, camera-frame rays
    in homogeneous form, and the camera axes in the agent frame."""

    def __init__(self, n: int, cameras: tuple[Camera, ...]):
        import open3d as o3d

        self.n, self.cams = n, cameras
        c = len(cameras)
        self.h, self.w = cameras[0].height, cameras[0].width
        dirs = np.stack([cam.ray_directions() for cam in cameras])  # [C, HW, 3]
        # rays = [1, d] @ M with M = [[eye, 0], [0, Rz^T]]: origin and yaw in one matmul
        self.homogeneous = np.concatenate([np.ones(dirs.shape[:2] + (1,), np.float32), dirs], -1)
        self.buf = np.empty((n, c, self.h * self.w, 6), np.float32)
        self.rays = o3d.core.Tensor.from_numpy(self.buf.reshape(-1, 6))  # shares memory with buf
        self.mat = np.zeros((n, c, 4, 6), np.float32)
        self.mount = np.array([cam.mount_height for cam in cameras])
        tilt = np.radians([cam.tilt_deg for cam in cameras])
        zero = np.zeros(c)
        # rows: forward, left, up of each camera in the agent frame
        self.cam_axes = np.stack(
            [
                np.stack([np.cos(tilt), zero, np.sin(tilt)], -1),
                np.stack([zero, zero + 1, zero], -1),
                np.stack([-np.sin(tilt), zero, np.cos(tilt)], -1),
            ],
            1,
        )  # [C, 3, 3]
        self.focal = np.array([cam.focal_px for cam in cameras])
        self.half_size = np.array([[cam.width / 2 for cam in cameras], [cam.height / 2 for cam in cameras]])
        self.cone_half_angle = np.array([math.atan(math.hypot(cam.width, cam.height) / 2 / cam.focal_px) for cam in cameras])

    def place(self, poses: np.ndarray):
        """Fill the ray buffer for these agent poses; returns eye [N, C, 3] and world camera
        axes [N, C, 3, 3] (rows forward, left, up)."""
        cos, sin = np.cos(poses[:, 3]), np.sin(poses[:, 3])
        rz_t = np.zeros((len(poses), 3, 3))
        rz_t[:, 0, 0], rz_t[:, 0, 1], rz_t[:, 1, 0], rz_t[:, 1, 1], rz_t[:, 2, 2] = cos, sin, -sin, cos, 1
        eye = np.empty((len(poses), len(self.cams), 3))
        eye[..., :2] = poses[:, None, :2]
        eye[..., 2] = poses[:, None, 2] + self.mount
        self.mat[..., 0, :3] = eye
        self.mat[..., 1:, 3:] = rz_t[:, None]
        np.matmul(self.homogeneous, self.mat, out=self.buf)
        return eye, self.cam_axes @ rz_t[:, None]

    def pixels_near(self, eye, axes, centers, radii) -> np.ndarray:
        """Flat ray indices (into the ray buffer) whose pixels may see one of the spheres: the
        union of each sphere's projected bounding rectangle (1 pixel margin), the whole image for
        a sphere that crosses the camera plane inside the view cone, nothing for the rest."""
        q = np.einsum("nckd,ncad->ncka", centers[None, None] - eye[:, :, None], axes)  # camera coords
        x = q[..., 0]
        side = np.moveaxis(q[..., 1:], -1, 0)  # [2 (left, up), N, C, K]
        r = radii
        in_front = x > r + 1e-3
        # Columns are planes through the camera's up axis, so a sphere's extent across them is
        # that of its disc in the x-y plane: tangents at angle a +- b with tan a = y/x and
        # sin b = r/|(x, y)|; rows likewise with x-z. For x > r both tangents lie within +-90 deg:
        # tan(a + b) = (y s + x r) / (x s - y r), tan(a - b) = (y s - x r) / (x s + y r), s = sqrt(x^2 + y^2 - r^2)
        xs = np.where(in_front, x, 1.0)
        sq = np.sqrt(np.maximum(xs * xs + side * side - r * r, 1e-12))
        ys, xr, yr = side * sq, xs * r, side * r
        xsq = xs * sq
        half = self.half_size[:, None, :, None]  # [2, 1, C, 1]
        f = self.focal[None, None, :, None]
        # image offsets grow rightwards/downwards, opposite to +left/+up
        start = np.floor(half - f * (ys + xr) / (xsq - yr) - 1)
        stop = np.ceil(half - f * (ys - xr) / (xsq + yr) + 1)
        start = np.where(in_front, start, 0.0)
        stop = np.where(in_front, stop, 0.0)
        crossing = ~in_front & (x + r > 0)
        if crossing.any():
            # drawn in full only if it touches the cone that holds every ray (corner ray half-angle)
            d = np.maximum(np.sqrt(x * x + (side * side).sum(0)), 1e-9)
            off_axis = np.arccos(np.clip(x / d, -1, 1)) - np.arcsin(np.minimum(r / d, 1))
            full = crossing & (off_axis <= self.cone_half_angle[None, :, None] + 1e-3)
            stop = np.where(full, 2 * half, stop)
        size = 2 * half
        start, stop = np.clip(start, 0, size), np.clip(stop, 0, size)
        if not np.any((stop > start).all(0)):
            return np.empty(0, np.int64)
        # union of rectangles per frame: mask = any_k rows_in[k] x cols_in[k], as one matmul
        rows = np.arange(self.h)[:, None]
        cols = np.arange(self.w)
        rows_in = (rows >= start[1][..., None, :]) & (rows < stop[1][..., None, :])  # [N, C, H, K]
        cols_in = (cols >= start[0][..., None]) & (cols < stop[0][..., None])  # [N, C, K, W]
        mask = np.matmul(rows_in.astype(np.float32), cols_in.astype(np.float32)) > 0  # [N, C, H, W]
        return np.flatnonzero(mask)


def _apply_vertex_colors(rgb, gi, pid, uv, tables):
    sel = np.flatnonzero(np.take(tables.has_vertex_colors, gi))
    if sel.size == 0:
        return
    face = tables.vc_face_base[gi[sel]] + pid[sel]
    corners = tables.vc_corner_rgb[face]  # [S, 3 corners, 3] shaded, 0..255
    u, v = uv[sel].T
    col = (1 - u - v)[:, None] * corners[:, 0] + u[:, None] * corners[:, 1] + v[:, None] * corners[:, 2]
    rgb[sel] = np.clip(col + 0.5, 0, 255).astype(np.uint8)


class _Tables:
    """Per-geometry and per-triangle lookup tables; geometry row 0 is 'nothing hit'."""

    def __init__(self, semantic, instance, face_base, face_rgb, has_vc, vc_face_base, vc_corner_rgb):
        self.semantic = semantic  # [G+1] int32
        self.instance = instance  # [G+1] int32
        self.face_base = face_base  # [G+1] uint32: row of the geometry's first triangle in face_rgb
        self.face_rgb = face_rgb  # [1+F, 3] uint8 shaded colour per triangle; row 0 = sky
        self.has_vertex_colors = has_vc  # [G+1] bool
        self.vc_face_base = vc_face_base  # [G+1] int64 into vc_corner_rgb
        self.vc_corner_rgb = vc_corner_rgb  # [Fvc, 3, 3] float32 shaded corner colours, 0..255
        self.any_vertex_colors = bool(has_vc.any())

    @staticmethod
    def build(parts_vertices, light, ambient) -> "_Tables":
        """Tables for geometries in scene order (without the miss row)."""
        sem, inst, base, rgbs, has_vc, vc_base, corners = [], [], [], [], [], [], []
        n_faces = n_vc_faces = 0
        for part, verts in parts_vertices:
            v = np.asarray(verts, np.float64)
            f = np.asarray(part.faces, np.int64)
            tri = v[f]  # [F, 3, 3]
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            length = np.linalg.norm(normal, axis=1)
            cos = np.abs(normal @ light) / np.maximum(length, 1e-12)
            shade = ambient + (1 - ambient) * np.where(length > 0, cos, 0.0)  # [F]
            color = np.asarray(part.color, np.float64)[None]
            vc = part.vertex_colors
            if vc is not None:
                corner = np.asarray(vc, np.float64)[f]  # [F, 3, 3]
                if np.ptp(corner, axis=1).max(initial=0.0) < 1e-6:
                    # Flat-coloured faces (parametric objects): bake into the per-face table, which
                    # skips the per-pixel barycentric blend (about a fifth of a 64x64 frame).
                    color, vc = corner[:, 0], None
            rgbs.append(np.clip(255 * color * shade[:, None] + 0.5, 0, 255).astype(np.uint8))
            sem.append(part.semantic)
            inst.append(part.instance)
            base.append(n_faces)
            n_faces += len(f)
            has_vc.append(vc is not None)
            vc_base.append(n_vc_faces)
            if vc is not None:
                corners.append((255 * np.asarray(vc, np.float64)[f] * shade[:, None, None]).astype(np.float32))
                n_vc_faces += len(f)
        return _Tables(
            np.array(sem, np.int32),
            np.array(inst, np.int32),
            np.array(base, np.int64),
            np.concatenate(rgbs) if rgbs else np.zeros((0, 3), np.uint8),
            np.array(has_vc, bool),
            np.array(vc_base, np.int64),
            np.concatenate(corners) if corners else np.zeros((0, 3, 3), np.float32),
        )

    @staticmethod
    def concat(static: "_Tables", dynamic: "_Tables", sky) -> "_Tables":
        """Miss row + static geometries + dynamic geometries (dynamic ids offset by len(static))."""
        sky_rgb = np.clip(255 * np.asarray(sky, np.float64) + 0.5, 0, 255).astype(np.uint8)[None]
        n_static_faces = len(static.face_rgb)
        n_static_vc = len(static.vc_corner_rgb)
        face_base = np.concatenate([[0], 1 + static.face_base, 1 + n_static_faces + dynamic.face_base])
        face_base = face_base.astype(np.uint32)
        # Row 0: a miss has primitive id uint32 max; base 1 makes base + pid wrap to 0 (the sky row).
        face_base[0] = 1
        return _Tables(
            np.concatenate([[0], static.semantic, dynamic.semantic]).astype(np.int32),
            np.concatenate([[0], static.instance, dynamic.instance]).astype(np.int32),
            face_base,
            np.concatenate([sky_rgb, static.face_rgb, dynamic.face_rgb]),
            np.concatenate([[False], static.has_vertex_colors, dynamic.has_vertex_colors]),
            np.concatenate([[0], static.vc_face_base, n_static_vc + dynamic.vc_face_base]).astype(np.int64),
            np.concatenate([static.vc_corner_rgb, dynamic.vc_corner_rgb]),
        )


def _check_part(index: int, part: MeshPart) -> None:
    v, f = np.asarray(part.vertices), np.asarray(part.faces)
    if v.ndim != 2 or v.shape[1] != 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"part {index} ({part.name!r}): vertices must be a finite [V, 3] array, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"part {index} ({part.name!r}): faces must be [F, 3] indices into its vertices")
    if part.vertex_colors is not None and np.asarray(part.vertex_colors).shape != v.shape:
        raise ValueError(f"part {index} ({part.name!r}): vertex_colors must have shape {v.shape}")
