"""Structured config schemas of `embodied train` (configs/train.yaml and its groups).

Registered with Hydra's ConfigStore by `register_configs` (`train_schema`, `trainer/<name>_schema` of
every registered trainer, `logger/logger_schema`), which `embodied.config.register_schemas("train")`
calls before composing, so an unknown key fails at composition; value checks run at start through
`validate_train_config` and fail with one ConfigError line naming the key and the allowed values.

Trainers are registered by name (`register_trainer`, as tasks and memories are) with their schema and
the function that runs them; `trainer.name` selects one. Importing embodied.train registers the
built-in ones: ppo and bc (embodied.train.run; bc is the imitation trainer of every task).
The `task` and `memory` groups have one schema per task family (embodied.tasks.config) and per memory
(its options dataclass), stored as `task/<family>_schema` and `memory/<name>_schema`; their values are
validated by their own layers (TaskConfig.from_any, build_memory), as the agent's (AgentConfig).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from embodied.config import ConfigError, agent_defaults, check, check_dir_path, group_options
from embodied.train.logger import LoggerConfig

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Trainer:
    """A registered trainer: `run(cfg, env_factory)` trains from a validated train config and returns
    {"status": finished|preempted, ...}; `finished(cfg, ckpt)` is one line when the checkpoint of
    run_dir already did what `cfg` asks (else None); `distributed`: it runs under torchrun."""

    name: str
    config: type
    """Schema of configs/trainer/<name>.yaml (a dataclass with `validate(num_envs)`)."""
    run: Callable
    finished: Callable
    distributed: bool = False


TRAINERS: dict[str, Trainer] = {}


def register_trainer(name: str, config: type, finished: Callable, distributed: bool = False) -> Callable:
    """Decorator registering `run(cfg, env_factory)` as the trainer `name` (trainer.name=<name>)."""
    def deco(run: Callable) -> Callable:
        if name in TRAINERS:
            raise ValueError(f"trainer {name!r} registered twice")
        TRAINERS[name] = Trainer(name, config, run, finished, distributed)
        return run

    return deco


@dataclass
class TrainConfig:
    """Root of configs/train.yaml."""

    task: Any = MISSING
    """Task config (configs/task/; schema: its family's, embodied/tasks/config.py, named in the YAML's
    defaults list). `task.name=toy/corridor` selects the 1-D toy task of embodied.envs.toy (trainer smoke tests)."""
    memory: Any = MISSING
    """Memory config (configs/memory/; `name` picks the memory; schema: its options dataclass)."""
    agent: Any = MISSING
    """Agent options (configs/agent/; schema embodied.agents.AgentConfig)."""
    trainer: Any = MISSING
    """Trainer: ppo (configs/trainer/ppo.yaml, PPOConfig) or bc (configs/trainer/bc.yaml, BCConfig;
    selected by agent=keyframe)."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Metric logging: jsonl or wandb (configs/logger/)."""
    seed: int = 0
    """Seeds model init, envs (offset by rank) and sampling. Same seed on CPU = same curve."""
    device: str = "auto"
    """cpu, cuda or auto (cuda when available)."""
    run_dir: str = "runs/${task.name}/${memory.name}/seed${seed}"
    """Checkpoints, metrics.jsonl and W&B files. Starting again with the same run_dir resumes."""
    num_envs: int = 8
    """Envs per rank."""
    num_workers: int | None = None
    """Env worker processes per rank; 0 = in-process, null = min(num_envs, CPUs this process may use).
    Workers that fill those CPUs are pinned one per CPU (VectorEnv)."""
    total_steps: int = 1_000_000
    """Env steps to train for, summed over ranks."""
    quiet: bool = False
    """No progress bar (clusters)."""
    distributed: bool = False
    """Launch `nproc` local data-parallel processes (torchrun). Under torchrun this is implied."""
    nproc: int = 2
    """Processes per node when distributed=true."""
    ckpt_every: int = 50
    """Checkpoint every this many updates (and at the end, and on preemption)."""
    keep_last: int = 3
    """Checkpoints kept besides best.pt."""
    best_metric: str = "auto"
    """Metric whose maximum selects best.pt; auto: episode/success where the task reports success, else episode/return."""
    requeue: bool = True
    """In SLURM, requeue the job after a preemption signal saved the resume state."""
    resume: bool = True
    """Resume from run_dir/latest.pt when it exists; false refuses to start in a used run_dir."""
    init_from: str | None = None
    """A fresh run starts from the model weights of this checkpoint (a path or `pretrained:<name>`; the
    same agent, memory and observations): e.g. PPO from a policy trained by imitation. The optimizer
    and the counters start anew; a resumed run reads its own checkpoint instead."""


