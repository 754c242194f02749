"""Evaluation: `embodied eval task=... ckpt=PATH episodes=100` or `suite=NAME` (a Hydra app over
configs/eval.yaml); results table with 95% CIs (embodied.eval.stats) written as JSON."""
from __future__ import annotations

from hydra.core.config_store import ConfigStore

from embodied.eval.runner import EvalConfig, evaluate, format_table
from embodied.eval.stats import bootstrap_interval, summarize, wilson_interval

ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


def _task_function(cfg) -> dict:
    import sys

    from embodied.config import ConfigError
    from embodied.train.checkpoint import CheckpointError

    try:
        return evaluate(cfg)
    except (ConfigError, CheckpointError) as exc:  # bad input: one line, no traceback
        print(f"embodied eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Hydra entry point of `embodied eval` (reads sys.argv)."""
    import hydra

    from embodied.config import config_dir

    hydra.main(config_path=str(config_dir()), config_name="eval", version_base="1.3")(_task_function)()


__all__ = ["EvalConfig", "bootstrap_interval", "evaluate", "format_table", "main", "summarize", "wilson_interval"]
