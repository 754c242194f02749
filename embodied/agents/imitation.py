"""Imitation losses beyond the per-step action cross-entropy, registered by name.

Behaviour cloning (embodied/train/bc.py, `trainer.losses: {name: weight}`) adds each selected loss
to its own. A loss is a class with
- `branch(labels) -> [B] long | None`: the step of each demonstration whose memory state it needs
  (-1: none); the trainer passes it to `Agent.evaluate_sequence(branch=)`, which runs the memory
  once and returns those states as `out["branch_state"]`;
- `__call__(agent, batch, out) -> {name: scalar}`: the losses, from the trainer's batch (`obs`,
  `actions`, `first`, `prev_actions`, `mask`, `labels`, all [T, B, ...]) and the agent's output.
Losses read the task's privileged labels (`trainer.labels=true`), never private agent members.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from embodied.config import registrar

IMITATION_LOSSES: dict[str, type] = {}
"""Registered imitation losses by name."""

L = TypeVar("L", bound=type)


def register_imitation_loss(name: str) -> Callable[[L], L]:
    """Class decorator: register an imitation loss under `name`."""
    return registrar(IMITATION_LOSSES, "imitation loss", name)


@register_imitation_loss("counterfactual")
class CounterfactualQuestions:
    """Ask a question step every way the task could have asked it, from the same memory state.

    Where a task labels a step with `counterfactual/action` [K] (the expert's action for each of K
    alternative observations; -1 elsewhere) and `counterfactual/obs/<key>` [K, ...] (what the
    observation's `<key>` would have been), the agent acts once per alternative from its memory
    state before that step, and each is a cross-entropy term. Ballet: the answer step asked about
    every dancer, so an episode of ~130 steps gives N answer labels instead of one, from one run of
    the memory. The first such step of each episode is used.

    Where the task also labels which alternative was the question actually asked,
    `counterfactual/asked` [K] (bool), minus that question's cross-entropy is each episode's
    reward for the memory's own per-episode decisions (`Memory.outcome_loss`: SAT's AMA bandit),
    added as `memory_outcome`.
    """

    ACTION = "counterfactual/action"
    OBS = "counterfactual/obs/"
    ASKED = "counterfactual/asked"

    def branch(self, labels: dict[str, Tensor]) -> Tensor:
        if self.ACTION not in labels:
            raise ValueError(f"imitation loss counterfactual needs the label {self.ACTION!r} (trainer.labels=true, "
                             f"a task whose labels() gives it); got {sorted(labels) or 'none'}")
        asked = (labels[self.ACTION] >= 0).any(-1)  # [T, B]
        step = asked.long().argmax(0)  # first asked step (0 where none: masked below)
        return torch.where(asked.any(0), step, torch.full_like(step, -1))

    def __call__(self, agent, batch: dict, out: dict) -> dict[str, Tensor]:
        labels = batch["labels"]
        step = self.branch(labels)
        rows = torch.nonzero(step >= 0).squeeze(-1)
        if rows.numel() == 0:  # a zero that still has a graph, so backward works
            return {"loss": sum(p.sum() for p in agent.parameters() if p.requires_grad) * 0.0}
        t = step[rows]
        actions = labels[self.ACTION][t, rows]  # [R, K]
        k = actions.shape[1]
        valid = (actions >= 0).reshape(-1)
        repeat = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731 - [R, ...] -> [R * K, ...]
        obs = {key: repeat(value[t, rows]) for key, value in batch["obs"].items()}
        for key in obs:
            if self.OBS + key in labels:
                alternatives = labels[self.OBS + key][t, rows]  # [R, K, ...]
                obs[key] = alternatives.reshape((-1,) + tuple(alternatives.shape[2:])).to(obs[key].dtype)
        logits, _, _ = agent.forward_step(obs, out["branch_state"][repeat(rows)], repeat(batch["first"][t, rows]),
                                          repeat(batch["prev_actions"][t, rows]))
        losses = {"loss": F.cross_entropy(logits[valid], actions.reshape(-1)[valid])}
        if self.ASKED in labels:
            asked = labels[self.ASKED][t, rows].bool() & (actions >= 0)  # [R, K]
            has = asked.any(-1)
            with torch.no_grad():
                ce = F.cross_entropy(logits, actions.reshape(-1).clamp(min=0), reduction="none").view(-1, k)
            reward = -(ce * asked).sum(-1)
            outcome = agent.memory.outcome_loss(out["branch_state"][rows[has]], reward[has]) if bool(has.any()) else None
            if outcome is not None:
                losses["memory_outcome"] = outcome
        return losses
