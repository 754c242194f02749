"""A tiny 1-D navigation task with the VectorEnv API, for fast trainer checks (like CartPole in CleanRL).

`corridor`: the agent stands on a line of `length` cells and must walk to the goal cell and call
stop there. Observation `pointgoal` = (distance/length, cos, sin) of the goal direction, as the
GPS+compass sensor of pointnav gives it. Actions follow the nav action set: 0 stop, 1 move
forward (+1 cell), 2 turn_left (reverse heading)... only stop, forward and turning matter, so a
random policy almost never succeeds while a learned one always can. A gymnasium vector env with
`embodied.envs.VectorEnv`'s same-step autoreset and infos (`final_info` measures, see envs.vector).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from embodied.envs import register_vector_env
from embodied.envs.vector import vector_infos


class CorridorVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, seed: int = 0, length: int = 6, max_steps: int = 24):
        self.num_envs = num_envs
        self.length = length
        self.max_steps = max_steps
        self.single_observation_space = spaces.Dict(
            {"pointgoal": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)})
        self.single_action_space = spaces.Discrete(6)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(seed)
        self._pos = np.zeros(num_envs, dtype=np.int64)
        self._heading = np.ones(num_envs, dtype=np.int64)
        self._goal = np.zeros(num_envs, dtype=np.int64)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._return = np.zeros(num_envs, dtype=np.float64)
        self._start_dist = np.zeros(num_envs, dtype=np.int64)

    def _new_episode(self, i: int) -> None:
        self._pos[i] = self._rng.integers(0, self.length)
        goal = self._rng.integers(0, self.length - 1)
        self._goal[i] = goal + (goal >= self._pos[i])  # never the start cell
        self._heading[i] = self._rng.choice([-1, 1])
        self._steps[i] = 0
        self._return[i] = 0.0
        behind = (self._goal[i] - self._pos[i]) * self._heading[i] < 0
        self._start_dist[i] = abs(self._goal[i] - self._pos[i]) + int(behind)  # moves + a turn if needed

    def _obs(self) -> dict[str, np.ndarray]:
        delta = (self._goal - self._pos) * self._heading  # goal ahead (>0) or behind (<0)
        return {"pointgoal": np.stack([np.abs(delta) / self.length, np.sign(delta),
                                       np.zeros(self.num_envs)], 1).astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """All envs draw from one generator: `seed` must be an int (or None), not one per env."""
        if seed is not None:
            if not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed={seed!r}; allowed: an int or None (one generator for all envs)")
            super().reset(seed=int(seed))
            self._rng = np.random.default_rng(seed)
        mask = (options or {}).get("reset_mask")
        for i in range(self.num_envs):
            if mask is None or mask[i]:
                self._new_episode(i)
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions shape {actions.shape}: expected ({self.num_envs},)")
        reward = np.full(self.num_envs, -0.01, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        finals: list[dict | None] = [None] * self.num_envs
        for i, a in enumerate(actions.tolist()):
            before = abs(self._goal[i] - self._pos[i])
            self._steps[i] += 1
            success = False
            if a == 0:
                terminated[i] = True
                success = before == 0
                reward[i] += 2.5 if success else 0.0
            elif a == 1:
                self._pos[i] = np.clip(self._pos[i] + self._heading[i], 0, self.length - 1)
            elif a in (2, 3):
                self._heading[i] *= -1
            reward[i] += 0.1 * (before - abs(self._goal[i] - self._pos[i]))
            self._return[i] += reward[i]
            if not terminated[i] and self._steps[i] >= self.max_steps:
                truncated[i] = True
            if terminated[i] or truncated[i]:
                length = int(self._steps[i])
                shortest = int(self._start_dist[i]) + 1  # + the stop action
                finals[i] = {
                    "success": float(success), "spl": float(success) * shortest / max(shortest, length),
                    "soft_spl": 0.0, "distance_to_goal": float(before), "collisions": 0.0,
                    "steps": length, "return": float(self._return[i]), "length": length}
                self._new_episode(i)
        return self._obs(), reward, terminated, truncated, vector_infos([{}] * self.num_envs, finals)

    def oracle_action(self) -> list[int]:
        out = []
        for i in range(self.num_envs):
            delta = (self._goal[i] - self._pos[i]) * self._heading[i]
            out.append(0 if delta == 0 else (1 if delta > 0 else 2))
        return out

    def call(self, name: str, *args, **kwargs):
        if name != "oracle_action":
            raise ValueError(f"CorridorVectorEnv.call({name!r}): only 'oracle_action' is supported")
        return self.oracle_action()


@register_vector_env("toy/corridor")
def make_toy_vector_env(task_cfg, num_envs: int, seed: int, num_workers: int | None = None):
    """`task.name=toy/corridor` (options: task.length, task.max_steps); runs in-process (no workers)."""
    get = task_cfg.get if hasattr(task_cfg, "get") else (lambda k, d=None: getattr(task_cfg, k, d))
    return CorridorVectorEnv(num_envs, seed=seed, length=int(get("length", 6) or 6),
                             max_steps=int(get("max_steps", 24) or 24))
