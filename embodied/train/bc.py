"""Behaviour cloning over demonstration sequences, and DAgger relabelling with the nav oracle.

Sequences: training batches are whole episodes, padded to the longest in the batch and masked,
and the memory is re-run from the episode start (fresh state) exactly as it runs at test time,
so memories learn over whole episodes. `seq_len > 0` cuts long episodes into chunks of at most
`seq_len` steps; every chunk then starts from a fresh memory state (a truncated memory — use it
only when whole episodes do not fit in memory).

Demos: episode files (embodied/tasks/episodes.py, the one format of every demonstration): `.npz`
archives of several episodes, `obs/<key>` [S, ...] (the env's observation arrays), `actions` [S]
int64 (the expert's action at that observation), `first` [S] bool, and with `labels=true`
`labels/<key>` [S, ...]: the task's privileged labels of each step (its `labels()` method, read like
`oracle_action()`; -1 = no label at that step), which batches hand to the agent's aux heads and to
the imitation losses of `losses` (embodied/agents/imitation.py).

DAgger (Ross et al. 2011) for navigation: roll out a mixture policy — the oracle's action with
probability beta, the learner's otherwise — label every visited observation with the oracle's
action (`env.call("oracle_action")`), add the labelled episodes to the dataset, retrain.
With `beta=1` and `aggregate=false`, the same rounds become "new expert episodes every round":
each round trains on episodes it has never seen (new layouts and names), so the agent cannot
memorise the demonstrations (the fast-mapping recipe, docs/fastmap.md).

Agents with their own data pipeline plug in through hooks (embodied/agents/keyframe.py): a task
family that records its demos itself registers a demo source (embodied.tasks.DemoSource: MemoryBench's
keyframe expert, with `dart_copies` noisy copies), and the agent turns episodes into training
sequences (`prepare_imitation`), batches (`imitation_batch`, with `aug_shift`), a loss
(`imitation_loss`) and in-training rollouts (`imitation_rollouts`). An agent whose demonstrations
are its own decisions over a non-differentiable memory records them itself (`record_imitation`: the
nav/goat chooser, embodied/agents/goat_chooser.py, labelled by an oracle that reads the simulator). With `dagger_steps=0` the rounds
collect nothing: each re-trains on the demos, so `dagger_rounds + 1` rounds of one epoch are epochs
with a checkpoint (and an evaluation) after each. `optimizer`, `weight_decay`, `warmup_steps` and
`lr_schedule=cosine` (linear warmup, then cosine decay to lr/20 over the run's gradient steps,
counted from the demonstrations) serve both.

Options for tasks where a few steps decide the episode: `upweight` names a step selector
registered by the task (embodied.tasks.STEP_SELECTORS) whose steps weigh `upweight_factor` in
the loss; `inflection_weight` weighs the steps where the expert's action changes (any task);
`freeze` keeps parameters (by name prefix) at their initial values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator

import numpy as np
import torch

from embodied.agents.imitation import IMITATION_LOSSES
from embodied.config import InputError, check
from embodied.envs import finished_episodes
from embodied.tasks import STEP_SELECTORS
from embodied.tasks.episodes import Episode
from embodied.train.checkpoint import NonFiniteError
from embodied.train.distributed import DistContext, all_reduce_gradients


@dataclass
class BCConfig:
    """Schema of `configs/trainer/bc.yaml`."""

    name: str = "bc"
    """Trainer name (bc)."""
    demos: str | None = None
    """A .npz shard or a directory of shards; null = record `record_episodes` episodes of the expert first."""
    record_episodes: int = 64
    """Episodes of the expert (`expert`) to record into run_dir/data when `demos` is null."""
    expert: str = "oracle"
    """Who labels the steps: oracle = the envs' `oracle_action()` (nav: the shortest path, which
    knows where the goal is); scenemem = the 3D-Mem agent acting on the env's observations alone
    (nav/goat; embodied.agents.goat.GoatTeacher)."""
    lr: float = 3e-4
    """Adam learning rate."""
    batch_episodes: int = 8
    """Sequences (episodes or chunks) per gradient step."""
    epochs: int = 4
    """Passes over the dataset after each data round."""
    seq_len: int = 0
    """0 = whole episodes; > 0 = chunks of at most this many steps, each from a fresh memory state."""
    max_grad_norm: float = 1.0
    """Global gradient norm clip."""
    aux_coef: float = 1.0
    """Weight of the agent's auxiliary losses."""
    dagger_rounds: int = 0
    """DAgger rounds after the initial BC round (needs an env with oracle_action)."""
    dagger_steps: int = 1024
    """Env steps (over all envs) collected per DAgger round; 0 = none: every round re-trains on the
    demonstrations (rounds are then epochs with a checkpoint after each)."""
    beta: float = 0.5
    """Probability of executing the oracle's action in the first DAgger round."""
    beta_decay: float = 0.5
    """beta is multiplied by this every round."""
    aggregate: bool = True
    """true: DAgger's aggregate dataset (demos + every round's episodes); false: each round trains
    on its own new episodes only (not written to disk)."""
    eval_episodes: int = 0
    """> 0: after each round, this many greedy learner episodes on the training envs, logged as
    episode/* (what best_metric reads). 0: episode/* are the collected episodes' measures (the
    beta-mixture's), and absent when the oracle alone acted (beta = 1)."""
    upweight: str | None = None
    """A step selector registered by the task (e.g. fastmap/instruction): its steps weigh
    `upweight_factor` in the loss. null: every step weighs 1."""
    upweight_factor: float = 1.0
    """Loss weight of the `upweight` steps."""
    inflection_weight: float = 1.0
    """Loss weight of the steps whose label differs from the step before's (and of a sequence's first
    step): inflection weighting (Wijmans et al. 2019; Habitat-Web and PIRLNav use it), so the rare
    decisions of a demonstration (a turn after a straight run, the final stop) are not drowned by the
    long runs of one action. Their paper's value is (steps / inflection steps) of the demonstrations;
    a run logs `inflection_frac` (per batch) when this is not 1. 1 = off."""
    freeze: list[str] = field(default_factory=list)
    """Parameter name prefixes not to train (e.g. encoder.text.embedding); each must match one."""
    labels: bool = False
    """Record the task's privileged per-step labels (`env.labels()`) with every demonstration step,
    for label-reading aux heads (e.g. ballet_show) and imitation losses."""
    bc_coef: float = 1.0
    """Weight of the per-step action cross-entropy. With bc_coef=0, aux_coef=0 and a loss of
    `losses` that asks one step again (counterfactual), nothing reads the per-step outputs and
    the memory only runs up to that step without reads (Memory.advance: SAT's 1-layer walk costs
    a small fraction of reading at every step)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Imitation losses added to the cross-entropy, {name: weight} (embodied/agents/imitation.py,
    e.g. counterfactual: 1.0)."""
    optimizer: str = "adam"
    """adam | adamw (decoupled weight decay)."""
    weight_decay: float = 0.0
    """Weight decay (adamw; adam adds it to the gradient)."""
    lr_schedule: str = "constant"
    """constant | cosine: after `warmup_steps`, cosine decay to lr/20 over the run's gradient steps
    ((dagger_rounds + 1) x epochs x batches of the demonstrations)."""
    warmup_steps: int = 0
    """Gradient steps of linear learning-rate warmup from lr/warmup_steps."""
    eval_every: int = 1
    """Rounds between the evaluations of `eval_episodes` (the last round is always evaluated)."""
    dart_copies: int = 0
    """Extra copies of the demos recorded with execution noise by the task's demo source (DART,
    Laskey et al. 2017: labels stay the expert's); tasks with a demo source only (MemoryBench)."""
    dart_noise: float = 0.02
    """Std of the DART execution noise (MemoryBench: metres, clipped to 2 std)."""
    aug_shift: int = 0
    """Translation augmentation of agents whose batches support it (agent=keyframe): each sequence
    shifted by up to this many voxels in x and y; 0 = off."""

    def validate(self, num_envs: int = 1) -> "BCConfig":
        check(self.name == "bc", "trainer.name", f"{self.name!r}; allowed: bc")
        check(self.lr > 0 and math.isfinite(self.lr), "trainer.lr", f"{self.lr}; allowed: > 0")
        check(self.batch_episodes >= 1, "trainer.batch_episodes", f"{self.batch_episodes}; allowed: >= 1")
        check(self.epochs >= 1, "trainer.epochs", f"{self.epochs}; allowed: >= 1")
        check(self.seq_len >= 0, "trainer.seq_len", f"{self.seq_len}; allowed: >= 0")
        check(self.max_grad_norm > 0, "trainer.max_grad_norm", f"{self.max_grad_norm}; allowed: > 0")
        check(self.aux_coef >= 0, "trainer.aux_coef", f"{self.aux_coef}; allowed: >= 0")
        check(self.record_episodes >= 1, "trainer.record_episodes", f"{self.record_episodes}; allowed: >= 1")
        check(self.expert in EXPERTS, "trainer.expert", f"{self.expert!r}; allowed: {', '.join(EXPERTS)}")
        check(self.dagger_rounds >= 0, "trainer.dagger_rounds", f"{self.dagger_rounds}; allowed: >= 0")
        check(self.dagger_steps >= 0, "trainer.dagger_steps", f"{self.dagger_steps}; allowed: >= 0 (0: no new episodes)")
        check(0 <= self.beta <= 1, "trainer.beta", f"{self.beta}; allowed: [0, 1]")
        check(0 <= self.beta_decay <= 1, "trainer.beta_decay", f"{self.beta_decay}; allowed: [0, 1]")
        check(self.eval_episodes >= 0, "trainer.eval_episodes", f"{self.eval_episodes}; allowed: >= 0")
        check(self.upweight is None or self.upweight in STEP_SELECTORS, "trainer.upweight",
              f"{self.upweight!r}; allowed: null, {', '.join(sorted(STEP_SELECTORS))}")
        check(self.upweight_factor > 0 and math.isfinite(self.upweight_factor), "trainer.upweight_factor",
              f"{self.upweight_factor}; allowed: > 0")
        check(self.inflection_weight > 0 and math.isfinite(self.inflection_weight), "trainer.inflection_weight",
              f"{self.inflection_weight}; allowed: > 0 (1 = off)")
        check(self.bc_coef >= 0 and math.isfinite(self.bc_coef), "trainer.bc_coef", f"{self.bc_coef}; allowed: >= 0")
        for name, weight in self.losses.items():
            check(name in IMITATION_LOSSES, f"trainer.losses.{name}",
                  f"unknown imitation loss; allowed: {', '.join(sorted(IMITATION_LOSSES))}")
            check(weight >= 0 and math.isfinite(weight), f"trainer.losses.{name}", f"{weight}; allowed: a weight >= 0")
        check(len(self.losses) <= 1, "trainer.losses", f"{dict(self.losses)}; allowed: at most one loss")
        check(self.optimizer in OPTIMIZERS, "trainer.optimizer", f"{self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        check(self.weight_decay >= 0 and math.isfinite(self.weight_decay), "trainer.weight_decay",
              f"{self.weight_decay}; allowed: >= 0")
        check(self.lr_schedule in ("constant", "cosine"), "trainer.lr_schedule",
              f"{self.lr_schedule!r}; allowed: constant, cosine")
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "trainer.warmup_steps",
              f"{self.warmup_steps}; allowed: >= 0")
        check(isinstance(self.eval_every, int) and self.eval_every >= 1, "trainer.eval_every",
              f"{self.eval_every}; allowed: >= 1")
        check(isinstance(self.dart_copies, int) and self.dart_copies >= 0, "trainer.dart_copies",
              f"{self.dart_copies}; allowed: an integer >= 0")
        check(self.dart_noise > 0 and math.isfinite(self.dart_noise), "trainer.dart_noise",
              f"{self.dart_noise}; allowed: > 0")
        check(isinstance(self.aug_shift, int) and self.aug_shift >= 0, "trainer.aug_shift",
              f"{self.aug_shift}; allowed: >= 0")
        return self


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
EXPERTS = ("oracle", "scenemem")


