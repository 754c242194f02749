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

AUX_HEADS: dict[str, type[nn.Module]] = {}
"""Registered auxiliary heads by name."""

H = TypeVar("H", bound=type[nn.Module])


def register_aux_head(name: str) -> Callable[[H], H]:
    """Class decorator: register an auxiliary head under `name`."""

    def decorator(cls: H) -> H:
        if name in AUX_HEADS:
            raise ValueError(f"auxiliary head {name!r} is already registered")
        AUX_HEADS[name] = cls
        return cls

    return decorator


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
