"""Tasks and measures are registered by name and selected from config (as habitat-lab does)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

from embodied.config import InputError, registrar

TASKS: dict[str, type] = {}
# Task families whose names are open-ended: a name starting with the prefix is served by the class
# (`gym:<id>`: any gymnasium-registered env, embodied/tasks/external.py).
TASK_PREFIXES: dict[str, type] = {}
MEASURES: dict[str, type] = {}
# Named boolean masks over a batch of a task's observations ([..., *shape] arrays or tensors -> [...]):
# the steps a trainer may weight up (behaviour cloning's `upweight`), e.g. fast-mapping's instruction phase.
STEP_SELECTORS: dict[str, Callable] = {}


@dataclass(frozen=True)
class DemoSource:
    """How a task family records and reads its demonstrations, where they are not recorded through
    the vector envs with `oracle_action()` (embodied.train.bc): MemoryBench's keyframe expert.

    record(task_cfg, n, data_dir, noise, copy, progress) -> Path: an episode file of the first `n`
    train demos (noise > 0: the DART copy `copy`, executed `noise` metres off target); an existing
    file of the same name is reused. read(path) -> episodes; a file of other demonstrations is one
    line naming it."""

    record: Callable
    read: Callable


DEMO_SOURCES: dict[str, DemoSource] = {}  # task-name prefix (family/) -> its source


def register_demo_source(prefix: str, record: Callable, read: Callable) -> None:
    if prefix in DEMO_SOURCES:
        raise ValueError(f"demo source for {prefix!r} already registered")
    DEMO_SOURCES[prefix] = DemoSource(record, read)


def demo_source(task_name: str) -> DemoSource | None:
    """The demo source of a task's family, or None (demos come from its envs' oracle)."""
    return next((s for prefix, s in DEMO_SOURCES.items() if str(task_name).startswith(prefix)), None)


def register_task(name: str) -> Callable[[type], type]:
    deco = registrar(TASKS, "task", name, "task_name")

    def checked(cls: type) -> type:
        # Every registered env goes through TaskEnv's reset/step checks.
        if not (isinstance(cls, type) and issubclass(cls, TaskEnv)):
            raise TypeError(f"task {name!r}: {cls!r} must subclass embodied.tasks.registry.TaskEnv")
        return deco(cls)

    return checked


class EpisodeOverError(RuntimeError):
    """`step()` after the episode ended (terminated or truncated) or before the first `reset()`:
    a program bug, not bad input."""


class ObservationError(InputError):
    """An observation holds NaN or inf (most often from a scene file or a task option that yields
    non-finite geometry): names the task and the observation key."""


def check_finite(task: str, obs: dict) -> None:
    """Raise ObservationError naming the first float observation that holds NaN or inf."""
    # The sum of every float value is the cheap test (~8 us for a 64x64 nav observation, on a busy
    # 2-core machine: under 1% of a step); only a non-finite sum (NaN/inf, or finite values whose
    # float32 sum overflowed) looks closer. Tiny arrays are summed as Python floats: a numpy
    # reduction costs more than that.
    total = 0.0
    for value in obs.values():
        if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
            total += sum(value.ravel().tolist()) if value.size <= 64 else float(np.add.reduce(value, None))
    if math.isfinite(total):
        return
    for key, value in obs.items():
        if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
            if np.isnan(value).any():
                raise ObservationError(f"{task}: observation {key!r} holds NaN")
            if not np.isfinite(value).all():
                raise ObservationError(f"{task}: observation {key!r} holds inf")


class TaskEnv(gym.Env):
    """Base of every registered task env. Subclasses implement `_reset(seed, options)` and
    `_step(action)`; `reset`/`step` add what every task owes its caller: seeding gymnasium's
    `np_random`, no step outside an episode, and finite float observations."""

    config_class: type | None = None  # the family's schema (embodied.tasks.config), which make_env builds
    result_groups: tuple[str, ...] = ()  # string `info` keys evaluation splits success by (e.g. question_type)
    _episode_over: bool | None = None  # None: no episode began (no reset yet, or the last one raised)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._episode_over = None
        obs, info = self._reset(seed=seed, options=options)
        self._episode_over = False
        check_finite(self._task_label(), obs)
        return obs, info

    def step(self, action):
        if self._episode_over is not False:
            when = ("before reset()" if self._episode_over is None
                    else "after the episode ended (terminated or truncated)")
            raise EpisodeOverError(f"{self._task_label()}: step() {when}; call reset() first")
        obs, reward, terminated, truncated, info = self._step(action)
        self._episode_over = bool(terminated or truncated)
        check_finite(self._task_label(), obs)
        return obs, reward, terminated, truncated, info

    def _task_label(self) -> str:
        return getattr(self, "task_name", None) or type(self).__name__

    def _reset(self, seed: int | None, options: dict | None):
        raise NotImplementedError

    def _step(self, action):
        raise NotImplementedError


def task_class(name) -> type | None:
    """The env class of task `name`: a registered name, else the class of its prefix; None if neither."""
    name = str(name)
    if name in TASKS:
        return TASKS[name]
    return next((cls for prefix, cls in TASK_PREFIXES.items() if name.startswith(prefix)), None)


def register_measure(name: str) -> Callable[[type], type]:
    return registrar(MEASURES, "measure", name, "uuid")


def register_step_selector(name: str) -> Callable[[Callable], Callable]:
    return registrar(STEP_SELECTORS, "step selector", name)


def make_env(cfg, seed: int | None = None):
    """Build the gymnasium env of a task from its family's schema (or a dict / omegaconf node, checked
    against the schema its `name` picks: embodied.tasks.config.TaskConfig.from_any)."""
    from embodied.tasks.config import TaskConfig

    cfg = TaskConfig.from_any(cfg)
    env = task_class(cfg.name)(cfg)
    if seed is not None:
        env.reset(seed=seed)
    return env
