"""Training: memory-aware PPO, behaviour cloning/DAgger, checkpoints, torchrun, SLURM, loggers.

`embodied train key=value ...` / `python -m embodied.train ...` / `torchrun -m embodied.train ...`
all enter through `main()`, a Hydra app over configs/train.yaml.
"""
from __future__ import annotations

import sys

from embodied.config import ConfigError
from embodied.train.checkpoint import CheckpointError
from embodied.train.config import TrainConfig, register_configs

register_configs()


def _task_function(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from embodied.train import distributed as dist_utils
    from embodied.train.run import train

    if cfg.distributed and cfg.nproc > 1 and not dist_utils.launched_by_torchrun():
        overrides = list(HydraConfig.get().overrides.task)
        rc = dist_utils.launch(cfg.nproc, "embodied.train", overrides)
        if rc:
            raise SystemExit(rc)
        return {"status": "finished"}
    try:
        result = train(cfg)
    except (ConfigError, CheckpointError) as exc:  # bad input: one line, no traceback
        print(f"embodied train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if dist_utils.launched_by_torchrun():
        import torch.distributed as dist

        dist_utils.exit_worker(dist_utils.DistContext(rank=dist.get_rank(), world_size=dist.get_world_size()))
    return result


def main() -> None:
    """Hydra entry point of `embodied train` (reads sys.argv)."""
    import hydra

    from embodied.config import config_dir

    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_task_function)()


__all__ = ["TrainConfig", "main"]
