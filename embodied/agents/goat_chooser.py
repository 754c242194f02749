"""A learned chooser for the 3D-Mem agent on nav/goat (docs/goat.md): a small pointer network over
the candidates the scene memory offers at a decision (its prefiltered snapshots' objects and its
frontiers) and the goal, trained by imitation of an oracle through
`embodied train +experiment=goat_pointer`; `embodied eval task=nav/goat ckpt=...` plays it in the
agent's place of the scripted chooser.

Tokens (no instance id, nothing the agent could not see):
- an object: its category, colour name, the furniture under it and the room its neighbours name
  (as the scripted chooser reads them), its position relative to the agent (heading frame), its
  height, how often and how large it was seen, and how it matches the goal (the scripted chooser's
  `match_features`: colour similarity, same furniture, same room, goal-image context nearby; and
  the same category), since attention alone learns such comparisons slowly from ten thousand decisions;
- a frontier: its position relative to the agent, its size, whether a frame faced it;
- the goal: modality, category, colour, receptacle, room, and the classes of a goal image.
A 2-layer transformer runs over [goal, candidates]; each candidate's score is an MLP of its output,
the goal's, and their product; the choice is the arg-max (a pointer over a variable-length set).

The oracle (training only; it reads the simulator): the candidate object that is an instance of the
goal (any, for a category goal), else the frontier on the shortest path to the goal, i.e. the one
minimising the straight-line distance from the agent plus the geodesic distance from the frontier
to the goal on the true map (the straight line stands in for the agent-to-frontier geodesic: one
distance field per decision instead of one per frontier). A frontier label names where the goal
is, which the agent cannot see: on those decisions the network can only learn a prior (near,
large frontiers), as the issue's oracle-imitation recipe implies.

Demonstrations are decisions, recorded by playing episodes (memory kept on even episodes, cleared
on odd ones, so both variants' states are in the data) with the oracle's choice executed with
probability `oracle_prob` and the scripted chooser's otherwise (states off the oracle's path, with
the oracle's labels: the learner sees the situations its own mistakes lead to). Seeds 10**6 + i,
disjoint from evaluation's 0..N-1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from embodied.agents.goat import (ROOM_FURNITURE, Choice, GoalQuery, GoatAgent, ScriptedChooser, _receptacle, _room,
                                  match_features)
from embodied.memory.scene import DETECTABLE, Frontier, SceneMemory, SceneMemoryConfig, Snapshot
from embodied.tasks.goat import MODALITIES
from embodied.world import COLOUR_NAMES, FURNITURE_CATEGORIES, OBJECT_CATEGORIES, colour_name, semantic_classes

CLASSES = semantic_classes()
ROOMS = tuple(ROOM_FURNITURE)
CONTEXT = tuple(sorted(DETECTABLE))  # classes a goal image may show besides its object
N_INT = 5  # kind, category, colour, receptacle, room (0 = none in the last four)
N_FLOAT = 13
FEATURES = 3  # version of the decision arrays, in the name of a recorded decisions file (3: centred goal
# images, and an image goal's colour match compares colours, not names)
RECORD_SEED = 10**6  # recording episodes use seeds RECORD_SEED + i; evaluation uses 0..N-1


@dataclass
class PointerChooserConfig:
    """Schema of `configs/agent/goat_pointer.yaml` (`agent.<key>`)."""

    name: str = "goat_pointer"
    d_model: int = 64
    """Token width."""
    layers: int = 2
    """Transformer layers over [goal, candidates]."""
    heads: int = 4
    oracle_prob: float = 0.5
    """Recording: the executed choice is the oracle's with this probability, else the scripted chooser's."""
    frontier_keep: float = 0.25
    """Recording: the share of frontier-labelled decisions kept (they outnumber object-labelled ones
    about fifty to one: the agent re-decides every step while exploring, once per object chosen)."""
    hindsight: float = 0.5
    """Recording: with this probability a decision is also recorded with a hindsight goal: a category
    or description goal (from the SceneSpec) of an object among its candidates, labelled as the
    oracle labels such a goal."""
    memory: dict = field(default_factory=dict)
    """SceneMemoryConfig keys of the memory the demonstrations are recorded with."""

    def validate(self) -> "PointerChooserConfig":
        from embodied.config import check

        check(self.name == "goat_pointer", "agent.name", f"{self.name!r}; allowed: goat_pointer")
        for key in ("d_model", "layers", "heads"):
            check(int(getattr(self, key)) >= 1, f"agent.{key}", f"{getattr(self, key)}; allowed: >= 1")
        check(self.d_model % self.heads == 0, "agent.heads", f"{self.heads}; allowed: a divisor of d_model {self.d_model}")
        for key in ("oracle_prob", "frontier_keep", "hindsight"):
            check(0.0 <= getattr(self, key) <= 1.0, f"agent.{key}", f"{getattr(self, key)}; allowed: [0, 1]")
        SceneMemoryConfig.from_options(self.memory)
        return self


def _index(names: tuple, name: str | None) -> int:
    return names.index(name) + 1 if name in names else 0


def featurize(query: GoalQuery, memory: SceneMemory, snapshots: list[Snapshot], frontiers: list[Frontier],
              pose: np.ndarray) -> tuple[dict[str, np.ndarray], list[Choice]]:
    """The decision as arrays (goal_int [N_INT], goal_ctx [len(CONTEXT)], cand_int [N, N_INT],
    cand_float [N, N_FLOAT]) and the Choice each candidate stands for, objects first."""
    c, s = math.cos(-float(pose[3])), math.sin(-float(pose[3]))

    def relative(xy) -> tuple[float, float, float]:
        dx, dy = float(xy[0] - pose[0]), float(xy[1] - pose[1])
        return (c * dx - s * dy) / 5.0, (s * dx + c * dy) / 5.0, math.hypot(dx, dy) / 5.0

    ints, floats, choices = [], [], []
    for snap in snapshots:
        for oid in snap.objects:
            o = memory.objects[oid]
            ints.append([0, _index(CLASSES, o.category), _index(COLOUR_NAMES, o.colour_name),
                         _index(FURNITURE_CATEGORIES, _receptacle(memory, o)), _index(ROOMS, _room(memory, o))])
            floats.append([*relative(o.position), float(o.position[2]), math.log1p(len(o.frames)) / 3.0,
                           math.log1p(o.pixels) / 10.0, 0.0, 0.0, *match_features(query, memory, o),
                           float(o.category == query.category)])
            choices.append(Choice("object", snap.frame, oid, o.position[:2].copy()))
    for f in frontiers:
        ints.append([1, 0, 0, 0, 0])
        floats.append([*relative(f.centre), 0.0, 0.0, 0.0, math.log1p(f.size) / 5.0, float(f.frame is not None),
                       0.0, 0.0, 0.0, 0.0, 0.0])
        choices.append(Choice("frontier", f.id, -1, f.centre.copy()))
    ctx = np.zeros(len(CONTEXT), np.float32)
    for name in query.context:
        if name in CONTEXT:
            ctx[CONTEXT.index(name)] = 1.0
    goal = [MODALITIES.index(query.modality), _index(CLASSES, query.category), _index(COLOUR_NAMES, query.colour),
            _index(FURNITURE_CATEGORIES, query.receptacle), _index(ROOMS, query.room)]
    arrays = {"goal_int": np.asarray(goal, np.int64), "goal_ctx": ctx,
              "cand_int": np.asarray(ints, np.int64).reshape(-1, N_INT),
              "cand_float": np.asarray(floats, np.float32).reshape(-1, N_FLOAT)}
    return arrays, choices


def oracle_targets(task, choices: list[Choice], frontiers: list[Frontier], memory: SceneMemory,
                   pose: np.ndarray) -> np.ndarray:
    """[N] bool: the candidates the oracle would choose (see the module doc); all False when no
    candidate leads to the goal. `task`: the nav/goat env (env.unwrapped), read for the goal's
    instances, its true geodesic field and the episode's start pose."""
    goal = task.goal
    instances = set(goal.instances)
    out = np.array([ch.kind == "object" and ch.object in instances for ch in choices], bool)
    if out.any():
        return out
    x0, y0, _, yaw0 = (float(v) for v in task.start_pose)
    rot = np.array([[math.cos(yaw0), -math.sin(yaw0)], [math.sin(yaw0), math.cos(yaw0)]])
    grid, values = goal.field.grid, goal.field.values
    by_id = {f.id: f for f in frontiers}
    best, best_cost = -1, math.inf
    for i, ch in enumerate(choices):
        if ch.kind != "frontier":
            continue
        cells = by_id[ch.index].cells
        world = memory.centres_of(cells) @ rot.T + np.array([x0, y0])
        rc = grid.world_to_grid(world)
        inside = (rc[:, 0] >= 0) & (rc[:, 0] < values.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < values.shape[1])
        if not inside.any():
            continue
        to_goal = float(np.min(values[rc[inside, 0], rc[inside, 1]]))
        cost = to_goal + math.hypot(*(ch.target - pose[:2]))
        if cost < best_cost:
            best, best_cost = i, cost
    if best >= 0:
        out[best] = True
    return out


