"""Any gymnasium-registered env as a task: `task.name=gym:<id>` (`gym:<module>:<id>` imports <module>
first, the package that registers the env, as gymnasium.make does).

The adapter gives the agent the platform's observation keys: the env's one image (uint8 [H, W, 3],
or grayscale [H, W] / [H, W, 1] repeated to three channels) is `rgb`; every other observation is
flattened (gymnasium.spaces.flatten: Box values as they are, Discrete and MultiDiscrete one-hot,
MultiBinary as 0/1) and concatenated, in the order of the env's Dict space, into the float vector `state`. A key it
cannot map (a Text or custom space, a second image) is an error naming it; `task.drop` lists keys the
agent is not given. Discrete actions pass through (shifted to start at 0), MultiDiscrete actions
become one Discrete over their combinations, a float Box is a vector in [-1, 1] per dimension that the
adapter clips and scales to the env's bounds. An env on the old gym API runs through gymnasium's
compatibility envs (shimmy: `gym:GymV26Environment-v0` with `task.kwargs.env_id`).

Measures are the env's own: its info's numeric and string entries are the task's info, so training
logs them and evaluation reports `success` when the env gives it, else return and length.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied.config import ConfigError, check
from embodied.tasks.config import TaskConfig
from embodied.tasks.registry import TASK_PREFIXES, TaskEnv

PREFIX = "gym:"
STATE_LIMIT = 65536  # floats in `state`: more is an image or a map the agent should see another way


@dataclass
class GymConfig(TaskConfig):
    """gym:<id>: a gymnasium env run through the observation and action adapter above."""

    family = "gym"
    name: str = "gym:CartPole-v1"
    """`gym:<id>` of an env registered with gymnasium; `gym:<module>:<id>` imports <module> first
    (e.g. gym:minigrid:MiniGrid-MemoryS7-v0)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of gymnasium.make: the env's own options."""
    wrappers: list[str] = field(default_factory=list)
    """gymnasium wrappers applied in order to the made env, before the adapter, each `module:Class`
    (e.g. minigrid.wrappers:RGBImgPartialObsWrapper)."""
    max_episode_steps: int | None = None
    """Truncate episodes after this many steps (gymnasium.make's max_episode_steps); null keeps the env's own limit."""
    drop: list[str] = field(default_factory=list)
    """Observation keys of the env the agent is not given (e.g. a mission string)."""

    @property
    def env_id(self) -> str:
        return self.name[len(PREFIX):]

    def _check_name(self) -> None:
        check(self.name.startswith(PREFIX) and len(self.name) > len(PREFIX), "task.name",
              f"{self.name!r}; allowed: gym:<id> of a gymnasium-registered env")
        module, _, env_id = self.env_id.rpartition(":")
        if module:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ConfigError(f"task.name: {self.name!r}: cannot import {module!r} ({e}); install the package "
                                  "that provides the env") from None
        if env_id not in gym.registry:
            close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
            hint = f"; closest: {', '.join(close)}" if close else (
                "; name the module that registers it, gym:<module>:<id>" if not module else "")
            raise ConfigError(f"task.name: {env_id!r} is not a registered gymnasium env{hint}")

    def validate(self) -> "GymConfig":
        super().validate()
        check(self.max_episode_steps is None or self.max_episode_steps >= 1, "task.max_episode_steps",
              f"{self.max_episode_steps}; allowed: >= 1 or null")
        for w in self.wrappers:
            wrapper_class(w)
        return self


def wrapper_class(path: str) -> type:
    """The wrapper class named `module:Class`; a ConfigError naming task.wrappers if there is none."""
    module, _, name = str(path).partition(":")
    check(bool(module) and bool(name), "task.wrappers", f"{path!r}; allowed: module:Class")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"task.wrappers: {path!r}: {e}") from None
    check(isinstance(cls, type) and issubclass(cls, gym.Wrapper), "task.wrappers",
          f"{path!r} is not a gymnasium.Wrapper class")
    return cls


def _as_image(space: spaces.Space) -> str | None:
    """How a space is turned into `rgb`: "rgb", "gray" (repeated to 3 channels), or None (not an image)."""
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8:
        return None
    shape = space.shape
    if len(shape) == 3 and shape[2] == 3 and min(shape[:2]) >= 4:
        return "rgb"
    if (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)) and min(shape[:2]) >= 4:
        return "gray"
    return None


