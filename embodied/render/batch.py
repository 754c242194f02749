"""Batched rendering: B agents, each in one of several registered scenes, one camera model, one call.

`BatchRenderer` is what a batched simulator renders through. Scenes are registered once
(`add_scene`), agents are given as tensors (`scene` slot, pose, tilt), and the images come back
as torch tensors on the renderer's device, ready for the policy:
rgb uint8 [B, H, W, 3], depth float32 [B, H, W], semantic int32 [B, H, W], instance int32 [B, H, W]
(the conventions of `RaycastRenderer.render`, one camera per agent).

Backends:
- `embree` (CPU): each scene's `RaycastRenderer` (open3d's Embree), one cast per (scene, tilt) group
  of agents; the images are exactly those of `RaycastRenderer`.
- `warp` (NVIDIA Warp; embodied/render/warp.py): one kernel launch over every agent's rays against
  a BVH per scene (`wp.Mesh`, `mesh_query_ray`), writing tensors that stay on the device. On CUDA it
  is the GPU renderer; Warp's CPU backend runs kernels on one thread and serves parity tests.
Static geometry only: movable objects stay where the SceneGeometry put them (nav scenes never move them).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from embodied.render.raycast import OUTPUTS, Camera, RaycastRenderer
from embodied.world.geometry import SceneGeometry

BACKENDS = ("embree", "warp")


class BatchRenderer:
    """One camera model (width, height, hfov_deg, mount_height; tilt per agent), many scenes."""

    backend = "base"

    def __init__(self, width: int = 64, height: int = 64, hfov_deg: float = 90.0, mount_height: float = 1.25,
                 max_depth: float = 10.0, miss_depth: float = 0.0, device: str | torch.device = "cpu"):
        Camera(width=width, height=height, hfov_deg=hfov_deg, mount_height=mount_height)  # checks the values
        if not max_depth > 0:
            raise ValueError(f"max_depth must be > 0, got {max_depth!r}")
        self.width, self.height, self.hfov_deg = int(width), int(height), float(hfov_deg)
        self.mount_height, self.max_depth, self.miss_depth = float(mount_height), float(max_depth), float(miss_depth)
        self.device = torch.device(device)
        self.keys: dict[str, int] = {}  # scene key -> slot

    def camera(self, tilt_deg: float = 0.0) -> Camera:
        return Camera(width=self.width, height=self.height, hfov_deg=self.hfov_deg, mount_height=self.mount_height,
                      tilt_deg=tilt_deg)

    def add_scene(self, key: str, geometry: SceneGeometry, renderer: RaycastRenderer | None = None) -> int:
        """Register a scene (once per key; later calls return its slot). `renderer`: the scene's existing
        RaycastRenderer, reused by the embree backend instead of building another."""
        slot = self.keys.get(key)
        if slot is None:
            if not isinstance(geometry, SceneGeometry):
                raise ValueError(f"geometry must be a SceneGeometry, got {type(geometry).__name__}")
            slot = len(self.keys)
            self._add(slot, geometry, renderer)
            self.keys[key] = slot  # only once added: a scene that failed to build takes no slot
        return slot

    def _add(self, slot: int, geometry: SceneGeometry, renderer: RaycastRenderer | None) -> None:
        raise NotImplementedError

    def retain(self, keep: Iterable[str]) -> dict[str, int]:
        """Forget every scene but those in `keep` (a run on procedural scenes meets a new one each
        episode). Slots are renumbered: callers take them from the returned {key: slot}."""
        keep = set(keep)
        kept = [k for k in self.keys if k in keep]
        self._retain([self.keys[k] for k in kept])
        self.keys = {k: i for i, k in enumerate(kept)}
        return dict(self.keys)

    def _retain(self, slots: list[int]) -> None:
        """Keep the scenes of these old slots, in this order."""
        raise NotImplementedError

    def render(self, scene: torch.Tensor, poses: torch.Tensor, tilt_deg: torch.Tensor,
               outputs: Iterable[str] = ("rgb", "depth", "semantic")) -> dict[str, torch.Tensor]:
        """scene [B] slots, poses [B, 4] (x, y, z_floor, yaw radians), tilt_deg [B] -> images [B, H, W, ...]."""
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        bad = [o for o in outputs if o not in OUTPUTS]
        if bad or not outputs:
            raise ValueError(f"outputs {bad or outputs!r} invalid; choose from {OUTPUTS}")
        scene, poses, tilt_deg = torch.as_tensor(scene), torch.as_tensor(poses), torch.as_tensor(tilt_deg)
        b = scene.shape[0]
        if scene.ndim != 1 or poses.shape != (b, 4) or tilt_deg.shape != (b,):
            raise ValueError(f"scene [B], poses [B, 4], tilt_deg [B] expected; got {tuple(scene.shape)}, "
                             f"{tuple(poses.shape)}, {tuple(tilt_deg.shape)}")
        lo, hi = torch.stack(torch.aminmax(scene)).tolist() if b else (0, 0)  # one device sync, not two
        if b and (lo < 0 or hi >= len(self.keys)):
            raise ValueError(f"scene slots must be in 0..{len(self.keys) - 1} (add_scene first)")
        return self._render(scene, poses, tilt_deg, outputs)

    def _render(self, scene, poses, tilt_deg, outputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class EmbreeBatchRenderer(BatchRenderer):
    """CPU: the scenes' RaycastRenderers, one cast per group of agents sharing a scene and a tilt."""

    backend = "embree"

    def __init__(self, *args, nthreads: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nthreads = int(nthreads)
        self.renderers: list[RaycastRenderer] = []
        self._cameras: dict[float, Camera] = {}

    def _add(self, slot, geometry, renderer):
        if renderer is None:
            renderer = RaycastRenderer(geometry, nthreads=self.nthreads, max_depth=self.max_depth,
                                       miss_depth=self.miss_depth)
        elif renderer.max_depth != self.max_depth or renderer.miss_depth != self.miss_depth:
            raise ValueError(f"renderer max_depth/miss_depth {renderer.max_depth}/{renderer.miss_depth} differ from "
                             f"this BatchRenderer's {self.max_depth}/{self.miss_depth}")
        self.renderers.append(renderer)

    def _retain(self, slots):
        self.renderers = [self.renderers[i] for i in slots]

    def _cam(self, tilt: float) -> Camera:
        cam = self._cameras.get(tilt)
        if cam is None:
            cam = self._cameras[tilt] = self.camera(tilt)
        return cam

    def _render(self, scene, poses, tilt_deg, outputs):
        s = scene.cpu().numpy()
        p = poses.cpu().numpy().astype(np.float64, copy=False)
        t = tilt_deg.cpu().numpy().astype(np.float64, copy=False)
        b, h, w = len(s), self.height, self.width
        out = {"rgb": np.empty((b, h, w, 3), np.uint8), "depth": np.empty((b, h, w), np.float32),
               "semantic": np.empty((b, h, w), np.int32), "instance": np.empty((b, h, w), np.int32)}
        out = {k: out[k] for k in outputs}
        if b and np.all(s == s[0]) and np.all(t == t[0]):
            groups = [(int(s[0]), float(t[0]), slice(None))]
        else:
            pairs, group = np.unique(np.stack([s, t], 1), axis=0, return_inverse=True)
            groups = [(int(slot), float(tilt), np.flatnonzero(group.reshape(-1) == g)) for g, (slot, tilt) in enumerate(pairs)]
        for slot, tilt, rows in groups:
            images = self.renderers[slot].render(p[rows], self._cam(tilt), outputs)
            for k, v in images.items():
                out[k][rows] = v[:, 0]
        return {k: torch.from_numpy(v).to(self.device) for k, v in out.items()}


def make_batch_renderer(backend: str = "embree", device: str | torch.device = "cpu", **kwargs) -> BatchRenderer:
    """A BatchRenderer by backend name: embree (CPU only) or warp (cpu or cuda)."""
    device = torch.device(device)
    if backend == "embree":
        if device.type != "cpu":
            raise ValueError(f"the embree renderer runs on the CPU, not {device}; use backend warp on CUDA")
        return EmbreeBatchRenderer(device=device, **kwargs)
    if backend == "warp":
        from embodied.render.warp import WarpBatchRenderer

        kwargs.pop("nthreads", None)
        return WarpBatchRenderer(device=device, **kwargs)
    raise ValueError(f"renderer backend {backend!r}; allowed: {', '.join(BACKENDS)}")