# --- dataset ------------------------------------------------------------------------------------

def split_sequences(episodes: list[Episode], seq_len: int) -> list[Episode]:
    if seq_len <= 0:
        return episodes
    out = []
    for e in episodes:
        for a in range(0, len(e["actions"]), seq_len):
            out.append({part: ({k: v[a:a + seq_len] for k, v in e[part].items()} if isinstance(e[part], dict)
                               else e[part][a:a + seq_len]) for part in e})
    return out


def _pad(sequences: list[Episode], part: str, T: int, device: torch.device) -> dict[str, torch.Tensor]:
    """{key: [T, B, ...]} of one part (obs, labels) of each sequence; integer labels pad with -1 (none)."""
    out = {}
    for k in sorted(sequences[0][part]):
        sample = np.asarray(sequences[0][part][k])
        fill = -1 if part == "labels" and np.issubdtype(sample.dtype, np.integer) else 0
        buf = np.full((T, len(sequences), *sample.shape[1:]), fill, dtype=sample.dtype)
        for j, s in enumerate(sequences):
            buf[: len(s["actions"]), j] = s[part][k]
        out[k] = torch.from_numpy(buf).to(device)
    return out


def pad_batch(sequences: list[Episode], device: torch.device) -> dict[str, Any]:
    """[T, B] tensors of a batch of sequences; padding steps are first=True and mask=False."""
    T, B = max(len(s["actions"]) for s in sequences), len(sequences)
    obs = _pad(sequences, "obs", T, device)
    actions = np.zeros((T, B), dtype=np.int64)
    mask = np.zeros((T, B), dtype=bool)
    for j, s in enumerate(sequences):
        n = len(s["actions"])
        actions[:n, j] = s["actions"]
        mask[:n, j] = True
    first = ~mask
    first[0] = True
    prev = np.zeros((T, B), dtype=np.int64)
    prev[1:] = actions[:-1]
    prev[first] = 0
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    batch = {"obs": obs, "actions": t(actions), "mask": t(mask), "first": t(first), "prev_actions": t(prev)}
    if all("labels" in s for s in sequences):
        batch["labels"] = _pad(sequences, "labels", T, device)
    return batch


