"""Metric loggers: JSONL always (metrics.jsonl in the run dir), Weights & Biases when configured.

W&B runs offline unless the user set WANDB_MODE or `logger.mode=online`, so CI never waits on the
network. The W&B run id lives in the resume state and is reused (`resume="allow"`) after preemption.
A metrics row is written whole or not at all: a failed write (a full disk) is cut back off the file
and raises RunDirError. `RunLog` is the text log of a run (run_dir/train.log).
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embodied.config import check
from embodied.train.checkpoint import RunDirError, atomic_write_text, write_error

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
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(write_error(exc, self.path)) from None

    def log(self, metrics: dict[str, Any]) -> None:
        data = (json.dumps(_clean(metrics), sort_keys=True) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:  # one row per update, written whole: a short write is followed by the error
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)  # no torn row left behind
            except OSError:
                pass
            raise RunDirError(f"{write_error(exc, self.path)} (update {metrics.get('update')}); "
                              "the rows before it are intact") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def truncate_jsonl(path: str | Path, last_update: int) -> None:
    """Drop lines logged after `last_update` (a resumed run re-does those updates; a fresh start
    passes 0 and so drops every row a run killed before its first checkpoint left)."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("update", -1) <= last_update:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a crash mid-write
            continue
    if len(kept) == len(lines):
        return
    try:
        atomic_write_text(path, "".join(k + "\n" for k in kept))
    except OSError as exc:
        raise RunDirError(write_error(exc, path)) from None


class RunLog:
    """run_dir/train.log: the records of the `embodied` loggers (start, end, preemption, errors,
    env worker restarts) with timestamps; the console gets them through the root logger (Hydra's
    job logging), the file only here, so no line is printed twice.

    Records are held back until `open()` (the start was accepted): a rejected start writes nothing."""

    FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.logger = logging.getLogger("embodied")
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self._held = _Held()
        self._handler: logging.Handler = self._held
        self.logger.addHandler(self._handler)

    def open(self) -> None:
        file = _QuietFileHandler(self.path, encoding="utf-8")
        file.setFormatter(logging.Formatter(self.FORMAT))
        for record in self._held.records:
            file.handle(record)
        self.logger.removeHandler(self._handler)
        self._handler = file
        self.logger.addHandler(file)

    def file_only(self, level: int, message: str, exc: BaseException | None = None) -> None:
        """A record for train.log but not the console (the caller prints it itself); with `exc`, its traceback."""
        if isinstance(self._handler, _QuietFileHandler):
            exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
            self._handler.handle(self.logger.makeRecord(self.logger.name, level, "", 0, message, (), exc_info))

    def close(self) -> None:
        self.logger.removeHandler(self._handler)
        self._handler.close()
        self.logger.setLevel(self._level)


class _Held(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _QuietFileHandler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        pass  # e.g. a full disk: the run's own writes report it in one line, not a logging traceback


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