class PointerChooser(nn.Module):
    """The network and the chooser interface of embodied.agents.goat (`choose`)."""

    def __init__(self, config: PointerChooserConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.kind = nn.Embedding(2, d)
        self.modality = nn.Embedding(len(MODALITIES), d)
        self.category = nn.Embedding(len(CLASSES) + 1, d)  # shared by goal and candidates
        self.colour = nn.Embedding(len(COLOUR_NAMES) + 1, d)
        self.receptacle = nn.Embedding(len(FURNITURE_CATEGORIES) + 1, d)
        self.room = nn.Embedding(len(ROOMS) + 1, d)
        self.numeric = nn.Linear(N_FLOAT, d)
        self.context = nn.Linear(len(CONTEXT), d)
        self.role = nn.Embedding(2, d)  # goal token, candidate token
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.score = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Linear(d, 1))

    def _attributes(self, ints: Tensor) -> Tensor:
        return self.category(ints[..., 1]) + self.colour(ints[..., 2]) + self.receptacle(ints[..., 3]) + self.room(ints[..., 4])

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """[B, N] scores; -inf at padding (batch["mask"] False)."""
        gi = batch["goal_int"]
        goal = self.modality(gi[:, 0]) + self._attributes(gi) + self.context(batch["goal_ctx"]) + self.role.weight[0]
        ci = batch["cand_int"]
        cand = self.kind(ci[..., 0]) + self._attributes(ci) + self.numeric(batch["cand_float"]) + self.role.weight[1]
        tokens = torch.cat([goal[:, None], cand], 1)
        pad = torch.cat([torch.zeros_like(batch["mask"][:, :1]), ~batch["mask"]], 1)
        h = self.encoder(tokens, src_key_padding_mask=pad)
        hg, hc = h[:, :1].expand_as(h[:, 1:]), h[:, 1:]
        scores = self.score(torch.cat([hc, hg, hc * hg], -1)).squeeze(-1)
        return scores.masked_fill(~batch["mask"], float("-inf"))

    @torch.no_grad()
    def choose(self, query: GoalQuery, memory: SceneMemory, snapshots: list[Snapshot], frontiers: list[Frontier],
               pose: np.ndarray, skip_frontiers: Callable[[Frontier], bool] = lambda f: False) -> Choice:
        arrays, choices = featurize(query, memory, snapshots, [f for f in frontiers if not skip_frontiers(f)], pose)
        if not choices:
            return Choice("none")
        device = next(self.parameters()).device
        scores = self(collate([arrays], device))
        return choices[int(scores[0].argmax())]

    # --- imitation hooks: how embodied.train.bc trains this agent ------------------------------------
    def record_imitation(self, task_cfg: Mapping, n: int, data_dir, progress: bool = False) -> list[dict]:
        """`n` recorded episodes' decisions, cached in data_dir (same file: reused)."""
        c = self.config
        path = Path(data_dir) / f"decisions-v{FEATURES}-{n}-p{c.oracle_prob:g}-f{c.frontier_keep:g}-h{c.hindsight:g}.npz"
        if not path.exists():
            decisions = record_decisions(task_cfg, n, self.config, progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_decisions(path, decisions)
        return load_decisions(path)

    def imitation_batch(self, decisions: list[dict], gen: torch.Generator, device, aug_shift: int = 0) -> dict[str, Tensor]:
        return collate(decisions, device)

    def imitation_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Minus the log of the probability mass on the oracle's candidates (a category goal may have
        several); accuracy = the arg-max is one of them, also on object-labelled decisions alone."""
        logp = torch.log_softmax(self(batch), -1)
        target = batch["target"]
        loss = -torch.logsumexp(logp.masked_fill(~target, float("-inf")), -1).mean()
        with torch.no_grad():
            hit = target.gather(1, logp.argmax(-1, keepdim=True)).squeeze(1).float()
            on_object = (target & (batch["cand_int"][..., 0] == 0)).any(-1)
            stats = {"loss": float(loss), "accuracy": float(hit.mean()),
                     "object_accuracy": float(hit[on_object].mean()) if on_object.any() else float("nan")}
        return loss, stats

    def imitation_rollouts(self, task_cfg: Mapping, n: int) -> list[dict[str, Any]]:
        """`n` greedy episodes (memory kept) on seeds just below the recording seeds (neither
        recorded nor evaluated): per episode the mean goal success and SPL."""
        from embodied.tasks import make_env

        env = make_env(dict(task_cfg))
        agent = GoatAgent.for_task(env.unwrapped.cfg, "kept", self, SceneMemoryConfig(**self.config.memory))
        out = []
        try:
            for i in range(n):
                records = play(env, agent, RECORD_SEED - 1 - i)
                out.append({"success": float(np.mean([r["success"] for r in records])),
                            "spl": float(np.mean([r["spl"] for r in records]))})
        finally:
            env.close()
        self.train()
        return out


def collate(decisions: list[dict], device) -> dict[str, Tensor]:
    """A padded batch of decisions; `mask` [B, N] marks real candidates, `target` [B, N] the oracle's."""
    n = max(1, max(len(d["cand_int"]) for d in decisions))
    B = len(decisions)
    cand_int = np.zeros((B, n, N_INT), np.int64)
    cand_float = np.zeros((B, n, N_FLOAT), np.float32)
    mask = np.zeros((B, n), bool)
    target = np.zeros((B, n), bool)
    for j, d in enumerate(decisions):
        k = len(d["cand_int"])
        cand_int[j, :k], cand_float[j, :k], mask[j, :k] = d["cand_int"], d["cand_float"], True
        if "target" in d:
            target[j, :k] = d["target"]
    out = {"goal_int": np.stack([d["goal_int"] for d in decisions]), "goal_ctx": np.stack([d["goal_ctx"] for d in decisions]),
           "cand_int": cand_int, "cand_float": cand_float, "mask": mask, "target": target}
    return {k: torch.from_numpy(v).to(device) for k, v in out.items()}


