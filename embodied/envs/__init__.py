"""Vectorised envs over the registered tasks."""
from __future__ import annotations

import functools

from embodied.envs.vector import EnvError, EnvGroup, VectorEnv, available_cpus
from embodied.tasks import TaskConfig, make_env


def make_vector_env(task_cfg, num_envs: int, seed: int = 0, num_workers: int | None = None,
                    start_method: str = "forkserver", pin_workers: bool = True) -> VectorEnv:
    """`num_envs` copies of a task (env i seeded `seed + i`); num_workers=0 runs them in-process.
    pin_workers: see VectorEnv."""
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs}; allowed: >= 1")
    cfg = TaskConfig.from_any(task_cfg)
    fns = [functools.partial(make_env, cfg) for _ in range(num_envs)]
    env = VectorEnv(fns, num_workers=num_workers, start_method=start_method, pin_workers=pin_workers)
    env.reset(seed=seed)
    return env


__all__ = ["EnvError", "EnvGroup", "VectorEnv", "available_cpus", "make_vector_env"]
