"""`trxl`: gated Transformer-XL (GTrXL; Parisotto et al. 2019, "Stabilizing Transformers for RL").

Each layer is pre-LayerNorm ("identity map reordering") with GRU-type gates in place of the two
residual connections. Like Transformer-XL, every layer attends from the current step to a cache of
that layer's inputs at the last `memory_length` steps. Positions enter as a learned per-head bias
on the relative distance (0..memory_length), which is all a sliding window needs.

State (fixed size, chronological, oldest slot first):
    memory [B, layers, M, dim]  layer inputs of the last M steps
    valid  [B, M] bool          slot holds a step (of the current episode unless lifelong)
    pos    [B, M] long          step index of each slot
    count  [B] long             step index the next step gets (restarts at 0 on reset)
Resetting a row empties its cache, so a new episode never attends to an old one.
`forward_sequence` runs all T steps at once with a causal, windowed, episode-aware mask; it
gives the same reads and final state as stepping one by one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory
from embodied.memory.config import TrXLConfig


class GRUGate(nn.Module):
    """g(x, y) = (1 - z) * x + z * tanh(W_g y + U_g (r * x)), r/z sigmoid gates; bias b_g on z."""

    def __init__(self, dim: int, gate_bias: float):
        super().__init__()
        self.from_y = nn.Linear(dim, 3 * dim, bias=False)
        self.from_x = nn.Linear(dim, 2 * dim, bias=False)
        self.candidate_x = nn.Linear(dim, dim, bias=False)
        self.update_bias = nn.Parameter(torch.full((dim,), float(gate_bias)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        y_r, y_z, y_g = self.from_y(y).chunk(3, dim=-1)
        x_r, x_z = self.from_x(x).chunk(2, dim=-1)
        reset = torch.sigmoid(y_r + x_r)
        update = torch.sigmoid(y_z + x_z - self.update_bias)
        candidate = torch.tanh(y_g + self.candidate_x(reset * x))
        return (1 - update) * x + update * candidate


class GatedTransformerLayer(nn.Module):
    def __init__(self, config: TrXLConfig):
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.dim // config.heads
        self.norm_attention = nn.LayerNorm(config.dim)
        self.query = nn.Linear(config.dim, config.dim)
        self.key_value = nn.Linear(config.dim, 2 * config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        # Learned bias per head and relative distance 0..memory_length.
        self.distance_bias = nn.Parameter(torch.zeros(config.heads, config.memory_length + 1))
        self.gate_attention = GRUGate(config.dim, config.gate_bias)
        self.norm_mlp = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, config.ff_dim), nn.ReLU(), nn.Linear(config.ff_dim, config.dim))
        self.gate_mlp = GRUGate(config.dim, config.gate_bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor, distance: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, Tq, D] queries; context [B, Tk, D] keys/values; mask, distance [B, Tq, Tk].

        Returns the layer output [B, Tq, D] and attention weights [B, H, Tq, Tk].
        """
        batch, n_query, dim = x.shape
        n_key = context.shape[1]
        q = self.query(self.norm_attention(x)).view(batch, n_query, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.key_value(self.norm_attention(context)).chunk(2, dim=-1)
        k = k.view(batch, n_key, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, n_key, self.heads, self.head_dim).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, H, Tq, Tk]
        # F.embedding, not fancy indexing: on CUDA, indexing's backward is an atomic scatter into the
        # (H x M+1) table from B*Tq*Tk rows, which serialises (measured: 2.2 s per update at T=513);
        # embedding's backward sorts the indices first.
        bias = F.embedding(distance.clamp(0, self.distance_bias.shape[1] - 1), self.distance_bias.t())  # [B, Tq, Tk, H]
        logits = logits + bias.permute(0, 3, 1, 2)
        logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, n_query, dim)
        x = self.gate_attention(x, torch.relu(self.out(attended)))
        x = self.gate_mlp(x, torch.relu(self.mlp(self.norm_mlp(x))))
        return x, weights


