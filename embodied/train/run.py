"""`embodied train`: build envs + agent from the config, run PPO or BC, checkpoint, resume, log.

The trainer is the one `trainer.name` selects from the registry (embodied.train.config.TRAINERS):
ppo and bc are registered here (`train_on_envs` runs both around their loops); bc is the one imitation
trainer of every task (MemoryBench's keyframe agent included, through its hooks: embodied.train.bc).
Envs, agents and checkpoints are built and read through embodied.loading.

Resume and determinism. All randomness of update k (action sampling, minibatch order, DAgger
mixing) is reseeded from (seed, rank, k) at the start of the update, so it does not depend on how
the process got to update k. Checkpoints are taken at update boundaries. What cannot be saved is
the envs' mid-episode state (scene, agent pose, episode RNG inside worker processes): a resumed
run resets its envs with a seed derived from (seed, rank, update) and starts a fresh memory state.
Hence:
  * with `trainer.reset_envs_each_update=true` every update starts from seeded fresh episodes and
    a resumed run's next update equals the uninterrupted run's bit for bit (CPU);
  * by default (episodes run across rollouts) the resumed run restores model, optimizer, LR
    schedule, counters and RNG exactly and is deterministic (resuming the same state twice gives
    the same updates), but its first rollout starts from fresh episodes where the uninterrupted
    run was mid-episode.

The run directory (RunDirectory): one process holds it (a lock; a second start stops naming the
holder); every start check (resume compatibility, a finished run, the agent config) runs before
anything there is written, so a rejected start changes nothing; an accepted start cuts
metrics.jsonl back to the checkpoint it resumes (to nothing for a fresh start), so after any crash
each update has one row.
"""
from __future__ import annotations

import ctypes
import json
import math
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from embodied.config import ConfigError, InputError, check, provenance
from embodied.loading import (CheckpointError, build_agent_from_config, env_spaces, load_checkpoint, load_model_state,
                              make_envs)
from embodied.tasks.episodes import episode_files, read_episodes, write_episodes
from embodied.train import distributed as dist_utils
from embodied.tasks import demo_source
from embodied.train.bc import (BCConfig, BehaviourCloning, check_step_weights, collect_labelled, iter_rounds,
                               split_sequences, summarize_measures)
from embodied.train.checkpoint import (CheckpointManager, NonFiniteError, RunDirError, RunDirLock, atomic_write_text,
                                       capture_rng, remove_stale_temp_files, restore_rng, write_error)
from embodied.train.config import TRAINERS, logger_config, register_trainer, trainer_config, validate_train_config
from embodied.train.logger import MetricLogger, RunLog, truncate_jsonl
from embodied.train.ppo import PPO, PPOConfig, steps_per_update
from embodied.train.preemption import PreemptionFlag

log = logging.getLogger("embodied.train")

EXIT_PREEMPTED = 3  # exit code of a preempted `embodied train` (0 finished, 2 bad input); docs/cluster.md

# Keys that may change between a run and its resumption; any other difference is an error.
RESUMABLE_CHANGES = {"total_steps", "quiet", "logger", "ckpt_every", "keep_last", "device", "num_workers",
                     "requeue", "resume", "run_dir", "distributed", "nproc", "best_metric"}


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0]) & 0x7FFFFFFF


TRAIN_SEED_START = 1 << 30
"""Episode seeds of recorded demonstrations are >= this; `embodied eval` seeds are below it
(embodied/eval/runner.py checks), so held-out evaluation never replays a training episode."""


def training_episode_seed(*parts: int) -> int:
    """A seed in [TRAIN_SEED_START, 2**31) for the envs that record demonstrations (env i: + i)."""
    return TRAIN_SEED_START | derived_seed(*parts)


