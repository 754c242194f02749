"""Vectorised envs over the registered tasks, and tasks registered as a whole vectorised env."""
from __future__ import annotations

import functools
from typing import Callable

from embodied.config import ConfigError, registrar
from gymnasium.vector import AutoresetMode

from embodied.envs.vector import EnvError, EnvGroup, VectorEnv, available_cpus, batch_infos, finished_episodes
from embodied.tasks import TaskConfig, make_env


# Tasks that come as one vectorised env (a gymnasium.vector.VectorEnv with VectorEnv's same-step autoreset,
# infos layout and `call`; no gymnasium env per copy), by task name:
# factory(task_cfg, num_envs, seed, num_workers) -> env. Selected from config like registered tasks.
VECTOR_ENVS: dict[str, Callable] = {}


def register_vector_env(name: str) -> Callable[[Callable], Callable]:
    return registrar(VECTOR_ENVS, "vector env", name)


def make_vector_env(task_cfg, num_envs: int, seed: int = 0, num_workers: int | None = None,
                    start_method: str = "forkserver", pin_workers: bool = True,
                    autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> VectorEnv:
    """`num_envs` copies of a task (env i seeded `seed + i`), already reset; num_workers=0 runs them
    in-process. pin_workers, autoreset_mode: see VectorEnv (a registered vector env: SAME_STEP only)."""
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs}; allowed: >= 1")
    name = task_cfg.get("name") if hasattr(task_cfg, "get") else getattr(task_cfg, "name", None)
    if name in VECTOR_ENVS:
        if autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"autoreset_mode={autoreset_mode}: {name} autoresets on the same step only; "
                             "allowed: AutoresetMode.SAME_STEP")
        return VECTOR_ENVS[name](task_cfg, num_envs, seed, num_workers)
    cfg = TaskConfig.from_any(task_cfg)
    if getattr(cfg, "batched", False):
        if num_workers:
            raise ConfigError(f"num_workers={num_workers}: task.batched steps every env in this process; "
                              "allowed: 0 or null")
        if autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"autoreset_mode={autoreset_mode}: task.batched autoresets on the same step only")
        from embodied.envs.batched import BatchedNavEnv

        env = BatchedNavEnv(cfg, num_envs)
        env.reset(seed=seed)
        return env
    fns = [functools.partial(make_env, cfg) for _ in range(num_envs)]
    env = VectorEnv(fns, num_workers=num_workers, start_method=start_method, pin_workers=pin_workers,
                    autoreset_mode=autoreset_mode)
    env.reset(seed=seed)
    return env


from embodied.envs import toy as _toy  # noqa: E402,F401  (registers toy/corridor)

__all__ = ["AutoresetMode", "EnvError", "EnvGroup", "VECTOR_ENVS", "VectorEnv", "available_cpus", "batch_infos",
           "finished_episodes", "make_vector_env", "register_vector_env"]
