"""The memory interface every memory implements, and the registry that builds them by name.

A memory is a `torch.nn.Module` that reads a per-step feature and a fixed-capacity state and
returns a read vector and the next state:

    state = memory.initial_state(batch, device)        # TensorDict, batch_size=[batch]
    read, state = memory(step, state)                  # step: feat [B,D], first [B], ...
    reads, state = memory.forward_sequence(steps, state)  # steps: [T,B,...], used for training

`step` is a dict (or TensorDict) with
    feat  float [B, input_dim]  the agent's fused observation feature (required)
    first bool  [B]             episode start: that row is reset before use unless `lifelong`
    pose  float [B, 4]          x, y, z, yaw (optional)
    text  float [B, Dt]         text embedding (optional)
    place long  [B]             place id (optional)
    task  long  [B]             task id, where the env gives one (optional)
    visual float [B, Dv]        image-only embedding (optional; for dual-coding memories)
Memories ignore keys they do not use.

The state has a fixed capacity (ring buffers / sliding windows + validity masks) so rows can be
stored in rollout buffers, indexed and concatenated like any TensorDict.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Callable, TypeVar

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.config import MemoryConfig

Step = Mapping[str, Tensor]


def step_at(steps: Step, t: int) -> dict[str, Tensor]:
    """The step at time `t` of a `[T, B, ...]` sequence of steps."""
    return {key: value[t] for key, value in steps.items()}


class Memory(nn.Module, ABC):
    """Base class: subclasses implement `initial_state` and `update` (one step, state already reset).

    Attributes set by subclasses: `input_dim` (size of `feat`), `output_dim` (size of the read).
    `lifelong=True` keeps the state across `first` (the task spans several episodes).
    """

    input_dim: int
    output_dim: int
    lifelong: bool

    def __init__(self, input_dim: int, config: MemoryConfig):
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"memory input_dim={input_dim!r}: must be a positive integer")
        self.input_dim = input_dim
        self.config = config
        self.lifelong = bool(config.lifelong)

    # --- to implement -------------------------------------------------------------------------
    @abstractmethod
    def initial_state(self, batch: int, device: torch.device | str | None = None) -> TensorDict:
        """The state of `batch` fresh rows: a TensorDict with batch_size=[batch] on `device`."""

    @abstractmethod
    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """One step on a state whose episode-start rows were already reset. Returns (read, state)."""

    # --- shared behaviour ---------------------------------------------------------------------
    def forward(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """One step: reset rows at `first` (unless lifelong), then read and write.

        Returns the read `[B, output_dim]` and the new state (the input state is not modified).
        """
        self._check_step(step, sequence=False)
        first = step.get("first", None)
        if first is not None and not self.lifelong:
            state = self.reset_rows(state, first)
        return self.update(step, state)

    def forward_sequence(self, steps: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """Run `[T, B, ...]` steps from `state`; equals calling `forward` T times.

        Returns reads `[T, B, output_dim]` and the final state. Subclasses may override with a
        faster equivalent.
        """
        self._check_step(steps, sequence=True)
        reads = []
        for t in range(steps["feat"].shape[0]):
            read, state = self(step_at(steps, t), state)
            reads.append(read)
        return torch.stack(reads), state

    def reset_rows(self, state: TensorDict, mask: Tensor) -> TensorDict:
        """A copy of `state` where the rows with `mask[b] == True` hold the initial state."""
        mask = mask.to(device=state.device, dtype=torch.bool)
        if mask.shape != tuple(state.batch_size):
            raise ValueError(f"reset mask shape {tuple(mask.shape)} does not match state batch {tuple(state.batch_size)}")
        if mask.device.type == "cpu" and not bool(mask.any()):
            return state  # mask.any() would sync a GPU every step, so this shortcut is CPU-only
        fresh = self.initial_state(mask.shape[0], state.device)

        def pick(current: Tensor, initial: Tensor) -> Tensor:
            return torch.where(mask.view(mask.shape + (1,) * (current.dim() - 1)), initial, current)

        return state.apply(pick, fresh)

    def advance(self, steps: Step, state: TensorDict) -> TensorDict:
        """The state after `[T, B, ...]` steps from `state`, for callers that need no reads (a loss
        that asks only a later step again); equals `forward_sequence(steps, state)[1]`. Memories
        whose writes do not depend on their reads may override it with a cheaper pass."""
        return self.forward_sequence(steps, state)[1]

    def outcome_loss(self, state: TensorDict, reward: Tensor) -> Tensor | None:
        """A loss that trains the memory's own per-episode decisions (SAT's write-strategy bandit)
        from how the episodes whose states are `state` [B] went: `reward` [B] (e.g. minus the task
        loss of each episode's real question). None: the memory makes no such decision."""
        return None

    def episode_facts(self, state: TensorDict) -> dict[str, list[str]]:
        """Per-row words about the episodes whose final states are `state` that evaluation records
        beside each episode's measures (SAT with AMA: the write strategy the bandit picked)."""
        return {}

    def aux_losses(self, steps: Step, reads: Tensor) -> dict[str, Tensor]:
        """Auxiliary losses (scalars) for the sequence just run by `forward_sequence`; none by default.

        Called by the agent right after `forward_sequence(steps, ...)` returned `reads`; a memory
        may use tensors it kept from that call (e.g. reconstruction targets).
        """
        return {}

    def introspect(self, state: TensorDict) -> dict[str, Tensor]:
        """What a viewer can show about `state` and the read of the last forward call.

        Called right after `forward(step, state) -> (read, state)` with the returned state. A memory
        without slots (none, gru, lstm) returns `{}`. A memory with S slots returns at least
            weights    float [B, S]  read weights of the last step over the slots of `state` (the
                                     state that forward returned, so a slot written this step
                                     is included): attention or retrieval weights, averaged
                                     over heads/layers/reads, each >= 0, summing to <= 1 per row
                                     (the rest went to things that are not slots of `state`,
                                     e.g. a slot evicted by this write); 0 on empty slots
            slot_step  long  [B, S]  step index at which each slot was written (the memory's own
                                     per-episode step counter, 0 at the episode's first step;
                                     equals the env step within the episode); -1 for empty slots
        and may add, where the memory has the notion:
            slot_place     long [B, S]  place id stored with each slot (SAT), -1 unknown/empty
            slot_modality  long [B, S]  column a slot belongs to (DCEM: 0 visual, 1 language)
            slot_keyframe  bool [B, S]  slot holds a keyframe (memory banks)
            chunk_selected bool [B, C]  chunks chosen by the coarse read (HCAM); chunk c covers
                                        slots [c * S // C, (c + 1) * S // C)
        Tensors may live on any device; the viewer moves them to the CPU. Other keys are allowed
        (memory-specific detail, e.g. trxl's per-layer/head `attention`); viewers ignore them.
        `check_introspection` validates a result against this contract.
        """
        return {}

    def _check_step(self, step: Step, sequence: bool) -> None:
        if "feat" not in step:
            raise ValueError(f"memory step has no 'feat' (keys: {sorted(step.keys())})")
        feat = step["feat"]
        want = 3 if sequence else 2
        if feat.dim() != want or feat.shape[-1] != self.input_dim:
            shape = "[T, B, input_dim]" if sequence else "[B, input_dim]"
            raise ValueError(
                f"memory step feat has shape {tuple(feat.shape)}; expected {shape} with input_dim={self.input_dim}"
            )
        first = step.get("first", None)
        if first is not None and first.shape != feat.shape[:-1]:
            raise ValueError(f"memory step first has shape {tuple(first.shape)}; expected {tuple(feat.shape[:-1])}")


INTROSPECTION_SLOT_KEYS = ("weights", "slot_step", "slot_place", "slot_modality", "slot_keyframe")


def check_introspection(report: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    """`report` (a `Memory.introspect` result) checked against its contract; raises ValueError."""
    report = dict(report)
    if not report:
        return report
    for key in ("weights", "slot_step"):
        if key not in report:
            raise ValueError(f"memory introspection lacks {key!r} (keys: {sorted(report)})")
    slots = tuple(report["weights"].shape)
    if len(slots) != 2 or slots[0] != batch:
        raise ValueError(f"memory introspection weights has shape {slots}; expected [B={batch}, S]")
    for key in INTROSPECTION_SLOT_KEYS:
        if key in report and tuple(report[key].shape) != slots:
            raise ValueError(f"memory introspection {key} has shape {tuple(report[key].shape)}; expected {slots}")
    weights = report["weights"].detach().float()
    if bool((weights < -1e-6).any()) or bool((weights.sum(-1) > 1 + 1e-4).any()):
        raise ValueError("memory introspection weights must be >= 0 and sum to <= 1 per row")
    chunks = report.get("chunk_selected", None)
    if chunks is not None and (chunks.dim() != 2 or chunks.shape[0] != batch):
        raise ValueError(f"memory introspection chunk_selected has shape {tuple(chunks.shape)}; expected [B={batch}, C]")
    return report


# --- registry ---------------------------------------------------------------------------------
MEMORIES: dict[str, type[Memory]] = {}
"""Registered memories by name (iterate it for the names)."""

M = TypeVar("M", bound=type[Memory])


def register_memory(name: str, config: type[MemoryConfig]) -> Callable[[M], M]:
    """Class decorator: register a Memory subclass under `name` with its options dataclass."""

    def decorator(cls: M) -> M:
        if name in MEMORIES:
            raise ValueError(f"memory {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, Memory)):
            raise ValueError(f"register_memory({name!r}) needs a Memory subclass, got {cls!r}")
        cls.config_class = config
        cls.memory_name = name
        MEMORIES[name] = cls
        return cls

    return decorator


def memory_config(name: str, /, **options) -> MemoryConfig:
    """The validated options dataclass for memory `name` (a `name` key in options must match)."""
    if name not in MEMORIES:
        raise ValueError(f"unknown memory {name!r}; allowed: {', '.join(sorted(MEMORIES))}")
    config_class = MEMORIES[name].config_class
    if options.get("name", name) != name:
        raise ValueError(f"memory options name={options['name']!r} contradicts memory {name!r}")
    options = {key: value for key, value in options.items() if key != "name"}
    allowed = [f.name for f in dataclasses.fields(config_class) if f.name != "name"]
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for memory {name!r}; allowed: {', '.join(allowed)}")
    return config_class(name=name, **options)


def build_memory(name: str, input_dim: int, /, **options) -> Memory:
    """Build the registered memory `name` reading `input_dim`-sized features."""
    config = memory_config(name, **options)
    return MEMORIES[name](input_dim, config)