class ObservationAdapter:
    """The env's observation (a Dict, or one space under the key `obs`) as {rgb, state}."""

    def __init__(self, space: spaces.Space, drop: list[str]):
        items = dict(space.spaces) if isinstance(space, spaces.Dict) else {"obs": space}
        missing = [k for k in drop if k not in items]
        check(not missing, "task.drop", f"{missing} not observations of the env; allowed: {', '.join(items)}")
        self.image_key, self.image_kind = None, None
        self.flat: dict[str, spaces.Space] = {}
        for key, sub in items.items():
            if key in drop:
                continue
            kind = _as_image(sub)
            if kind is not None:
                if self.image_key is not None:
                    raise ConfigError(f"task.drop: observations {self.image_key!r} and {key!r} are both images; the "
                                      "agent takes one: list the others in task.drop")
                self.image_key, self.image_kind = key, kind
                continue
            try:
                if isinstance(sub, spaces.Text):  # flatten would give character ids: not a useful vector
                    raise NotImplementedError
                size = spaces.flatdim(sub)
            except (NotImplementedError, ValueError, TypeError):
                raise ConfigError(f"task.drop: observation {key!r} has a {type(sub).__name__} space, which has no vector form; "
                                  f"list it in task.drop") from None
            check(size <= STATE_LIMIT, "task.drop", f"observation {key!r} flattens to {size} floats (> {STATE_LIMIT}); "
                  "list it in task.drop or wrap the env to shrink it")
            self.flat[key] = sub
        out = {}
        if self.image_key is not None:
            h, w = items[self.image_key].shape[:2]
            out["rgb"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        if self.flat:
            size = sum(spaces.flatdim(s) for s in self.flat.values())
            out["state"] = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        if not out:
            raise ConfigError("task.drop: every observation of the env is dropped; the agent would see nothing")
        self.space = spaces.Dict(out)
        self.single = not isinstance(space, spaces.Dict)

    def __call__(self, obs) -> dict[str, np.ndarray]:
        obs = {"obs": obs} if self.single else obs
        out = {}
        if self.image_key is not None:
            image = np.asarray(obs[self.image_key], np.uint8)
            out["rgb"] = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2) if self.image_kind == "gray" else image
        if self.flat:
            out["state"] = np.concatenate([np.asarray(spaces.flatten(s, obs[k]), np.float32).ravel()
                                           for k, s in self.flat.items()])
        return out


class ActionAdapter:
    """The agent's actions: Discrete from 0 (the env's Discrete, shifted by its start, or its
    MultiDiscrete's combinations), or for a Box a float vector in [-1, 1] per dimension, clipped and
    scaled to the env's bounds (dimensions without finite bounds pass through unscaled)."""

    def __init__(self, space: spaces.Space):
        self.env_space = space
        if isinstance(space, spaces.Discrete):
            self.space = spaces.Discrete(int(space.n))
        elif isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
            self.space = spaces.Discrete(int(np.prod(space.nvec)))
        elif isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
            self.size = int(np.prod(space.shape))
            low, high = np.asarray(space.low, np.float64).ravel(), np.asarray(space.high, np.float64).ravel()
            self.bounded = np.isfinite(low) & np.isfinite(high)
            self.low, self.high = np.where(self.bounded, low, -1.0), np.where(self.bounded, high, 1.0)
            bound = np.where(self.bounded, 1.0, np.inf).astype(np.float32)
            self.space = spaces.Box(-bound, bound, (self.size,), np.float32)
        else:
            raise ConfigError(f"task.name: the env's action space {space} is not Discrete, MultiDiscrete or a float Box")

    def __call__(self, action):
        if isinstance(self.space, spaces.Box):
            a = np.asarray(action, np.float64).reshape(-1)
            if a.shape != (self.size,):
                raise ValueError(f"action has {a.size} values; expected {self.size}")
            a = np.where(self.bounded, self.low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low), a)
            return a.reshape(self.env_space.shape).astype(self.env_space.dtype)
        a = int(np.asarray(action).reshape(()))
        if not 0 <= a < self.space.n:
            raise ValueError(f"action {a} outside 0..{self.space.n - 1}")
        if isinstance(self.env_space, spaces.Discrete):
            return int(self.env_space.start) + a
        return (np.array(np.unravel_index(a, tuple(self.env_space.nvec))) + self.env_space.start).astype(self.env_space.dtype)


def _measures(info: dict) -> dict:
    """The env's info entries a task reports: numbers (bools as 0/1) and strings; others stay with the env."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (bool, np.bool_)):
            out[k] = float(v)
        elif isinstance(v, (int, float, str, np.integer, np.floating)):
            out[k] = v if isinstance(v, str) else float(v)
    return out


class GymTaskEnv(TaskEnv):
    """A gymnasium env behind the adapter (see the module docstring)."""

    config_class = GymConfig
    metadata = {"render_modes": []}

    def __init__(self, cfg: GymConfig):
        self.cfg = cfg
        self.task_name = cfg.name
        make_kwargs = dict(cfg.kwargs)
        if cfg.max_episode_steps is not None:
            make_kwargs["max_episode_steps"] = cfg.max_episode_steps
        try:
            env = gym.make(cfg.env_id, **make_kwargs)
        except TypeError as e:  # an option the env does not take
            raise ConfigError(f"task.kwargs: {cfg.env_id}: {e}") from None
        for path in cfg.wrappers:
            env = wrapper_class(path)(env)
        self.env = env
        self.observations = ObservationAdapter(env.observation_space, list(cfg.drop))
        self.actions = ActionAdapter(env.action_space)
        self.observation_space = self.observations.space
        self.action_space = self.actions.space

    @property
    def max_episode_steps(self) -> int | None:
        """The step limit gymnasium enforces (task.max_episode_steps, else the env's registration), or None."""
        return self.cfg.max_episode_steps or getattr(self.env.spec, "max_episode_steps", None)

    def _reset(self, seed, options):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observations(obs), _measures(info)

    def _step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.actions(action))
        return self.observations(obs), float(reward), bool(terminated), bool(truncated), _measures(info)

    def close(self):
        self.env.close()


TASK_PREFIXES[PREFIX] = GymTaskEnv
