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
