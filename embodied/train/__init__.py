"""Training: memory-aware PPO, behaviour cloning/DAgger, checkpoints, torchrun, SLURM, loggers.

`embodied train key=value ...` / `python -m embodied.train ...` / `torchrun -m embodied.train ...`
all enter through `main()`, a Hydra app over configs/train.yaml (its schemas are stored with Hydra by
embodied.config.register_schemas, which run_hydra_app calls). Trainers are chosen by `trainer.name`
from the registry of embodied.train.config (`register_trainer`).

Exit codes: 0 finished (also: run_dir already finished), 2 bad input or run_dir unusable (held by
another process, disk full; one line), 3 preempted (resume state saved; the same command resumes;
SLURM requeue as in docs/cluster.md). Under torchrun every rank exits with the code.
"""
from __future__ import annotations

import sys

from embodied.config import InputError
from embodied.train.config import TRAINERS, TrainConfig, register_trainer
from embodied.train import run as _run  # noqa: F401,E402  (registers the ppo and bc trainers)


def _task_function(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from embodied.train import distributed as dist_utils
    from embodied.train.run import EXIT_PREEMPTED, train

    if cfg.distributed and cfg.nproc > 1 and not dist_utils.launched_by_torchrun():
        overrides = list(HydraConfig.get().overrides.task)
        rc = dist_utils.launch(cfg.nproc, "embodied.train", overrides)
        if rc:
            raise SystemExit(rc)
        return {"status": "finished"}
    try:
        result = train(cfg)
    except InputError as exc:  # bad input, a run_dir in use, a full disk: one line, no traceback
        print(f"embodied train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Exit codes only after train() cleaned up (lock released, envs closed); a -m sweep job returns its result.
    code = EXIT_PREEMPTED if result.get("status") == "preempted" else 0
    if dist_utils.launched_by_torchrun():
        import torch.distributed as dist

        dist_utils.exit_worker(dist_utils.DistContext(rank=dist.get_rank(), world_size=dist.get_world_size()), code)
    if code and HydraConfig.get().mode == RunMode.RUN:
        raise SystemExit(code)
    return result


def main() -> None:
    """Hydra entry point of `embodied train` (reads sys.argv); bad input ends it with one line, exit 2."""
    from embodied.config import run_hydra_app

    run_hydra_app("train", "train", _task_function)


__all__ = ["TRAINERS", "TrainConfig", "main", "register_trainer"]
