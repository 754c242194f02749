"""Data-parallel training helpers (torchrun): process group, gradient all-reduce, DD-PPO cut-off.

Each rank runs its own env workers (seeds offset by rank) and its own agent copy; parameters are
broadcast from rank 0 at start and gradients are averaged with one all-reduce per optimizer step
(gloo on CPU, NCCL on GPU), so all ranks keep identical parameters. Rank 0 logs and checkpoints.

Shutdown: gloo worker threads can abort the interpreter at exit (SIGABRT, torchrun then reports a
failure), so workers end with barrier + destroy_process_group + os._exit(0) after flushing output.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from embodied.loading import resolve_device


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _export_slurm_env() -> None:
    """Under SLURM with several tasks (submitit launcher), derive torchrun's env vars from SLURM's."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    except (ImportError, RuntimeError, KeyError):  # not a submitit job: plain srun without torchrun
        pass


def launched_by_torchrun() -> bool:
    _export_slurm_env()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device: str) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_worker(ctx: DistContext, code: int = 0) -> None:
    """End a torchrun worker without the gloo teardown abort (see module doc)."""
    shutdown(ctx)
    if ctx.enabled:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def broadcast_parameters(module: torch.nn.Module, ctx: DistContext) -> None:
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average gradients over ranks in one flat all-reduce; a missing grad counts as zeros."""
    if not ctx.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset:offset + n].view_as(g).to(g.dtype)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


def all_reduce_sum(values: Iterable[float], ctx: DistContext) -> list[float]:
    values = [float(v) for v in values]
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def union_keys(keys: Iterable[str], ctx: DistContext) -> list[str]:
    """The sorted union of every rank's keys (ranks reduce values key by key, so they must agree)."""
    keys = sorted(set(keys))
    if not ctx.enabled:
        return keys
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, keys)
    return sorted({k for rank in gathered for k in rank})


def any_rank(flag: bool, ctx: DistContext) -> bool:
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class StragglerCutoff:
    """DD-PPO preemption of stragglers: once `fraction` of the ranks finished collecting their
    rollout, the others stop early (after at least `min_fraction` of their steps).

    A shared counter in the process group's TCPStore is incremented by each finished rank and
    polled by the others every env step (one cheap store round-trip)."""

    def __init__(self, ctx: DistContext, fraction: float, min_fraction: float = 0.25):
        self.ctx = ctx
        self.enabled = ctx.enabled and fraction < 1.0
        self.needed = max(1, math.ceil(fraction * ctx.world_size))
        self.min_fraction = min_fraction
        self.store = None
        if self.enabled:
            self.store = dist.distributed_c10d._get_default_store()

    def _key(self, update: int) -> str:
        return f"ddppo_done_{update}"

    def should_stop(self, update: int, step: int, rollout_steps: int) -> bool:
        if not self.enabled or step < math.ceil(self.min_fraction * rollout_steps):
            return False
        return self.store.add(self._key(update), 0) >= self.needed

    def finished(self, update: int) -> None:
        if self.enabled:
            self.store.add(self._key(update), 1)


def launch(nproc: int, module: str, args: list[str]) -> int:
    """Run `python -m module args...` on `nproc` local processes through torchrun's API."""
    from torch.distributed.run import get_args_parser, run

    parsed = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "-m", module, *args])
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        run(parsed)
    except ChildFailedError as exc:
        # Ranks that all ended with one code (2 = bad input, 3 = preempted) pass it on unchanged.
        codes = {f.exitcode for f in exc.failures.values()}
        if len(codes) == 1 and next(iter(codes)) in (2, 3):
            return next(iter(codes))
        print(f"distributed training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"distributed training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
