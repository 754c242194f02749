"""RVT-style keyframe policy (Goyal et al. 2023/2024, as used by SAM2Act) with an optional memory.

Per keyframe:
  1. the cameras' point clouds are fused, cropped to the workspace and projected onto 3 orthographic
     virtual views (top: x-y seen from +z, front: y-z seen from +x, side: x-z seen from +y), each a
     `grid_size`^2 image of RGB, height along the view axis, occupancy and 2 pixel-coordinate channels;
  2. a small UNet per view (weights shared, a learned view embedding) turns each image into a token
     grid; the proprioception, the normalized timestep and a task token are added to every token;
  3. the memory (memory=membank) conditions the tokens on past keyframes; memory=none skips it;
  4. the decoder gives a translation heatmap per view; the 3D target is the workspace voxel whose
     three projections have the largest summed log-probability;
  5. rotation (3 Euler angles x 72 bins of 5 degrees), gripper open and ignore-collisions are
     classified from the heatmap-weighted decoder features of the 3 views.

Loss: cross-entropy on the heatmaps (Gaussian-smoothed targets), rotation bins, gripper, collision.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory import build_memory

CAMERAS = ("front", "left_shoulder", "right_shoulder", "wrist")
VIEW_AXES = ((0, 1, 2), (1, 2, 0), (0, 2, 1))
"""Per view (row axis, column axis, depth axis) over world x=0, y=1, z=2: top, front, side."""
VIEW_NAMES = ("top", "front", "side")
VIEW_CHANNELS = 7  # rgb 3, height 1, occupancy 1, row/col coordinates 2
MEMORIES = ("none", "membank")
TASK_TOKENS = ("memorybench/reopen_drawer", "memorybench/put_block_back", "memorybench/rearrange_block")


@dataclass
class KeyframeAgentConfig:
    """Schema of configs/agent/keyframe.yaml."""

    name: str = "keyframe"
    """Agent kind (keyframe)."""
    grid_size: int = 32
    """Side of each virtual view in pixels (= voxels per workspace axis for the translation)."""
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """UNet encoder widths; each stage after the first halves the resolution (tokens: grid_size / 2**(n-1))."""
    head_hidden: int = 128
    """Hidden width of the rotation/gripper/collision MLP."""
    rot_bins: int = 72
    """Bins per Euler angle (72 = 5 degrees, as RVT-2/SAM2Act)."""
    heatmap_sigma: float = 1.5
    """Std (pixels) of the Gaussian heatmap targets (SAM2Act: 1.5)."""
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    """Cameras whose point clouds are fused."""

    def __post_init__(self) -> None:
        if isinstance(self.grid_size, bool) or not isinstance(self.grid_size, int) or self.grid_size < 8:
            raise ValueError(f"agent option grid_size={self.grid_size!r}: must be an integer >= 8")
        ch = list(self.channels)
        if not ch or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in ch):
            raise ValueError(f"agent option channels={ch!r}: must be a non-empty list of positive integers")
        if self.grid_size % (2 ** (len(ch) - 1)):
            raise ValueError(f"agent option grid_size={self.grid_size}: must be divisible by 2**(len(channels)-1)")
        for key in ("head_hidden", "rot_bins"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"agent option {key}={v!r}: must be a positive integer")
        if not self.heatmap_sigma > 0:
            raise ValueError(f"agent option heatmap_sigma={self.heatmap_sigma!r}: must be > 0")
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad or not self.cameras:
            raise ValueError(f"agent option cameras={list(self.cameras)!r}; allowed: a subset of {', '.join(CAMERAS)}")

    @property
    def token_grid(self) -> int:
        return self.grid_size // 2 ** (len(self.channels) - 1)


# --- geometry: point cloud <-> virtual views ---------------------------------------------------------

class Workspace:
    """An axis-aligned box ((xmin, ymin, zmin), (xmax, ymax, zmax)) split into grid^3 voxels."""

    def __init__(self, bounds, grid: int):
        lo, hi = np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(hi > lo):
            raise ValueError(f"workspace bounds {bounds!r}: need ((xmin,ymin,zmin),(xmax,ymax,zmax)) with max > min")
        self.lo, self.hi, self.grid = lo, hi, int(grid)
        self.voxel = (hi - lo) / grid

    def normalize(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.lo) / (self.hi - self.lo)

    def voxel_index(self, points: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(self.normalize(points) * self.grid), 0, self.grid - 1).astype(np.int64)

    def voxel_center(self, index: np.ndarray) -> np.ndarray:
        return self.lo + (np.asarray(index, dtype=np.float64) + 0.5) * self.voxel

    def render(self, points: np.ndarray, colors: np.ndarray) -> np.ndarray:
        """Orthographic views [3, 7, G, G] float32 of points [N, 3] (world) with colors [N, 3] uint8.

        Points outside the workspace are dropped; per pixel the point nearest the viewer (largest
        coordinate along the view's depth axis) wins, ties broken deterministically."""
        G = self.grid
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        col = np.asarray(colors).reshape(-1, 3)
        u = self.normalize(pts)
        keep = np.all(np.isfinite(u), axis=1) & np.all((u >= 0) & (u < 1), axis=1)
        u, col = u[keep], col[keep].astype(np.float32) / 255.0
        idx = np.minimum(np.floor(u * G).astype(np.int64), G - 1)
        coords = (np.arange(G, dtype=np.float32) + 0.5) / G
        out = np.zeros((3, VIEW_CHANNELS, G, G), dtype=np.float32)
        out[:, 5] = coords[None, :, None]
        out[:, 6] = coords[None, None, :]
        for v, (r, c, d) in enumerate(VIEW_AXES):
            if not len(u):
                continue
            pix = idx[:, r] * G + idx[:, c]
            order = np.lexsort((u[:, d], pix))  # by pixel, then depth: the last of each pixel wins
            pix_sorted = pix[order]
            last = order[np.r_[pix_sorted[1:] != pix_sorted[:-1], True]]
            rows, cols = idx[last, r], idx[last, c]
            out[v, 0:3, rows, cols] = col[last]
            out[v, 3, rows, cols] = u[last, d]
            out[v, 4, rows, cols] = 1.0
        return out

    def pixels(self, points: np.ndarray) -> np.ndarray:
        """Continuous pixel coordinates [N, 3 views, 2 (row, col)] of world points (pixel centres at +0.5)."""
        u = self.normalize(np.asarray(points).reshape(-1, 3)) * self.grid
        return np.stack([u[:, [r, c]] for r, c, _ in VIEW_AXES], axis=1)


def decode_translation(heatmaps: Tensor, workspace: Workspace, refine: bool = True) -> Tensor:
    """3D points [B, 3] from heatmap logits [B, 3, G, G]: the voxel (i, j, k) that maximizes
    log p_top(i, j) + log p_front(j, k) + log p_side(i, k); its centre (refine=False) or, refined
    within the voxel, the local probability-weighted mean around it."""
    B, V, G, _ = heatmaps.shape
    logp = F.log_softmax(heatmaps.reshape(B, V, G * G).float(), -1).view(B, V, G, G)
    score = logp[:, 0][:, :, :, None] + logp[:, 1][:, None, :, :] + logp[:, 2][:, :, None, :]
    flat = score.reshape(B, -1).argmax(-1)
    index = torch.stack([flat // (G * G), (flat // G) % G, flat % G], -1)
    lo = torch.as_tensor(workspace.lo, dtype=torch.float32, device=heatmaps.device)
    voxel = torch.as_tensor(workspace.voxel, dtype=torch.float32, device=heatmaps.device)
    if not refine:
        return lo + (index.float() + 0.5) * voxel
    # sub-voxel: the probability-weighted mean pixel in a 3x3 window around the chosen pixel of
    # each view; every axis is seen by two views, average them
    prob = logp.exp()
    pad = F.pad(prob, (1, 1, 1, 1))
    offsets = torch.arange(-1, 2, device=heatmaps.device)
    sub = []
    for v, (r, c, _) in enumerate(VIEW_AXES):
        rows = (index[:, r, None] + offsets + 1)[:, :, None].expand(B, 3, 3)
        cols = (index[:, c, None] + offsets + 1)[:, None, :].expand(B, 3, 3)
        w = pad[torch.arange(B, device=heatmaps.device)[:, None, None], v, rows, cols] + 1e-12
        w = w / w.sum((-1, -2), keepdim=True)
        sub.append(((w.sum(-1) * offsets).sum(-1), (w.sum(-2) * offsets).sum(-1)))
    # axis x: top rows, side rows; y: top cols, front rows; z: front cols, side cols
    delta = torch.stack([(sub[0][0] + sub[2][0]) / 2, (sub[0][1] + sub[1][0]) / 2, (sub[1][1] + sub[2][1]) / 2], -1)
    return lo + (index.float() + 0.5 + delta.clamp(-0.5, 0.5)) * voxel


def heatmap_targets(points: np.ndarray, workspace: Workspace, sigma: float) -> np.ndarray:
    """Gaussian target distributions [N, 3, G, G] (each view sums to 1) around the points' projections."""
    G = workspace.grid
    px = workspace.pixels(points)  # [N, 3, 2]
    centres = np.arange(G) + 0.5
    dr = (centres[None, None, :] - px[:, :, 0:1]) ** 2  # [N, 3, G]
    dc = (centres[None, None, :] - px[:, :, 1:2]) ** 2
    g = np.exp(-(dr[..., :, None] + dc[..., None, :]) / (2 * sigma ** 2))
    return (g / g.sum(axis=(-1, -2), keepdims=True)).astype(np.float32)


def quat_to_bins(quat_xyzw: np.ndarray, bins: int) -> np.ndarray:
    euler = Rotation.from_quat(np.asarray(quat_xyzw).reshape(-1, 4)).as_euler("xyz", degrees=True)
    return (np.floor((euler + 180.0) / (360.0 / bins)).astype(np.int64)) % bins


def bins_to_quat(rot_bins: np.ndarray, bins: int) -> np.ndarray:
    euler = (np.asarray(rot_bins).reshape(-1, 3) + 0.5) * (360.0 / bins) - 180.0
    return Rotation.from_euler("xyz", euler, degrees=True).as_quat().astype(np.float32)


def fuse_point_cloud(obs: Mapping, cameras) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, 3], colors [N, 3]) of one keyframe's observation dict from the given cameras."""
    for cam in cameras:
        for key in (f"{cam}_pcd", f"{cam}_rgb"):
            if key not in obs:
                raise ValueError(f"keyframe observation lacks {key!r} (keys: {sorted(obs)})")
    pts = np.concatenate([np.asarray(obs[f"{c}_pcd"]).reshape(-1, 3) for c in cameras])
    col = np.concatenate([np.asarray(obs[f"{c}_rgb"]).reshape(-1, 3) for c in cameras])
    return pts, col


def conditioning(proprio, timestep) -> np.ndarray:
    """The low-dimensional input [.., 9]: proprio (8) + normalized timestep (1)."""
    proprio = np.asarray(proprio, dtype=np.float32)
    timestep = np.asarray(timestep, dtype=np.float32).reshape(proprio.shape[:-1] + (1,))
    return np.concatenate([proprio, timestep], -1)


# --- network -----------------------------------------------------------------------------------------

def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(1, cout), nn.GELU())