def keep_freed_cpu_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of unmapping it (Linux/glibc; else a no-op).

    By default blocks over 32 MB are mmap'ed per allocation and unmapped when freed, so every CNN
    activation of a training minibatch (256 x 32 x 32 x 32 floats = 33 MB at 64x64) is page-faulted in
    anew: the 64x64 CNN's forward+backward takes 146 ms with the default and 91 ms with this (2-core
    machine). The cost: the process keeps its peak heap resident. Returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_agent_options(cfg: DictConfig, config: dict, init: dict | None = None) -> None:
    """Build the agent once, on CPU, against the spaces of one env built in this process (no reset,
    no scene built for pinned or procedural scenes): a bad memory or agent option, or `init`
    weights (init_from) of another model, fail here in a second, not after the env workers have
    started (over a minute on 2 cores)."""
    agent = build_agent_from_config(config, *env_spaces(cfg.task), torch.device("cpu"))
    trainer = trainer_config(cfg)
    if isinstance(trainer, BCConfig):
        check_step_weights(agent, trainer)
    if init is not None:
        load_model_state(agent, init["model"], f"init_from: {cfg.init_from}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_resume_compatible(saved: dict, current: dict, path: Path) -> None:
    a = {k: v for k, v in _flatten(saved).items() if k.split(".")[0] not in RESUMABLE_CHANGES}
    b = {k: v for k, v in _flatten(current).items() if k.split(".")[0] not in RESUMABLE_CHANGES}
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise ConfigError(f"run_dir: {path.parent} holds a run with {key}={a.get(key)!r}, this config has "
                              f"{b.get(key)!r}; allowed: the same config (or another run_dir)")


def write_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """run_dir/.hydra/config.yaml and overrides.yaml as Hydra writes them (configs/train.yaml turns
    Hydra's own writing off: it happens before a start can be rejected)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    # the commit and machine of this start, for the results page (embodied.eval.report.training_record)
    atomic_write_text(run_dir / ".hydra" / "provenance.json", json.dumps(provenance(), indent=1))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))


class RunDirectory:
    """A training process's hold on run_dir (see the module doc). Entering locks it (rank 0; every
    rank stops when it is held) and holds log records back; `accept()`, once every start check has
    passed, removes temp files of writes killed mid-way (their writers are dead: we hold the lock),
    writes .hydra/, cuts metrics.jsonl back to `update` and opens train.log. Leaving without
    `accept()` undoes the lock's own write."""

    def __init__(self, cfg: DictConfig, ctx: dist_utils.DistContext | None = None):
        self.cfg = cfg
        self.path = Path(cfg.run_dir)
        self.ctx = ctx or dist_utils.DistContext()
        self.lock = RunDirLock(self.path)
        self.log: RunLog | None = None
        self.accepted = False

    def __enter__(self) -> "RunDirectory":
        failure = None
        if self.ctx.is_main:
            try:
                self.lock.acquire()
            except RunDirError as exc:
                failure = exc
        if dist_utils.any_rank(failure is not None, self.ctx):
            if failure is None:
                raise SystemExit(2)  # rank 0 says why
            raise failure
        if self.ctx.is_main:
            self.log = RunLog(self.path / "train.log")
        return self

    def accept(self, update: int) -> None:
        self.accepted = True
        if not self.ctx.is_main:
            return
        for path in remove_stale_temp_files(self.path):
            log.info("removed %s (left by a write that was killed)", path)
        try:
            write_run_config(self.path, self.cfg)
        except OSError as exc:
            raise RunDirError(write_error(exc, self.path / ".hydra")) from None
        truncate_jsonl(self.path / "metrics.jsonl", update)
        self.log.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.log is not None:
            if isinstance(exc, Exception):  # the console gets it from the caller (one line or a traceback)
                self.log.file_only(logging.ERROR, f"error: {exc}", None if isinstance(exc, InputError) else exc)
            self.log.close()
        self.lock.release(restore=not self.accepted)


def finished_message(cfg: DictConfig, ckpt: dict) -> str | None:
    """One line when the run in run_dir already did what `cfg` asks, else None (the trainer's own test)."""
    return TRAINERS[cfg.trainer.name].finished(cfg, ckpt)


def announce(cfg: DictConfig, ckpt: dict | None, device, work: str) -> None:
    """The start lines: where the run writes, what it runs and whether it resumes."""
    log.info("embodied train: writing to %s (checkpoints, metrics.jsonl, train.log)", cfg.run_dir)
    start = (f"resuming from update {ckpt['counters']['update']} ({ckpt['counters']['env_steps']} env steps)"
             if ckpt is not None else f"fresh start from the weights of {cfg.init_from}" if cfg.init_from else "fresh start")
    log.info("embodied train: %s, memory=%s, trainer=%s on %s: %s; %s", cfg.task.name, cfg.memory.name,
             cfg.trainer.name, device, work, start)


