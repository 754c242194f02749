"""Behaviour cloning of the keyframe policy (embodied.agents.keyframe) on MemoryBench demonstrations.

`embodied train task=memorybench/reopen_drawer agent=keyframe memory=membank` (agent=keyframe selects
trainer=keyframe). Each training sequence is one whole demonstration from its first keyframe with a
fresh memory, exactly as at test time (the bank is reset every episode); the memory bank is written
with the model's own predicted heatmaps, gradients flowing through the stored entries.

Data: the episode files of `embodied demos` (embodied.tasks.memorybench.dataset), or, with
`trainer.demos=null`, `trainer.demos_n` train demos generated into run_dir/data/ first. The
virtual views of every keyframe are rendered once and cached beside them.

Resume and determinism: a checkpoint after every epoch holds model, optimizer, LR schedule, epoch
and RNG; epoch e's shuffling and augmentation are reseeded from (seed, e), so a resumed run
continues exactly as the uninterrupted one (CPU).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from embodied.config import ConfigError, check
from embodied.train.config import register_trainer


@dataclass
class KeyframeTrainerConfig:
    """Schema of configs/trainer/keyframe.yaml."""

    name: str = "keyframe"
    """Trainer name (keyframe)."""
    demos: str | None = None
    """Episode file (.npz, or a directory of them) of the task's demonstrations (`embodied demos ...`);
    null = generate `demos_n` into run_dir/data/."""
    demos_n: int = 100
    """Train demos to generate when `demos` is null (the pinned train seeds, in order)."""
    epochs: int = 50
    """Passes over the demonstrations ((100 demos + 100 DART copies) x 50 epochs = 1250 gradient steps;
    40 epochs of 40 demos was far too short)."""
    batch_episodes: int = 8
    """Whole demonstrations per gradient step."""
    lr: float = 1e-3
    """AdamW peak learning rate (linear warmup, cosine decay to lr/20)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Gradient steps of linear warmup."""
    max_grad_norm: float = 1.0
    """Global gradient norm clip."""
    dart_copies: int = 1
    """Extra DART-style copies of the train demos (`embodied demos ... noise=`): the first `demos_n`
    pinned train seeds re-recorded with the expert's free-space keyframes executed `dart_noise` off
    target, labelled with the clean expert action, generated into run_dir/data/ (0 = the demos only).
    Without them the policy's own small errors compounded in its rollouts (docs/memorybench_policy.md)."""
    dart_noise: float = 0.02
    """Std (metres) of the DART execution noise, clipped to 2 std."""
    aug_shift: int = 2
    """Translation augmentation: each sequence is shifted by up to this many voxels in x and y (the
    views, the targets and the proprio position alike; the same shift for the whole sequence); 0 = off."""
    eval_every: int = 0
    """Epochs between rollouts on `eval_episodes` validation seeds (`validation_seeds`: neither
    train nor test; logs episode/success, selects best.pt); 0 = never."""
    eval_episodes: int = 5
    """Episodes per in-training evaluation."""

    def validate(self, num_envs: int = 1) -> "KeyframeTrainerConfig":
        check(self.name == "keyframe", "trainer.name", f"{self.name!r}; allowed: keyframe")
        for key in ("demos_n", "epochs", "batch_episodes", "eval_episodes"):
            value = getattr(self, key)
            check(isinstance(value, int) and value >= 1, f"trainer.{key}", f"{value}; allowed: >= 1")
        check(self.lr > 0 and math.isfinite(self.lr), "trainer.lr", f"{self.lr}; allowed: > 0")
        check(self.weight_decay >= 0, "trainer.weight_decay", f"{self.weight_decay}; allowed: >= 0")
        check(self.warmup_steps >= 0, "trainer.warmup_steps", f"{self.warmup_steps}; allowed: >= 0")
        check(self.max_grad_norm > 0, "trainer.max_grad_norm", f"{self.max_grad_norm}; allowed: > 0")
        check(isinstance(self.dart_copies, int) and self.dart_copies >= 0, "trainer.dart_copies",
              f"{self.dart_copies}; allowed: an integer >= 0")
        check(self.dart_noise > 0 and math.isfinite(self.dart_noise), "trainer.dart_noise",
              f"{self.dart_noise}; allowed: > 0 (metres)")
        check(self.aug_shift >= 0, "trainer.aug_shift", f"{self.aug_shift}; allowed: >= 0")
        check(self.eval_every >= 0, "trainer.eval_every", f"{self.eval_every}; allowed: >= 0")
        return self


