"""`hcam`: Hierarchical Chunk Attention Memory (Lampinen, Chan, Banino, Hill; NeurIPS 2021).

The past of each layer is kept in chunks of `chunk_size` steps. A query first attends over the
chunk summaries (the mean of each chunk's steps), keeps the `top_k` best chunks, attends in detail
inside each of them (multi-head, with sinusoidal position encodings over the C positions), weights
each chunk's result by its softmax relevance among the top k and sums; the block output is added
to the residual stream. What is stored gets no gradient (the release stop-gradients memories).
This follows the released module `hierarchical_attention/htm_attention.py` (deepmind-research
@5e35a17); the agent around it was not released, so the layer layout here is ours:

    x <- gate(x, HCAM(LN x, chunks of this layer's inputs))       # GRUGate as in GTrXL
    x <- gate(x, MLP(LN x))

one HCAM block per layer, as in Fig. 1(d) of the paper. Unverified in our notes: the paper's
chunk size and k (not retrievable; defaults here follow the SAT code, C = 32 / k = 4, scaled to
C = 16 for our shorter CPU tasks), and whether the paper's layers also keep a local TrXL window
([recall] only). Here the current, partly filled chunk is just another chunk of the memory, so
recent steps are reachable without a separate local window.

State (fixed capacity: `num_chunks` x `chunk_size` slots per layer, a ring of chunks):
    memory   [B, layers, N, C, D]  layer inputs (detached)
    sums     [B, layers, N, D]     running sum of each chunk's steps (its summary = sum / count)
    valid    [B, N, C] bool        slot holds a step
    step     [B, N, C] long        per-episode step index of the slot (-1 empty)
    episode  [B, N, C] long        episode counter of the slot (lifelong runs)
    count    [B] long              slots written so far (ring position = count % (N * C))
    episode_step [B] long          step index within the current episode
    episode_id   [B] long          episodes seen (only grows when lifelong)
The slot of step s is chunk (s // C) % N, position s % C, so chunks hold consecutive steps; when
a new chunk starts it evicts the oldest one. With `lifelong=true`, `episode_mask=true` stops
attention into earlier episodes (the release's optional mask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory
from embodied.memory.config import MemoryConfig, _check_positive
from embodied.memory.gtrxl import GRUGate


@dataclass
class HCAMConfig(MemoryConfig):
    """`hcam`: transformer core with one hierarchical chunk attention block per layer."""

    name: str = "hcam"
    dim: int = 128
    """Model width (token size in every layer); also the read size."""
    layers: int = 2
    """Number of layers (the paper's agent has 4)."""
    heads: int = 2
    """Heads of the within-chunk attention; must divide `dim`."""
    ff_dim: int = 256
    """Hidden width of each layer's position-wise MLP."""
    chunk_size: int = 16
    """Steps per chunk (C)."""
    num_chunks: int = 32
    """Chunks kept per layer (N); capacity = num_chunks * chunk_size steps, oldest chunk evicted."""
    top_k: int = 4
    """Chunks attended in detail per query (k); k >= num_chunks is full chunked attention."""
    position_encoding: bool = True
    """Add sinusoidal encodings of the position inside the chunk to the attended steps."""
    episode_mask: bool = True
    """With lifelong=true: never attend to steps of earlier episodes (no effect otherwise)."""
    gate_bias: float = 2.0
    """Initial update-gate bias of the GRU gates; > 0 starts layers near the identity map."""

    def __post_init__(self) -> None:
        _check_positive(self, "dim", "layers", "heads", "ff_dim", "chunk_size", "num_chunks", "top_k")
        if self.dim % self.heads:
            raise ValueError(f"memory option heads={self.heads}: must divide dim={self.dim}")


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """Transformer sine/cosine encodings of integer `positions [...]` -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1))
    angles = positions.float()[..., None] * freqs
    out = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        out = torch.cat([out, torch.zeros_like(out[..., :1])], dim=-1)
    return out


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values [..., C, D]` over C where `mask [..., C]`; zeros where nothing is valid."""
    weights = mask.to(values.dtype)
    return (values * weights[..., None]).sum(-2) / weights.sum(-1, keepdim=True).clamp(min=1.0)


class ChunkAttention(nn.Module):
    """The HCAM read: top-k chunks by summary match, detailed attention inside, relevance-weighted sum.

    `forward(query [B, D], chunks [B, N, C, D], valid [B, N, C], top_k, summaries=None)` returns
    (out [B, D], chunk_weights [B, N] (relevance, 0 off the top k), slot_weights [B, N, C]).
    `summaries [B, N, D]` are the chunk means (computed from `chunks` when not given; the memory
    keeps running sums so a step does not re-read every stored step). Stored steps and summaries
    are layer-normalised here, and only the k picked chunks are normalised and projected, which is
    where HCAM saves over full attention. The memory detaches what it stores (no gradient into it).
    """

    def __init__(self, dim: int, heads: int, chunk_size: int, position_encoding: bool = True):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.norm_memory = nn.LayerNorm(dim)
        # Summary matching: no biases, as in the release.
        self.summary_query = nn.Linear(dim, dim, bias=False)
        self.summary_key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("positions", sinusoid(torch.arange(chunk_size), dim) if position_encoding
                             else torch.zeros(chunk_size, dim), persistent=False)

    def chunk_logits(self, query: Tensor, summaries: Tensor, nonempty: Tensor) -> Tensor:
        """Match of the query with each chunk summary, [B, N]; -inf where `nonempty [B, N]` is false."""
        keys = self.summary_key(self.norm_memory(summaries))
        logits = torch.einsum("bd,bnd->bn", self.summary_query(query), keys) / math.sqrt(self.dim)
        return logits.masked_fill(~nonempty, float("-inf"))

    def attend_within(self, query: Tensor, chunks: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Multi-head attention of `query [B, D]` inside each of `chunks [B, K, C, D]` separately.

        Returns per-chunk outputs [B, K, D] and weights [B, K, C] (mean over heads; 0 in empty chunks).
        """
        batch, n_chunks, size, dim = chunks.shape
        q = self.query(query).view(batch, 1, self.heads, 1, self.head_dim)
        k, v = self.key_value(self.norm_memory(chunks) + self.positions[:size]).chunk(2, dim=-1)
        k = k.view(batch, n_chunks, size, self.heads, self.head_dim).transpose(2, 3)  # [B, K, H, C, hd]
        v = v.view(batch, n_chunks, size, self.heads, self.head_dim).transpose(2, 3)
        logits = (q * k).sum(-1) / math.sqrt(self.head_dim)  # [B, K, H, C]
        logits = logits.masked_fill(~valid[:, :, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # an empty chunk gives all -inf rows
        attended = (weights[..., None] * v).sum(-2).reshape(batch, n_chunks, dim)
        return self.out(attended), weights.mean(2)

    def forward(self, query: Tensor, chunks: Tensor, valid: Tensor, top_k: int,
                summaries: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        batch, n_chunks, size, dim = chunks.shape
        if summaries is None:
            summaries = masked_mean(chunks, valid)
        logits = self.chunk_logits(query, summaries, valid.any(-1))
        k = min(top_k, n_chunks)
        top_logits, top_index = logits.topk(k, dim=-1)  # [B, k]
        relevance = torch.softmax(top_logits, dim=-1).nan_to_num(0.0)
        picked = chunks.gather(1, top_index[:, :, None, None].expand(batch, k, size, dim))
        picked_valid = valid.gather(1, top_index[:, :, None].expand(batch, k, size))
        per_chunk, slot_weights = self.attend_within(query, picked, picked_valid)
        out = (relevance[..., None] * per_chunk).sum(1)
        # Under autocast, softmax is float32 while logits and slot weights may be bf16: size by the source.
        chunk_weights = torch.zeros_like(logits, dtype=relevance.dtype).scatter(1, top_index, relevance)
        weighted = relevance[..., None] * slot_weights
        slot_full = torch.zeros(batch, n_chunks, size, device=chunks.device, dtype=weighted.dtype)
        slot_full = slot_full.scatter(1, top_index[:, :, None].expand(batch, k, size), weighted)
        return out, chunk_weights, slot_full


def dense_chunk_attention(attention: ChunkAttention, query: Tensor, chunks: Tensor, valid: Tensor) -> Tensor:
    """Reference: every chunk attended in detail, weighted by softmax over all chunk logits (no top-k)."""
    logits = attention.chunk_logits(query, masked_mean(chunks, valid), valid.any(-1))
    relevance = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    per_chunk, _ = attention.attend_within(query, chunks, valid)
    return (relevance[..., None] * per_chunk).sum(1)


class HCAMLayer(nn.Module):
    """x <- gate(x, ReLU(HCAM(LN x))); x <- gate(x, ReLU(MLP(LN x)))."""

    def __init__(self, config: HCAMConfig):
        super().__init__()
        self.norm_read = nn.LayerNorm(config.dim)
        self.read = ChunkAttention(config.dim, config.heads, config.chunk_size, config.position_encoding)
        self.gate_read = GRUGate(config.dim, config.gate_bias)
        self.norm_mlp = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, config.ff_dim), nn.ReLU(), nn.Linear(config.ff_dim, config.dim))
        self.gate_mlp = GRUGate(config.dim, config.gate_bias)

    def forward(self, x: Tensor, chunks: Tensor, valid: Tensor, top_k: int,
                summaries: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        read, chunk_weights, slot_weights = self.read(self.norm_read(x), chunks, valid, top_k, summaries)
        x = self.gate_read(x, torch.relu(read))
        x = self.gate_mlp(x, torch.relu(self.mlp(self.norm_mlp(x))))
        return x, chunk_weights, slot_weights


@register_memory("hcam", config=HCAMConfig)
class HCAMMemory(Memory):
    def __init__(self, input_dim: int, config: HCAMConfig):
        super().__init__(input_dim, config)
        self.output_dim = config.dim
        self.chunk_size, self.num_chunks, self.top_k = config.chunk_size, config.num_chunks, config.top_k
        self.n_layers = config.layers
        self.episode_mask = bool(config.episode_mask)
        self.input_proj = nn.Linear(input_dim, config.dim)
        self.layers = nn.ModuleList(HCAMLayer(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.dim)
        self._last: dict[str, Tensor] = {}

    @property
    def capacity(self) -> int:
        return self.num_chunks * self.chunk_size

    def initial_state(self, batch: int, device=None) -> TensorDict:
        n, c = self.num_chunks, self.chunk_size
        long = dict(dtype=torch.long, device=device)
        return TensorDict(
            {
                "memory": torch.zeros(batch, self.n_layers, n, c, self.output_dim, device=device),
                "sums": torch.zeros(batch, self.n_layers, n, self.output_dim, device=device),
                "valid": torch.zeros(batch, n, c, dtype=torch.bool, device=device),
                "step": torch.full((batch, n, c), -1, **long),
                "episode": torch.zeros(batch, n, c, **long),
                "count": torch.zeros(batch, **long),
                "episode_step": torch.zeros(batch, **long),
                "episode_id": torch.zeros(batch, **long),
            },
            batch_size=[batch],
            device=device,
        )

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        feat = step["feat"]
        batch = feat.shape[0]
        n, c = self.num_chunks, self.chunk_size
        count, episode_step, episode_id = state.get("count"), state.get("episode_step"), state.get("episode_id")
        first = step.get("first", None)
        if first is not None and self.lifelong:
            # Lifelong rows keep their memory; a new episode only restarts the step counter.
            first = first.to(device=feat.device, dtype=torch.bool)
            episode_id = episode_id + first.long()
            episode_step = torch.where(first, torch.zeros_like(episode_step), episode_step)

        # Write slot of this step; a chunk being started is emptied first (evicts the oldest chunk).
        slot = count % (n * c)
        write = torch.nn.functional.one_hot(slot, n * c).bool().view(batch, n, c)
        starting = (slot % c == 0)[:, None] & write.any(-1)  # [B, N]
        valid = (state.get("valid") & ~starting[:, :, None]) | write
        slot_step = torch.where(write, episode_step[:, None, None], torch.where(valid, state.get("step"), -1))
        slot_episode = torch.where(write, episode_id[:, None, None], state.get("episode"))
        readable = valid & (slot_episode == episode_id[:, None, None]) if (self.lifelong and self.episode_mask) else valid

        # Chunk summaries = running sums of readable steps / their number.
        readable_count = readable.sum(-1, keepdim=True).clamp(min=1).to(feat.dtype)  # [B, N, 1]
        write_chunk = write.any(-1)  # [B, N]
        x = self.input_proj(feat)
        # One copy of the memory per step (the input state stays untouched), then in-place slot writes:
        # the copy, not the read, dominates a step's cost at long capacities.
        memory, sums = state.get("memory").clone(), state.get("sums")
        rows = torch.arange(batch, device=feat.device)
        new_sums, chunk_sel, slot_w = [], [], []
        for index, layer in enumerate(self.layers):
            stored = x.detach().to(memory.dtype)  # under autocast x may be bf16; the stored memory keeps its dtype
            memory[rows, index, slot // c, slot % c] = stored
            chunks = memory[:, index]
            chunk_sums = torch.where(starting[..., None], 0.0, sums[:, index]) + write_chunk[..., None] * stored[:, None, :]
            new_sums.append(chunk_sums)
            if self.lifelong and self.episode_mask:
                summaries = masked_mean(chunks, readable)  # chunks may mix episodes: sum readable steps only
            else:
                summaries = chunk_sums / readable_count
            x, chunk_weights, slot_weights = layer(x, chunks, readable, self.top_k, summaries)
            chunk_sel.append(chunk_weights > 0)
            slot_w.append(slot_weights)
        self._last = {
            "chunk_selected": torch.stack(chunk_sel).any(0).detach(),
            "weights": torch.stack(slot_w).mean(0).detach().reshape(batch, n * c),
        }
        new_state = TensorDict(
            {
                "memory": memory,
                "sums": torch.stack(new_sums, dim=1),
                "valid": valid,
                "step": slot_step,
                "episode": slot_episode,
                "count": count + 1,
                "episode_step": episode_step + 1,
                "episode_id": episode_id,
            },
            batch_size=state.batch_size,
            device=state.device,
        )
        return self.norm_out(x), new_state

    def forward_sequence(self, steps, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """Sequence of steps; equals stepping one by one.

        When every row starts empty (fresh state or `first` at step 0), nothing resets later, the
        memory is not lifelong and the sequence fits in the capacity, all T queries are answered
        at once (step t sees slots 0..t): ~T times fewer kernel launches and no per-step memory copy.
        Otherwise it falls back to stepping.
        """
        self._check_step(steps, sequence=True)
        feat = steps["feat"]
        length, batch = feat.shape[:2]
        first = steps.get("first", None)
        fresh = state.get("count") == 0
        if first is not None:
            fresh = fresh | first[0].to(device=fresh.device, dtype=torch.bool)
        later_reset = first is not None and length > 1 and bool(first[1:].any())
        if self.lifelong or later_reset or length > self.capacity or length == 0 or not bool(fresh.all()):
            return super().forward_sequence(steps, state)
        return self._parallel_sequence(feat)

    def _parallel_sequence(self, feat: Tensor) -> tuple[Tensor, TensorDict]:
        length, batch, _ = feat.shape
        n, c, device = self.num_chunks, self.chunk_size, feat.device
        t = torch.arange(length, device=device)
        chunk_of_t, position_of_t = t // c, t % c
        slot_index = torch.arange(n * c, device=device).view(n, c)
        readable = slot_index[None] <= t[:, None, None]  # [T, N, C]: step t sees slots 0..t
        nonempty = torch.arange(n, device=device)[None] <= chunk_of_t[:, None]  # [T, N]
        earlier = torch.arange(n, device=device)[None] < chunk_of_t[:, None]  # [T, N] full chunks
        x = self.input_proj(feat)  # [T, B, D]
        dim = x.shape[-1]
        memories, final_sums, chunk_sel, slot_w = [], [], [], []
        for layer in self.layers:
            attention: ChunkAttention = layer.read
            # [B, T, D], slot s = step s; kept in the parameters' dtype (x is bf16 under autocast), as step() stores it
            stored = x.detach().transpose(0, 1).to(self.input_proj.weight.dtype)
            memory = torch.zeros(batch, n * c, dim, device=device, dtype=stored.dtype)
            memory[:, :length] = stored
            memory = memory.view(batch, n, c, dim)
            memories.append(memory)
            running = memory.cumsum(2)  # running sum of each chunk, slot by slot
            final_sums.append(running[:, :, -1])
            # Summary of chunk m seen at step t: full mean if m < chunk(t), running mean if m == chunk(t).
            current = running.view(batch, n * c, dim)[:, :length] / (position_of_t + 1).to(x.dtype)[None, :, None]
            summaries = torch.where(earlier[:, None, :, None], (running[:, :, -1] / c)[None], 0.0)  # [T, B, N, D]
            summaries = summaries.clone()
            summaries[t, :, chunk_of_t] = current.transpose(0, 1)
            query = layer.norm_read(x)  # [T, B, D]
            keys = attention.summary_key(attention.norm_memory(summaries))
            logits = torch.einsum("tbd,tbnd->tbn", attention.summary_query(query), keys) / math.sqrt(dim)
            logits = logits.masked_fill(~nonempty[:, None, :], float("-inf"))
            k = min(self.top_k, n)
            top_logits, top_index = logits.topk(k, dim=-1)
            top_relevance = torch.softmax(top_logits, dim=-1).nan_to_num(0.0)
            relevance = torch.zeros_like(logits, dtype=top_relevance.dtype).scatter(-1, top_index, top_relevance)
            # Detailed attention inside every chunk (cheap here); chunks off the top k get relevance 0.
            heads, head_dim = attention.heads, attention.head_dim
            q = attention.query(query).view(length, batch, heads, head_dim)
            kv = attention.key_value(attention.norm_memory(memory) + attention.positions[:c])
            k_mem, v_mem = (part.reshape(batch, n, c, heads, head_dim).transpose(2, 3) for part in kv.chunk(2, dim=-1))
            slot_logits = torch.einsum("tbhd,bnhcd->tbnhc", q, k_mem) / math.sqrt(head_dim)
            slot_logits = slot_logits.masked_fill(~readable[:, None, :, None, :], float("-inf"))
            weights = torch.softmax(slot_logits, dim=-1).nan_to_num(0.0)
            attended = torch.einsum("tbnhc,bnhcd->tbnhd", weights, v_mem).reshape(length, batch, n, dim)
            read = (relevance[..., None] * attention.out(attended)).sum(2)
            x = layer.gate_read(x, torch.relu(read))
            x = layer.gate_mlp(x, torch.relu(layer.mlp(layer.norm_mlp(x))))
            chunk_sel.append(relevance[-1] > 0)
            slot_w.append(relevance[-1][..., None] * weights[-1].mean(2))
        self._last = {
            "chunk_selected": torch.stack(chunk_sel).any(0).detach(),
            "weights": torch.stack(slot_w).mean(0).detach().reshape(batch, n * c),
        }
        written = (slot_index < length)[None].expand(batch, n, c)
        long = dict(dtype=torch.long, device=device)
        state = TensorDict(
            {
                "memory": torch.stack(memories, dim=1),
                "sums": torch.stack(final_sums, dim=1),
                "valid": written.clone(),
                "step": torch.where(written, slot_index[None], -1),
                "episode": torch.zeros(batch, n, c, **long),
                "count": torch.full((batch,), length, **long),
                "episode_step": torch.full((batch,), length, **long),
                "episode_id": torch.zeros(batch, **long),
            },
            batch_size=[batch],
            device=device,
        )
        return self.norm_out(x), state

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """weights / slot_step over the N*C slots (chunk-major) and chunk_selected [B, N] of the last step."""
        batch = state.batch_size[0]
        out = {"slot_step": state.get("step").reshape(batch, -1)}
        if self._last and self._last["weights"].shape[0] == batch:
            out.update(self._last)
        else:
            out["weights"] = torch.zeros(batch, self.capacity, device=state.device)
            out["chunk_selected"] = torch.zeros(batch, self.num_chunks, dtype=torch.bool, device=state.device)
        return out