def play(env, agent: GoatAgent, seed: int) -> list[dict]:
    """One lifelong episode from reset(seed); its per-goal records."""
    obs, _ = env.reset(seed=seed)
    agent.reset()
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(agent.act(obs))
        done = terminated or truncated
    return [dict(r) for r in env.unwrapped.goal_records]


class _Recorder:
    """A chooser that records each decision with the oracle's targets (frontier-labelled ones with
    probability frontier_keep; plus a hindsight goal's with probability hindsight) and executes the
    oracle's choice with probability oracle_prob, the scripted chooser's otherwise."""

    def __init__(self, task, config: PointerChooserConfig, rng: np.random.Generator):
        self.task, self.config, self.rng = task, config, rng
        self.scripted = ScriptedChooser()
        self.decisions: list[dict] = []

    def choose(self, query, memory, snapshots, frontiers, pose, skip_frontiers=lambda f: False) -> Choice:
        usable = [f for f in frontiers if not skip_frontiers(f)]
        arrays, choices = featurize(query, memory, snapshots, usable, pose)
        target = oracle_targets(self.task, choices, usable, memory, pose) if choices else np.zeros(0, bool)
        on_object = bool(target.any()) and choices[int(np.argmax(target))].kind == "object"
        if target.any() and len(choices) >= 2 and (on_object or self.rng.random() < self.config.frontier_keep):
            self.decisions.append({**arrays, "target": target})  # a single candidate teaches nothing
        if self.rng.random() < self.config.hindsight:
            self._hindsight(memory, snapshots, usable, pose, choices)
        if target.any() and self.rng.random() < self.config.oracle_prob:
            return choices[int(self.rng.choice(np.flatnonzero(target)))]
        return self.scripted.choose(query, memory, snapshots, frontiers, pose, skip_frontiers)

    def _hindsight(self, memory, snapshots, frontiers, pose, choices) -> None:
        """The same candidates asked for another goal: a category goal (target: every candidate of
        that category) or a description goal (target: that instance), as nav/goat words them."""
        spec = self.task.scene.spec
        objects = [ch.object for ch in choices if ch.kind == "object" and spec.item(ch.object).category in OBJECT_CATEGORIES]
        if not objects or len(choices) < 2:
            return
        item = spec.item(objects[int(self.rng.integers(len(objects)))])
        if self.rng.random() < 0.5:
            query = GoalQuery("category", item.category)
            target = [ch.kind == "object" and spec.item(ch.object).category == item.category for ch in choices]
        else:
            room = next(r.type for r in spec.rooms if r.id == item.room)
            receptacle = spec.item(item.receptacle).category if item.receptacle is not None else None
            query = GoalQuery("description", item.category, colour_name(item.color), receptacle,
                              room if room in ROOM_FURNITURE else None)
            target = [ch.kind == "object" and ch.object == item.id for ch in choices]
        arrays, _ = featurize(query, memory, snapshots, frontiers, pose)
        self.decisions.append({**arrays, "target": np.asarray(target, bool)})


