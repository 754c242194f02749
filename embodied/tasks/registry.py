"""Tasks and measures are registered by name and selected from config (as habitat-lab does)."""
from __future__ import annotations

from typing import Callable

TASKS: dict[str, type] = {}
MEASURES: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in TASKS:
            raise ValueError(f"task {name!r} registered twice")
        TASKS[name] = cls
        cls.task_name = name
        return cls

    return deco


def register_measure(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in MEASURES:
            raise ValueError(f"measure {name!r} registered twice")
        MEASURES[name] = cls
        cls.uuid = name
        return cls

    return deco


def make_env(cfg, seed: int | None = None):
    """Build the gymnasium env of a task from a TaskConfig (or dict / omegaconf node)."""
    from embodied.tasks.config import TaskConfig

    name = getattr(cfg, "name", None) or (cfg.get("name") if hasattr(cfg, "get") else None)
    cls = TASKS.get(name)
    # Tasks with their own config schema (e.g. MemoryBench's image_size, cameras) validate it themselves.
    config_class = getattr(cls, "config_class", None)
    if config_class is not None:
        env = cls(config_class.from_any(cfg))
    else:
        cfg = TaskConfig.from_any(cfg)
        env = TASKS[cfg.name](cfg)
    if seed is not None:
        env.reset(seed=seed)
    return env