# --- trainer ------------------------------------------------------------------------------------

def freeze_parameters(agent: torch.nn.Module, prefixes: list[str]) -> list[str]:
    """Stop training the parameters whose names start with one of `prefixes`; returns their names.
    A prefix that matches nothing is an error (naming a few of the agent's parameters)."""
    names = [n for n, _ in agent.named_parameters()]
    examples = ", ".join(sorted({".".join(n.split(".")[:3]) for n in names})[:12])
    for prefix in prefixes:
        check(any(n.startswith(prefix) for n in names), "trainer.freeze",
              f"{prefix!r} matches no parameter of the agent; parameter names start e.g. with {examples}")
    frozen = []
    for name, param in agent.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def check_step_weights(agent: torch.nn.Module, cfg: BCConfig) -> None:
    """`upweight` and `inflection_weight` weigh the per-step cross-entropy, which an agent with its own
    imitation loss (keyframe, goat_pointer) never computes: asking for them there is an error."""
    check(getattr(agent, "imitation_loss", None) is None or (cfg.upweight is None and cfg.inflection_weight == 1.0),
          "trainer.upweight" if cfg.upweight else "trainer.inflection_weight",
          f"{type(agent).__name__} computes its own imitation loss, which step weights do not reach; "
          "allowed: null / 1 for this agent")


