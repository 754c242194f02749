"""Option dataclasses for the baseline memories.

One dataclass per memory type, the one place of its defaults: it is the structured schema of
`configs/memory/<name>.yaml` (stored as `memory/<name>_schema`), which holds only `name` and what
differs. `__post_init__` rejects bad values with a one-line error naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass


def _check_positive(config: object, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"memory option {key}={value!r}: must be a positive integer")


@dataclass
class MemoryConfig:
    """Options every memory has."""

    name: str = ""
    """Registry name of the memory (see `embodied.memory.MEMORIES`)."""
    lifelong: bool = False
    """Keep the state across episode starts (`first`) instead of resetting it (multi-episode tasks)."""


@dataclass
class NoMemoryConfig(MemoryConfig):
    """`none`: a per-step MLP; nothing is carried from one step to the next."""

    name: str = "none"
    hidden: int = 256
    """Width of the single Linear+ReLU layer; also the read size."""

    def __post_init__(self) -> None:
        _check_positive(self, "hidden")


@dataclass
class GRUConfig(MemoryConfig):
    """`gru`: a (stacked) GRU whose hidden state is the memory."""

    name: str = "gru"
    hidden: int = 256
    """Hidden state size of each layer; also the read size."""
    layers: int = 1
    """Number of stacked GRU layers."""

    def __post_init__(self) -> None:
        _check_positive(self, "hidden", "layers")


@dataclass
class LSTMConfig(MemoryConfig):
    """`lstm`: a (stacked) LSTM whose hidden and cell states are the memory."""

    name: str = "lstm"
    hidden: int = 256
    """Hidden (and cell) state size of each layer; also the read size."""
    layers: int = 1
    """Number of stacked LSTM layers."""

    def __post_init__(self) -> None:
        _check_positive(self, "hidden", "layers")


@dataclass
class TrXLConfig(MemoryConfig):
    """`trxl`: gated Transformer-XL (GTrXL, Parisotto et al. 2019) over a cache of the last steps."""

    name: str = "trxl"
    dim: int = 128
    """Model width (token size in every layer); also the read size."""
    layers: int = 2
    """Number of gated transformer layers."""
    heads: int = 4
    """Attention heads per layer; must divide `dim`."""
    memory_length: int = 64
    """Cached past steps per layer; each step attends to at most this many past steps plus itself."""
    ff_dim: int = 256
    """Hidden width of each layer's position-wise MLP."""
    gate_bias: float = 2.0
    """Initial bias of the GRU gates' update gate; > 0 starts each layer near the identity map."""

    def __post_init__(self) -> None:
        _check_positive(self, "dim", "layers", "heads", "memory_length", "ff_dim")
        if self.dim % self.heads:
            raise ValueError(f"memory option heads={self.heads}: must divide dim={self.dim}")
