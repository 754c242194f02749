"""Evaluation: `embodied eval task=... ckpt=PATH episodes=100` or `suite=NAME` (a Hydra app over
configs/eval.yaml, whose schema embodied.config.register_schemas stores before composing); results
table with 95% CIs (embodied.eval.stats) written as JSON. Agents, envs, checkpoints and the device come
from embodied.loading: evaluation never imports a trainer."""
from __future__ import annotations

from embodied.eval.runner import EvalConfig, evaluate, format_table
from embodied.eval.stats import bootstrap_interval, summarize, wilson_interval


def main(after=None) -> None:
    """Hydra entry point of `embodied eval` (reads sys.argv); bad input ends it with one line, exit 2.
    `after(cfg, report)` runs once the report is written: the CLI passes the viewer's recorder for
    `record=true` (the viewer layer sits above this one, so eval cannot call it itself)."""
    from embodied.config import ConfigError, run_hydra_app

    def task_function(cfg) -> dict:
        if cfg.record and after is None:
            raise ConfigError("record: true needs the `embodied eval` command (the viewer records)")
        report = evaluate(cfg)
        return after(cfg, report) if after is not None else report

    run_hydra_app("eval", "eval", task_function)


__all__ = ["EvalConfig", "bootstrap_interval", "evaluate", "format_table", "main", "summarize", "wilson_interval"]
