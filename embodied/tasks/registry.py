"""Tasks and measures are registered by name and selected from config (as habitat-lab does)."""
from __future__ import annotations

from typing import Callable

TASKS: dict[str, type] = {}
MEASURES: dict[str, type] = {}
# Named boolean masks over a batch of a task's observations ([..., *shape] arrays or tensors -> [...]):
# the steps a trainer may weight up (behaviour cloning's `upweight`), e.g. fast-mapping's instruction phase.
STEP_SELECTORS: dict[str, Callable] = {}


def _registrar(table: dict, kind: str, name: str, attribute: str | None = None) -> Callable:
    def deco(obj):
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = obj
        if attribute:
            setattr(obj, attribute, name)
        return obj

    return deco


def register_task(name: str) -> Callable[[type], type]:
    return _registrar(TASKS, "task", name, "task_name")


def register_measure(name: str) -> Callable[[type], type]:
    return _registrar(MEASURES, "measure", name, "uuid")


def register_step_selector(name: str) -> Callable[[Callable], Callable]:
    return _registrar(STEP_SELECTORS, "step selector", name)


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
