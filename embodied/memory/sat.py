"""`sat`: Spatially-Aware Transformer memory (Cho, Yoon, Ahn; ICLR 2024).

Mechanisms kept from the paper's released code (`junmokane/spatially-aware-transformer`, per our
notes in shared/reference/3dmem-sat-optimus.md (b)):
1. Place embedding: a sinusoidal embedding of the place id is added to every memory token, on top
   of a sinusoidal time embedding (SAT vs a plain transformer: `place_embedding=false`).
2. A fixed memory budget (`capacity` tokens) and a write strategy that decides what is evicted once
   it is full: `fifo` (evict the oldest: keep the most recent), `lifo` (evict the newest stored:
   keep the oldest), `mvfo` (evict the oldest token of the most-visited place), `lvfo` (evict the
   oldest token of the least-visited place). As in the released code's `sfu()`
   (ballet_dataset/ballet_environment_v2.py), a place's "visits" are the tokens of that place the
   memory holds now (its count drops on eviction), among places holding at least one; ties go to
   the lowest place id (numpy argmax/argmin there). So mvfo balances memory across places and lvfo
   empties the rarest places first.
3. Hierarchical read (HCAM's): summaries of groups of tokens, top-k groups, attention inside them,
   relevance-weighted sum. `place_major=false` groups tokens into temporal chunks of `chunk_size`
   consecutive stored steps (SAT-FIFO-TH); `place_major=true` makes one group per place (SAT-PM-PH:
   "pick places, then attend inside"). The paper pads each place to a multiple of the chunk size,
   so a big place can span several chunks; here a place is always exactly one group.
4. Adaptive Memory Allocator (`strategy=ama`): an epsilon-greedy contextual bandit (Q-network over
   the four strategies given the task context) picks each episode's strategy at its first step;
   it is trained with `outcome_loss(state, reward)`, reward = minus the downstream loss of that
   episode (the code uses -CE and adds 0.1 * MSE to the task loss; the imitation loss
   `counterfactual` calls it). The context is the one-hot `task` id when the step carries
   `task [B]` (the agent passes an observation's `task` key through, as Room Ballet's `multi`
   levels give it: the paper's task id), else the (detached) `text` embedding of the first step.
   Trainers that do not call `outcome_loss` leave the bandit untrained.

Places come from the step's `place [B]` (room ids in our worlds). Without it, a `pose` is mapped to
a grid cell of `place_cell` metres hashed into `num_places` ids (the paper's FFHQ setting uses
k-means over positions instead; a grid is the deterministic, online stand-in).

State (fixed capacity S = `capacity`): memory [B, layers, S, D] (layer inputs, detached),
valid [B, S], step [B, S] (-1 empty), place [B, S] (-1 empty), visits [B, P] (steps spent in each place this
episode; bookkeeping for viewers, not used by the strategies), episode_step [B],
arm [B] (strategy index per row), context [B, context_dim].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory, step_at
from embodied.memory.config import MemoryConfig, _check_positive
from embodied.memory.gtrxl import GRUGate
from embodied.memory.hcam import sinusoid

STRATEGIES = ("fifo", "lifo", "mvfo", "lvfo")


@dataclass
class SATConfig(MemoryConfig):
    """`sat`: transformer core reading a fixed-budget, place-embedded memory hierarchically."""

    name: str = "sat"
    dim: int = 128
    """Model width (token size in every layer); also the read size."""
    layers: int = 2
    """Number of layers (the paper uses 4)."""
    heads: int = 2
    """Attention heads inside a group; must divide `dim`."""
    ff_dim: int = 256
    """Hidden width of each layer's position-wise MLP."""
    capacity: int = 128
    """Memory budget in tokens (steps); the write strategy decides what is evicted beyond it."""
    strategy: str = "fifo"
    """Write strategy: fifo, lifo, mvfo, lvfo, or ama (a bandit picks one of the four per episode)."""
    place_major: bool = False
    """Group memory by place (one group per place) instead of temporal chunks of `chunk_size`."""
    chunk_size: int = 16
    """Tokens per temporal chunk when place_major=false."""
    top_k: int = 4
    """Groups (chunks or places) attended in detail per query."""
    num_places: int = 32
    """Place ids are 0..num_places-1."""
    place_embedding: bool = True
    """Add the sinusoidal place embedding to memory tokens (false = a plain transformer memory)."""
    place_cell: float = 2.0
    """Grid cell size (metres) that turns a pose into a place when steps carry no `place`."""
    num_tasks: int = 4
    """AMA: task ids 0..num_tasks-1 when steps carry `task`."""
    context_dim: int = 64
    """AMA: size of the text embedding used as context when steps carry no `task`."""
    ama_hidden: int = 64
    """AMA: hidden width of the Q-network."""
    epsilon_start: float = 1.0
    """AMA: exploration rate at the first episode (training mode only; greedy in eval mode)."""
    epsilon_end: float = 0.2
    """AMA: exploration rate after `epsilon_episodes` choices."""
    epsilon_episodes: int = 20000
    """AMA: episodes (rows) over which epsilon decays linearly (the code: 200k steps)."""
    ama_loss_weight: float = 0.1
    """AMA: weight of the bandit's MSE in `outcome_loss` (the released code adds 0.1 x MSE)."""
    gate_bias: float = 2.0
    """Initial update-gate bias of the GRU gates."""

    def __post_init__(self) -> None:
        _check_positive(self, "dim", "layers", "heads", "ff_dim", "capacity", "chunk_size", "top_k", "num_places",
                        "num_tasks", "context_dim", "ama_hidden", "epsilon_episodes")
        if self.dim % self.heads:
            raise ValueError(f"memory option heads={self.heads}: must divide dim={self.dim}")
        if self.strategy not in STRATEGIES + ("ama",):
            raise ValueError(f"memory option strategy={self.strategy!r}; allowed: {', '.join(STRATEGIES + ('ama',))}")
        for key in ("epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"memory option {key}={getattr(self, key)!r}: must be in [0, 1]")
        if not self.ama_loss_weight >= 0:
            raise ValueError(f"memory option ama_loss_weight={self.ama_loss_weight!r}: must be >= 0")
        if not self.place_cell > 0:
            raise ValueError(f"memory option place_cell={self.place_cell!r}: must be > 0")


class AdaptiveMemoryAllocator(nn.Module):
    """Epsilon-greedy contextual bandit: Q(context) over `arms`, trained by MSE to observed rewards."""

    def __init__(self, context_dim: int, arms: int, hidden: int = 64, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.2, epsilon_episodes: int = 20000):
        super().__init__()
        self.arms = arms
        self.epsilon_start, self.epsilon_end, self.epsilon_episodes = epsilon_start, epsilon_end, epsilon_episodes
        self.q = nn.Sequential(nn.Linear(context_dim, hidden), nn.ReLU(), nn.Linear(hidden, arms))
        self.register_buffer("choices", torch.zeros((), dtype=torch.long))

    def epsilon(self) -> float:
        frac = min(1.0, float(self.choices) / self.epsilon_episodes)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def choose(self, context: Tensor, new: Tensor | None = None) -> Tensor:
        """Arms [B] for contexts [B, C]: greedy in eval mode, epsilon-greedy in training mode.
        `new` [B] bool marks the rows whose arm is used (episode starts); only those count
        towards the epsilon schedule (default: all rows)."""
        with torch.no_grad():
            greedy = self.q(context).argmax(-1)
            if not self.training:
                return greedy
            explore = torch.rand(context.shape[0], device=context.device) < self.epsilon()
            random_arm = torch.randint(0, self.arms, (context.shape[0],), device=context.device)
            self.choices += context.shape[0] if new is None else new.sum()
            return torch.where(explore, random_arm, greedy)

    def loss(self, context: Tensor, arm: Tensor, reward: Tensor) -> Tensor:
        """MSE between Q(context, arm) and the (detached) reward."""
        value = self.q(context.detach()).gather(-1, arm.long()[:, None]).squeeze(-1)
        return torch.mean((value - reward.detach().float()) ** 2)


class GroupAttention(nn.Module):
    """Hierarchical read over groups of slots: top-k groups by mean match, attention inside each.

    `forward(query [B, D], tokens [B, S, D], group [B, S] long, valid [B, S], n_groups, top_k)`
    returns (out [B, D], slot_weights [B, S], group_weights [B, G]).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.summary_query = nn.Linear(dim, dim, bias=False)
        self.summary_key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: Tensor, tokens: Tensor, group: Tensor, valid: Tensor, n_groups: int,
                top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        batch, slots, dim = tokens.shape
        member = (group[:, None, :] == torch.arange(n_groups, device=tokens.device)[None, :, None]) & valid[:, None, :]
        summaries = (member.float() @ tokens) / member.sum(-1, keepdim=True).clamp(min=1).float()  # [B, G, D]
        logits = torch.einsum("bd,bgd->bg", self.summary_query(query), self.summary_key(summaries)) / math.sqrt(dim)
        logits = logits.masked_fill(~member.any(-1), float("-inf"))
        k = min(top_k, n_groups)
        top_logits, top_index = logits.topk(k, dim=-1)
        relevance = torch.softmax(top_logits, dim=-1).nan_to_num(0.0)  # [B, k]
        picked = member.gather(1, top_index[:, :, None].expand(batch, k, slots))  # [B, k, S]

        q = self.query(query).view(batch, self.heads, self.head_dim)
        key, value = self.key_value(tokens).chunk(2, dim=-1)
        key = key.view(batch, slots, self.heads, self.head_dim)
        value = value.view(batch, slots, self.heads, self.head_dim)
        scores = torch.einsum("bhe,bshe->bhs", q, key) / math.sqrt(self.head_dim)  # [B, H, S]
        scores = scores[:, None].masked_fill(~picked[:, :, None, :], float("-inf"))  # [B, k, H, S]
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        attended = torch.einsum("bkhs,bshe->bkhe", weights, value).reshape(batch, k, dim)
        out = (relevance[..., None] * self.out(attended)).sum(1)
        slot_weights = (relevance[:, :, None] * weights.mean(2)).sum(1)
        group_weights = torch.zeros_like(logits, dtype=relevance.dtype).scatter(1, top_index, relevance)  # autocast: dtypes differ
        return out, slot_weights, group_weights


class SATLayer(nn.Module):
    def __init__(self, config: SATConfig):
        super().__init__()
        self.norm_read = nn.LayerNorm(config.dim)
        self.norm_memory = nn.LayerNorm(config.dim)
        self.read = GroupAttention(config.dim, config.heads)
        self.gate_read = GRUGate(config.dim, config.gate_bias)
        self.norm_mlp = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, config.ff_dim), nn.ReLU(), nn.Linear(config.ff_dim, config.dim))
        self.gate_mlp = GRUGate(config.dim, config.gate_bias)

    def forward(self, x: Tensor, tokens: Tensor, embed: Tensor, group: Tensor, valid: Tensor, n_groups: int,
                top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        memory = self.norm_memory(tokens) + embed
        read, slot_weights, group_weights = self.read(self.norm_read(x), memory, group, valid, n_groups, top_k)
        x = self.gate_read(x, torch.relu(read))
        x = self.gate_mlp(x, torch.relu(self.mlp(self.norm_mlp(x))))
        return x, slot_weights, group_weights


def eviction_slots(valid: Tensor, step: Tensor, place: Tensor, num_places: int) -> Tensor:
    """The slot each strategy writes to, [B, 4] in STRATEGIES order: a free slot if there is one,
    else the victim of fifo / lifo / mvfo / lvfo (place counts = stored tokens per place)."""
    big = torch.iinfo(torch.long).max // 4
    free = ~valid
    has_free = free.any(-1, keepdim=True)
    first_free = free.long().argmax(-1)
    oldest = torch.where(valid, step, big).argmin(-1)
    newest = torch.where(valid, step, -1).argmax(-1)
    count = torch.zeros(valid.shape[0], num_places, dtype=torch.long, device=valid.device).scatter_add(
        1, place.clamp(min=0), valid.long())
    stored = count > 0
    most = torch.where(stored, count, -1).argmax(-1)  # first (lowest id) among ties
    least = torch.where(stored, count, big).argmin(-1)

    def oldest_of(target: Tensor) -> Tensor:
        in_place = valid & (place == target[:, None])
        return torch.where(in_place, step, big).argmin(-1)

    victims = torch.stack([oldest, newest, oldest_of(most), oldest_of(least)], dim=-1)
    return torch.where(has_free, first_free[:, None], victims)


@register_memory("sat", config=SATConfig)
class SpatiallyAwareMemory(Memory):
    def __init__(self, input_dim: int, config: SATConfig):
        super().__init__(input_dim, config)
        self.output_dim = config.dim
        self.cfg = config
        self.n_layers = config.layers
        self.capacity = config.capacity
        self.n_groups = config.num_places if config.place_major else math.ceil(config.capacity / config.chunk_size)
        self.input_proj = nn.Linear(input_dim, config.dim)
        self.layers = nn.ModuleList(SATLayer(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.dim)
        self.allocator = None
        if config.strategy == "ama":
            self.allocator = AdaptiveMemoryAllocator(
                config.num_tasks + config.context_dim, len(STRATEGIES), config.ama_hidden,
                config.epsilon_start, config.epsilon_end, config.epsilon_episodes)
        self._last: dict[str, Tensor] = {}

    def initial_state(self, batch: int, device=None) -> TensorDict:
        s, long = self.capacity, dict(dtype=torch.long, device=device)
        fixed = STRATEGIES.index(self.cfg.strategy) if self.cfg.strategy in STRATEGIES else 0
        return TensorDict(
            {
                "memory": torch.zeros(batch, self.n_layers, s, self.output_dim, device=device),
                "valid": torch.zeros(batch, s, dtype=torch.bool, device=device),
                "step": torch.full((batch, s), -1, **long),
                "place": torch.full((batch, s), -1, **long),
                "visits": torch.zeros(batch, self.cfg.num_places, **long),
                "episode_step": torch.zeros(batch, **long),
                "arm": torch.full((batch,), fixed, **long),
                "context": torch.zeros(batch, self.cfg.num_tasks + self.cfg.context_dim, device=device),
            },
            batch_size=[batch],
            device=device,
        )

    def place_of(self, step: Step) -> Tensor:
        """Place id [B] of the step: its `place`, else the hashed grid cell of its `pose`."""
        if "place" in step:
            place = step["place"].long().reshape(-1)
        elif "pose" in step:
            cell = torch.floor(step["pose"][:, :2] / self.cfg.place_cell).long()
            place = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663)
            return place.remainder(self.cfg.num_places)
        else:
            raise ValueError("memory 'sat' needs a 'place' [B] or 'pose' [B, 4] in each step")
        if place.device.type == "cpu" and place.numel() and (int(place.min()) < 0 or int(place.max()) >= self.cfg.num_places):
            raise ValueError(f"memory 'sat': place ids in [{int(place.min())}, {int(place.max())}]; allowed 0..{self.cfg.num_places - 1}")
        return place

    def _context(self, step: Step, batch: int, device) -> Tensor:
        cfg = self.cfg
        task = torch.zeros(batch, cfg.num_tasks, device=device)
        text = torch.zeros(batch, cfg.context_dim, device=device)
        if "task" in step:
            task = torch.nn.functional.one_hot(step["task"].long().reshape(-1), cfg.num_tasks).float()
        elif "text" in step:
            if step["text"].shape[-1] != cfg.context_dim:
                raise ValueError(f"memory 'sat' (ama): text embedding size {step['text'].shape[-1]} != context_dim={cfg.context_dim}")
            text = step["text"].detach().float()
        return torch.cat([task, text], dim=-1)

    def _write(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """Where this step is written: the slot mask [B, S] and the state with its new bookkeeping
        (valid, step, place, visits, episode_step, arm, context); `memory` is left as it was."""
        feat = step["feat"]
        batch, device = feat.shape[0], feat.device
        place = self.place_of(step).to(device)
        episode_step = state.get("episode_step")
        arm, context = state.get("arm"), state.get("context")
        if self.allocator is not None:
            # The strategy of an episode is picked at its first step (state rows are reset at `first`).
            starting = episode_step == 0
            if starting.device.type != "cpu" or bool(starting.any()):  # any() would sync a GPU every step
                new_context = self._context(step, batch, device)
                context = torch.where(starting[:, None], new_context, context)
                arm = torch.where(starting, self.allocator.choose(new_context, starting), arm)

        visits = state.get("visits").scatter_add(1, place[:, None], torch.ones_like(place[:, None]))
        valid, slot_step, slot_place = state.get("valid"), state.get("step"), state.get("place")
        target = eviction_slots(valid, slot_step, slot_place, self.cfg.num_places).gather(1, arm[:, None]).squeeze(1)
        write = torch.nn.functional.one_hot(target, self.capacity).bool()
        new_state = TensorDict(
            {
                "memory": state.get("memory"),
                "valid": valid | write,
                "step": torch.where(write, episode_step[:, None], slot_step),
                "place": torch.where(write, place[:, None], slot_place),
                "visits": visits,
                "episode_step": episode_step + 1,
                "arm": arm,
                "context": context,
            },
            batch_size=state.batch_size,
            device=state.device,
        )
        return write, new_state

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        write, new_state = self._write(step, state)
        valid, slot_step, slot_place = new_state.get("valid"), new_state.get("step"), new_state.get("place")
        batch, device = write.shape[0], write.device
        if self.cfg.place_major:
            group = slot_place.clamp(min=0)
        else:
            # Temporal chunks: rank of each stored step in time, chunk_size per group.
            order = torch.where(valid, slot_step, torch.iinfo(torch.long).max).argsort(-1)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(self.capacity, device=device).expand(batch, -1))
            group = rank // self.cfg.chunk_size
        embed = sinusoid(slot_step.clamp(min=0), self.output_dim)
        if self.cfg.place_embedding:
            embed = embed + sinusoid(slot_place.clamp(min=0), self.output_dim)

        x = self.input_proj(step["feat"])
        memory = state.get("memory")
        new_layers, slot_w, group_w = [], [], []
        for index, layer in enumerate(self.layers):
            tokens = torch.where(write[..., None], x.detach()[:, None, :], memory[:, index])
            new_layers.append(tokens)
            x, slot_weights, group_weights = layer(x, tokens, embed, group, valid, self.n_groups, self.cfg.top_k)
            slot_w.append(slot_weights)
            group_w.append(group_weights)
        self._last = {"weights": torch.stack(slot_w).mean(0).detach(), "group_weights": torch.stack(group_w).mean(0).detach(),
                      "arm": new_state.get("arm")}
        new_state.set("memory", torch.stack(new_layers, dim=1))
        return self.norm_out(x), new_state

    def advance(self, steps: Step, state: TensorDict) -> TensorDict:
        """With one layer, what a step stores (its detached input projection) depends on no read,
        so the state after a sequence is written without reading: the bookkeeping step by step,
        then every slot's token gathered once. A 96-step Room Ballet walk of 64 episodes then costs
        a small fraction of running the layer at every step. More layers store reads: the plain pass."""
        if self.n_layers != 1:
            return super().advance(steps, state)
        self._check_step(steps, sequence=True)
        tokens = self.input_proj(steps["feat"]).detach()  # [T, B, D]
        first = steps.get("first", None)
        before = state.get("memory")
        # Which step's token each slot holds: -1 the input state's, -2 a reset row's zeros.
        source = torch.full(tuple(state.get("valid").shape), -1, dtype=torch.long, device=tokens.device)
        for t in range(tokens.shape[0]):
            step = step_at(steps, t)
            if first is not None and not self.lifelong:
                state = self.reset_rows(state, first[t])
                source = torch.where(first[t].to(source.device)[:, None], -2, source)
            write, state = self._write(step, state)
            source = torch.where(write, t, source)
        held = tokens.gather(0, source.clamp(min=0).t()[:, :, None].expand(-1, -1, tokens.shape[-1])).transpose(0, 1)
        memory = torch.where((source >= 0)[:, None, :, None], held[:, None], before)
        state.set("memory", torch.where((source == -2)[:, None, :, None], 0.0, memory))
        return state

    def outcome_loss(self, state: TensorDict, reward: Tensor) -> Tensor | None:
        """AMA: `ama_loss_weight` x the bandit's MSE to the episodes' rewards; None for a fixed strategy."""
        if self.allocator is None:
            return None
        return self.cfg.ama_loss_weight * self.ama_loss(state, reward)

    def episode_facts(self, state: TensorDict) -> dict[str, list[str]]:
        """AMA: the write strategy each row's episode used."""
        if self.allocator is None:
            return {}
        return {"strategy": [STRATEGIES[int(a)] for a in state.get("arm").tolist()]}

    def ama_loss(self, state: TensorDict, reward: Tensor) -> Tensor:
        """Bandit loss for the episodes whose final state is `state`; reward [B] = -task loss per row."""
        if self.allocator is None:
            raise ValueError("ama_loss needs memory option strategy=ama")
        return self.allocator.loss(state.get("context"), state.get("arm"), reward)

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """weights, slot_step, slot_place over the S slots; `group_weights` [B, G] and `arm` [B] extra."""
        batch = state.batch_size[0]
        out = {"slot_step": state.get("step"), "slot_place": state.get("place")}
        if self._last and self._last["weights"].shape[0] == batch:
            out.update(self._last)
        else:
            out["weights"] = torch.zeros(batch, self.capacity, device=state.device)
        return out