def announce_end(cfg: DictConfig, result: dict) -> None:
    done = f"update {result.get('update')}" + (f" ({result['env_steps']} env steps)" if "env_steps" in result else "")
    # best.pt exists once a checkpoint's metrics held best_metric (a name no metric has never writes it)
    best = ("best.pt" if (Path(cfg.run_dir) / "best.pt").exists() else
            f"no best.pt: no metric {cfg.best_metric!r} was logged" if cfg.best_metric != "auto" else
            "no best.pt: best_metric=auto found no episode/success or episode/return (no episode finished)")
    log.info("embodied train: finished at %s; checkpoints: %s (latest.pt, %s); metrics: %s",
             done, cfg.run_dir, best, Path(cfg.run_dir) / "metrics.jsonl")


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool, unit: str = "step"):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(initial, total), unit=unit, dynamic_ncols=True,
                            mininterval=0.5, desc="train", file=sys.stderr)

    def tick(self, n: int) -> None:
        """Steps done inside an update, so the bar moves before the first update ends."""
        if self.bar is not None and self.bar.n + n <= self.bar.total:
            self.bar.update(n)

    def update_to(self, done: int, metrics: dict) -> None:
        if self.bar is not None:
            self.update(min(done, self.bar.total) - self.bar.n, metrics)

    def update(self, n: int, metrics: dict) -> None:
        if self.bar is None:
            return
        self.bar.update(n)
        post = {}
        if "episode/success" in metrics:
            post["success"] = f"{metrics['episode/success']:.2f}"
        elif "episode/return" in metrics:
            post["return"] = f"{metrics['episode/return']:.3g}"
        if "sps" in metrics:
            post["sps"] = f"{metrics['sps']:.0f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train(cfg: DictConfig, env_factory: Callable | None = None) -> dict[str, Any]:
    """Train from a composed train config with the trainer it names (registry: embodied.train.config);
    returns {"status": finished|preempted, ...}. `env_factory` replaces make_envs (envs-driven trainers)."""
    validate_train_config(cfg)
    keep_freed_cpu_memory()
    return TRAINERS[cfg.trainer.name].run(cfg, env_factory)


def open_checkpoints(cfg: DictConfig, config: dict, path: Path, is_main: bool = True):
    """The start checks on run_dir's checkpoints: (manager, latest checkpoint or None, result) where
    result is set when the run there already did what `cfg` asks (said in one line)."""
    manager = CheckpointManager(path, keep_last=cfg.keep_last, best_metric=cfg.best_metric)
    # On CPU: RNG states must stay CPU tensors; model and optimizer states move to the device as they load.
    ckpt = manager.load_latest(map_location="cpu")
    if ckpt is None:
        return manager, None, None
    check(cfg.resume, "resume", f"false but {manager.latest_path} exists; allowed: true, or another run_dir")
    check_resume_compatible(ckpt["config"], config, manager.latest_path)
    done = finished_message(cfg, ckpt)
    if done is None:
        return manager, ckpt, None
    if is_main:
        log.info("embodied train: %s", done)
    return manager, ckpt, {"status": "finished", "checkpoint": str(manager.latest_path),
                           "metrics": ckpt.get("metrics", {}), **ckpt["counters"]}


