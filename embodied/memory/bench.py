"""`embodied bench memory`: per-step read latency and state size of every memory vs episode length.

For each memory and episode length L the memory is built at its bench options (below), its state
is filled as if L steps of one episode had been written (all slots valid, step counters at L; the
contents are random, which costs the same as real ones), and then `forward` is timed for
`repeats` further steps under `torch.no_grad()` at `batch` rows. Memories whose cost depends on L
get an L-sized memory: `trxl` attends over the whole episode (memory_length = L: the full-attention
baseline), `hcam` keeps the whole episode in chunks (num_chunks = L / chunk_size) and reads top-k
chunks. Fixed-capacity memories (none, lstm, gru, sat, ...) keep their configured size, so their
figures should stay flat in L. Ratios are against `trxl` measured in the same run.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from embodied.config import provenance
from embodied.memory.base import MEMORIES, build_memory

DEFAULT_LENGTHS = (256, 1024, 4096, 16384)


def bench_options(name: str, length: int) -> dict[str, Any]:
    """Options of memory `name` for an episode of `length` steps."""
    if name == "trxl":
        return {"memory_length": length}
    if name == "hcam":
        return {"num_chunks": max(1, math.ceil(length / 16)), "chunk_size": 16, "top_k": 4}
    return {}


def fill_state(state, length: int):
    """`state` as if `length` steps were written: validity masks set, step/position counters advanced."""
    filled = state.clone()
    for key in filled.keys():
        value = filled.get(key)
        if key in ("valid",):
            filled.set(key, torch.ones_like(value))
        elif key in ("step", "pos") and value.dim() >= 2:
            slots = value[0].numel()
            order = torch.arange(slots, device=value.device).reshape(value.shape[1:])
            filled.set(key, (length - slots + order).clamp(min=0).expand_as(value).clone())
        elif key in ("count", "episode_step"):
            filled.set(key, torch.full_like(value, length))
        elif key == "place" and value.dim() == 2:
            filled.set(key, torch.randint_like(value, 0, 8))
        elif key == "memory" and value.is_floating_point():
            filled.set(key, torch.randn_like(value))
    return filled


def state_bytes(state) -> int:
    return sum(value.numel() * value.element_size() for value in state.values(include_nested=True, leaves_only=True))


def time_memory(name: str, length: int, batch: int = 16, device: str = "cpu", repeats: int = 5,
                input_dim: int = 256, seed: int = 0) -> dict[str, Any]:
    """Median seconds per `forward` step of memory `name` after `length` steps, and its state size."""
    torch.manual_seed(seed)
    memory = build_memory(name, input_dim, **bench_options(name, length)).to(device).eval()
    state = fill_state(memory.initial_state(batch, device), length)
    step = {"feat": torch.randn(batch, input_dim, device=device), "first": torch.zeros(batch, dtype=torch.bool, device=device),
            "place": torch.randint(0, 8, (batch,), device=device), "pose": torch.zeros(batch, 4, device=device)}
    times = []
    with torch.no_grad():
        memory(step, state)  # warm-up (allocator, kernels)
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            memory(step, state)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    times.sort()
    return {"memory": name, "length": length, "batch": batch, "device": device,
            "step_s": times[len(times) // 2], "state_mb": state_bytes(state) / 2**20,
            "params": sum(p.numel() for p in memory.parameters()), "options": bench_options(name, length)}


def bench_memory(memories: list[str] | None = None, lengths: list[int] | None = None, batch: int = 16,
                 devices: list[str] | None = None, repeats: int = 5) -> dict[str, Any]:
    """Per-step latency and state size of `memories` (default: all registered) at each episode length,
    on each device (default: cpu, plus cuda when available). JSON-serialisable; `ratio_vs_trxl` is
    trxl's step time over the memory's at the same length and device (> 1 = faster than full attention)."""
    memories = sorted(MEMORIES) if memories is None else list(memories)
    unknown = [m for m in memories if m not in MEMORIES]
    if unknown:
        raise ValueError(f"unknown memory {unknown[0]!r}; allowed: {', '.join(sorted(MEMORIES))}")
    lengths = list(DEFAULT_LENGTHS if lengths is None else lengths)
    if not lengths or any(int(n) < 1 for n in lengths):
        raise ValueError(f"lengths={lengths}: need positive integers")
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        for length in lengths:
            group = [time_memory(name, int(length), batch, device, repeats) for name in memories]
            full = next((r["step_s"] for r in group if r["memory"] == "trxl"), None)
            for row in group:
                row["ratio_vs_trxl"] = (full / row["step_s"]) if full else None
            rows.extend(group)
    return {"benchmark": "memory", "provenance": provenance(),
            "threads": torch.get_num_threads(), "batch": batch, "lengths": lengths, "rows": rows}