# --- data ----------------------------------------------------------------------------------------

@dataclass
class KeyframeSequence:
    """One demonstration as training tensors (numpy): K keyframes."""

    views: np.ndarray     # [K, 3, 7, G, G] float16
    cond: np.ndarray      # [K, 9] float32
    position: np.ndarray  # [K, 3] float32 target xyz
    rot: np.ndarray       # [K, 3] int64 Euler bins
    grip: np.ndarray      # [K] int64
    coll: np.ndarray      # [K] int64


def prepare_sequences(episodes: list[dict], agent, progress: bool = False) -> list[KeyframeSequence]:
    """Render each keyframe's virtual views and label its action (episodes as embodied.tasks.episodes
    reads them: obs with proprio and timestep, actions [K, 9])."""
    from embodied.agents.keyframe import conditioning, fuse_point_cloud, quat_to_bins

    out = []
    it = episodes
    if progress:
        from tqdm import tqdm

        it = tqdm(episodes, desc="render views", unit="demo", file=sys.stderr)
    for i, ep in enumerate(it):
        action = np.asarray(ep["actions"], dtype=np.float32)
        if action.ndim != 2 or action.shape[1] != 9 or len(action) == 0:
            raise ValueError(f"demo {i}: action has shape {action.shape}; expected [K, 9]")
        obs = ep["obs"]
        views = []
        for k in range(len(action)):
            pts, col = fuse_point_cloud({key: v[k] for key, v in obs.items()}, agent.config.cameras)
            views.append(agent.workspace.render(pts, col).astype(np.float16))
        out.append(KeyframeSequence(
            views=np.stack(views), cond=conditioning(obs["proprio"], obs["timestep"]).astype(np.float32),
            position=action[:, :3].copy(), rot=quat_to_bins(action[:, 3:7], agent.config.rot_bins),
            grip=(action[:, 7] > 0.5).astype(np.int64), coll=(action[:, 8] > 0.5).astype(np.int64)))
    return out


def shift_sequence(seq: KeyframeSequence, dx: int, dy: int, voxel: np.ndarray) -> KeyframeSequence:
    """`seq` translated by (dx, dy) voxels in world x, y: views rolled (coordinate channels stay),
    targets and proprio position moved by the same metres."""
    if dx == 0 and dy == 0:
        return seq
    v = seq.views.copy()
    # top view rows = x, cols = y; front rows = y; side rows = x (see VIEW_AXES)
    v[:, 0, :5] = np.roll(v[:, 0, :5], (dx, dy), axis=(-2, -1))
    v[:, 1, :5] = np.roll(v[:, 1, :5], dy, axis=-2)
    v[:, 2, :5] = np.roll(v[:, 2, :5], dx, axis=-2)
    offset = np.array([dx * voxel[0], dy * voxel[1], 0.0], dtype=np.float32)
    cond = seq.cond.copy()
    cond[:, :3] += offset
    return KeyframeSequence(v, cond, seq.position + offset, seq.rot, seq.grip, seq.coll)


def collate(seqs: list[KeyframeSequence], agent, device: torch.device) -> dict[str, Any]:
    """[T, B] tensors of a batch of sequences; padding steps are first=True and mask=False."""
    from embodied.agents.keyframe import heatmap_targets

    T, B = max(len(s.grip) for s in seqs), len(seqs)
    G = agent.config.grid_size
    views = np.zeros((T, B, 3, 7, G, G), dtype=np.float32)
    cond = np.zeros((T, B, 9), dtype=np.float32)
    position = np.zeros((T, B, 3), dtype=np.float32)
    rot = np.zeros((T, B, 3), dtype=np.int64)
    grip = np.zeros((T, B), dtype=np.int64)
    coll = np.zeros((T, B), dtype=np.int64)
    mask = np.zeros((T, B), dtype=bool)
    for j, s in enumerate(seqs):
        n = len(s.grip)
        views[:n, j], cond[:n, j], position[:n, j] = s.views, s.cond, s.position
        rot[:n, j], grip[:n, j], coll[:n, j], mask[:n, j] = s.rot, s.grip, s.coll, True
    first = ~mask
    first[0] = True
    heat = heatmap_targets(position.reshape(-1, 3), agent.workspace, agent.config.heatmap_sigma).reshape(T, B, 3, G, G)
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return {"views": t(views), "cond": t(cond), "first": t(first), "mask": t(mask),
            "targets": {"heatmap": t(heat), "position": t(position), "rot": t(rot), "grip": t(grip), "coll": t(coll)}}


