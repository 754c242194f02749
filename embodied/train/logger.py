"""Metric loggers: JSONL always (metrics.jsonl in the run dir), Weights & Biases when configured.

W&B runs offline unless the user set WANDB_MODE or `logger.mode=online`, so CI never waits on the
network. The W&B run id lives in the resume state and is reused (`resume="allow"`) after preemption.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embodied.config import check

LOGGERS = ("jsonl", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class LoggerConfig:
    """Schema of the `logger` config group (configs/logger/*.yaml)."""

    name: str = "jsonl"
    """jsonl (metrics.jsonl only) or wandb (metrics.jsonl and Weights & Biases)."""
    project: str = "embodied"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); null = your default entity."""
    mode: str | None = None
    """W&B mode: offline, online or disabled; null = $WANDB_MODE if set, else offline."""
    group: str | None = None
    """W&B group (e.g. one per sweep)."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    log_every: int = 1
    """Write metrics every this many updates."""

    def validate(self) -> "LoggerConfig":
        check(self.name in LOGGERS, "logger.name", f"{self.name!r}; allowed: {', '.join(LOGGERS)}")
        check(self.mode is None or self.mode in WANDB_MODES, "logger.mode",
              f"{self.mode!r}; allowed: {', '.join(WANDB_MODES)} or null")
        check(self.log_every >= 1, "logger.log_every", f"{self.log_every}; allowed: >= 1")
        return self


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; keep the key so a gap is visible
        out[key] = value
    return out


class JsonlLogger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, metrics: dict[str, Any]) -> None:
        self._file.write(json.dumps(_clean(metrics), sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def truncate_jsonl(path: str | Path, last_update: int) -> None:
    """Drop lines logged after `last_update` (a resumed run re-does those updates)."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("update", -1) <= last_update:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a crash mid-write
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


class WandbLogger:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_id: str | None, run_name: str, config: dict):
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
        self.run_id = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        self._wandb = wandb
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, group=cfg.group, tags=list(cfg.tags),
                              name=run_name, id=self.run_id, resume="allow", mode=mode, dir=str(run_dir),
                              config=config)

    def log(self, metrics: dict[str, Any]) -> None:
        step = metrics.get("step")
        self.run.log({k: v for k, v in _clean(metrics).items() if v is not None}, step=step)

    def close(self) -> None:
        self.run.finish()


class MetricLogger:
    """Fan-out to JSONL (always) and W&B (logger.name=wandb). Only rank 0 constructs one."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict,
                 wandb_id: str | None = None):
        self.jsonl = JsonlLogger(Path(run_dir) / "metrics.jsonl")
        self.wandb = WandbLogger(cfg, Path(run_dir), wandb_id, run_name, config) if cfg.name == "wandb" else None

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.run_id if self.wandb else None

    def log(self, metrics: dict[str, Any]) -> None:
        self.jsonl.log(metrics)
        if self.wandb:
            self.wandb.log(metrics)

    def close(self) -> None:
        self.jsonl.close()
        if self.wandb:
            self.wandb.close()
