"""The agent: observation encoders -> fusion (+ previous action) -> memory -> policy and value heads.

Trainer API (all tensors on the agent's device):
    state = agent.initial_state(batch, device)
    action, log_prob, value, state = agent.act(obs, state, first, prev_action)      # [B, ...] inputs
    out = agent.evaluate_sequence(obs, state, first, prev_action, actions)           # [T, B, ...] inputs
`first [.., B]` (bool) marks episode starts: the memory resets that row (unless lifelong) and the
previous action is replaced by a 'none' id. `act` builds a graph like any module call; wrap it in
`torch.no_grad()` when collecting rollouts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch
from gymnasium import spaces
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, Normal

from embodied.agents.aux_heads import build_aux_head
from embodied.agents.config import AgentConfig
from embodied.agents.encoders import MEMORY_ONLY_KEYS, ObservationEncoder
from embodied.memory import MEMORIES, build_memory


def _head(in_dim: int, out_dim: int, hidden: int, gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(in_dim, hidden), nn.ReLU()]
        in_dim = hidden
    last = nn.Linear(in_dim, out_dim)
    # Small policy init (CleanRL/PPO practice) starts near-uniform over actions.
    nn.init.orthogonal_(last.weight, gain)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class FiLMReadout(nn.Module):
    """Memory-conditioned readout of an image feature map (agent option `film_readout`).

    The read gives a per-channel scale and shift (FiLM, Perez et al. 2018, as BabyAI conditions
    its image features on the instruction), applied at every position; a 1x1 conv then scores each
    position against what the read asks for, and a Linear over the flattened map turns where the
    match lies into features for the heads. Scales start at 1 and shifts at 0."""

    def __init__(self, read_dim: int, map_shape: tuple[int, ...], out_dim: int, match: bool = False, retrieved_dim: int = 0):
        super().__init__()
        channels = int(map_shape[0])
        self.film = nn.Linear(read_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.query = None
        if match:
            # Agent option match_readout: one more channel, cos(query(read), features) at every position.
            self.query = nn.Linear(read_dim, channels)
            if retrieved_dim:
                # The read ends with the retrieved visual column (dcem read_retrieved), stored from
                # the same feature map: the query starts as exactly that vector.
                with torch.no_grad():
                    self.query.weight.zero_()
                    self.query.bias.zero_()
                    self.query.weight[:, read_dim - retrieved_dim:] = torch.eye(channels)
            # Sharp from the start: cosines of other objects' cells reach ~0.8 (shared background).
            self.match_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        positions = int(np.prod(map_shape[1:]))
        self.mix = nn.Conv2d(channels + int(match), channels, 1)
        self.out = nn.Sequential(nn.Linear(channels * positions + positions * int(match), out_dim), nn.ReLU())

    def forward(self, read: Tensor, feature_map: Tensor) -> Tensor:
        """read [N, R], feature_map [N, C, h, w] -> [N, out_dim]."""
        scale, shift = self.film(read).to(feature_map.dtype).chunk(2, dim=-1)
        x = feature_map * (1 + scale[..., None, None]) + shift[..., None, None]
        if self.query is None:
            return self.out(torch.relu(self.mix(x)).flatten(1))
        # Where the recalled thing is: a spatial softmax of the match, a channel next to the features
        # and, flat, straight into the readout's Linear ("it is just ahead" is one weight away).
        where = torch.softmax(self.match_map(read, feature_map).flatten(1) * self.match_scale.exp(), dim=-1)
        x = torch.cat([x, where.reshape(x.shape[0], 1, *x.shape[2:])], dim=1)
        return self.out(torch.cat([torch.relu(self.mix(x)).flatten(1), where], dim=1))

    def match_map(self, read: Tensor, feature_map: Tensor) -> Tensor:
        """Cosine similarity of the read's query with the features at every position [N, h, w]."""
        query = F.normalize(self.query(read).to(feature_map.dtype), dim=-1)
        return torch.einsum("nc,nchw->nhw", query, F.normalize(feature_map, dim=1))