class KeyframeBC:
    """Optimizer, LR schedule and counters of keyframe behaviour cloning."""

    def __init__(self, agent, cfg: KeyframeTrainerConfig, steps_per_epoch: int, device: torch.device):
        self.agent, self.cfg, self.device = agent, cfg, device
        self.params = [p for p in agent.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = max(1, cfg.epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.epoch = 0
        self.grad_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "epoch": self.epoch, "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.grad_steps = int(state["epoch"]), int(state["grad_steps"])

    def fit_epoch(self, seqs: list[KeyframeSequence], gen: torch.Generator) -> dict[str, float]:
        from embodied.train.checkpoint import NonFiniteError

        self.agent.train()
        order = torch.randperm(len(seqs), generator=gen).tolist()
        a = self.cfg.aug_shift
        sums: dict[str, float] = {}
        n = 0
        for start in range(0, len(order), self.cfg.batch_episodes):
            batch_seqs = []
            for i in order[start:start + self.cfg.batch_episodes]:
                dx, dy = (torch.randint(-a, a + 1, (2,), generator=gen).tolist() if a else (0, 0))
                batch_seqs.append(shift_sequence(seqs[i], dx, dy, self.agent.workspace.voxel))
            batch = collate(batch_seqs, self.agent, self.device)
            B = batch["first"].shape[1]
            out, _ = self.agent.forward_sequence(batch["views"], batch["cond"], batch["first"],
                                                 self.agent.initial_state(B, self.device))
            loss, stats = self.agent.loss(out, batch["targets"], batch["mask"])
            if not torch.isfinite(loss):
                raise NonFiniteError(f"keyframe BC step {self.grad_steps}: loss is {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            self.optimizer.step()
            self.schedule.step()
            self.grad_steps += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        return {k: v / n for k, v in sums.items()}


def load_episodes(path: str | Path) -> list[dict]:
    """MemoryBench demonstrations of an episode file (or directory); a file of other demonstrations
    (discrete actions, no proprio) is one line naming it."""
    from embodied.tasks.episodes import read_episodes

    episodes = read_episodes(path, action_shape=(9,))
    for i, ep in enumerate(episodes):
        if not {"proprio", "timestep"} <= set(ep["obs"]):
            raise ConfigError(f"trainer.demos: {path}: episode {i} has obs {sorted(ep['obs'])}; allowed: "
                              "MemoryBench keyframe demos (obs proprio, timestep) from `embodied demos`")
    return episodes


# --- the loop ------------------------------------------------------------------------------------

def train_keyframe(cfg, episodes: list[dict] | None = None, workspace=None,
                   env_factory: Callable | None = None) -> dict[str, Any]:
    """`embodied train ... agent=keyframe`: BC epochs with checkpoints, resume, metrics, progress.

    `episodes` / `workspace` / `env_factory` replace the dataset, WORKSPACE and make_env (tests)."""
    from omegaconf import OmegaConf

    from embodied.agents.keyframe import build_keyframe_agent
    from embodied.loading import load_model_state, resolve_device
    from embodied.tasks.memorybench import WORKSPACE, task_short_name
    from embodied.train.checkpoint import NonFiniteError, capture_rng, restore_rng
    from embodied.train.config import logger_config, trainer_config
    from embodied.train.logger import MetricLogger
    from embodied.train.preemption import PreemptionFlag
    from embodied.train.run import (EXIT_PREEMPTED, RunDirectory, _Progress, announce, announce_end, derived_seed,
                                    log, open_checkpoints, seed_everything)

    tcfg: KeyframeTrainerConfig = trainer_config(cfg)
    check(not cfg.distributed, "distributed", "true; allowed with trainer=keyframe: false (one process)")
    config = OmegaConf.to_container(cfg, resolve=True)
    task_name = str(cfg.task.name)
    task_short_name(task_name)
    device = resolve_device(cfg.device)
    with RunDirectory(cfg) as run:
        run_dir = run.path
        manager, ckpt, finished = open_checkpoints(cfg, config, run_dir)
        if finished is not None:
            return finished
        given = load_episodes(tcfg.demos) if episodes is None and tcfg.demos else None  # a bad file: one line, now
        announce(cfg, ckpt, device, f"{tcfg.epochs} epochs")

        seed_everything(cfg.seed)
        try:
            agent = build_keyframe_agent({k: v for k, v in config["agent"].items()},
                                         workspace if workspace is not None else WORKSPACE,
                                         config["memory"], task_name).to(device)
        except (TypeError, ValueError) as exc:
            raise ConfigError(" ".join(str(exc).split())) from None
        if ckpt is not None:
            load_model_state(agent, ckpt["model"], manager.latest_path)
        run.accept(int(ckpt["counters"]["update"]) if ckpt is not None else 0)

        if episodes is None:
            episodes = given if given is not None else load_episodes(_generate_demos(cfg, tcfg, run_dir / "data"))
            for copy in range(tcfg.dart_copies):
                episodes += load_episodes(_generate_demos(cfg, tcfg, run_dir / "data", tcfg.dart_noise, copy))
        seqs = _cached_sequences(episodes, agent, run_dir / "data", not cfg.quiet)
        steps_per_epoch = math.ceil(len(seqs) / tcfg.batch_episodes)
        bc = KeyframeBC(agent, tcfg, steps_per_epoch, device)
        if ckpt is not None:
            bc.load_state_dict(ckpt["trainer"])
            restore_rng(ckpt["rng"])
        metric_logger = MetricLogger(logger_config(cfg), run_dir, f"{task_name}/{cfg.memory.name}/seed{cfg.seed}",
                                     config, wandb_id=ckpt.get("wandb_id") if ckpt else None)
        flag = PreemptionFlag().install()
        progress = _Progress(tcfg.epochs, bc.epoch, not cfg.quiet, unit="epoch")
        metrics: dict[str, Any] = {}
        last_path = manager.latest_path if ckpt is not None else None
        t_start = time.perf_counter()

        def save() -> Path:
            payload = {"model": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
                       "trainer": bc.state_dict(), "counters": {"update": bc.epoch, "env_steps": 0},
                       "rng": capture_rng(), "config": config, "wandb_id": metric_logger.wandb_id,
                       "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
            return manager.save(payload, bc.epoch, metrics.get(cfg.best_metric))

        try:
            while bc.epoch < tcfg.epochs:
                if flag.requested:
                    path = save() if bc.epoch > 0 else last_path
                    progress.close()
                    log.warning("embodied train: preempted (signal %s): resume state saved to %s; exit code %d; "
                                "the same command resumes", flag.signum, path, EXIT_PREEMPTED)
                    return {"status": "preempted", "checkpoint": str(path) if path else None}
                e = bc.epoch
                seed_everything(derived_seed(cfg.seed, 0, e, 2))
                gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 0, e, 3))
                t0 = time.perf_counter()
                metrics = bc.fit_epoch(seqs, gen)
                bc.epoch = e + 1
                metrics.update(update=bc.epoch, step=bc.grad_steps, lr=bc.schedule.get_last_lr()[0],
                               epoch_time=time.perf_counter() - t0, time=time.perf_counter() - t_start)
                if tcfg.eval_every and (bc.epoch % tcfg.eval_every == 0 or bc.epoch == tcfg.epochs):
                    metrics["episode/success"] = _quick_eval(cfg, tcfg, agent, env_factory)
                metric_logger.log(metrics)
                progress.update(1, metrics)
                if progress.bar is not None:
                    progress.bar.set_postfix({"loss": f"{metrics['loss']:.3f}",
                                              "trans_err": f"{metrics['trans_err_m']:.3f}"}, refresh=False)
                last_path = save()
        except NonFiniteError as exc:
            raise NonFiniteError(f"{exc}; last good checkpoint: {last_path or 'none written yet'}") from None
        finally:
            progress.close()
            flag.uninstall()
            metric_logger.close()
        result = {"status": "finished", "checkpoint": str(manager.latest_path), "metrics": metrics, "update": bc.epoch}
        announce_end(cfg, result)
        return result


def _generate_demos(cfg, tcfg: KeyframeTrainerConfig, data_dir: Path, noise: float = 0.0, copy: int = 0) -> Path:
    from embodied.tasks.memorybench import task_short_name
    from embodied.tasks.memorybench.dataset import write_demos

    image_size = int(cfg.task.get("image_size") or cfg.task.get("width") or 128)
    tag = f"_dart{noise:g}_{copy}" if noise > 0 else ""
    out = data_dir / f"{task_short_name(cfg.task.name)}_train_{tcfg.demos_n}_{image_size}{tag}.npz"
    if not out.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_demos(str(cfg.task.name), "train", tcfg.demos_n, out, image_size, not cfg.quiet,
                    noise=noise, noise_seed=copy)
    return out


def _cached_sequences(episodes: list[dict], agent, data_dir: Path, progress: bool) -> list[KeyframeSequence]:
    """Prepared sequences, cached on disk by content (demo seeds + lengths + view layout)."""
    import hashlib
    import json

    facts = [e.get("episode") or {} for e in episodes]
    key = json.dumps({"seeds": [int(f.get("seed", -1)) for f in facts], "lens": [len(e["actions"]) for e in episodes],
                      "noise": [[f.get(k, 0) for k in ("noise", "noise_seed", "attempt")] for f in facts],
                      "grid": agent.config.grid_size, "cams": list(agent.config.cameras), "bins": agent.config.rot_bins,
                      "lo": agent.workspace.lo.tolist(), "hi": agent.workspace.hi.tolist(),
                      "act": float(np.sum([np.abs(np.asarray(e["actions"], np.float64)).sum() for e in episodes]))})
    path = data_dir / f"views-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as data:
            lens = data["lens"]
            bounds = np.concatenate([[0], np.cumsum(lens)])
            fields = {k: data[k] for k in ("views", "cond", "position", "rot", "grip", "coll")}
        return [KeyframeSequence(**{k: v[a:b] for k, v in fields.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
    seqs = prepare_sequences(episodes, agent, progress)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, lens=np.array([len(s.grip) for s in seqs]),
             **{k: np.concatenate([getattr(s, k) for s in seqs]) for k in ("views", "cond", "position", "rot", "grip", "coll")})
    tmp.replace(path)
    return seqs


def _quick_eval(cfg, tcfg: KeyframeTrainerConfig, agent, env_factory: Callable | None) -> float:
    from omegaconf import OmegaConf

    from embodied.agents.keyframe import rollout
    from embodied.tasks.memorybench import make_env, task_spec, validation_seeds

    seeds = validation_seeds(task_spec(str(cfg.task.name)), tcfg.eval_episodes)
    env = (env_factory or make_env)(OmegaConf.to_container(cfg.task, resolve=True))
    try:
        results = [rollout(env, agent, s) for s in seeds]
    finally:
        env.close()
    agent.train()
    return float(np.mean([r["success"] for r in results]))


def _finished(cfg, ckpt: dict) -> str | None:
    state = ckpt.get("trainer") or {}
    if state.get("epoch", 0) >= cfg.trainer.epochs:
        return (f"run_dir {cfg.run_dir} already finished at epoch {state['epoch']} "
                f"(trainer.epochs={cfg.trainer.epochs}); use another run_dir to train again")
    return None


@register_trainer("keyframe", KeyframeTrainerConfig, finished=_finished)
def _run(cfg, env_factory: Callable | None = None) -> dict[str, Any]:
    """Dataset-driven, one process: vector envs are not used (the monitoring rollouts build their own env)."""
    return train_keyframe(cfg)