@register_memory("trxl", config=TrXLConfig)
class GatedTransformerXLMemory(Memory):
    def __init__(self, input_dim: int, config: TrXLConfig):
        super().__init__(input_dim, config)
        self.output_dim = config.dim
        self.memory_length = config.memory_length
        self.n_layers = config.layers
        self.input_proj = nn.Linear(input_dim, config.dim)
        self.layers = nn.ModuleList(GatedTransformerLayer(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.dim)
        self._last_attention: Tensor | None = None

    def initial_state(self, batch: int, device=None) -> TensorDict:
        m = self.memory_length
        return TensorDict(
            {
                "memory": torch.zeros(batch, self.n_layers, m, self.output_dim, device=device),
                "valid": torch.zeros(batch, m, dtype=torch.bool, device=device),
                "pos": torch.zeros(batch, m, dtype=torch.long, device=device),
                "count": torch.zeros(batch, dtype=torch.long, device=device),
            },
            batch_size=[batch],
            device=device,
        )

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        reads, state = self._run(step["feat"].unsqueeze(0), None, state)
        return reads[0], state

    def forward_sequence(self, steps: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        self._check_step(steps, sequence=True)
        first = steps.get("first", None)
        if first is not None and not self.lifelong:
            first = first.to(dtype=torch.bool)
        else:
            first = None
        return self._run(steps["feat"], first, state)

    def _run(self, feat: Tensor, first: Tensor | None, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """All T steps at once. `first [T, B]` marks resets (None: no resets, e.g. lifelong)."""
        length, batch = feat.shape[:2]
        m = self.memory_length
        device = feat.device
        valid, pos, count = state.get("valid"), state.get("pos"), state.get("count")

        # Step index of each new step and, per row, an episode id (resets start a new one).
        now = []
        counter = count
        for t in range(length):
            if first is not None:
                counter = torch.where(first[t], torch.zeros_like(counter), counter)
            now.append(counter)
            counter = counter + 1
        now = torch.stack(now, dim=1)  # [B, T]
        if first is not None:
            episode = first.t().long().cumsum(dim=1)  # [B, T]
            reset_so_far = episode > 0
        else:
            episode = torch.zeros(batch, length, dtype=torch.long, device=device)
            reset_so_far = torch.zeros(batch, length, dtype=torch.bool, device=device)

        # Query t sees cache slot j while it is still in the window (j >= t) and no reset came
        # in between; it sees new step s <= t within M steps and in the same episode.
        t_idx = torch.arange(length, device=device)
        j_idx = torch.arange(m, device=device)
        cache_mask = valid[:, None, :] & (j_idx[None, :] >= t_idx[:, None])[None] & ~reset_so_far[:, :, None]
        causal = (t_idx[None, :] <= t_idx[:, None]) & (t_idx[:, None] - t_idx[None, :] <= m)
        new_mask = causal[None] & (episode[:, :, None] == episode[:, None, :])
        mask = torch.cat([cache_mask, new_mask], dim=2)  # [B, T, M + T]
        key_pos = torch.cat([pos, now], dim=1)  # [B, M + T]
        distance = now[:, :, None] - key_pos[:, None, :]

        x = self.input_proj(feat.transpose(0, 1))  # [B, T, D]
        layer_inputs = []
        attention = []
        memory = state.get("memory")
        for index, layer in enumerate(self.layers):
            layer_inputs.append(x)
            context = torch.cat([memory[:, index], x], dim=1)
            x, weights = layer(x, context, mask, distance)
            attention.append(weights[:, :, -1, -(m + 1):])
        self._last_attention = torch.stack(attention, dim=1).detach()  # [B, layers, H, M + 1]
        reads = self.norm_out(x).transpose(0, 1)  # [T, B, D]

        # Final cache = the last M of (old cache, new steps); slots before the last reset are empty.
        all_memory = torch.cat([memory, torch.stack(layer_inputs, dim=1)], dim=2)[:, :, -m:]
        new_valid = episode == episode[:, -1:]
        all_valid = torch.cat([valid & ~reset_so_far[:, -1:], new_valid], dim=1)[:, -m:]
        all_pos = torch.cat([pos, now], dim=1)[:, -m:]
        new_state = TensorDict(
            {
                "memory": all_memory * all_valid[:, None, :, None],
                "valid": all_valid,
                "pos": torch.where(all_valid, all_pos, torch.zeros_like(all_pos)),
                "count": now[:, -1] + 1,
            },
            batch_size=state.batch_size,
            device=state.device,
        )
        return reads, new_state

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """The Memory.introspect contract, plus `attention [B, layers, heads, M + 1]` of the last
        step (the cache it read, then the step itself), `slot_valid` and `slot_pos`.

        `weights` is that attention averaged over layers and heads and shifted onto the slots of
        the returned state: the cache moved one slot left and the step itself became the last slot,
        so the weight on the evicted oldest slot is dropped.
        """
        valid = state.get("valid")
        out = {"slot_valid": valid, "slot_pos": state.get("pos"),
               "slot_step": torch.where(valid, state.get("pos"), torch.full_like(state.get("pos"), -1))}
        attention = self._last_attention
        if attention is not None and attention.shape[0] == valid.shape[0]:
            out["attention"] = attention
            out["weights"] = attention.mean(dim=(1, 2))[:, 1:] * valid
        else:  # no forward yet (or another batch): nothing was read
            out["weights"] = torch.zeros(valid.shape, device=valid.device)
        return out