def train_on_envs(cfg: DictConfig, env_factory: Callable | None, loop: Callable, plan: Callable) -> dict[str, Any]:
    """The run of a trainer that learns from vector envs (ppo, bc): run_dir lock and start checks, envs,
    agent, resume, logger, then `loop(...)`; `plan(cfg, ckpt, world_size)` = (work, total, unit, done) for
    the start line and the progress bar."""
    ctx = dist_utils.setup(cfg.device)
    distributed = [name for name, t in TRAINERS.items() if t.distributed]
    check(not (ctx.enabled and not TRAINERS[cfg.trainer.name].distributed), "trainer",
          f"{cfg.trainer.name} runs on one process; allowed with distributed training: {', '.join(distributed)}")
    factory = env_factory or make_envs
    config = OmegaConf.to_container(cfg, resolve=True)
    with RunDirectory(cfg, ctx) as run_dir:
        manager, ckpt, finished = open_checkpoints(cfg, config, run_dir.path, ctx.is_main)
        if finished is not None:
            return finished
        init = None
        if ckpt is None and cfg.init_from is not None:
            try:
                init = load_checkpoint(cfg.init_from)
            except CheckpointError as exc:
                raise CheckpointError(f"init_from: {exc}") from None
        check_agent_options(cfg, config, init)  # before seeding: the initial weights stay those of the seed
        work, total, unit, initial = plan(cfg, ckpt, ctx.world_size)
        if ctx.is_main:
            announce(cfg, ckpt, ctx.device, work)
        progress = _Progress(total, initial, ctx.is_main and not cfg.quiet, unit)  # shown while envs start

        seed_everything(cfg.seed)  # identical initial weights on every rank
        flag = PreemptionFlag()
        envs = metric_logger = None
        try:
            envs = factory(cfg.task, cfg.num_envs, derived_seed(cfg.seed, ctx.rank, 0), cfg.num_workers)
            flag.install()
            agent = build_agent_from_config(config, envs.single_observation_space, envs.single_action_space, ctx.device)
            if ckpt is not None:
                load_model_state(agent, ckpt["model"], manager.latest_path)
            elif init is not None:
                load_model_state(agent, init["model"], cfg.init_from)
            dist_utils.broadcast_parameters(agent, ctx)
            run_dir.accept(int(ckpt["counters"]["update"]) if ckpt is not None else 0)
            if ctx.is_main:
                run_name = f"{cfg.task.name}/{cfg.memory.name}/seed{cfg.seed}"
                metric_logger = MetricLogger(logger_config(cfg), run_dir.path, run_name, config,
                                             wandb_id=ckpt.get("wandb_id") if ckpt else None)
            result = loop(cfg, ctx, envs, agent, manager, ckpt, flag, metric_logger, config, progress)
            progress.close()
            if ctx.is_main and result["status"] == "finished":
                announce_end(cfg, result)
            return result
        finally:
            progress.close()
            flag.uninstall()
            if envs is not None:
                envs.close()
            if metric_logger is not None:
                metric_logger.close()


def _payload(agent, trainer, counters: dict, config: dict, metric_logger, metrics: dict) -> dict[str, Any]:
    return {"model": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
            "trainer": trainer.state_dict(), "counters": counters, "rng": capture_rng(),
            "config": config, "wandb_id": metric_logger.wandb_id if metric_logger else None,
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}


def _preempted(flag: PreemptionFlag, path: Path | None, ctx, progress: _Progress) -> dict[str, Any]:
    progress.close()
    if ctx.is_main:  # said before requeueing: submitit's handler (called by requeue) exits the process
        log.warning("embodied train: preempted (signal %s): resume state saved to %s", flag.signum, path)
    what = flag.requeue() if (ctx.is_main and flag.requested) else "no requeue"
    if ctx.is_main:
        log.warning("embodied train: preempted: %s; exit code %d; the same command resumes", what, EXIT_PREEMPTED)
    return {"status": "preempted", "checkpoint": str(path) if path else None}