class BehaviourCloning:
    """The imitation engine of every task: minibatches of whole sequences, the loss (the agent's
    `imitation_loss` where it has one), clipping, the optimizer and the learning-rate schedule.
    `total_steps`: the run's gradient steps, for lr_schedule=cosine."""

    def __init__(self, agent: torch.nn.Module, cfg: BCConfig, ctx: DistContext | None = None, seed: int = 0,
                 total_steps: int | None = None):
        self.agent = agent
        self.cfg = cfg
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.frozen = freeze_parameters(agent, list(cfg.freeze))
        self.selector = STEP_SELECTORS[cfg.upweight] if cfg.upweight else None
        self.losses = {name: (IMITATION_LOSSES[name](), float(w)) for name, w in cfg.losses.items()}
        self.params = [p for p in agent.parameters() if p.requires_grad]
        self.optimizer = OPTIMIZERS[cfg.optimizer](self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule = None
        if cfg.lr_schedule != "constant" or cfg.warmup_steps:
            total = max(1, int(total_steps or 1))

            def factor(step: int) -> float:
                if step < cfg.warmup_steps:
                    return (step + 1) / cfg.warmup_steps
                if cfg.lr_schedule == "constant":
                    return 1.0
                progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
                return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        # agents with their own data pipeline (keyframe): their batches and loss
        self.batch_hook = getattr(agent, "imitation_batch", None)
        self.loss_hook = getattr(agent, "imitation_loss", None)
        check_step_weights(agent, cfg)
        self.round = 0
        self.grad_steps = 0

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "round": self.round, "grad_steps": self.grad_steps}
        if self.schedule is not None:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        self.round = int(state["round"])
        self.grad_steps = int(state["grad_steps"])

    def batch(self, sequences: list) -> dict[str, Any]:
        if self.batch_hook is not None:
            return self.batch_hook(sequences, self.shuffle_gen, self.device, self.cfg.aug_shift)
        return pad_batch(sequences, self.device)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.loss_hook is not None:
            return self.loss_hook(batch)
        B = batch["actions"].shape[1]
        labels = batch.get("labels")
        if (self.losses or self.cfg.labels) and labels is None:
            raise InputError("trainer.labels: the demonstrations hold no labels/* arrays; trainer.losses and "
                             "label-reading aux heads need demos recorded with trainer.labels=true")
        branches = [loss.branch(labels) for loss, _ in self.losses.values() if hasattr(loss, "branch")]
        if branches and self.cfg.bc_coef == 0 and self.cfg.aux_coef == 0:
            # Nothing reads the per-step outputs: only the loss's branch states (Memory.advance).
            out = {"branch_state": self.agent.memory_states_at(batch["obs"], self.agent.initial_state(B, self.device),
                                                               batch["first"], batch["prev_actions"], branches[0])}
            total, stats = torch.zeros((), device=self.device), {}
        else:
            out = self.agent.evaluate_sequence(batch["obs"], self.agent.initial_state(B, self.device),
                                               batch["first"], batch["prev_actions"], batch["actions"],
                                               labels=labels, branch=branches[0] if branches else None)
            total, stats = self._step_losses(batch, out)
        for name, (loss, weight) in self.losses.items():
            for key, value in loss(self.agent, batch, out).items():
                total = total + weight * value.float()
                stats[f"{name}/{key}"] = float(value.detach())
        return total, stats

    def _step_losses(self, batch: dict[str, Any], out: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The per-step action cross-entropy and the aux losses, weighted; with their stats."""
        mask = batch["mask"].float()
        if self.selector is not None:
            mask = mask * torch.where(self.selector(batch["obs"]), float(self.cfg.upweight_factor), 1.0)
        extra = {}
        if self.cfg.inflection_weight != 1.0:
            inflection = (batch["actions"] != batch["prev_actions"]) | batch["first"]
            mask = mask * torch.where(inflection, float(self.cfg.inflection_weight), 1.0)
            extra["inflection_frac"] = float((inflection & batch["mask"]).sum() / batch["mask"].sum())
        ce = -(out["log_prob"].float() * mask).sum() / mask.sum()
        aux = sum((v.float() for v in (out.get("aux_losses") or {}).values()), torch.zeros((), device=self.device))
        total = self.cfg.bc_coef * ce + self.cfg.aux_coef * aux
        with torch.no_grad():
            valid = batch["mask"].float()
            acc = ((out["logits"].argmax(-1) == batch["actions"]).float() * valid).sum() / valid.sum()
        return total, {"bc_loss": float(ce.detach()), "accuracy": float(acc), "aux_loss": float(aux.detach()), **extra}

    def fit(self, episodes: list[Episode], epochs: int | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
        """`epochs` passes of minibatches of sequences; returns mean loss/accuracy of the last pass
        (a NaN stat, of cases a batch lacks, is averaged over the batches that have it).
        `should_stop` is asked before every gradient step: a preempted run leaves within one step (a
        round can take many minutes) and resumes the round from its last checkpoint."""
        self.agent.train()
        sequences = split_sequences(episodes, self.cfg.seq_len)
        if not sequences:
            raise ValueError("behaviour cloning needs at least one demonstration episode")
        last: dict[str, float] = {}
        for _ in range(epochs or self.cfg.epochs):
            order = torch.randperm(len(sequences), generator=self.shuffle_gen).tolist()
            sums, counts = {}, {}
            for a in range(0, len(order), self.cfg.batch_episodes):
                if should_stop():
                    return {k: v / counts[k] for k, v in sums.items()} if sums else last
                batch = self.batch([sequences[i] for i in order[a:a + self.cfg.batch_episodes]])
                loss, stats = self.loss(batch)
                if not torch.isfinite(loss):
                    raise NonFiniteError(f"behaviour cloning step {self.grad_steps}: loss is {loss.item()}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                all_reduce_gradients(self.params, self.ctx)
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
                if self.schedule is not None:
                    self.schedule.step()
                self.grad_steps += 1
                for k, v in stats.items():
                    if v == v:  # NaN: a stat of cases this batch lacks (e.g. no object-labelled decision)
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
            last = {k: v / counts[k] for k, v in sums.items()}
        return last


# --- data collection (oracle demos and DAgger) ---------------------------------------------------

@torch.no_grad()
def collect_labelled(envs, agent: torch.nn.Module | None, device: torch.device, steps: int, beta: float,
                     rng: np.random.Generator, seed: int, max_episodes: int | None = None,
                     should_stop: Callable[[], bool] = lambda: False,
                     deterministic: bool = False, labels: bool = False,
                     skip: Collection[str] = (), expert=None,
                     on_episode: Callable[[], None] | None = None) -> tuple[list[Episode], list[dict]]:
    """Run a beta-mixture of oracle and learner; label each visited obs with the oracle action.

    Returns the finished episodes (obs + oracle labels) and their final measures. With
    agent=None (or beta=1) this records pure oracle demonstrations; with beta=0 and
    deterministic=True it evaluates the greedy learner. `labels`: also record each step's
    privileged labels (`env.labels()`) under the episode's "labels". `skip`: observation keys not
    recorded (the agent's `ignore`: nav/goat's goal image and its detections are 28 of a step's 74 kB
    at 64x64, for an agent given category goals). `expert`: labels from an agent that acts on the
    observations (`actions(obs)`, `stepped(executed, done)`, `reset()`; GoatTeacher) instead of
    the envs' `oracle_action()`. `on_episode()` is called as each episode ends (a progress bar)."""
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    if expert is not None:
        expert.reset()
    state = agent.initial_state(n, device) if agent is not None else None
    first = torch.ones(n, dtype=torch.bool, device=device)
    prev = torch.zeros(n, dtype=torch.long, device=device)
    kept = [k for k in obs if k not in skip]
    fresh = lambda: {"obs": {k: [] for k in kept}, "actions": [], **({"labels": {}} if labels else {})}  # noqa: E731
    current: list[dict[str, Any]] = [fresh() for _ in range(n)]
    episodes: list[Episode] = []
    measures: list[dict] = []
    for _ in range(math.ceil(steps / n)):
        if should_stop() or (max_episodes is not None and len(episodes) >= max_episodes):
            break
        labelled = np.asarray(envs.call("oracle_action") if expert is None else expert.actions(obs), dtype=np.int64)
        step_labels = envs.call("labels") if labels else None
        execute = labelled.copy()
        if agent is not None and beta < 1.0:
            tensors = {k: torch.as_tensor(v).to(device) for k, v in obs.items()}
            action, _, _, state = agent.act(tensors, state, first, prev, deterministic=deterministic)
            learner = rng.random(n) >= beta
            execute[learner] = action.cpu().numpy()[learner]
        # The batched env's observations are tensors on its sim device: one host copy per key per step.
        host = {k: obs[k].cpu().numpy() if isinstance(obs[k], torch.Tensor) else obs[k] for k in kept}
        for i in range(n):
            for k, v in host.items():
                current[i]["obs"][k].append(np.array(v[i]))
            current[i]["actions"].append(int(labelled[i]))
            if labels:
                for k, v in step_labels[i].items():
                    current[i]["labels"].setdefault(k, []).append(np.array(v))
        obs, _, terminated, truncated, infos = envs.step(execute)
        done = np.asarray(terminated) | np.asarray(truncated)
        if expert is not None:
            expert.stepped(execute, done)
        ended = finished_episodes(infos)
        for i in np.flatnonzero(done):
            ep = current[i]
            episode = {"obs": {k: np.stack(v) for k, v in ep["obs"].items()},
                       "actions": np.asarray(ep["actions"], dtype=np.int64)}
            if labels:
                episode["labels"] = {k: np.stack(v) for k, v in ep["labels"].items()}
            episodes.append(episode)
            measures.append(ended.get(int(i), {}))
            current[i] = fresh()
            if on_episode is not None:
                on_episode()
        done_t = torch.as_tensor(done, device=device)
        first = done_t
        prev = torch.where(done_t, torch.zeros_like(prev), torch.as_tensor(execute, device=device))
    if max_episodes is not None:
        episodes, measures = episodes[:max_episodes], measures[:max_episodes]
    return episodes, measures


def iter_rounds(cfg: BCConfig) -> Iterator[tuple[int, float]]:
    """(round, beta) for the DAgger rounds 1..dagger_rounds."""
    for r in range(1, cfg.dagger_rounds + 1):
        yield r, cfg.beta * cfg.beta_decay ** (r - 1)


def summarize_measures(measures: list[dict]) -> dict[str, float]:
    if not measures:
        return {}
    keys = sorted({k for m in measures for k in m if isinstance(m[k], (int, float))})
    return {f"episode/{k}": float(np.mean([m[k] for m in measures if k in m])) for k in keys}
