"""Auxiliary heads: extra losses computed on a rollout sequence, registered by name.

A head is built as `cls(feat_dim=, read_dim=, num_actions=, observation_space=)` and its
`forward(context)` returns a dict of scalar losses. `context` holds, over [T, B]:
`obs` (the observation dict), `feat` (fused memory input), `read` (memory read), `first`,
`actions`, `logits`, `value`.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor, nn

from embodied.config import registrar

AUX_HEADS: dict[str, type[nn.Module]] = {}
"""Registered auxiliary heads by name."""

H = TypeVar("H", bound=type[nn.Module])


def register_aux_head(name: str) -> Callable[[H], H]:
    """Class decorator: register an auxiliary head under `name`."""
    return registrar(AUX_HEADS, "auxiliary head", name)


def build_aux_head(name: str, **dims) -> nn.Module:
    if name not in AUX_HEADS:
        raise ValueError(f"unknown auxiliary head {name!r}; allowed: {', '.join(sorted(AUX_HEADS)) or '(none)'}")
    return AUX_HEADS[name](**dims)


@register_aux_head("reconstruction")
class FeatureReconstruction(nn.Module):
    """Predict the step's fused observation feature from the memory read (MSE, target detached).

    Keeps the read informative about the present observation, the role observation
    reconstruction plays for TrXL agents in Memory Gym.
    """

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(read_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, feat_dim))

    def forward(self, context: dict) -> dict[str, Tensor]:
        target = context["feat"].detach()
        return {"loss": torch.mean((self.decoder(context["read"]) - target) ** 2)}


RECONSTRUCTION_SIDE = 16  # images are reconstructed at most this many pixels on a side (average-pooled)


@register_aux_head("image_reconstruction")
class ImageReconstruction(nn.Module):
    """Decode the RGB observation (average-pooled to at most 16x16) from the memory read; MSE on [0, 1].

    The image half of the reconstruction losses Hill et al. found essential for fast-mapping agents
    (their decoder is a transposed ResNet; an MLP at low resolution keeps it cheap on CPU).
    """

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        space = None if observation_space is None else observation_space.spaces.get("rgb")
        if space is None or len(space.shape) != 3:
            raise ValueError("auxiliary head image_reconstruction needs an 'rgb' [H, W, 3] observation")
        h, w = int(space.shape[0]), int(space.shape[1])
        self.pool = (max(1, -(-h // RECONSTRUCTION_SIDE)), max(1, -(-w // RECONSTRUCTION_SIDE)))
        self.out_shape = (3, -(-h // self.pool[0]), -(-w // self.pool[1]))
        size = 3 * self.out_shape[1] * self.out_shape[2]
        self.decoder = nn.Sequential(nn.Linear(read_dim, 256), nn.ReLU(), nn.Linear(256, size))

    def forward(self, context: dict) -> dict[str, Tensor]:
        rgb = torch.as_tensor(context["obs"]["rgb"], device=context["read"].device)
        lead = rgb.shape[:-3]
        images = rgb.reshape((-1,) + tuple(rgb.shape[-3:])).permute(0, 3, 1, 2).float() / 255.0
        target = nn.functional.avg_pool2d(images, self.pool, ceil_mode=True).reshape(lead + (-1,))
        return {"loss": torch.mean((self.decoder(context["read"]) - target) ** 2)}


@register_aux_head("text_reconstruction")
class TextReconstruction(nn.Module):
    """Predict every token of the step's text (padding included) from the memory read; cross-entropy.

    The language half of Hill et al.'s reconstruction losses (their decoder is an LSTM; the texts
    here are at most a few tokens, so one linear classifier per position does the same job).
    """

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        space = None if observation_space is None else observation_space.spaces.get("text")
        if space is None or len(space.shape) != 1:
            raise ValueError("auxiliary head text_reconstruction needs a 'text' [L] token observation")
        self.length = int(space.shape[0])
        self.vocab = int(space.high.max()) + 1
        self.decoder = nn.Sequential(nn.Linear(read_dim, 256), nn.ReLU(), nn.Linear(256, self.length * self.vocab))

    def forward(self, context: dict) -> dict[str, Tensor]:
        tokens = torch.as_tensor(context["obs"]["text"], device=context["read"].device).long()
        logits = self.decoder(context["read"]).reshape(tokens.shape + (self.vocab,))
        return {"loss": nn.functional.cross_entropy(logits.reshape(-1, self.vocab), tokens.reshape(-1))}


class LabelProbes(nn.Module):
    """Linear probes on the memory read for a task's privileged per-step class labels (context
    `labels`, recorded by imitation with trainer.labels=true); -1 marks a step without that label.
    Subclasses set `classes` {label key: number of classes}; the loss is the sum of their
    cross-entropies over the labelled steps. Per-step labels give the memory a signal at every step
    where the action alone has one per episode (Ballet: which dance is being performed now)."""

    classes: dict[str, int] = {}

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        self.probes = nn.ModuleDict({key: nn.Linear(read_dim, n) for key, n in self.classes.items()})

    def forward(self, context: dict) -> dict[str, Tensor]:
        labels, read = context.get("labels") or {}, context["read"]
        missing = [key for key in self.probes if key not in labels]
        if missing:
            raise ValueError(f"auxiliary head {type(self).__name__} needs labels {missing} (trainer.labels=true, "
                             f"a task with labels()); got {sorted(labels) or 'none'}")
        loss = read.sum() * 0.0  # no labelled step in the batch: zero, still on the graph
        for key, probe in self.probes.items():
            target = torch.as_tensor(labels[key], device=read.device).long()
            labelled = target >= 0
            if bool(labelled.any()):
                loss = loss + nn.functional.cross_entropy(probe(read[labelled]), target[labelled])
        return {"loss": loss}


def _ballet_classes() -> dict[str, int]:
    from embodied.tasks.ballet import DANCES, SLOTS

    return {"dance": len(DANCES), "slot": len(SLOTS)}


@register_aux_head("ballet_show")
class BalletShowProbes(LabelProbes):
    """Ballet: the dance and the slot of the dancer dancing at each show step (labels of
    BalletEnv.labels): a dance is only told apart over its 16 steps together, which the answer
    needs but one answer label per episode teaches slowly."""

    classes = _ballet_classes()


@register_aux_head("fastmap_target_look")
class FastMapTargetLook(nn.Module):
    """Fast-mapping: predict the instructed object's look (label `target_look` of FastMapEnv.labels,
    the tile the symbolic map draws for it) from the memory read at instruction-phase steps; MSE on
    the tile average-pooled to 3x3 (any cell_pixels), other steps (label all zero) left out. Trains
    recall of what the named object looks like directly, not only through the policy's loss."""

    SIDE = 3

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(read_dim, 128), nn.ReLU(), nn.Linear(128, self.SIDE * self.SIDE * 3))

    def forward(self, context: dict) -> dict[str, Tensor]:
        labels, read = context.get("labels") or {}, context["read"]
        if "target_look" not in labels:
            raise ValueError("auxiliary head fastmap_target_look needs the label 'target_look' (trainer.labels=true, "
                             f"a fastmap task); got {sorted(labels) or 'none'}")
        look = torch.as_tensor(labels["target_look"], device=read.device).float()
        lead, px = look.shape[:-1], round((look.shape[-1] // 3) ** 0.5)
        tiles = look.reshape(-1, px, px, 3).permute(0, 3, 1, 2)
        target = nn.functional.adaptive_avg_pool2d(tiles, self.SIDE).flatten(1).reshape(lead + (-1,))
        present = (look.abs().sum(-1) > 0).float()
        error = ((self.decoder(read) - target) ** 2).mean(-1)
        return {"loss": (error * present).sum() / present.sum().clamp(min=1.0)}
