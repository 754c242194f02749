"""Dual-coding episodic memory, DCEM (Hill et al., "Grounded Language Learning Fast and Slow", ICLR 2021).

Every step writes one row of an episodic key-value store with two columns: the step's visual
embedding and its language embedding (`step["visual"]`, `step["text"]`), kept apart instead of
fused. Reads happen before the write:

1. for each key modality (`key_by`: visual, text or both) the current step's embedding of that
   modality, projected and normalised (plus, with `state_query`, a projection of the controller
   state), is compared by cosine similarity with the same column of every stored row; text-keyed
   lookups skip rows (and steps) where nothing was written (an all-zero language embedding);
2. the top-k rows (k > 1) are retrieved; each row's value is a projection of BOTH its columns,
   weighted by the softmax of the k similarities (m_j = s_j * v_j);
3. self-attention over the 2k (or k) weighted memories plus a learned null token (so an empty
   memory reads something), summed into the read vector r_t;
4. an LSTM controller takes [r_t, x_t] (x_t = the fused step feature) and its state; the memory's
   read (to the policy and value heads) is ReLU(Linear([x_t, r_t, h_t])) - a skip around the
   controller (our addition) so reactive behaviour does not have to pass through the LSTM.

Stored embeddings are detached by default (`detach_writes`), as HCAM stop-gradients its memory.
State: a fixed-capacity ring buffer in a TensorDict (`visual [B,S,Dv]`, `text [B,S,Dt]`,
`slot_step`, `valid`, write position, step counter, controller h and c).
`intrinsic_reward` is the memory-based novelty signal for seeking names (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory
from embodied.memory.config import MemoryConfig, _check_positive

KEY_MODALITIES = ("visual", "text", "both")
TIE_BREAK = 1e-3  # total age penalty over a full buffer; far below real score differences


def _said(text: Tensor) -> Tensor:
    """Rows whose language embedding is not all zero (the agent's text encoder gives exactly zero
    when nothing is written): only those take part in text-keyed lookups."""
    return text.abs().sum(-1) > 0


@dataclass
class DCEMConfig(MemoryConfig):
    """`dcem`: dual-coding episodic memory (visual and language columns, top-k reads keyed on either)."""

    name: str = "dcem"
    capacity: int = 128
    """Rows kept (one per step; each row holds a visual and a language column). Oldest overwritten."""
    key_dim: int = 64
    """Width of keys, queries and retrieved values."""
    top_k: int = 4
    """Rows retrieved per key modality (k > 1 matters, Hill et al.)."""
    heads: int = 2
    """Heads of the self-attention over retrieved rows; must divide key_dim."""
    hidden: int = 256
    """LSTM controller size; also the read size."""
    key_by: str = "both"
    """Which column keys the lookup: visual, text, or both (two lookups, 2k rows)."""
    visual_dim: int = 0
    """Size of step['visual']; 0 = set by the agent from its encoder (no image: the fused feat)."""
    text_dim: int = 0
    """Size of step['text']; 0 = set by the agent (a task without text: the language column is empty)."""
    temperature: float = 10.0
    """Initial inverse temperature of the cosine scores (learned from there). The keys of
    "this is a <name>" rows share most of their words, so their cosines differ little; a larger
    start lets the name decide the top-k weights before training has shaped the projections."""
    detach_writes: bool = True
    """Store embeddings without gradient (no backpropagation into past writes)."""
    read_retrieved: bool = False
    """Append to the read the visual column retrieved by the language-keyed lookup (its top-k rows
    weighted by their softmax weights; the visual-keyed lookup's with key_by=visual): the look the
    memory recalls for a name, unmixed, for a readout that compares it with what is in view (agent
    option match_readout). Our addition; the paper's reads go through its core only."""
    skip_repeated_text: bool = False
    """Language-keyed lookups skip rows whose language embedding equals the current one (cosine
    > 1 - 1e-5): they recall what was seen with other words, not the steps in which the same
    sentence was already being read. Without it, from the second step of "lift the dax" on, the
    earlier "lift the dax" rows match exactly and push "this is a dax" out of the top-k. Our
    choice; the paper does not say. Off by default (an exact key then finds its own rows)."""
    state_query: bool = False
    """Add a projection of the controller state to each query (the paper's query from the controller).
    Off by default: reads are then keyed on the current step's embeddings alone, which lets training
    run all lookups of a sequence in parallel (several times faster); on, sequences are stepped."""

    def __post_init__(self) -> None:
        _check_positive(self, "capacity", "key_dim", "top_k", "heads", "hidden")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not 0 < self.temperature < 1e4:
            raise ValueError(f"memory option temperature={self.temperature!r}: must be a number in (0, 1e4)")
        if self.key_by not in KEY_MODALITIES:
            raise ValueError(f"memory option key_by={self.key_by!r}; allowed: {', '.join(KEY_MODALITIES)}")
        if self.key_dim % self.heads:
            raise ValueError(f"memory option heads={self.heads}: must divide key_dim={self.key_dim}")
        for key in ("visual_dim", "text_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"memory option {key}={value!r}: must be an integer >= 0")


@register_memory("dcem", DCEMConfig)
class DualCodingEpisodicMemory(Memory):
    def __init__(self, input_dim: int, config: DCEMConfig):
        super().__init__(input_dim, config)
        c = config
        self.capacity, self.top_k = c.capacity, min(c.top_k, c.capacity)
        self.visual_dim = c.visual_dim or input_dim
        self.has_text = c.text_dim > 0
        self.text_dim = c.text_dim or 1
        self.modalities = ("visual", "text") if c.key_by == "both" else (c.key_by,)
        if not self.has_text:
            self.modalities = ("visual",)  # nothing to key on in an empty language column
        # Which lookup's visual rows `read_retrieved` appends: the cross-modal (name -> look) one.
        self.retrieved_from = self.modalities.index("text") if "text" in self.modalities else 0
        self.retrieved_visual_dim = self.visual_dim if c.read_retrieved else 0
        self.output_dim = c.hidden + self.retrieved_visual_dim
        k = c.key_dim
        dims = {"visual": self.visual_dim, "text": self.text_dim}
        # Content keys: one projection per column, applied to the stored and the current embedding.
        self.key_proj = nn.ModuleDict({m: nn.Linear(dims[m], k, bias=False) for m in ("visual", "text")})
        # Controller queries (state_query) start at zero, so reads start as pure content addressing.
        self.query_from_state = nn.ModuleDict({m: nn.Linear(c.hidden, k, bias=False) for m in ("visual", "text")})
        for layer in self.query_from_state.values():
            nn.init.zeros_(layer.weight)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(float(c.temperature))))
        self.value_proj = nn.Linear(self.visual_dim + self.text_dim, k)
        self.modality_embedding = nn.Embedding(2, k)
        self.null_token = nn.Parameter(torch.zeros(1, 1, k))
        self.attention = nn.MultiheadAttention(k, c.heads, batch_first=True)
        self.norm = nn.LayerNorm(k)
        self.controller = nn.LSTMCell(input_dim + k, c.hidden)
        # Output skip: the heads see the step feature and the read next to the controller state, so
        # reactive behaviour (walking, lifting) trains as fast as without memory.
        self.output = nn.Sequential(nn.Linear(input_dim + k + c.hidden, c.hidden), nn.ReLU())
        self._last_weights: Tensor | None = None

    # --- state -------------------------------------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str | None = None) -> TensorDict:
        s, h = self.capacity, self.config.hidden
        return TensorDict({
            "visual": torch.zeros(batch, s, self.visual_dim, device=device),
            "text": torch.zeros(batch, s, self.text_dim, device=device),
            "slot_step": torch.full((batch, s), -1, dtype=torch.long, device=device),
            "valid": torch.zeros(batch, s, dtype=torch.bool, device=device),
            "position": torch.zeros(batch, dtype=torch.long, device=device),
            "step": torch.zeros(batch, dtype=torch.long, device=device),
            "h": torch.zeros(batch, h, device=device),
            "c": torch.zeros(batch, h, device=device),
        }, batch_size=[batch], device=device)

    # --- step -----------------------------------------------------------------------------------------------
    def _columns(self, step: Step) -> dict[str, Tensor]:
        feat = step["feat"]
        visual = step.get("visual", None)
        if visual is None:
            visual = feat
        if visual.shape[-1] != self.visual_dim:
            raise ValueError(f"dcem step visual has size {visual.shape[-1]}; expected visual_dim={self.visual_dim}")
        if self.has_text:
            text = step.get("text", None)
            if text is None:
                raise ValueError("dcem was built with text_dim > 0 but the step has no 'text'")
            if text.shape[-1] != self.text_dim:
                raise ValueError(f"dcem step text has size {text.shape[-1]}; expected text_dim={self.text_dim}")
        else:
            text = feat.new_zeros(feat.shape[:-1] + (1,))
        return {"visual": visual.float(), "text": text.float()}

    def _scores(self, m: str, query_in: Tensor, keys_in: Tensor, h: Tensor | None) -> Tensor:
        """Cosine similarity x temperature between queries [..., Q, d] and stored rows [..., R, d]."""
        query = self.key_proj[m](query_in)
        if h is not None:
            query = query + self.query_from_state[m](h)
        keys = self.key_proj[m](keys_in)
        return torch.einsum("...qk,...rk->...qr", F.normalize(query, dim=-1), F.normalize(keys, dim=-1)) * self.log_temperature.exp()

    def _top_k(self, scores: Tensor, valid: Tensor, age: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k rows of `scores` [..., R] among `valid` ones; ties go to the most recent row (a tiny
        age penalty), so stepping and the parallel sequence path pick the same rows."""
        scores = scores - (TIE_BREAK / self.capacity) * age.to(scores.dtype)
        scores = scores.masked_fill(~valid, float("-inf"))
        top, index = scores.topk(self.top_k, dim=-1)
        present = torch.isfinite(top)
        weights = torch.softmax(top.masked_fill(~present, -1e9), dim=-1) * present
        return index, weights

    def lookup(self, state: TensorDict, current: dict[str, Tensor], h: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Top-k rows per key modality: {modality: (row indices [B,k], softmax weights [B,k])}.
        Empty rows get weight 0 (their indices are arbitrary)."""
        age = state["step"][:, None] - state["slot_step"]
        out = {}
        for m in self.modalities:
            scores = self._scores(m, current[m][:, None], state[m], h if self.config.state_query else None)[:, 0]
            valid = state["valid"]
            if m == "text":
                valid = valid & self._text_lookup_rows(current["text"][:, None], state["text"])[:, 0]
            out[m] = self._top_k(scores, valid, age)
        return out

    def _read(self, picked: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Retrieved rows per key modality ([N, k, Dv+Dt] rows, [N, k] weights) -> weighted values ->
        self-attention over them and the null token -> read vector [N, key_dim]."""
        n = picked[0][0].shape[0]
        device = picked[0][0].device
        tokens = [self.null_token.expand(n, 1, -1)]
        masks = [torch.ones(n, 1, dtype=torch.bool, device=device)]
        for i, (rows, weights) in enumerate(picked):
            values = self.value_proj(rows) + self.modality_embedding.weight[i]
            tokens.append(values * weights[..., None].to(values.dtype))
            masks.append(weights > 0)
        tokens_t, mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        attended, _ = self.attention(tokens_t, tokens_t, tokens_t, key_padding_mask=~mask, need_weights=False)
        mixed = self.norm(tokens_t + attended) * mask[..., None]
        return mixed.sum(dim=1)

    def _text_lookup_rows(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Which stored rows [B, R, D] a language-keyed lookup may use for each query [B, Q, D] ->
        [B, Q, R]: both said something and, with `skip_repeated_text`, not the same sentence."""
        ok = _said(queries)[..., None] & _said(keys)[:, None, :]
        if self.config.skip_repeated_text:
            same = torch.einsum("bqd,brd->bqr", F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)) > 1 - 1e-5
            ok = ok & ~same
        return ok

    def _retrieved_visual(self, rows: Tensor, weights: Tensor) -> Tensor:
        """Retrieved rows [N, k, Dv+Dt] and their weights [N, k] -> weighted visual column [N, Dv]
        (zero when nothing was retrieved)."""
        return (rows[..., :self.visual_dim] * weights[..., None].to(rows.dtype)).sum(dim=1)

    @staticmethod
    def _gather_rows(rows: Tensor, index: Tensor) -> Tensor:
        """rows [B, R, D], index [B, ...] -> [B, ..., D]."""
        flat = index.reshape(index.shape[0], -1)
        out = torch.gather(rows, 1, flat[..., None].expand(-1, -1, rows.shape[-1]))
        return out.reshape(index.shape + (rows.shape[-1],))

    def _write(self, state: TensorDict, current: dict[str, Tensor], h: Tensor, c: Tensor) -> TensorDict:
        """The state after writing the step's two columns into the ring buffer."""
        position = state["position"]
        slot = F.one_hot(position, self.capacity).bool()  # [B,S]
        write = {k: (v.detach() if self.config.detach_writes else v) for k, v in current.items()}
        new = state.clone(recurse=False)
        for column in ("visual", "text"):
            new[column] = torch.where(slot[..., None], write[column][:, None].to(state[column].dtype), state[column])
        new["slot_step"] = torch.where(slot, state["step"][:, None], state["slot_step"])
        new["valid"] = state["valid"] | slot
        new["position"] = (position + 1) % self.capacity
        new["step"] = state["step"] + 1
        new["h"], new["c"] = h.to(state["h"].dtype), c.to(state["c"].dtype)  # autocast may hand back bf16
        return new

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        feat = step["feat"]
        current = self._columns(step)
        h, c = state["h"], state["c"]
        found = self.lookup(state, current, h)
        rows = torch.cat([state["visual"], state["text"]], dim=-1)  # [B,S,Dv+Dt]
        read_vector = self._read([(self._gather_rows(rows, found[m][0]), found[m][1]) for m in self.modalities])
        weights_over_slots = torch.zeros(feat.shape[0], 2 * self.capacity, device=feat.device)
        for m in self.modalities:
            index, weights = found[m]
            column = 0 if m == "visual" else 1
            weights_over_slots.scatter_add_(1, index + column * self.capacity, weights.detach().float() / len(self.modalities))
        self._last_weights = weights_over_slots
        h, c = self.controller(torch.cat([feat, read_vector.to(feat.dtype)], dim=-1), (h, c))
        out = self.output(torch.cat([feat, read_vector.to(feat.dtype), h.to(feat.dtype)], dim=-1))
        if self.retrieved_visual_dim:
            m = self.modalities[self.retrieved_from]
            out = torch.cat([out, self._retrieved_visual(self._gather_rows(rows, found[m][0]), found[m][1]).to(out.dtype)], dim=-1)
        # Written after reading: a step never retrieves itself.
        return out, self._write(state, current, h, c)

    def forward_sequence(self, steps: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """[T, B] steps; equals stepping. Without `state_query` every lookup depends only on the
        inputs (stored rows are the earlier steps' embeddings), so all T lookups, reads and
        attentions run at once; only the LSTM controller and the ring-buffer writes loop over time."""
        if self.config.state_query:
            return super().forward_sequence(steps, state)
        self._check_step(steps, sequence=True)
        feat = steps["feat"]
        T, B = feat.shape[:2]
        device = feat.device
        current = self._columns(steps)  # [T,B,D*]
        first = steps.get("first", None)
        reset = torch.zeros(T, B, dtype=torch.bool, device=device) if first is None else first.to(device, torch.bool)
        if self.lifelong:
            reset = torch.zeros_like(reset)
        t_index = torch.arange(T, device=device)
        # Index of the last reset at or before t (-1: none); [B, T]
        last_reset = torch.cummax(torch.where(reset, t_index[:, None], -1), dim=0).values.T
        fresh = last_reset < 0  # the initial state's rows are still there
        # Step counter at each t (what `state["step"]` would read) and candidate rows' ages.
        counter = torch.where(fresh, state["step"][:, None] + t_index, t_index - last_reset)  # [B,T]
        tq, tk = t_index[:, None], t_index[None, :]
        seq_valid = (tk < tq)[None] & (tk[None] >= last_reset[..., None]) & ((tq - tk) <= self.capacity)[None]  # [B,T,T]
        seq_age = (tq - tk).expand(B, T, T)
        offset = (torch.arange(self.capacity, device=device)[None] - state["position"][:, None]) % self.capacity  # [B,C]
        init_valid = state["valid"][:, None] & fresh[..., None] & (offset[:, None] >= t_index[None, :, None])  # [B,T,C]
        init_age = counter[..., None] - state["slot_step"][:, None]
        valid = torch.cat([init_valid, seq_valid], dim=-1)  # [B,T,C+T]
        age = torch.cat([init_age, seq_age], dim=-1)
        stored = {k: (v.detach() if self.config.detach_writes else v).transpose(0, 1) for k, v in current.items()}  # [B,T,D]
        rows = torch.cat([torch.cat([state["visual"], state["text"]], dim=-1).to(stored["visual"].dtype),
                          torch.cat([stored["visual"], stored["text"]], dim=-1)], dim=1)  # [B,C+T,D]
        picked = []
        for m in self.modalities:
            keys = torch.cat([state[m].to(stored[m].dtype), stored[m]], dim=1)  # [B,C+T,D]
            scores = self._scores(m, current[m].transpose(0, 1), keys, None)  # [B,T,C+T]
            ok = valid
            if m == "text":
                ok = valid & self._text_lookup_rows(current["text"].transpose(0, 1), keys)
            index, weights = self._top_k(scores, ok, age)  # [B,T,k]
            picked.append((self._gather_rows(rows, index).reshape(B * T, self.top_k, -1), weights.reshape(B * T, -1)))
        read_vectors = self._read(picked).reshape(B, T, -1).transpose(0, 1)  # [T,B,key_dim]
        h, c = state["h"], state["c"]
        reads = []
        for t in range(T):
            keep = (~reset[t])[:, None]
            h, c = self.controller(torch.cat([feat[t], read_vectors[t].to(feat.dtype)], dim=-1), (h * keep, c * keep))
            reads.append(h)
        hs = torch.stack(reads).to(feat.dtype)
        outs = self.output(torch.cat([feat, read_vectors.to(feat.dtype), hs], dim=-1))
        if self.retrieved_visual_dim:
            retrieved = self._retrieved_visual(*picked[self.retrieved_from]).reshape(B, T, -1).transpose(0, 1)
            outs = torch.cat([outs, retrieved.to(outs.dtype)], dim=-1)
        state = self._final_state(state, current, last_reset[:, -1], counter[:, -1], h, c)
        self._last_weights = None
        return outs, state

    def _final_state(self, state: TensorDict, current: dict[str, Tensor], last_reset: Tensor, last_counter: Tensor,
                     h: Tensor, c: Tensor) -> TensorDict:
        """The ring buffer after writing all T steps (the writes of `_write`, in closed form): after
        the last reset (or from the start) n steps were written from position p on; slot s holds the
        latest of them that landed on it, else what it held before (nothing, after a reset)."""
        T = current["visual"].shape[0]
        C = self.capacity
        device = last_reset.device
        was_reset = last_reset >= 0
        start = last_reset.clamp(min=0)  # [B]
        n = T - start
        p = torch.where(was_reset, torch.zeros_like(start), state["position"])
        offset = (torch.arange(C, device=device)[None] - p[:, None]) % C  # [B,C]
        written = offset < n[:, None]
        t_last = start[:, None] + offset + C * ((n[:, None] - 1 - offset).clamp(min=0) // C)  # [B,C]
        t_last = torch.where(written, t_last, torch.zeros_like(t_last))
        new = state.clone(recurse=False)
        for column in ("visual", "text"):
            values = current[column].detach() if self.config.detach_writes else current[column]
            values = values.transpose(0, 1)  # [B,T,D]
            landed = self._gather_rows(values, t_last).to(state[column].dtype)
            before = torch.where(was_reset[:, None, None], torch.zeros_like(state[column]), state[column])
            new[column] = torch.where(written[..., None], landed, before)
        # Step counter at step t is last_counter - (T - 1 - t).
        slot_step = last_counter[:, None] - (T - 1 - t_last)
        before_step = torch.where(was_reset[:, None], torch.full_like(state["slot_step"], -1), state["slot_step"])
        new["slot_step"] = torch.where(written, slot_step, before_step)
        new["valid"] = written | (state["valid"] & ~was_reset[:, None])
        new["position"] = (p + n) % C
        new["step"] = last_counter + 1
        new["h"], new["c"] = h.to(state["h"].dtype), c.to(state["c"].dtype)
        return new

    # --- viewer and intrinsic motivation -----------------------------------------------------------------
    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """Slots are the visual column of every row (0..S-1) then the language column (S..2S-1)."""
        if self._last_weights is None or self._last_weights.shape[0] != state.batch_size[0]:
            raise ValueError("dcem.introspect: call forward first (with the same batch)")
        slot_step = state["slot_step"].masked_fill(~state["valid"], -1)
        modality = torch.cat([torch.zeros_like(slot_step), torch.ones_like(slot_step)], dim=1)
        return {"weights": self._last_weights, "slot_step": torch.cat([slot_step, slot_step], dim=1),
                "slot_modality": modality}

    def intrinsic_reward(self, step: Step, state: TensorDict) -> Tensor:
        """Novelty of the step's language embedding against the language column of `state` [B]:
        1 - max cosine similarity to a stored row, 0 when the text is empty (all-zero embedding) or
        the memory has no text column. Paid when the agent obtains a name it has not seen yet this
        episode, it rewards seeking names (Hill et al. Sec. 4.2; the paper's exact formula is not
        public, this is our choice). Call it with the state from before the step's write."""
        if not self.has_text:
            return step["feat"].new_zeros(step["feat"].shape[0])
        text = self._columns(step)["text"].detach()
        present = text.abs().sum(-1) > 0
        sims = torch.einsum("bd,bsd->bs", F.normalize(text, dim=-1), F.normalize(state["text"].float(), dim=-1))
        sims = sims.masked_fill(~state["valid"], -1.0)
        best = sims.max(dim=-1).values.clamp(min=0.0)
        # Clamped: an identical row gives cosine 1 +- rounding, and novelty must never be negative.
        return torch.where(present, (1.0 - best).clamp(min=0.0), torch.zeros_like(best))