def register_configs() -> None:
    """Store the schemas of configs/train.yaml with Hydra (embodied.config.register_schemas calls it)."""
    from embodied.memory import MEMORIES
    from embodied.tasks.config import register_configs as register_task_configs

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, trainer in TRAINERS.items():
        cs.store(group="trainer", name=f"{name}_schema", node=trainer.config)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, memory in MEMORIES.items():  # configs/memory/<name>.yaml: defaults [<name>_schema, _self_]
        cs.store(group="memory", name=f"{name}_schema", node=memory.config_class)
    register_task_configs()


def _node_to_dataclass(node: Any, cls: type, key: str):
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(names))}")
    return cls(**data)


def trainer_config(cfg: DictConfig):
    name = cfg.trainer.get("name")
    check(name in TRAINERS, "trainer.name", f"{name!r}; allowed: {', '.join(TRAINERS)}")
    return _node_to_dataclass(cfg.trainer, TRAINERS[name].config, "trainer").validate(cfg.num_envs)


def logger_config(cfg: DictConfig) -> LoggerConfig:
    return _node_to_dataclass(cfg.logger, LoggerConfig, "logger").validate()


def validate_train_config(cfg: DictConfig) -> None:
    from embodied.agents import AGENT_KINDS

    """One-line ConfigError for the first bad value of the run-level keys and the trainer/logger."""
    check(cfg.device in DEVICES, "device", f"{cfg.device!r}; allowed: {', '.join(DEVICES)}")
    check(isinstance(cfg.num_envs, int) and cfg.num_envs >= 1, "num_envs", f"{cfg.num_envs}; allowed: >= 1")
    check(cfg.num_workers is None or cfg.num_workers >= 0, "num_workers",
          f"{cfg.num_workers}; allowed: >= 0 or null")
    check(cfg.total_steps >= 1, "total_steps", f"{cfg.total_steps}; allowed: >= 1")
    check(cfg.nproc >= 1, "nproc", f"{cfg.nproc}; allowed: >= 1")
    check(cfg.ckpt_every >= 1, "ckpt_every", f"{cfg.ckpt_every}; allowed: >= 1")
    check(cfg.keep_last >= 1, "keep_last", f"{cfg.keep_last}; allowed: >= 1")
    check(bool(cfg.run_dir), "run_dir", "empty; allowed: a directory path")
    check_dir_path("run_dir", cfg.run_dir, "a directory path (new, or an earlier run's to resume)")
    check(cfg.seed >= 0, "seed", f"{cfg.seed}; allowed: >= 0")
    check("name" in cfg.memory, "memory.name", "missing; allowed: a memory config with a name key")
    scripted = (cfg.get("agent") or {}).get("kind")  # oracle, random, scenemem, optimus: agents eval and record run
    if scripted is not None:
        trainable = [o for o in group_options("agent") if "kind" not in agent_defaults(o)]
        raise ConfigError(f"agent: {scripted!r} (agent.kind) has no weights to train: `embodied eval` and `embodied "
                          f"record` run it; allowed: {', '.join(trainable)}")
    kind = str((cfg.get("agent") or {}).get("name"))
    check(kind not in AGENT_KINDS or cfg.trainer.get("name") == "bc", "trainer",
          f"{cfg.trainer.get('name')} with agent={kind}, which learns by imitation; allowed: trainer=bc "
          "(e.g. +experiment=memorybench_membank)")
    trainer = trainer_config(cfg)
    if getattr(trainer, "expert", "oracle") != "oracle":  # bc's labeller: the 3D-Mem agent reads nav/goat only
        task = str(cfg.task.get("name"))
        check(task == "nav/goat", "trainer.expert", f"{trainer.expert!r} with task={task}; allowed: oracle, or "
              "scenemem with task=nav/goat")
        check(kind not in AGENT_KINDS, "trainer.expert", f"{trainer.expert!r} with agent={kind}, which records its own "
              "demonstrations; allowed: oracle")
        from embodied.agents.goat import GoatTeacher

        GoatTeacher.check_sensors(list(cfg.task.get("sensors") or []))  # before the run starts, not after the envs
    logger_config(cfg)
