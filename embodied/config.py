"""Config plumbing shared by every command: the error type, value checks and the config root.

Schemas themselves live with the layer they configure (e.g. `embodied.tasks.config.TaskConfig`);
this module only knows how to find `configs/` and how to fail in one line.
"""
from __future__ import annotations

import os
from pathlib import Path


class InputError(ValueError):
    """Bad user input (a config value, a file, a checkpoint, a recording): the message is one line
    naming the input and what is wrong. `embodied <command>` prints it as its one error line (exit 2)."""


class ConfigError(InputError):
    """A bad config key or value; the message is one line naming the key and what is allowed."""


def check(condition: bool, key: str, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {allowed}")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The Hydra config root: $EMBODIED_CONFIGS, else `configs/` beside the package."""
    env = os.environ.get("EMBODIED_CONFIGS")
    path = Path(env) if env else repo_root() / "configs"
    if not path.is_dir():
        raise ConfigError(f"EMBODIED_CONFIGS: no config directory at {path}")
    return path


def data_dir(name: str) -> Path:
    """Shipped data folders at the repo root (`scenes`, `tasks`)."""
    return repo_root() / name
