"""MemoryBench (SAM2Act, 2025) on pybullet: `memorybench/reopen_drawer`, `memorybench/put_block_back`,
`memorybench/rearrange_block`. See docs/memorybench.md."""
from __future__ import annotations

from pathlib import Path

from embodied.config import ConfigError, check
from embodied.tasks.memorybench.env import MAX_KEYFRAMES, MemoryBenchConfig, MemoryBenchEnv
from embodied.tasks.memorybench.scene import CAMERAS, WORKSPACE
from embodied.tasks.memorybench.tasks import TASK_CLASSES
from embodied.tasks.registry import register_demo_source, register_task

TASK_NAMES = tuple(f"memorybench/{t}" for t in TASK_CLASSES)


def _register(short: str) -> type:
    cls = type(f"MemoryBench_{short}", (MemoryBenchEnv,), {"short_name": short})
    return register_task(f"memorybench/{short}")(cls)


ENV_CLASSES = {f"memorybench/{t}": _register(t) for t in TASK_CLASSES}


def _record(task_cfg, n, data_dir, noise=0.0, copy=0, progress=True):
    from embodied.tasks.memorybench.dataset import record_train_demos

    return record_train_demos(task_cfg, n, data_dir, noise, copy, progress)


def _read(path):
    from embodied.tasks.memorybench.dataset import read_keyframe_demos

    return read_keyframe_demos(path)


register_demo_source("memorybench/", _record, _read)  # the keyframe expert's demos, not the envs' oracle


def make_env(cfg, seed: int | None = None) -> MemoryBenchEnv:
    """Build a MemoryBench env from a dict / omegaconf node / MemoryBenchConfig (keys of
    MemoryBenchConfig, e.g. {"name": "memorybench/put_block_back", "width": 64, "height": 64})."""
    c = MemoryBenchConfig.from_any(cfg)
    env = ENV_CLASSES[c.name](c)
    if seed is not None:
        env.reset(seed=seed)
    return env


def spec_path() -> Path:
    from embodied.config import data_dir

    return data_dir("tasks") / "memorybench.yaml"


def memorybench_spec() -> dict:
    """tasks/memorybench.yaml: per task train_seeds, test_seeds, variations, instruction, reference."""
    import yaml

    with open(spec_path()) as f:
        return yaml.safe_load(f)


TASK_PREFIX = "memorybench/"


def task_short_name(task_name: str) -> str:
    check(str(task_name).startswith(TASK_PREFIX), "task.name",
          f"{task_name!r}; allowed with agent=keyframe: memorybench/<task>")
    return str(task_name)[len(TASK_PREFIX):]


def task_spec(task_name: str) -> dict:
    """The pinned seeds/reference rows of a MemoryBench task (tasks/memorybench.yaml)."""
    spec = memorybench_spec()
    spec = spec.get("tasks", spec)
    short = task_short_name(task_name)
    for key in (short, task_name):
        if key in spec:
            return spec[key]
    raise ConfigError(f"task.name: {task_name!r} not in tasks/memorybench.yaml; allowed: {', '.join(sorted(spec))}")


def validation_seeds(spec: dict, n: int) -> list[int]:
    """Episode seeds for monitoring rollouts and best.pt selection during training: consecutive
    seeds (so every variation comes up) 1000 past the task's last pinned seed, never a train or test
    seed, so selecting on them leaves the test seeds untouched."""
    start = max([*spec["train_seeds"], *spec["test_seeds"]]) + 1000
    return list(range(start, start + n))


__all__ = ["CAMERAS", "WORKSPACE", "MAX_KEYFRAMES", "TASK_NAMES", "MemoryBenchConfig", "MemoryBenchEnv",
           "make_env", "memorybench_spec", "spec_path", "task_short_name", "task_spec", "validation_seeds"]
