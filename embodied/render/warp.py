"""The `warp` BatchRenderer: NVIDIA Warp ray casting, one kernel launch for every agent of a batch.

Each registered scene is one `wp.Mesh` (all parts, movable ones where the SceneGeometry put them;
static geometry only, as for every BatchRenderer) with Warp's BVH. Its lookup tables (semantic and
instance id per part, shaded RGB per triangle, shaded vertex-colour corners) are `_Tables` from
raycast.py, so both backends shade from one definition; every scene's tables are concatenated on
the device with per-scene offsets. One launch over (B, H, W) casts each agent's pinhole rays
(the formula of `Camera.ray_directions`, tilt per agent) against its scene's mesh and writes
rgb, depth, semantic and instance straight into torch tensors on the renderer's device.

Warp's CPU backend runs a kernel on one thread: it is here for parity tests against the Embree
backend, not for speed (use `embree` on CPUs). On CUDA it is the GPU renderer; its throughput
there has not been measured (no GPU on the machine it was written on).
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import warp as wp
except ImportError:
    raise ImportError("the warp renderer needs NVIDIA Warp: pip install warp-lang (or the extra embodied[gpu])") from None

from embodied.render.batch import BatchRenderer
from embodied.render.raycast import AMBIENT, LIGHT_DIR, SKY_COLOR, _check_part, _Tables

# Warp logs its banner and every module compile at INFO, into the user's stdout (log_level: Warp >= 1.14)
wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)

_MAX_T = 1.0e6  # ray length (metres): every hit counts, depth is clipped to max_depth afterwards


@wp.kernel
def _cast(
    meshes: wp.array(dtype=wp.uint64),
    face_offset: wp.array(dtype=wp.int32),
    geom_offset: wp.array(dtype=wp.int32),
    face_geom: wp.array(dtype=wp.int32),
    face_rgb: wp.array2d(dtype=wp.uint8),
    geom_semantic: wp.array(dtype=wp.int32),
    geom_instance: wp.array(dtype=wp.int32),
    geom_face_start: wp.array(dtype=wp.int32),
    geom_vc_start: wp.array(dtype=wp.int32),
    vc_corners: wp.array(dtype=wp.mat33),
    scene: wp.array(dtype=wp.int32),
    poses: wp.array2d(dtype=wp.float32),
    tilt_deg: wp.array(dtype=wp.float32),
    focal: float,
    mount: float,
    max_depth: float,
    miss_depth: float,
    rgb: wp.array4d(dtype=wp.uint8),
    depth: wp.array3d(dtype=wp.float32),
    semantic: wp.array3d(dtype=wp.int32),
    instance: wp.array3d(dtype=wp.int32),
):
    b, i, j = wp.tid()
    s = scene[b]
    right = (float(j) + 0.5 - 0.5 * float(depth.shape[2])) / focal
    down = (float(i) + 0.5 - 0.5 * float(depth.shape[1])) / focal
    tilt = tilt_deg[b] * (wp.pi / 180.0)
    ct = wp.cos(tilt)
    st = wp.sin(tilt)
    # Camera.ray_directions in the agent frame: forward - right * left - down * up, with
    # forward = (cos, 0, sin), left = +y, up = (-sin, 0, cos); then turned by yaw about +z.
    ahead = ct + down * st
    side = -right
    rise = st - down * ct
    cy = wp.cos(poses[b, 3])
    sy = wp.sin(poses[b, 3])
    d = wp.vec3(cy * ahead - sy * side, sy * ahead + cy * side, rise)
    eye = wp.vec3(poses[b, 0], poses[b, 1], poses[b, 2] + mount)

    row = face_offset[s]  # the scene's sky row; its triangle f is row + 1 + f
    g = int(0)
    hit = wp.mesh_query_ray(meshes[s], eye, d, _MAX_T)
    if hit.result:
        row = row + 1 + hit.face
        g = geom_offset[s] + face_geom[row]
        depth[b, i, j] = wp.min(hit.t, max_depth)
        semantic[b, i, j] = geom_semantic[g]
        instance[b, i, j] = geom_instance[g]
    else:
        depth[b, i, j] = miss_depth
        semantic[b, i, j] = 0
        instance[b, i, j] = 0
    for k in range(3):
        rgb[b, i, j, k] = face_rgb[row, k]
    if hit.result and geom_vc_start[g] >= 0:
        c = vc_corners[geom_vc_start[g] + hit.face - geom_face_start[g]]  # rows: the triangle's corners
        # Warp's (u, v) weigh corners 0 and 1 (p u + q v + r (1 - u - v)); Embree's weigh corners 1 and 2.
        col = hit.u * c[0] + hit.v * c[1] + (1.0 - hit.u - hit.v) * c[2]
        for k in range(3):
            rgb[b, i, j, k] = wp.uint8(wp.clamp(col[k] + 0.5, 0.0, 255.0))


def _warp_device(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise ValueError(f"the warp renderer runs on cpu or cuda, not {device}")
    n = wp.get_cuda_device_count()
    index = device.index
    if index is None:  # torch's "cuda" is its current device
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    if index >= n:
        raise ValueError(f"device {device}: Warp sees {n} CUDA device(s); use device=cpu or a CUDA machine")
    return f"cuda:{index}"


class WarpBatchRenderer(BatchRenderer):
    """Warp BVH per scene, one kernel launch per batch; cpu (parity tests) or cuda."""

    backend = "warp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wp_device = _warp_device(self.device)
        if self.device.type == "cuda":
            self.device = torch.device(self.wp_device)  # "cuda" -> the index the tensors land on
        self._meshes: list = []  # wp.Mesh per slot; kept alive, the kernel sees only their ids
        self._host: list[dict[str, np.ndarray]] = []  # per slot: its tables, scene-local indices

    def _add(self, slot, geometry, renderer):
        for i, part in enumerate(geometry.parts):
            _check_part(i, part)
        counts = np.array([len(p.faces) for p in geometry.parts], np.int64)
        if counts.sum() == 0:
            raise ValueError("geometry has no triangles")
        if renderer is None:
            light, ambient, sky = np.asarray(LIGHT_DIR, np.float64), AMBIENT, SKY_COLOR
            light = light / np.linalg.norm(light)
        else:  # shade as the scene's own renderer does (depth clipping is this renderer's own)
            light, ambient, sky = renderer.light_dir, renderer.ambient, renderer.sky_color
        built = _Tables.build([(p, p.vertices) for p in geometry.parts], light, ambient)
        tables = _Tables.concat(built, _Tables.build([], light, ambient), sky)
        vertex_base = np.concatenate([[0], np.cumsum([len(p.vertices) for p in geometry.parts])[:-1]])
        points = np.concatenate([p.vertices for p in geometry.parts]).astype(np.float32)
        indices = np.concatenate([np.asarray(p.faces, np.int64) + o for p, o in zip(geometry.parts, vertex_base)])
        points = wp.array(points, dtype=wp.vec3, device=self.wp_device)
        self._meshes.append(wp.Mesh(points=points, indices=wp.array(indices.reshape(-1).astype(np.int32),
                                                                    dtype=wp.int32, device=self.wp_device)))
        self._host.append({
            # geometry rows: 0 is "nothing hit", part p is row p + 1
            "face_geom": np.concatenate([[0], np.repeat(np.arange(1, len(counts) + 1), counts)]).astype(np.int32),
            "face_rgb": tables.face_rgb,
            "semantic": tables.semantic,
            "instance": tables.instance,
            "face_start": (tables.face_base.astype(np.int64) - 1).astype(np.int32),  # the sky row's base is 1
            "vc_start": np.where(tables.has_vertex_colors, tables.vc_face_base, -1).astype(np.int32),
            "vc_corners": tables.vc_corner_rgb,
        })
        self._upload()

    def _retain(self, slots):
        self._meshes = [self._meshes[i] for i in slots]
        self._host = [self._host[i] for i in slots]
        if self._host:
            self._upload()

    def _upload(self):
        """Concatenate every scene's tables on the device; indices into shared tables get offsets."""
        host = self._host
        faces = np.cumsum([0] + [len(h["face_rgb"]) for h in host])
        geoms = np.cumsum([0] + [len(h["semantic"]) for h in host])
        vcs = np.cumsum([0] + [len(h["vc_corners"]) for h in host])
        vc_start = [np.where(h["vc_start"] >= 0, h["vc_start"] + o, -1) for h, o in zip(host, vcs)]
        dev = self.wp_device

        def cat(key, dtype):
            return wp.array(np.concatenate([h[key] for h in host]), dtype=dtype, device=dev)

        self._tables = dict(  # in the kernel's argument order
            meshes=wp.array([m.id for m in self._meshes], dtype=wp.uint64, device=dev),
            face_offset=wp.array(faces[:-1].astype(np.int32), dtype=wp.int32, device=dev),
            geom_offset=wp.array(geoms[:-1].astype(np.int32), dtype=wp.int32, device=dev),
            face_geom=cat("face_geom", wp.int32),
            face_rgb=cat("face_rgb", wp.uint8),
            geom_semantic=cat("semantic", wp.int32),
            geom_instance=cat("instance", wp.int32),
            geom_face_start=cat("face_start", wp.int32),
            geom_vc_start=wp.array(np.concatenate(vc_start).astype(np.int32), dtype=wp.int32, device=dev),
            vc_corners=wp.array(np.concatenate([h["vc_corners"] for h in host]), dtype=wp.mat33, device=dev),
        )

    def _render(self, scene, poses, tilt_deg, outputs):
        b, h, w, dev = scene.shape[0], self.height, self.width, self.device
        # torch allocates the images (its caching allocator, its stream); Warp writes into them in place
        out = {"rgb": torch.empty((b, h, w, 3), dtype=torch.uint8, device=dev),
               "depth": torch.empty((b, h, w), dtype=torch.float32, device=dev),
               "semantic": torch.empty((b, h, w), dtype=torch.int32, device=dev),
               "instance": torch.empty((b, h, w), dtype=torch.int32, device=dev)}
        if b:
            inputs = [wp.from_torch(x.to(dev, dtype).contiguous()) for x, dtype in
                      ((scene, torch.int32), (poses, torch.float32), (tilt_deg, torch.float32))]
            stream = wp.stream_from_torch(dev) if dev.type == "cuda" else None
            cam = self.camera()
            wp.launch(_cast, dim=(b, h, w), device=self.wp_device, stream=stream,
                      inputs=[*self._tables.values(), *inputs, cam.focal_px, self.mount_height, self.max_depth,
                              self.miss_depth],
                      outputs=[wp.from_torch(out[k]) for k in ("rgb", "depth", "semantic", "instance")])
        return {k: out[k] for k in outputs}