def _ppo_loop(cfg, ctx, envs, agent, manager, ckpt, flag, metric_logger, config, progress) -> dict[str, Any]:
    pcfg = trainer_config(cfg)
    trainer = PPO(agent, pcfg, cfg.num_envs, cfg.total_steps, ctx, seed=cfg.seed)
    if ckpt is not None:
        trainer.load_state_dict(ckpt["trainer"])
        restore_rng(ckpt["rng"])
    trainer.reset_envs(envs, derived_seed(cfg.seed, ctx.rank, trainer.update_index, 1))
    start_update = trainer.update_index
    metrics: dict[str, Any] = {}
    last_path = manager.latest_path if ckpt is not None else None
    t_start = time.perf_counter()

    def save() -> Path | None:
        if not ctx.is_main:
            return None
        counters = {"update": trainer.update_index, "env_steps": trainer.env_steps}
        return manager.save(_payload(agent, trainer, counters, config, metric_logger, metrics),
                            trainer.update_index, manager.best_of(metrics))

    def stop_mid_rollout() -> bool:  # called before every env step of a rollout
        progress.tick(cfg.num_envs * ctx.world_size)
        # Mid-rollout aborts need all ranks to agree, so distributed runs check at update boundaries.
        return flag.requested and not ctx.enabled

    try:
        while trainer.env_steps < cfg.total_steps:
            if dist_utils.any_rank(flag.requested, ctx):
                return _preempted(flag, save(), ctx, progress)
            k = trainer.update_index
            seed_everything(derived_seed(cfg.seed, ctx.rank, k, 2))
            trainer.shuffle_gen.manual_seed(derived_seed(cfg.seed, ctx.rank, k, 3))
            if pcfg.reset_envs_each_update and k > start_update:
                trainer.reset_envs(envs, derived_seed(cfg.seed, ctx.rank, k, 1))
            t0 = time.perf_counter()
            rollout = trainer.collect(envs, stop=stop_mid_rollout)
            if rollout is None:  # nothing of update k is applied yet: the boundary state is current
                return _preempted(flag, save(), ctx, progress)
            steps_before = trainer.env_steps
            metrics = trainer.update(rollout)
            metrics.update(trainer.episode_metrics())
            wall = time.perf_counter() - t0
            metrics.update(update=trainer.update_index, step=trainer.env_steps,
                           sps=(trainer.env_steps - steps_before) / max(wall, 1e-9),
                           time=time.perf_counter() - t_start, episodes=trainer.episodes.total)
            if ctx.is_main and metric_logger and trainer.update_index % logger_config(cfg).log_every == 0:
                metric_logger.log(metrics)
            progress.update_to(trainer.env_steps, metrics)
            if trainer.update_index % cfg.ckpt_every == 0 or trainer.env_steps >= cfg.total_steps:
                last_path = save() or last_path
    except NonFiniteError as exc:
        raise NonFiniteError(f"{exc}; last good checkpoint: {last_path or 'none written yet'}") from None
    return {"status": "finished", "checkpoint": str(manager.latest_path), "metrics": metrics,
            "update": trainer.update_index, "env_steps": trainer.env_steps}


def ignored(agent) -> list[str]:
    """Observation keys the agent does not read (agent option `ignore`): demonstrations leave them out."""
    return list(getattr(getattr(agent, "config", None), "ignore", None) or [])


def imitation_expert(cfg, bcfg: BCConfig, num_envs: int):
    """The labeller of `trainer.expert`: None for the envs' own oracle_action(), else a GoatTeacher
    (validate_train_config has checked the task)."""
    if bcfg.expert == "oracle":
        return None
    from embodied.agents.goat import GoatTeacher
    from embodied.tasks.config import TaskConfig

    return GoatTeacher(TaskConfig.from_any(OmegaConf.to_container(cfg.task, resolve=True)), num_envs)