class KeyframeAgent(nn.Module):
    """Keyframe policy. Inputs per step: views [B, 3, 7, G, G], cond [B, 9]. See module docstring."""

    COND_DIM = 9

    def __init__(self, config: KeyframeAgentConfig, workspace_bounds, memory: str = "none",
                 memory_options: Mapping | None = None, task: str | None = None):
        super().__init__()
        if memory not in MEMORIES:
            raise ValueError(f"keyframe agent memory {memory!r}; allowed: {', '.join(MEMORIES)}")
        self.config = config
        self.workspace = Workspace(workspace_bounds, config.grid_size)
        self.task_index = TASK_TOKENS.index(task) if task in TASK_TOKENS else len(TASK_TOKENS)
        ch, G = list(config.channels), config.grid_size
        self.view_embed = nn.Parameter(torch.zeros(3, ch[0], 1, 1))
        self.stem = nn.Sequential(_conv(VIEW_CHANNELS, ch[0]), _conv(ch[0], ch[0]))
        self.cond = nn.Sequential(nn.Linear(self.COND_DIM, 64), nn.GELU(), nn.Linear(64, ch[0]))
        self.task_embed = nn.Embedding(len(TASK_TOKENS) + 1, ch[0])
        self.down = nn.ModuleList(nn.Sequential(_conv(ch[i], ch[i + 1], stride=2), _conv(ch[i + 1], ch[i + 1]))
                                  for i in range(len(ch) - 1))
        self.token_cond = nn.Linear(ch[0], ch[-1])
        self.up = nn.ModuleList(_conv(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1)))
        self.heatmap_head = nn.Conv2d(ch[0], 1, 1)
        self.memory_name = memory
        self.memory = None
        if memory == "membank":
            options = {k: v for k, v in dict(memory_options or {}).items() if k != "name"}
            options.update(views=3, grid=config.token_grid)  # the agent's token layout decides these
            self.memory = build_memory("membank", 3 * ch[-1] * config.token_grid ** 2, **options)
        feat = 3 * (ch[0] + ch[-1]) + ch[0]
        self.head = nn.Sequential(nn.Linear(feat, config.head_hidden), nn.GELU(),
                                  nn.Linear(config.head_hidden, 3 * config.rot_bins + 4))
        self.G = G

    # --- pieces ----------------------------------------------------------------------------------
    def encode(self, views: Tensor, cond: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """views [N, 3, 7, G, G], cond [N, 9] -> tokens [N, 3*C*g*g] (flat), skips, cond embedding [N, c0]."""
        N = views.shape[0]
        c = self.cond(cond.float()) + self.task_embed.weight[self.task_index]
        x = self.stem(views.reshape(N * 3, VIEW_CHANNELS, self.G, self.G).float())
        x = x + self.view_embed.repeat(N, 1, 1, 1) + c.repeat_interleave(3, 0)[:, :, None, None]
        skips = [x]
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = x + self.token_cond(c).repeat_interleave(3, 0)[:, :, None, None]
        return x.reshape(N, -1), skips[:-1], c

    def decode(self, tokens: Tensor, skips: list[Tensor]) -> tuple[Tensor, Tensor]:
        """tokens [N, 3*C*g*g] -> heatmap logits [N, 3, G, G] and decoder features [N*3, c0, G, G]."""
        N = tokens.shape[0]
        g = self.config.token_grid
        x = tokens.view(N * 3, -1, g, g)
        for stage, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], 1))
        return self.heatmap_head(x).view(N, 3, self.G, self.G), x

    def heads(self, heatmaps: Tensor, dec: Tensor, tokens: Tensor, c: Tensor) -> dict[str, Tensor]:
        N = heatmaps.shape[0]
        attn = torch.softmax(heatmaps.reshape(N * 3, 1, -1).float(), -1)
        local = (dec.flatten(2) * attn).sum(-1).view(N, -1)  # features where the heatmap points
        glob = tokens.view(N * 3, self.config.channels[-1], -1).amax(-1).view(N, -1)
        out = self.head(torch.cat([local, glob, c], -1))
        R = self.config.rot_bins
        return {"rot": out[:, :3 * R].view(N, 3, R), "grip": out[:, 3 * R:3 * R + 2], "coll": out[:, 3 * R + 2:]}

    # --- the policy API ----------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None) -> TensorDict:
        if self.memory is None:
            return TensorDict({}, batch_size=[batch], device=device)
        return self.memory.initial_state(batch, device)

    def forward_sequence(self, views: Tensor, cond: Tensor, first: Tensor, state: TensorDict) -> tuple[dict, TensorDict]:
        """views [T, B, 3, 7, G, G], cond [T, B, 9], first [T, B] -> outputs [T, B, ...] and the state."""
        T, B = first.shape
        tokens, skips, c = self.encode(views.flatten(0, 1), cond.flatten(0, 1))
        tokens = tokens.view(T, B, -1)
        skips = [s.view(T, B * 3, *s.shape[1:]) for s in skips]
        if self.memory is None:
            heat, dec = self.decode(tokens.flatten(0, 1), [s.flatten(0, 1) for s in skips])
            reads = tokens
        else:
            decoded: dict[int, tuple[Tensor, Tensor]] = {}

            def heatmap_fn(t: int, read: Tensor) -> Tensor:
                decoded[t] = self.decode(read, [s[t] for s in skips])
                return decoded[t][0].reshape(B, -1)

            reads, state = self.memory.forward_sequence({"feat": tokens, "first": first}, state, heatmap_fn)
            heat = torch.cat([decoded[t][0] for t in range(T)])
            dec = torch.cat([decoded[t][1] for t in range(T)])
        out = self.heads(heat, dec, reads.flatten(0, 1), c)
        out["heatmap"] = heat
        return {k: v.view(T, B, *v.shape[1:]) for k, v in out.items()}, state

    def loss(self, out: dict, targets: dict, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Masked mean CE losses; targets: heatmap [T,B,3,G,G] (distributions), rot [T,B,3] long,
        grip/coll [T,B] long, position [T,B,3]."""
        m = mask.float()
        n = m.sum().clamp_min(1)
        T, B = mask.shape
        logp = F.log_softmax(out["heatmap"].float().reshape(T, B, 3, -1), -1)
        trans = -(targets["heatmap"].reshape(T, B, 3, -1) * logp).sum(-1).sum(-1)
        R = self.config.rot_bins
        rot = F.cross_entropy(out["rot"].float().reshape(-1, R), targets["rot"].reshape(-1), reduction="none").view(T, B, 3).mean(-1)
        grip = F.cross_entropy(out["grip"].float().reshape(-1, 2), targets["grip"].reshape(-1), reduction="none").view(T, B)
        coll = F.cross_entropy(out["coll"].float().reshape(-1, 2), targets["coll"].reshape(-1), reduction="none").view(T, B)
        parts = {"trans_loss": trans, "rot_loss": rot, "grip_loss": grip, "coll_loss": coll}
        total = sum(((v * m).sum() / n for v in parts.values()), torch.zeros((), device=mask.device))
        with torch.no_grad():
            pos = decode_translation(out["heatmap"].flatten(0, 1).detach(), self.workspace).view(T, B, 3)
            err = (pos - targets["position"]).norm(dim=-1)
            stats = {k: float((v * m).sum() / n) for k, v in parts.items()}
            stats["trans_err_m"] = float((err * m).sum() / n)
            stats["rot_acc"] = float(((out["rot"].argmax(-1) == targets["rot"]).all(-1).float() * m).sum() / n)
            stats["grip_acc"] = float(((out["grip"].argmax(-1) == targets["grip"]).float() * m).sum() / n)
            stats["loss"] = float(total)
        return total, stats

    def preprocess(self, obs: Mapping) -> tuple[np.ndarray, np.ndarray]:
        """One keyframe observation (env format) -> (views [3, 7, G, G], cond [9])."""
        pts, col = fuse_point_cloud(obs, self.config.cameras)
        return self.workspace.render(pts, col), conditioning(obs["proprio"], obs["timestep"])

    @torch.no_grad()
    def act(self, obs: Mapping, state: TensorDict, first: bool) -> tuple[np.ndarray, TensorDict, dict]:
        """One env step: the 9-d action (xyz, quat xyzw, gripper_open, ignore_collisions), the new
        state, and what was predicted (heatmaps [3, G, G])."""
        device = next(self.parameters()).device
        views, cond = self.preprocess(obs)
        v = torch.as_tensor(views, device=device)[None, None]
        c = torch.as_tensor(cond, device=device)[None, None]
        out, state = self.forward_sequence(v, c, torch.tensor([[bool(first)]], device=device), state)
        pos = decode_translation(out["heatmap"][0], self.workspace)[0].cpu().numpy()
        quat = bins_to_quat(out["rot"][0, 0].argmax(-1).cpu().numpy(), self.config.rot_bins)[0]
        action = np.concatenate([pos.astype(np.float32), quat,
                                 [float(out["grip"][0, 0].argmax()), float(out["coll"][0, 0].argmax())]]).astype(np.float32)
        return action, state, {"heatmap": out["heatmap"][0, 0].cpu().numpy()}

    # --- imitation hooks: how embodied.train.bc trains this agent ----------------------------------------
    def prepare_imitation(self, episodes: list[dict], cache_dir, progress: bool = False) -> list["KeyframeSequence"]:
        """Demonstrations (MemoryBench episode files) as training sequences: the virtual views of every
        keyframe, rendered once and cached in `cache_dir`."""
        return cached_sequences(episodes, self, cache_dir, progress)

    def imitation_batch(self, sequences: list["KeyframeSequence"], gen: torch.Generator, device,
                        aug_shift: int = 0) -> dict[str, Any]:
        """A padded [T, B] batch; each sequence shifted by up to `aug_shift` voxels in x and y (drawn
        from `gen`, the trainer's shuffling generator, so a resumed run draws the same shifts)."""
        a = int(aug_shift)
        moved = []
        for seq in sequences:
            dx, dy = torch.randint(-a, a + 1, (2,), generator=gen).tolist() if a else (0, 0)
            moved.append(shift_sequence(seq, dx, dy, self.workspace.voxel))
        return collate(moved, self, device)

    def imitation_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Whole demonstrations from a fresh memory, as at test time; the loss of `loss`."""
        B = batch["first"].shape[1]
        out, _ = self.forward_sequence(batch["views"], batch["cond"], batch["first"],
                                       self.initial_state(B, batch["first"].device))
        return self.loss(out, batch["targets"], batch["mask"])

    def imitation_rollouts(self, task_cfg: Mapping, n: int) -> list[dict[str, Any]]:
        """`n` greedy episodes on validation seeds (neither train nor test seeds: `validation_seeds`);
        the trainer's in-training evaluation (episode/success, best.pt)."""
        from embodied.tasks.memorybench import make_env, task_spec, validation_seeds

        seeds = validation_seeds(task_spec(str(task_cfg["name"])), n)
        env = make_env(dict(task_cfg))
        try:
            results = [rollout(env, self, s) for s in seeds]
        finally:
            env.close()
        self.train()
        return results


def build_keyframe_agent(agent_options: Mapping, workspace_bounds, memory: Mapping, task: str | None) -> KeyframeAgent:
    """The agent of a run config's `agent` and `memory` nodes (unknown keys raise ValueError)."""
    import dataclasses

    options = dict(agent_options)
    allowed = [f.name for f in dataclasses.fields(KeyframeAgentConfig)]
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown keyframe agent option {key!r}; allowed: {', '.join(allowed)}")
    memory = dict(memory)
    name = memory.pop("name", "none")
    return KeyframeAgent(KeyframeAgentConfig(**options), workspace_bounds, name, memory, task)


def build_from_run_config(config: Mapping) -> KeyframeAgent:
    """The agent of a run config (`agent=keyframe`): its `agent`, `memory` and MemoryBench task."""
    from embodied.tasks.memorybench import WORKSPACE, task_short_name

    task = str(config["task"]["name"])
    task_short_name(task)  # another family: one line naming task.name
    return build_keyframe_agent(config["agent"], WORKSPACE, config["memory"], task)


@torch.no_grad()
def rollout(env, agent, seed: int, max_keyframes: int = 25) -> dict[str, Any]:
    """One deterministic episode of a keyframe policy (`agent`: KeyframeAgent, or anything with its
    initial_state/act) in a MemoryBench env from `reset(seed)`, at most `max_keyframes` actions, fresh
    memory; returns its outcome. Training's monitoring rollouts and `embodied eval` both run it."""
    agent.eval()
    obs, info = env.reset(seed=seed)
    state = agent.initial_state(1, next(agent.parameters()).device)
    success, steps, info = False, 0, dict(info)
    for k in range(max_keyframes):
        action, state, _ = agent.act(obs, state, first=(k == 0))
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        success = success or bool(info.get("success", reward > 0))
        if terminated or truncated:
            break
    outcome = {"seed": int(seed), "success": float(success), "keyframes": steps,
               "variation": int(info.get("variation", -1)), "ik_failure": float(bool(info.get("ik_failure", False)))}
    if info.get("strict"):  # strict mode: what, if anything, the policy touched that memory rules out
        outcome["violation"] = str(info.get("violation") or "")
    return outcome


# --- demonstrations as training sequences -----------------------------------------------------------

@dataclass
class KeyframeSequence:
    """One demonstration as training arrays: K keyframes."""

    views: np.ndarray     # [K, 3, 7, G, G] float16
    cond: np.ndarray      # [K, 9] float32
    position: np.ndarray  # [K, 3] float32 target xyz
    rot: np.ndarray       # [K, 3] int64 Euler bins
    grip: np.ndarray      # [K] int64
    coll: np.ndarray      # [K] int64


SEQUENCE_FIELDS = ("views", "cond", "position", "rot", "grip", "coll")


def prepare_sequences(episodes: list[dict], agent: KeyframeAgent, progress: bool = False) -> list[KeyframeSequence]:
    """Render each keyframe's virtual views and label its action (episodes as embodied.tasks.episodes
    reads them: obs with proprio and timestep, actions [K, 9])."""
    out = []
    it = episodes
    if progress:
        import sys

        from tqdm import tqdm

        it = tqdm(episodes, desc="render views", unit="demo", file=sys.stderr)
    for i, ep in enumerate(it):
        action = np.asarray(ep["actions"], dtype=np.float32)
        if action.ndim != 2 or action.shape[1] != 9 or len(action) == 0:
            raise ValueError(f"demo {i}: action has shape {action.shape}; expected [K, 9]")
        obs = ep["obs"]
        views = []
        for k in range(len(action)):
            pts, col = fuse_point_cloud({key: v[k] for key, v in obs.items()}, agent.config.cameras)
            views.append(agent.workspace.render(pts, col).astype(np.float16))
        out.append(KeyframeSequence(
            views=np.stack(views), cond=conditioning(obs["proprio"], obs["timestep"]).astype(np.float32),
            position=action[:, :3].copy(), rot=quat_to_bins(action[:, 3:7], agent.config.rot_bins),
            grip=(action[:, 7] > 0.5).astype(np.int64), coll=(action[:, 8] > 0.5).astype(np.int64)))
    return out


def cached_sequences(episodes: list[dict], agent: KeyframeAgent, cache_dir, progress: bool = False) -> list[KeyframeSequence]:
    """prepare_sequences, cached in `cache_dir` by content (demo seeds, lengths, noise, view layout)."""
    import hashlib
    import json
    from pathlib import Path

    facts = [e.get("episode") or {} for e in episodes]
    key = json.dumps({"seeds": [int(f.get("seed", -1)) for f in facts], "lens": [len(e["actions"]) for e in episodes],
                      "noise": [[f.get(k, 0) for k in ("noise", "noise_seed", "attempt")] for f in facts],
                      "grid": agent.config.grid_size, "cams": list(agent.config.cameras), "bins": agent.config.rot_bins,
                      "lo": agent.workspace.lo.tolist(), "hi": agent.workspace.hi.tolist(),
                      "act": float(np.sum([np.abs(np.asarray(e["actions"], np.float64)).sum() for e in episodes]))})
    path = Path(cache_dir) / f"views-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as data:
            bounds = np.concatenate([[0], np.cumsum(data["lens"])])
            fields = {k: data[k] for k in SEQUENCE_FIELDS}
        return [KeyframeSequence(**{k: v[a:b] for k, v in fields.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
    seqs = prepare_sequences(episodes, agent, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, lens=np.array([len(s.grip) for s in seqs]),
             **{k: np.concatenate([getattr(s, k) for s in seqs]) for k in SEQUENCE_FIELDS})
    tmp.replace(path)  # a crash leaves no half-written cache
    return seqs


def shift_sequence(seq: KeyframeSequence, dx: int, dy: int, voxel: np.ndarray) -> KeyframeSequence:
    """`seq` translated by (dx, dy) voxels in world x, y: views rolled (coordinate channels stay),
    targets and proprio position moved by the same metres."""
    if dx == 0 and dy == 0:
        return seq
    v = seq.views.copy()
    # top view rows = x, cols = y; front rows = y; side rows = x (see VIEW_AXES)
    v[:, 0, :5] = np.roll(v[:, 0, :5], (dx, dy), axis=(-2, -1))
    v[:, 1, :5] = np.roll(v[:, 1, :5], dy, axis=-2)
    v[:, 2, :5] = np.roll(v[:, 2, :5], dx, axis=-2)
    offset = np.array([dx * voxel[0], dy * voxel[1], 0.0], dtype=np.float32)
    cond = seq.cond.copy()
    cond[:, :3] += offset
    return KeyframeSequence(v, cond, seq.position + offset, seq.rot, seq.grip, seq.coll)


def collate(seqs: list[KeyframeSequence], agent: KeyframeAgent, device) -> dict[str, Any]:
    """[T, B] tensors of a batch of sequences; padding steps are first=True and mask=False."""
    T, B = max(len(s.grip) for s in seqs), len(seqs)
    G = agent.config.grid_size
    views = np.zeros((T, B, 3, 7, G, G), dtype=np.float32)
    cond = np.zeros((T, B, 9), dtype=np.float32)
    position = np.zeros((T, B, 3), dtype=np.float32)
    rot = np.zeros((T, B, 3), dtype=np.int64)
    grip = np.zeros((T, B), dtype=np.int64)
    coll = np.zeros((T, B), dtype=np.int64)
    mask = np.zeros((T, B), dtype=bool)
    for j, s in enumerate(seqs):
        n = len(s.grip)
        views[:n, j], cond[:n, j], position[:n, j] = s.views, s.cond, s.position
        rot[:n, j], grip[:n, j], coll[:n, j], mask[:n, j] = s.rot, s.grip, s.coll, True
    first = ~mask
    first[0] = True
    heat = heatmap_targets(position.reshape(-1, 3), agent.workspace, agent.config.heatmap_sigma).reshape(T, B, 3, G, G)
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return {"views": t(views), "cond": t(cond), "first": t(first), "mask": t(mask),
            "targets": {"heatmap": t(heat), "position": t(position), "rot": t(rot), "grip": t(grip), "coll": t(coll)}}