def record_decisions(task_cfg: Mapping, n: int, config: PointerChooserConfig, progress: bool = False) -> list[dict]:
    """Decisions of `n` episodes on seeds RECORD_SEED + i (see the module doc)."""
    from embodied.tasks import make_env

    env = make_env(dict(task_cfg))
    task = env.unwrapped
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=n, unit="ep", desc="record nav/goat decisions", file=sys.stderr)
    decisions = []
    try:
        for i in range(n):
            recorder = _Recorder(task, config, np.random.default_rng([RECORD_SEED, i]))
            agent = GoatAgent.for_task(task.cfg, ("kept", "cleared")[i % 2], recorder,
                                       SceneMemoryConfig(**{**config.memory, "keep_images": False}))
            play(env, agent, RECORD_SEED + i)
            decisions += recorder.decisions
            if bar is not None:
                bar.update(1)
                bar.set_postfix(decisions=len(decisions))
    finally:
        env.close()
        if bar is not None:
            bar.close()
    return decisions


_KEYS = ("goal_int", "goal_ctx", "cand_int", "cand_float", "target")


def save_decisions(path: Path, decisions: list[dict]) -> None:
    """One .npz: per-decision arrays stacked, candidates concatenated with offsets."""
    sizes = np.array([len(d["cand_int"]) for d in decisions], np.int64)
    arrays = {"offsets": np.concatenate([[0], np.cumsum(sizes)])}
    for k in _KEYS:
        parts = [d[k] for d in decisions]
        arrays[k] = np.stack(parts) if k.startswith("goal") else np.concatenate(parts) if parts else np.zeros(0)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)  # a killed recording leaves no half file to be reused