def _rows_where(mask: Tensor, a: TensorDict, b: TensorDict | None) -> TensorDict:
    """Rows of memory state `a` where `mask` [B], else those of `b` (all of `a` when b is None)."""
    if b is None:
        return a
    return a.apply(lambda x, y: torch.where(mask.reshape(mask.shape + (1,) * (x.dim() - 1)), x, y), b)


class Agent(nn.Module):
    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete | spaces.Box,
        memory: str = "gru",
        memory_options: Mapping | None = None,
        config: AgentConfig | None = None,
    ):
        super().__init__()
        # Discrete: a categorical policy. A float Box [k]: a diagonal Gaussian (means from the head, one
        # learned log std per dimension, as CleanRL's ppo_continuous_action); the env clips or scales.
        self.continuous = isinstance(action_space, spaces.Box) and len(action_space.shape) == 1 \
            and np.issubdtype(action_space.dtype, np.floating)
        if not self.continuous and (not isinstance(action_space, spaces.Discrete) or int(action_space.start) != 0):
            raise ValueError(f"action space must be gymnasium.spaces.Discrete starting at 0 or a float Box [k], got {action_space}")
        self.config = config = config if config is not None else AgentConfig()
        self.observation_space = observation_space
        self.num_actions = int(action_space.shape[0]) if self.continuous else int(action_space.n)  # dims when continuous
        self.action_shape: tuple[int, ...] = (self.num_actions,) if self.continuous else ()
        self.action_dtype = torch.float32 if self.continuous else torch.long
        if self.continuous and config.aux_heads:
            raise ValueError(f"agent option aux_heads={list(config.aux_heads)}: the aux heads read discrete actions; "
                             "this action space is continuous")
        self.encoder = ObservationEncoder(observation_space, config)
        fuse_in = self.encoder.out_dim
        self.prev_action_embedding = None
        if config.use_prev_action:
            # Discrete: id num_actions stands for "no previous action" (episode start); continuous: zeros.
            self.prev_action_embedding = (nn.Linear(self.num_actions, config.prev_action_embed) if self.continuous
                                          else nn.Embedding(self.num_actions + 1, config.prev_action_embed))
            fuse_in += config.prev_action_embed
        self.fuse = nn.Sequential(nn.Linear(fuse_in, config.hidden), nn.ReLU())
        self.memory = build_memory(memory, config.hidden, **self._memory_options(memory, memory_options))
        self.film = None
        heads_in = self.memory.output_dim
        if config.film_readout:
            retrieved = int(getattr(self.memory, "retrieved_visual_dim", 0))
            if config.match_readout and retrieved and retrieved != self.encoder.feature_map_shape[0]:
                raise ValueError(
                    f"agent option match_readout: the memory's retrieved visual column has size {retrieved}, the feature "
                    f"map {self.encoder.feature_map_shape[0]} channels; store the map's centre (agent option memory_visual=centre)")
            self.film = FiLMReadout(self.memory.output_dim, self.encoder.feature_map_shape, config.film_readout,
                                    match=config.match_readout, retrieved_dim=retrieved)
            heads_in += config.film_readout
        self.policy_head = _head(heads_in, self.num_actions, config.head_hidden, gain=0.01)
        if config.action_prior:
            if self.continuous or len(config.action_prior) != self.num_actions:
                raise ValueError(f"agent option action_prior has {len(config.action_prior)} probabilities; this action "
                                 f"space {'is continuous' if self.continuous else f'has {self.num_actions} actions'}")
            with torch.no_grad():  # the head's weights are near 0, so its softmax starts at the prior
                self.policy_head[-1].bias.copy_(torch.log(torch.tensor(config.action_prior, dtype=torch.float32)))
        self.log_std = nn.Parameter(torch.zeros(self.num_actions)) if self.continuous else None
        self.value_head = _head(heads_in, 1, config.head_hidden, gain=1.0)
        dims = dict(
            feat_dim=config.hidden,
            read_dim=self.memory.output_dim,
            num_actions=self.num_actions,
            observation_space=observation_space,
        )
        self.aux_heads = nn.ModuleDict({name: build_aux_head(name, **dims) for name in config.aux_heads})

    # --- public API ------------------------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str | None = None) -> TensorDict:
        """Memory state of `batch` fresh rows."""
        return self.memory.initial_state(batch, device)

    def forward_step(
        self, obs: Mapping[str, Tensor], state: TensorDict, first: Tensor, prev_action: Tensor
    ) -> tuple[Tensor, Tensor, TensorDict]:
        """One step for a batch: returns logits [B, A] (continuous: action means), value [B], new state."""
        step = self._memory_input(obs, first, prev_action, lead=tuple(first.shape))
        feature_map = step.pop("feature_map", None)
        read, state = self.memory(step, state)
        read = self._heads_input(read, feature_map)
        return self.policy_head(read), self.value_head(read).squeeze(-1), state

    def act(
        self,
        obs: Mapping[str, Tensor],
        state: TensorDict,
        first: Tensor,
        prev_action: Tensor,
        deterministic: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, TensorDict]:
        """Sample (or argmax) actions: returns action [B] long, log_prob [B], value [B], new state."""
        self._check_lead(first, prev_action, dims=1)
        step = self._memory_input(obs, first, prev_action, lead=tuple(first.shape))
        return self._act_on(step, state, deterministic)

    def _act_on(self, step, state: TensorDict, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, TensorDict]:
        feature_map = step.pop("feature_map", None)
        read, state = self.memory(step, state)
        read = self._heads_input(read, feature_map)
        logits, value = self.policy_head(read), self.value_head(read).squeeze(-1)
        distribution = self.distribution(logits)
        if deterministic:
            action = logits.float() if self.continuous else logits.argmax(dim=-1)
        else:
            action = distribution.sample()
        return action, distribution.log_prob(action), value, state

    def distribution(self, logits: Tensor):
        """The policy's action distribution from the head's output [..., A]: categorical over
        logits, or (continuous) a diagonal Gaussian around them."""
        if self.continuous:
            return Independent(Normal(logits.float(), self.log_std.exp().expand(logits.shape)), 1)
        return Categorical(logits=logits)

    @property
    def has_intrinsic_reward(self) -> bool:
        return callable(getattr(self.memory, "intrinsic_reward", None))

    def act_with_novelty(
        self, obs: Mapping[str, Tensor], state: TensorDict, first: Tensor, prev_action: Tensor,
        deterministic: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, TensorDict, Tensor]:
        """`act` plus the memory's intrinsic reward for this observation [B] (`intrinsic_reward`
        of memories that define it, e.g. dcem), measured against the memory before this step's
        write; 0 at episode starts (nothing the agent did produced that observation)."""
        self._check_lead(first, prev_action, dims=1)
        step = self._memory_input(obs, first, prev_action, lead=tuple(first.shape))
        memory_step = {k: v for k, v in step.items() if k != "feature_map"}
        novelty = self.memory.intrinsic_reward(memory_step, state).float() * (~first).float()
        return (*self._act_on(step, state, deterministic), novelty)

    def evaluate_sequence(
        self,
        obs: Mapping[str, Tensor],
        state: TensorDict,
        first: Tensor,
        prev_action: Tensor,
        actions: Tensor,
        labels: Mapping[str, Tensor] | None = None,
        branch: Tensor | None = None,
    ) -> dict:
        """Re-run the memory over a rollout [T, B] from `state` (the state before step 0).

        Returns dict(log_prob [T,B], entropy [T,B], value [T,B], logits [T,B,A],
        aux_losses {name: scalar}, state (final memory state)). `labels` {key: [T, B, ...]}
        (privileged per-step labels of demonstrations) reach the aux heads' context. `branch` [B]
        (long): also return `branch_state`, each row's memory state before its step `branch[b]`
        (the final state where it is < 0 or >= T), for losses that ask a step again differently
        (embodied/agents/imitation.py); the memory still runs over the sequence once.
        """
        self._check_lead(first, prev_action, dims=2)
        if tuple(actions.shape) != tuple(first.shape) + self.action_shape:
            raise ValueError(f"actions shape {tuple(actions.shape)} does not match first {tuple(first.shape)}"
                             + (f" + {self.action_shape}" if self.continuous else ""))
        steps = self._memory_input(obs, first, prev_action, lead=tuple(first.shape))
        feature_map = steps.pop("feature_map", None)
        reads, final_state, branch_state = self._memory_sequence(steps, state, branch)
        heads_in = self._heads_input(reads, feature_map)
        logits = self.policy_head(heads_in)
        value = self.value_head(heads_in).squeeze(-1)
        distribution = self.distribution(logits)
        actions = actions.float() if self.continuous else actions.long()
        if not self.continuous and actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.num_actions):
            raise ValueError(f"actions must be in 0..{self.num_actions - 1}, got [{int(actions.min())}, {int(actions.max())}]")
        aux_losses = {f"memory/{k}": v for k, v in self.memory.aux_losses(steps, reads).items()}
        context = dict(obs=obs, feat=steps["feat"], read=reads, first=first, actions=actions, logits=logits, value=value,
                       labels=dict(labels or {}))
        for name, head in self.aux_heads.items():
            aux_losses.update({f"{name}/{k}": v for k, v in head(context).items()})
        return dict(
            log_prob=distribution.log_prob(actions),
            entropy=distribution.entropy(),
            value=value,
            logits=logits,
            aux_losses=aux_losses,
            state=final_state,
            **({} if branch is None else {"branch_state": branch_state}),
        )

    def memory_states_at(self, obs: Mapping[str, Tensor], state: TensorDict, first: Tensor, prev_action: Tensor,
                         branch: Tensor) -> TensorDict:
        """Each row's memory state before its step `branch[b]` of a rollout [T, B] from `state` (the
        final state where it is < 0 or >= T): `evaluate_sequence(branch=)["branch_state"]` without
        the reads and heads (Memory.advance), for losses that only ask a later step again."""
        self._check_lead(first, prev_action, dims=2)
        steps = self._memory_input(obs, first, prev_action, lead=tuple(first.shape))
        steps.pop("feature_map", None)
        return self._memory_sequence(steps, state, branch, with_reads=False)[2]

    def memory_inputs(self, obs: Mapping, first: Tensor, prev_action: Tensor) -> dict[str, Tensor]:
        """What the memory is given at steps with leading dims `first.shape` (encoded, fused
        observations and the previous action; `feature_map` too with `film_readout`)."""
        return self._memory_input(obs, first, prev_action, lead=tuple(first.shape))

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """What the memory exposes to a viewer (see Memory.introspect)."""
        return self.memory.introspect(state)

    # --- internals -------------------------------------------------------------------------------
    def _memory_sequence(self, steps: dict, state: TensorDict, branch: Tensor | None, with_reads: bool = True):
        """forward_sequence over [T, B], cut at the `branch` steps to keep each row's state there;
        `with_reads=False`: Memory.advance instead (reads come back None)."""
        run = self.memory.forward_sequence if with_reads else lambda part, s: (None, self.memory.advance(part, s))
        if branch is None:
            return (*run(steps, state), None)
        length = steps["feat"].shape[0]
        branch = branch.to(steps["feat"].device).long()
        cuts = sorted({int(t) for t in branch.tolist() if 0 <= t < length})
        bounds = sorted({0, length, *cuts})
        reads, picked = [], None
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a in cuts:
                picked = _rows_where(branch == a, state, picked)
            read, state = run({k: v[a:b] for k, v in steps.items()}, state)
            reads.append(read)
        picked = _rows_where((branch < 0) | (branch >= length), state, picked)
        return (torch.cat(reads) if reads[0] is not None else None), state, picked

    def _heads_input(self, read: Tensor, feature_map: Tensor | None) -> Tensor:
        """The memory read, plus the FiLM readout of the image feature map with `film_readout`."""
        if self.film is None:
            return read
        lead = read.shape[:-1]
        flat = self.film(read.reshape(-1, read.shape[-1]), feature_map.reshape((-1,) + feature_map.shape[len(lead):]))
        return torch.cat([read, flat.reshape(lead + (-1,)).to(read.dtype)], dim=-1)

    def _memory_options(self, memory: str, memory_options: Mapping | None) -> dict:
        """Memories that store the modalities apart (DCEM) declare `visual_dim` / `text_dim` options;
        left at 0 they are filled from the encoder. Other memories get their options unchanged."""
        options = dict(memory_options or {})
        if memory in MEMORIES:
            names = {f.name for f in dataclasses.fields(MEMORIES[memory].config_class)}
            if "visual_dim" in names and not options.get("visual_dim"):
                options["visual_dim"] = self.encoder.memory_visual_dim
            if "text_dim" in names and not options.get("text_dim"):
                options["text_dim"] = self.encoder.text_dim
        return options

    def _check_lead(self, first: Tensor, prev_action: Tensor, dims: int) -> None:
        if first.dim() != dims:
            raise ValueError(f"first must have {dims} dims ({'[B]' if dims == 1 else '[T, B]'}), got {tuple(first.shape)}")
        if tuple(prev_action.shape) != tuple(first.shape) + self.action_shape:
            raise ValueError(f"prev_action shape {tuple(prev_action.shape)} does not match first {tuple(first.shape)}"
                             + (f" + {self.action_shape}" if self.continuous else ""))

    def _memory_input(self, obs: Mapping, first: Tensor, prev_action: Tensor, lead: tuple[int, ...]) -> dict[str, Tensor]:
        """Encode observations with leading dims `lead` into the memory's step dict."""
        device = first.device
        n = int(np.prod(lead))
        flat = {}
        for key in self.encoder.input_keys:
            if key not in obs:
                raise ValueError(f"observation is missing key {key!r} (the agent was built for {list(self.encoder.input_keys)})")
            value = torch.as_tensor(obs[key], device=device)
            shape = tuple(self.observation_space[key].shape)
            if tuple(value.shape) != lead + shape:
                raise ValueError(f"observation {key!r} has shape {tuple(value.shape)}; expected {lead + shape}")
            flat[key] = value.reshape((n,) + shape)
        encoded = self.encoder(flat)
        parts = [encoded["feat"]]
        first = first.to(dtype=torch.bool)
        if self.prev_action_embedding is not None and self.continuous:
            prev = prev_action.float().reshape(n, self.num_actions) * (~first.reshape(n, 1))
            parts.append(self.prev_action_embedding(prev))
        elif self.prev_action_embedding is not None:
            prev = prev_action.long().reshape(n)
            if prev.device.type == "cpu" and prev.numel() and int(prev.max()) >= self.num_actions:
                raise ValueError(f"prev_action must be < {self.num_actions} (or negative for none), got {int(prev.max())}")
            prev = torch.where(first.reshape(n) | (prev < 0), torch.full_like(prev, self.num_actions), prev)
            parts.append(self.prev_action_embedding(prev))
        feat = self.fuse(torch.cat(parts, dim=1))
        step = {"feat": feat.reshape(lead + (-1,)), "first": first}
        if "pose" in flat:
            step["pose"] = flat["pose"].float().reshape(lead + (4,))
        if "text" in encoded:
            step["text"] = encoded.get("memory_text", encoded["text"]).reshape(lead + (-1,))
        if "visual" in encoded:
            step["visual"] = encoded.get("memory_visual", encoded["visual"]).reshape(lead + (-1,))
        for key in MEMORY_ONLY_KEYS:
            if key in flat:
                step[key] = flat[key].long().reshape(lead)
        if "feature_map" in encoded:
            step["feature_map"] = encoded["feature_map"].reshape(lead + tuple(encoded["feature_map"].shape[1:]))
        return step