def _demonstrations(cfg, ctx, envs, agent, bcfg, data_dir: Path, progress: bool, expert=None) -> list:
    """Round 0's demonstrations: `trainer.demos`, or recorded into run_dir/data: by the agent where
    its demonstrations are its own decisions (`record_imitation`: the nav/goat chooser), by the
    task's demo source where it has one (plus `dart_copies` noisy copies), else by `expert` (None: the
    envs' oracle_action)."""
    record = getattr(agent, "record_imitation", None)
    if record is not None:
        return record(OmegaConf.to_container(cfg.task, resolve=True), bcfg.record_episodes, data_dir, progress)
    source = demo_source(str(cfg.task.name))
    if source is not None:
        task = OmegaConf.to_container(cfg.task, resolve=True)
        files = [bcfg.demos] if bcfg.demos else [source.record(task, bcfg.record_episodes, data_dir, 0.0, 0, progress)]
        files += [source.record(task, bcfg.record_episodes, data_dir, bcfg.dart_noise, c, progress)
                  for c in range(bcfg.dart_copies)]
        return [e for f in files for e in source.read(f)]
    if bcfg.demos:
        return read_episodes(bcfg.demos, action_shape=())  # discrete actions
    shard = data_dir / "demos.npz"
    if not shard.exists():
        rng = np.random.default_rng(derived_seed(cfg.seed, 0, 4))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=bcfg.record_episodes, unit="ep", desc=f"record demos ({bcfg.expert})", file=sys.stderr)
        try:
            episodes, _ = collect_labelled(envs, None, ctx.device, steps=10**9, beta=1.0, rng=rng,
                                           seed=training_episode_seed(cfg.seed, 0, 5),
                                           max_episodes=bcfg.record_episodes, labels=bcfg.labels, skip=ignored(agent),
                                           expert=expert,
                                           on_episode=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        write_episodes(shard, episodes)
    return read_episodes(shard)


def _bc_loop(cfg, ctx, envs, agent, manager, ckpt, flag, metric_logger, config, progress) -> dict[str, Any]:
    bcfg = trainer_config(cfg)
    data_dir = Path(cfg.run_dir) / "data"
    expert = imitation_expert(cfg, bcfg, envs.num_envs)  # one per run: demonstrations and DAgger rounds
    base = _demonstrations(cfg, ctx, envs, agent, bcfg, data_dir, ctx.is_main and not cfg.quiet, expert)
    prepare = getattr(agent, "prepare_imitation", None)  # e.g. keyframe: rendered views, cached in data/
    if prepare is not None:
        base = prepare(base, data_dir, ctx.is_main and not cfg.quiet)
    batches = math.ceil(len(split_sequences(base, bcfg.seq_len)) / bcfg.batch_episodes)
    bc = BehaviourCloning(agent, bcfg, ctx, seed=cfg.seed,
                          total_steps=(bcfg.dagger_rounds + 1) * bcfg.epochs * batches)
    if ckpt is not None:
        bc.load_state_dict(ckpt["trainer"])
        restore_rng(ckpt["rng"])
    metrics: dict[str, Any] = {}
    last_path = manager.latest_path if ckpt is not None else None

    def dataset(upto: int) -> list:
        extra = []
        for r in range(1, upto + 1):
            if (data_dir / f"dagger-{r:03d}.npz").exists():  # a round may finish no episode
                extra += read_episodes(data_dir / f"dagger-{r:03d}.npz")
        return base + extra

    t_start = time.perf_counter()
    try:
        # round 0 = BC on the demos; rounds 1.. = DAgger. bc.round counts finished rounds.
        for r in range(bc.round, bcfg.dagger_rounds + 1):
            if flag.requested:
                return _preempted(flag, last_path, ctx, progress)
            seed_everything(derived_seed(cfg.seed, 0, r, 2))
            bc.shuffle_gen.manual_seed(derived_seed(cfg.seed, 0, r, 3))
            round_metrics: dict[str, Any] = {}
            if r > 0 and bcfg.dagger_steps > 0:
                beta = dict(iter_rounds(bcfg))[r]
                rng = np.random.default_rng(derived_seed(cfg.seed, 0, r, 4))
                agent.eval()
                episodes, measures = collect_labelled(envs, agent, ctx.device, bcfg.dagger_steps, beta, rng,
                                                      seed=training_episode_seed(cfg.seed, 0, r, 1), labels=bcfg.labels,
                                                      should_stop=lambda: flag.requested, skip=ignored(agent),
                                                      expert=expert)
                if flag.requested:  # the round restarts from the last checkpoint when resumed
                    return _preempted(flag, last_path, ctx, progress)
                if episodes and bcfg.aggregate:
                    write_episodes(data_dir / f"dagger-{r:03d}.npz", episodes)
                if beta < 1.0:  # with beta = 1 these are the oracle's own measures, not the learner's
                    round_metrics.update(summarize_measures(measures))
                round_metrics.update(beta=beta, dagger_episodes=len(episodes))
            data = dataset(r) if bcfg.aggregate or r == 0 or bcfg.dagger_steps == 0 else episodes
            round_metrics.update(bc.fit(data, should_stop=lambda: flag.requested))
            if flag.requested:
                return _preempted(flag, last_path, ctx, progress)
            if bc.schedule is not None:
                round_metrics["lr"] = bc.schedule.get_last_lr()[0]
            if bcfg.eval_episodes and ((r + 1) % bcfg.eval_every == 0 or r == bcfg.dagger_rounds):
                agent.eval()
                rollouts = getattr(agent, "imitation_rollouts", None)  # agents that act outside the vector envs
                if rollouts is not None:
                    measures = rollouts(OmegaConf.to_container(cfg.task, resolve=True), bcfg.eval_episodes)
                else:
                    _, measures = collect_labelled(envs, agent, ctx.device, 10**9, 0.0, np.random.default_rng(0),
                                                   seed=training_episode_seed(cfg.seed, 0, r, 6),
                                                   max_episodes=bcfg.eval_episodes, deterministic=True,
                                                   skip=ignored(agent))
                round_metrics.update(summarize_measures(measures))
            bc.round = r + 1
            metrics = {**round_metrics, "update": bc.round, "step": bc.grad_steps, "dataset_episodes": len(data),
                       "time": time.perf_counter() - t_start}
            if metric_logger:
                metric_logger.log(metrics)
            progress.update(1, metrics)
            last_path = manager.save(_payload(agent, bc, {"update": bc.round, "env_steps": 0}, config,
                                              metric_logger, metrics), bc.round, manager.best_of(metrics))
    except NonFiniteError as exc:
        raise NonFiniteError(f"{exc}; last good checkpoint: {last_path or 'none written yet'}") from None
    return {"status": "finished", "checkpoint": str(manager.latest_path), "metrics": metrics, "update": bc.round}


# --- the registered trainers ---------------------------------------------------------------------

def _ppo_plan(cfg: DictConfig, ckpt: dict | None, world_size: int = 1) -> tuple[str, int, str, int]:
    """The start line says what runs when whole updates overshoot total_steps: `16 env steps (1 update of
    1024 = 8 envs x 128 rollout steps: 1024 env steps)`."""
    done = ckpt["counters"]["env_steps"] if ckpt is not None else 0
    work = f"{cfg.total_steps} env steps"
    pcfg = trainer_config(cfg)
    per_update = steps_per_update(pcfg, cfg.num_envs, world_size)
    size = (f"{per_update} = " + (f"{world_size} processes x " if world_size > 1 else "")
            + f"{cfg.num_envs} envs x {pcfg.rollout_steps} rollout steps")
    more = " more" if done else ""
    if world_size > 1 and math.ceil(pcfg.preempt_fraction * world_size) < world_size:
        # the straggler cut-off may end rollouts early: more, shorter updates; the last still ends past total_steps
        work += f" (whole{more} updates of up to {size}: {cfg.total_steps} to {cfg.total_steps + per_update - 1} env steps)"
    else:
        updates = math.ceil((cfg.total_steps - done) / per_update)
        end = done + updates * per_update
        if end != cfg.total_steps:
            work += f" ({updates}{more} update{'s' if updates != 1 else ''} of {size}: {end} env steps)"
    return work, cfg.total_steps, "step", done


def _ppo_finished(cfg: DictConfig, ckpt: dict) -> str | None:
    counters = ckpt["counters"]
    if counters["env_steps"] >= cfg.total_steps:
        return (f"run_dir {cfg.run_dir} already finished at {counters['env_steps']} steps "
                f"(total_steps={cfg.total_steps}); raise total_steps to continue")
    return None


@register_trainer("ppo", PPOConfig, finished=_ppo_finished, distributed=True)
def train_ppo(cfg: DictConfig, env_factory: Callable | None = None) -> dict[str, Any]:
    return train_on_envs(cfg, env_factory, _ppo_loop, _ppo_plan)


def _bc_plan(cfg: DictConfig, ckpt: dict | None, world_size: int = 1) -> tuple[str, int, str, int]:
    bcfg = trainer_config(cfg)
    if bcfg.demos:
        episode_files(bcfg.demos)  # a bad demo file is one line before the start lines and the env workers
    check(bcfg.dart_copies == 0 or demo_source(str(cfg.task.name)) is not None, "trainer.dart_copies",
          f"{bcfg.dart_copies}; allowed with {cfg.task.name}: 0 (its demos come from the envs' oracle, with no noisy copies)")
    rounds = bcfg.dagger_rounds + 1
    work = (f"{rounds} rounds (BC, then DAgger)" if bcfg.dagger_steps else
            f"{rounds} rounds of {bcfg.epochs} epoch(s) on the demonstrations")
    return work, rounds, "round", ckpt["trainer"]["round"] if ckpt is not None else 0


def _bc_finished(cfg: DictConfig, ckpt: dict) -> str | None:
    state = ckpt.get("trainer") or {}
    if state.get("round", 0) > cfg.trainer.dagger_rounds:
        return (f"run_dir {cfg.run_dir} already finished at round {state['round']} "
                f"(trainer.dagger_rounds={cfg.trainer.dagger_rounds}); use another run_dir to train again")
    return None


@register_trainer("bc", BCConfig, finished=_bc_finished)
def train_bc(cfg: DictConfig, env_factory: Callable | None = None) -> dict[str, Any]:
    return train_on_envs(cfg, env_factory, _bc_loop, _bc_plan)