def load_decisions(path: Path) -> list[dict]:
    from embodied.config import InputError

    try:
        with np.load(path) as z:
            data = {k: z[k] for k in ("offsets", *_KEYS)}
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a nav/goat decisions file ({exc})") from None
    off = data["offsets"]
    return [{"goal_int": data["goal_int"][i], "goal_ctx": data["goal_ctx"][i],
             **{k: data[k][off[i]:off[i + 1]] for k in ("cand_int", "cand_float", "target")}}
            for i in range(len(off) - 1)]


def build_from_run_config(config: Mapping) -> PointerChooser:
    """The chooser of a run config (`agent=goat_pointer`) on nav/goat; a bad key is one line."""
    task = str(config["task"]["name"])
    if task != "nav/goat":
        raise ValueError(f"agent goat_pointer chooses among nav/goat's scene-memory candidates; task.name={task!r}; "
                         "allowed: nav/goat")
    options = dict(config["agent"])
    allowed = PointerChooserConfig.__dataclass_fields__
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown goat_pointer agent option {key!r}; allowed: {', '.join(allowed)}")
    return PointerChooser(PointerChooserConfig(**options).validate())


__all__ = ["PointerChooser", "PointerChooserConfig", "build_from_run_config", "featurize", "oracle_targets",
           "record_decisions"]
