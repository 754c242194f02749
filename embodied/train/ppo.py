"""Memory-aware PPO (CleanRL ppo_atari_lstm.py style; habitat-baselines' recurrent recompute).

One update = collect `rollout_steps` steps from every env, then `epochs` passes of minibatches.
Minibatches are sets of env *rows* holding whole [T] sequences: the update re-runs the memory over
each sequence from the state stored at rollout start, resetting rows where `first` is set, so the
gradient flows through the memory exactly as the policy ran (agent.evaluate_sequence).

Episode bookkeeping with same-step autoreset: `first[t]` marks obs[t] as an episode's first obs;
`done[t] = terminated[t] | truncated[t]` cuts GAE between t and t+1. A truncated (time-limit)
episode is bootstrapped with gamma * V(s_t) of its last observed state, because with same-step
autoreset the true final observation is gone; terminated episodes are not bootstrapped.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from embodied.config import ConfigError, check
from embodied.envs import finished_episodes
from embodied.train.checkpoint import NonFiniteError
from embodied.train.distributed import DistContext, StragglerCutoff, all_reduce_gradients, all_reduce_sum, any_rank, union_keys

AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class PPOConfig:
    """Schema of `configs/trainer/ppo.yaml`: every PPO hyperparameter."""

    name: str = "ppo"
    """Trainer name (ppo)."""
    rollout_steps: int = 128
    """Env steps per env per update (T); also the BPTT length of the memory."""
    epochs: int = 2
    """Passes over each rollout."""
    num_minibatches: int = 2
    """Minibatches per epoch; each holds num_envs/num_minibatches env rows of whole sequences."""
    lr: float = 2.5e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over total_steps."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clip."""
    clip_value: bool = True
    """Clip the value update to +-clip_coef around the rollout values."""
    value_coef: float = 0.5
    """Value loss weight."""
    entropy_coef: float = 0.01
    """Entropy bonus weight."""
    aux_coef: float = 1.0
    """Weight of the sum of the agent's auxiliary losses (memories that register aux heads)."""
    max_grad_norm: float = 0.5
    """Global gradient norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    target_kl: float | None = None
    """Stop the epochs early when approx_kl exceeds this; null = never."""
    amp: str = "bf16"
    """Mixed precision on CUDA: none, bf16 or fp16 (fp16 uses a GradScaler). Ignored on CPU."""
    cpu_bf16: bool = False
    """bf16 autocast on CPU too (rollout forward and update). Off by default: it changes the numerics
    of CPU runs, and it is faster only on CPUs with native bf16 (avx512_bf16 or AMX; elsewhere it is
    emulated and slower). `embodied bench train` measures both."""
    rollout_threads: int = 0
    """Torch CPU threads for the policy's forward while collecting (CPU device only). 0 = auto: 1 when
    the envs run in worker processes, which need the cores (a forward over a few envs gains little
    from more threads, and the idle ones spin on the workers' cores), else torch's setting. The
    update always uses torch's setting."""
    bootstrap_truncated: bool = True
    """Bootstrap time-limit truncations with gamma*V(last obs) instead of treating them as terminal."""
    reset_envs_each_update: bool = False
    """Reset all envs (seeded by the update index) at every rollout start. Makes every update a
    pure function of the saved state, so a resumed run repeats the uninterrupted run bit for bit,
    at the cost of cutting episodes at rollout boundaries. Off by default."""
    preempt_fraction: float = 1.0
    """DD-PPO straggler cut-off: with N ranks, a rank stops collecting once ceil(fraction*N) ranks
    finished their rollout. 1.0 = off. DD-PPO uses 0.6."""
    preempt_min_fraction: float = 0.25
    """A rank collects at least this fraction of rollout_steps before it may be cut off."""
    critic_warmup: int = 0
    """Updates at the start in which only the value head learns (PIRLNav's critic warm-up, Ramrakhya
    et al. 2023): a policy started from imitation weights (`init_from`) keeps its actions until its
    untrained critic gives advantages worth following. 0 = off."""
    intrinsic_coef: float = 0.0
    """Memory-based intrinsic reward (memories with `intrinsic_reward`, e.g. dcem: novelty of a name
    just obtained): coef x the novelty of each observation, credited to the action that led to it.
    0 = off."""

    def validate(self, num_envs: int) -> "PPOConfig":
        check(self.name == "ppo", "trainer.name", f"{self.name!r}; allowed: ppo")
        check(self.rollout_steps >= 1, "trainer.rollout_steps", f"{self.rollout_steps}; allowed: >= 1")
        check(self.epochs >= 1, "trainer.epochs", f"{self.epochs}; allowed: >= 1")
        check(1 <= self.num_minibatches <= num_envs, "trainer.num_minibatches",
              f"{self.num_minibatches}; allowed: 1..num_envs ({num_envs}) (minibatches are sets of env rows)")
        check(self.lr > 0 and math.isfinite(self.lr), "trainer.lr", f"{self.lr}; allowed: > 0")
        check(self.adam_eps > 0, "trainer.adam_eps", f"{self.adam_eps}; allowed: > 0")
        check(0 <= self.gamma <= 1, "trainer.gamma", f"{self.gamma}; allowed: [0, 1]")
        check(0 <= self.gae_lambda <= 1, "trainer.gae_lambda", f"{self.gae_lambda}; allowed: [0, 1]")
        check(self.clip_coef > 0, "trainer.clip_coef", f"{self.clip_coef}; allowed: > 0")
        check(self.value_coef >= 0, "trainer.value_coef", f"{self.value_coef}; allowed: >= 0")
        check(self.entropy_coef >= 0, "trainer.entropy_coef", f"{self.entropy_coef}; allowed: >= 0")
        check(self.aux_coef >= 0, "trainer.aux_coef", f"{self.aux_coef}; allowed: >= 0")
        check(self.max_grad_norm > 0, "trainer.max_grad_norm", f"{self.max_grad_norm}; allowed: > 0")
        check(self.target_kl is None or self.target_kl > 0, "trainer.target_kl", "allowed: > 0 or null")
        check(self.rollout_threads >= 0, "trainer.rollout_threads",
              f"{self.rollout_threads}; allowed: >= 0 (0 = auto)")
        check(self.amp in AMP_MODES, "trainer.amp", f"{self.amp!r}; allowed: {', '.join(AMP_MODES)}")
        check(0 < self.preempt_fraction <= 1, "trainer.preempt_fraction",
              f"{self.preempt_fraction}; allowed: (0, 1]")
        check(0 <= self.preempt_min_fraction <= 1, "trainer.preempt_min_fraction",
              f"{self.preempt_min_fraction}; allowed: [0, 1]")
        check(isinstance(self.critic_warmup, int) and self.critic_warmup >= 0, "trainer.critic_warmup",
              f"{self.critic_warmup}; allowed: an integer >= 0")
        check(self.intrinsic_coef >= 0 and math.isfinite(self.intrinsic_coef), "trainer.intrinsic_coef",
              f"{self.intrinsic_coef}; allowed: >= 0")
        return self


def obs_to_tensors(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    # A batched env's observations are already tensors on its sim device (CUDA ones cannot pass numpy).
    return {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(device, non_blocking=True)
            for k, v in obs.items()}


class EpisodeStats:
    """Rolling window of finished episodes' measures (embodied.envs.finished_episodes): every number
    the env reported at the episode's end (its info, bools as 0/1), with return and length."""

    def __init__(self, window: int = 100):
        self.window: deque[dict[str, float]] = deque(maxlen=window)
        self.total = 0

    def add(self, episode: dict[str, Any]) -> None:
        self.window.append({k: float(v) for k, v in episode.items()
                            if isinstance(v, (int, float, bool, np.number, np.bool_)) and math.isfinite(float(v))})
        self.total += 1

    def keys(self) -> list[str]:
        return sorted({k for e in self.window for k in e})

    def sums(self, keys: list[str]) -> tuple[list[float], list[float]]:
        """Per key: the sum over the window's episodes that report it, and their number."""
        return ([sum(e[k] for e in self.window if k in e) for k in keys],
                [float(sum(k in e for e in self.window)) for k in keys])


def steps_per_update(cfg: PPOConfig, num_envs: int, world_size: int = 1) -> int:
    """Env steps one update collects, summed over ranks: rollout_steps from each of num_envs envs on
    each of world_size ranks (fewer where the straggler cut-off ends a rank's rollout early). A run
    goes on by whole updates until it has total_steps, so it may run more."""
    return cfg.rollout_steps * num_envs * world_size


class PPO:
    """Owns the optimizer, the rollout storage and the carried env/memory state."""

    def __init__(self, agent: torch.nn.Module, cfg: PPOConfig, num_envs: int, total_steps: int,
                 ctx: DistContext | None = None, seed: int = 0):
        self.agent = agent
        self.cfg = cfg
        self.num_envs = num_envs
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.params = [p for p in agent.parameters() if p.requires_grad]
        head = getattr(agent, "value_head", None)
        check(not cfg.critic_warmup or head is not None, "trainer.critic_warmup",
              f"{cfg.critic_warmup}, but the {type(agent).__name__} has no value_head; allowed: 0")
        self.value_params = {id(p) for p in head.parameters()} if head is not None else set()
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.adam_eps)
        self.num_updates = max(1, math.ceil(total_steps / steps_per_update(cfg, num_envs, self.ctx.world_size)))
        self.total_steps = total_steps
        on_cuda = self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if on_cuda else None
        if self.device.type == "cpu" and cfg.cpu_bf16:
            self.amp_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.cutoff = StragglerCutoff(self.ctx, cfg.preempt_fraction, cfg.preempt_min_fraction)
        self.update_index = 0
        self.env_steps = 0  # summed over ranks
        self.episodes = EpisodeStats()
        self._carry: dict[str, Any] | None = None
        if cfg.intrinsic_coef > 0 and not getattr(agent, "has_intrinsic_reward", False):
            memory = getattr(getattr(agent, "memory", None), "memory_name", type(agent).__name__)
            raise ConfigError(f"trainer.intrinsic_coef: {cfg.intrinsic_coef} needs a memory with an intrinsic "
                              f"reward; memory {memory!r} has none (allowed: dcem, or intrinsic_coef=0)")

    # --- state -------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def lr_now(self) -> float:
        if not self.cfg.anneal_lr:
            return self.cfg.lr
        return self.cfg.lr * max(0.0, 1.0 - self.env_steps / self.total_steps)

    def reset_envs(self, envs, seed: int) -> None:
        """Start fresh episodes (seeded) and a fresh memory state."""
        obs, _ = envs.reset(seed=seed)
        n = self.num_envs
        self._carry = {
            "obs": obs_to_tensors(obs, self.device),
            "first": torch.ones(n, dtype=torch.bool, device=self.device),
            "prev_action": torch.zeros((n, *self.agent.action_shape), dtype=self.agent.action_dtype, device=self.device),
            "state": self.agent.initial_state(n, self.device),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "update": self.update_index, "env_steps": self.env_steps, "episodes": self.episodes.total,
                "episode_window": [dict(e) for e in self.episodes.window]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.update_index = int(state["update"])
        self.env_steps = int(state["env_steps"])
        self.episodes.total = int(state.get("episodes", 0))
        self.episodes.window.clear()
        self.episodes.window.extend(dict(e) for e in state.get("episode_window", []))

    # --- rollout -----------------------------------------------------------------------------
    @torch.no_grad()
    def _act(self, carry: dict[str, Any], deterministic: bool = False):
        """The agent's step on the carried observation; the fifth item is the memory's intrinsic
        reward for that observation when trainer.intrinsic_coef > 0, else None."""
        args = (carry["obs"], carry["state"], carry["first"], carry["prev_action"])
        with self._autocast():
            if self.cfg.intrinsic_coef > 0:
                return self.agent.act_with_novelty(*args, deterministic=deterministic)
            return (*self.agent.act(*args, deterministic=deterministic), None)

    def _rollout_threads(self, envs) -> int | None:
        if self.device.type != "cpu":
            return None
        if self.cfg.rollout_threads:
            return self.cfg.rollout_threads
        return 1 if getattr(envs, "num_workers", 0) > 0 else None

    def collect(self, envs, stop: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
        """Run the policy for rollout_steps steps; returns rollout data, or None if `stop()` fired."""
        threads, before = self._rollout_threads(envs), torch.get_num_threads()
        if threads is None or threads == before:
            return self._collect(envs, stop)
        torch.set_num_threads(threads)
        try:
            return self._collect(envs, stop)
        finally:
            torch.set_num_threads(before)

    @torch.no_grad()
    def _collect(self, envs, stop: Callable[[], bool]) -> dict[str, Any] | None:
        assert self._carry is not None, "call reset_envs() before collect()"
        self.agent.eval()
        T, n, dev = self.cfg.rollout_steps, self.num_envs, self.device
        carry = self._carry
        start_state = carry["state"].clone()
        obs_buf = {k: torch.zeros((T, *v.shape), dtype=v.dtype, device=dev) for k, v in carry["obs"].items()}
        first = torch.zeros(T, n, dtype=torch.bool, device=dev)
        shape, dtype = (T, n, *self.agent.action_shape), self.agent.action_dtype  # continuous actions: [T, n, A] floats
        prev_actions = torch.zeros(shape, dtype=dtype, device=dev)
        actions = torch.zeros(shape, dtype=dtype, device=dev)
        log_probs = torch.zeros(T, n, device=dev)
        values = torch.zeros(T, n, device=dev)
        rewards = torch.zeros(T, n, device=dev)
        intrinsic = torch.zeros(T, n, device=dev)
        dones = torch.zeros(T, n, dtype=torch.bool, device=dev)
        t0 = time.perf_counter()
        env_time = 0.0  # of rollout_time, spent in envs.step (workers stepping, resets, transfer)
        steps = 0
        # Finished episodes count only once the rollout completes: a rollout abandoned by preemption
        # must leave the saved episode statistics as they were at the update boundary.
        finished: list[dict] = []
        for t in range(T):
            if stop():
                return None
            if self.cutoff.should_stop(self.update_index, t, T):
                break
            for k, v in carry["obs"].items():
                obs_buf[k][t] = v
            first[t] = carry["first"]
            prev_actions[t] = carry["prev_action"]
            action, log_prob, value, state, novelty = self._act(carry)
            if novelty is not None and t > 0:  # obs t came from action t-1 (at t = 0 the last rollout credited it)
                intrinsic[t - 1] = self.cfg.intrinsic_coef * novelty
            action_np = action.cpu().numpy()
            t_env = time.perf_counter()
            obs, reward, terminated, truncated, infos = envs.step(action_np)
            env_time += time.perf_counter() - t_env
            actions[t], log_probs[t], values[t] = action, log_prob.float(), value.float()
            reward_t = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=dev)
            term = torch.as_tensor(np.asarray(terminated, dtype=bool), device=dev)
            trunc = torch.as_tensor(np.asarray(truncated, dtype=bool), device=dev)
            if self.cfg.bootstrap_truncated:
                reward_t = reward_t + self.cfg.gamma * values[t] * (trunc & ~term)
            rewards[t] = reward_t
            done = term | trunc
            dones[t] = done
            finished.extend(finished_episodes(infos).values())
            ended = done.reshape(n, *(1,) * len(self.agent.action_shape))
            carry = {"obs": obs_to_tensors(obs, dev), "first": done,
                     "prev_action": torch.where(ended, torch.zeros_like(action), action), "state": state}
            steps = t + 1
        self.cutoff.finished(self.update_index)
        for episode in finished:
            self.episodes.add(episode)
        self._carry = carry
        S = steps
        _, _, next_value, _, novelty = self._act(carry, deterministic=True)
        if novelty is not None and S:
            intrinsic[S - 1] = self.cfg.intrinsic_coef * novelty
        rollout_time = time.perf_counter() - t0
        rewards = rewards + intrinsic
        adv = torch.zeros(S, n, device=dev)
        last_gae = torch.zeros(n, device=dev)
        for t in reversed(range(S)):
            nxt = next_value.float() if t == S - 1 else values[t + 1]
            nonterminal = (~dones[t]).float()
            delta = rewards[t] + self.cfg.gamma * nxt * nonterminal - values[t]
            last_gae = delta + self.cfg.gamma * self.cfg.gae_lambda * nonterminal * last_gae
            adv[t] = last_gae
        return {"obs": {k: v[:S] for k, v in obs_buf.items()}, "first": first[:S],
                "prev_actions": prev_actions[:S], "actions": actions[:S], "log_probs": log_probs[:S],
                "values": values[:S], "advantages": adv, "returns": adv + values[:S],
                "start_state": start_state, "steps": S, "rollout_time": rollout_time, "env_time": env_time,
                "intrinsic": intrinsic[:S]}

    # --- update ------------------------------------------------------------------------------
    def update(self, rollout: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        self.agent.train()
        lr = self.lr_now()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        n = self.num_envs
        per_mb = math.ceil(n / cfg.num_minibatches)
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clipfrac": 0.0,
                "aux_loss": 0.0, "grad_norm": 0.0}
        count = 0
        stop_early = False
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=self.shuffle_gen).to(self.device)
            for start in range(0, n, per_mb):
                rows = order[start:start + per_mb]
                mb = {k: v[:, rows] for k, v in rollout["obs"].items()}
                with self._autocast():
                    out = self.agent.evaluate_sequence(
                        mb, rollout["start_state"][rows], rollout["first"][:, rows],
                        rollout["prev_actions"][:, rows], rollout["actions"][:, rows])
                new_logp = out["log_prob"].float()
                entropy = out["entropy"].float()
                new_value = out["value"].float()
                old_logp = rollout["log_probs"][:, rows]
                old_value = rollout["values"][:, rows]
                ret = rollout["returns"][:, rows]
                adv = rollout["advantages"][:, rows]
                if cfg.norm_adv and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                log_ratio = new_logp - old_logp
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                if cfg.clip_value:
                    v_clipped = old_value + (new_value - old_value).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((new_value - ret) ** 2, (v_clipped - ret) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_value - ret) ** 2).mean()
                ent = entropy.mean()
                aux_losses = out.get("aux_losses") or {}
                aux = sum((v.float() for v in aux_losses.values()), torch.zeros((), device=self.device))
                warmup = self.update_index < cfg.critic_warmup
                loss = cfg.value_coef * v_loss if warmup else \
                    pg_loss - cfg.entropy_coef * ent + cfg.value_coef * v_loss + cfg.aux_coef * aux
                if not torch.isfinite(loss) and not self.ctx.enabled:  # ranks fail together below
                    raise NonFiniteError(
                        f"update {self.update_index}: loss is {loss.item()} (policy {pg_loss.item()}, "
                        f"value {v_loss.item()}, aux {aux.item()}); stopping before the optimizer step")
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    loss.backward()
                if warmup:  # the rest keeps its weights (and its Adam moments: a None grad skips the step)
                    for p in self.params:
                        if id(p) not in self.value_params:
                            p.grad = None
                all_reduce_gradients(self.params, self.ctx)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                if self.scaler:
                    self.scaler.step(self.optimizer)  # skips steps with inf grads (expected with fp16)
                    self.scaler.update()
                else:
                    if not torch.isfinite(grad_norm):
                        raise NonFiniteError(f"update {self.update_index}: gradient norm is {grad_norm.item()}")
                    self.optimizer.step()
                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", ent),
                                   ("approx_kl", approx_kl), ("clipfrac", clipfrac), ("aux_loss", aux),
                                   ("grad_norm", grad_norm)):
                    sums[key] += float(value.detach()) if torch.is_tensor(value) else float(value)
                count += 1
                # ranks must run the same number of steps (collectives), so they agree on stopping
                if cfg.target_kl is not None and any_rank(float(approx_kl) > cfg.target_kl, self.ctx):
                    stop_early = True
                    break
            if stop_early:
                break
        bad = next((n for n, p in self.agent.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if bad is not None:
            raise NonFiniteError(f"update {self.update_index}: parameter {bad} became non-finite")
        update_time = time.perf_counter() - t0
        local_steps = rollout["steps"] * n
        total_steps = all_reduce_sum([local_steps], self.ctx)[0]
        self.env_steps += int(total_steps)
        self.update_index += 1
        returns, values = rollout["returns"], rollout["values"]
        explained = 1 - (returns - values).var() / (returns.var() + 1e-8)
        metrics = {k: v / max(count, 1) for k, v in sums.items()}
        metrics.update(lr=lr, update_time=update_time, rollout_time=rollout["rollout_time"], env_time=rollout["env_time"],
                       env_sps=local_steps / max(rollout["rollout_time"], 1e-9),
                       rollout_len=rollout["steps"], explained_variance=float(explained))
        if cfg.intrinsic_coef > 0:
            metrics["intrinsic_reward"] = float(rollout["intrinsic"].sum(0).mean())  # per env per rollout
        return metrics

    def episode_metrics(self) -> dict[str, float]:
        """Window means of finished episodes' measures, pooled over ranks (each over the episodes that report it)."""
        keys = union_keys(self.episodes.keys(), self.ctx)
        sums, counts = self.episodes.sums(keys)
        reduced = all_reduce_sum([*sums, *counts], self.ctx)
        n = len(keys)
        return {f"episode/{k}": s / c for k, s, c in zip(keys, reduced[:n], reduced[n:]) if c > 0}
