"""SAM2Act+ memory bank (Fang et al. 2025): per-view bank of past keyframe features fused with the
predicted heatmap, the last K with learned time embeddings, read by memory-attention layers.

How it maps onto SAM2Act+ (notes: shared/reference/memorybench-sam2act.md section 3.2):
  * one bank per virtual view; each view's current feature tokens attend only to that view's bank;
  * an entry = memory encoder(features, sigmoid(heatmap logits) * 20 - 10): the mask is resized to
    the token grid, embedded, added to the projected features and fused by two ConvNeXt-style
    blocks, then projected to `mem_dim` (SAM2's MaskDownSampler + Fuser, scaled down);
  * the bank is a sliding window of the last `num_maskmem` keyframes; slot k holds the entry written
    k + 1 steps ago and gets the learned time embedding k (SAM2's `maskmem_tpos_enc`);
  * memory attention = `layers` x (self-attention, cross-attention to the bank, MLP), pre-norm; an
    empty bank (episode start) reads nothing: the cross-attention adds exactly zero;
  * the written heatmap is the model's own prediction (not the ground truth), with gradients
    flowing through the stored entries within a training sequence, as SAM2Act+ does.

The flat `feat [B, D]` of the memory interface holds the per-view feature maps flattened in the
layout [views, channels, grid, grid] (D = views * channels * grid**2); the read has the same layout
and size. The heatmap to fuse comes from, in order: a `heatmap_fn(read) -> [B, views * H * W]`
passed to forward (the agent's decoder; what the keyframe agent does), `step["heatmap"]`, or the
bank's own 1x1 mask head on the read (so `forward(step, state)` alone satisfies the interface).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory, step_at
from embodied.memory.config import MemoryConfig, _check_positive

HeatmapFn = Callable[[Tensor], Tensor]


@dataclass
class MemBankConfig(MemoryConfig):
    """`membank`: SAM2Act+-style per-view memory bank over keyframes (configs/memory/membank.yaml)."""

    name: str = "membank"
    num_maskmem: int = 9
    """K: past keyframes kept per view (SAM2Act+ uses 9); older entries are dropped (FIFO)."""
    views: int = 1
    """Views; `feat` is split into this many per-view feature maps (the keyframe agent sets 3)."""
    grid: int = 1
    """Side of each view's token grid; the feature channels are D / (views * grid**2). The keyframe
    agent sets its token grid; 1 x 1 x 1 makes the bank a FIFO of step vectors for any agent."""
    mem_dim: int = 32
    """Channels of a stored entry (SAM2Act+: 64)."""
    layers: int = 2
    """Memory-attention layers (SAM2Act+: 4)."""
    heads: int = 1
    """Attention heads (SAM2Act+: 1); must divide the feature channels."""
    ff_dim: int = 128
    """Hidden width of each layer's MLP."""

    def __post_init__(self) -> None:
        _check_positive(self, "num_maskmem", "views", "grid", "mem_dim", "layers", "heads", "ff_dim")


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.GroupNorm(1, dim)
        self.pw1 = nn.Conv2d(dim, 2 * dim, 1)
        self.pw2 = nn.Conv2d(2 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class MemoryEncoder(nn.Module):
    """(features [N, C, g, g], heatmap logits [N, H, W]) -> entry [N, mem_dim, g, g]."""

    def __init__(self, channels: int, mem_dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.mask_embed = nn.Sequential(nn.Conv2d(1, mem_dim, 3, padding=1), nn.GELU(), nn.Conv2d(mem_dim, mem_dim, 1))
        self.feat_proj = nn.Conv2d(channels, mem_dim, 1)
        self.fuser = nn.Sequential(_ConvNeXtBlock(mem_dim), _ConvNeXtBlock(mem_dim))
        self.out = nn.Conv2d(mem_dim, mem_dim, 1)

    def forward(self, features: Tensor, heatmap: Tensor) -> Tensor:
        mask = torch.sigmoid(heatmap.unsqueeze(1)) * 20.0 - 10.0  # SAM2's sigmoid_scale 20, bias -10
        mask = F.adaptive_avg_pool2d(mask, self.grid)
        return self.out(self.fuser(self.feat_proj(features) + self.mask_embed(mask)))


class MemoryAttentionLayer(nn.Module):
    """Self-attention over the current tokens, cross-attention to the bank, MLP (all pre-norm).

    The cross-attention has one extra always-present "nothing" key with a zero value, so a row
    whose bank is empty reads exactly zero (no NaN from an all-masked softmax)."""

    def __init__(self, dim: int, mem_dim: int, heads: int, ff_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"memory option heads={heads}: must divide the feature channels {dim}")
        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(mem_dim, dim)
        self.v = nn.Linear(mem_dim, dim)
        self.proj = nn.Linear(dim, dim, bias=False)  # no bias: an empty read adds exactly zero
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))

    def forward(self, x: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, L, dim]; memory [N, M, mem_dim]; valid [N, M] bool. Returns x and weights [N, M]."""
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h + pos, h, need_weights=False)[0]
        N, L, D = x.shape
        hd = D // self.heads
        q = self.q(self.norm2(x) + pos).view(N, L, self.heads, hd).transpose(1, 2)
        k = self.k(memory + memory_pos).view(N, -1, self.heads, hd).transpose(1, 2)
        v = self.v(memory).view(N, -1, self.heads, hd).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [N, heads, L, M]
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        nothing = torch.zeros(N, self.heads, L, 1, device=x.device, dtype=scores.dtype)
        attn = torch.softmax(torch.cat([scores, nothing], -1), -1)
        read = attn[..., :-1] @ v
        x = x + self.proj(read.transpose(1, 2).reshape(N, L, D))
        x = x + self.mlp(self.norm3(x))
        return x, attn[..., :-1].mean(dim=(1, 2))


@register_memory("membank", config=MemBankConfig)
class MemoryBank(Memory):
    """Per-view sliding-window bank of the last K keyframes; read by memory attention.

    State (fixed capacity, slot 0 = most recent):
        bank       float [B, K, views, grid*grid, mem_dim]
        slot_step  long  [B, K]  episode step at which the slot was written, -1 empty
        step       long  [B]     steps taken in the current episode
    """

    def __init__(self, input_dim: int, config: MemBankConfig):
        super().__init__(input_dim, config)
        V, g = config.views, config.grid
        if input_dim % (V * g * g):
            raise ValueError(f"membank input_dim={input_dim}: must be views*grid*grid*channels "
                             f"(views={V}, grid={g})")
        self.views, self.grid, self.K, self.mem_dim = V, g, config.num_maskmem, config.mem_dim
        self.channels = C = input_dim // (V * g * g)
        self.output_dim = input_dim
        self.encoder = MemoryEncoder(C, config.mem_dim, g)
        self.layers = nn.ModuleList(MemoryAttentionLayer(C, config.mem_dim, config.heads, config.ff_dim)
                                    for _ in range(config.layers))
        self.pos = nn.Parameter(torch.randn(g * g, C) * 0.02)
        self.memory_pos = nn.Parameter(torch.randn(g * g, config.mem_dim) * 0.02)
        self.tpos = nn.Parameter(torch.randn(self.K, config.mem_dim) * 0.02)  # maskmem_tpos_enc
        self.mask_head = nn.Conv2d(C, 1, 1)
        self._last_weights: Tensor | None = None

    def initial_state(self, batch: int, device=None) -> TensorDict:
        return TensorDict({
            "bank": torch.zeros(batch, self.K, self.views, self.grid * self.grid, self.mem_dim, device=device),
            "slot_step": torch.full((batch, self.K), -1, dtype=torch.long, device=device),
            "step": torch.zeros(batch, dtype=torch.long, device=device),
        }, batch_size=[batch], device=device)

    # --- read / write ---------------------------------------------------------------------------
    def read(self, feat: Tensor, state: TensorDict) -> tuple[Tensor, Tensor]:
        """Memory-conditioned features [B, D] and the read weights over the K slots [B, K]."""
        B, V, g, C, K = feat.shape[0], self.views, self.grid, self.channels, self.K
        x = feat.view(B, V, C, g * g).transpose(2, 3).reshape(B * V, g * g, C)
        bank = state.get("bank").to(feat.dtype)  # [B, K, V, g*g, m]
        memory = bank.permute(0, 2, 1, 3, 4).reshape(B * V, K * g * g, self.mem_dim)
        memory_pos = (self.tpos[:, None, :] + self.memory_pos[None]).reshape(1, K * g * g, self.mem_dim)
        valid = (state.get("slot_step") >= 0)[:, None, :, None].expand(B, V, K, g * g).reshape(B * V, K * g * g)
        weights = torch.zeros(B * V, K * g * g, device=feat.device)
        for layer in self.layers:
            x, w = layer(x, self.pos, memory, memory_pos, valid)
            weights = weights + w.float() / len(self.layers)
        read = x.view(B, V, g * g, C).transpose(2, 3).reshape(B, -1)
        slot_weights = weights.view(B, V, K, g * g).sum(-1).mean(1)
        return read, slot_weights

    def write(self, feat: Tensor, heatmap: Tensor, state: TensorDict) -> TensorDict:
        """State with the entry of (features, heatmap logits [B, views*H*W]) pushed into slot 0."""
        B, V, g, C = feat.shape[0], self.views, self.grid, self.channels
        side = math.isqrt(heatmap.shape[-1] // V)
        if heatmap.dim() != 2 or heatmap.shape[0] != B or V * side * side != heatmap.shape[-1]:
            raise ValueError(f"membank heatmap has shape {tuple(heatmap.shape)}; expected [B={B}, views*H*W] "
                             f"with square per-view maps")
        entry = self.encoder(feat.view(B * V, C, g, g), heatmap.view(B * V, side, side))
        entry = entry.view(B, V, self.mem_dim, g * g).transpose(2, 3)  # [B, V, g*g, m]
        bank = torch.cat([entry.unsqueeze(1).to(state.get("bank").dtype), state.get("bank")[:, :-1]], 1)
        step = state.get("step")
        slot_step = torch.cat([step[:, None], state.get("slot_step")[:, :-1]], 1)
        return TensorDict({"bank": bank, "slot_step": slot_step, "step": step + 1},
                          batch_size=state.batch_size, device=state.device)

    def default_heatmap(self, read: Tensor) -> Tensor:
        B, V, g = read.shape[0], self.views, self.grid
        return self.mask_head(read.view(B * V, self.channels, g, g)).view(B, V * g * g)

    # --- the memory interface -------------------------------------------------------------------
    def update(self, step: Step, state: TensorDict, heatmap_fn: HeatmapFn | None = None) -> tuple[Tensor, TensorDict]:
        feat = step["feat"]
        read, weights = self.read(feat, state)
        if heatmap_fn is not None:
            heatmap = heatmap_fn(read)
        elif step.get("heatmap", None) is not None:
            heatmap = step["heatmap"]
        else:
            heatmap = self.default_heatmap(read)
        new_state = self.write(feat, heatmap, state)
        self._last_weights = weights.detach()
        return read, new_state

    def forward(self, step: Step, state: TensorDict, heatmap_fn: HeatmapFn | None = None) -> tuple[Tensor, TensorDict]:
        self._check_step(step, sequence=False)
        first = step.get("first", None)
        if first is not None and not self.lifelong:
            state = self.reset_rows(state, first)
        return self.update(step, state, heatmap_fn)

    def forward_sequence(self, steps: Step, state: TensorDict,
                         heatmap_fn: Callable[[int, Tensor], Tensor] | None = None) -> tuple[Tensor, TensorDict]:
        """`[T, B, ...]` steps; `heatmap_fn(t, read)` (optional) decodes the heatmap of step t."""
        self._check_step(steps, sequence=True)
        reads = []
        for t in range(steps["feat"].shape[0]):
            fn = (lambda read, t=t: heatmap_fn(t, read)) if heatmap_fn is not None else None
            read, state = self(step_at(steps, t), state, fn)
            reads.append(read)
        return torch.stack(reads), state

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """Memory.introspect: `weights [B, K]` (the last read, shifted onto the returned state's
        slots: the step just written sits in slot 0 and was not read; the evicted oldest slot's
        weight is dropped), `slot_step`, `slot_keyframe` (every filled slot is a keyframe)."""
        slot_step = state.get("slot_step")
        filled = slot_step >= 0
        weights = torch.zeros(filled.shape, device=slot_step.device)
        last = self._last_weights
        if last is not None and last.shape == filled.shape:
            weights[:, 1:] = last[:, :-1].to(weights.device)
        return {"weights": weights * filled, "slot_step": slot_step, "slot_keyframe": filled}
