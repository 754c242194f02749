"""Observation encoders: images (RGB, depth, semantic), float vectors, integer goals, text tokens.

`ObservationEncoder` reads a gymnasium `spaces.Dict` and builds one encoder per known key:

    rgb        uint8 [H, W, 3]          /255
    depth      float [H, W, 1]          clipped to [0, depth_max], /depth_max
    semantic   int   [H, W]             per-pixel class embedding (num classes = space high + 1)
    pose       float [4]                x, y, z, yaw -> x, y, z, cos yaw, sin yaw -> MLP
    pointgoal  float [k]                MLP
    holding    float [k]                MLP (fastmap: 1.0 while an object is held)
    objectgoal int   [1] or Discrete    category embedding (num categories from the space)
    goal_category int [1]               likewise (nav/goat; -1, "not a category goal", is an id of its own)
    text       int   [L]                token ids, 0 = padding -> embedding -> masked mean or GRU
    place      int   [] / [1] / Discrete  not encoded; handed to the memory as `place`

Image keys with the same resolution are stacked along channels into one CNN (early fusion of
RGB-D-semantic). Any other key raises ValueError unless listed in `ignore`.
"""
from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from embodied.agents.config import AgentConfig
from embodied.memory.recurrent import run_rnn

IMAGE_KEYS = ("rgb", "depth", "semantic")
VECTOR_KEYS = ("pose", "pointgoal", "holding", "state")  # state: any env's flat vector (embodied/tasks/external.py)
CATEGORY_KEYS = ("objectgoal", "goal_category")
TEXT_KEYS = ("text",)
MEMORY_ONLY_KEYS = ("place", "task")  # handed to the memory as they are (SAT: place ids, AMA task ids)
KNOWN_KEYS = IMAGE_KEYS + VECTOR_KEYS + CATEGORY_KEYS + TEXT_KEYS + MEMORY_ONLY_KEYS


def _is_integer(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Discrete) or np.issubdtype(space.dtype, np.integer)


def _num_categories(key: str, space: spaces.Space) -> int:
    """Number of ids an integer space can hold: Discrete n, or Box high + 1."""
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"observation {key!r}: Discrete spaces must start at 0, got start={space.start}")
        return int(space.n)
    high = np.asarray(space.high)
    if np.any(np.asarray(space.low) < 0) or not np.all(np.isfinite(high)):
        raise ValueError(f"observation {key!r}: integer ids need a Box with low >= 0 and a finite high")
    return int(high.max()) + 1


def _bad_space(key: str, space: spaces.Space, expected: str) -> ValueError:
    return ValueError(f"observation {key!r} has space {space}; expected {expected}")


class ImageCNN(nn.Module):
    """Convs (ReLU) -> flatten -> Linear -> ReLU. Input [N, C, H, W] float.

    patch=0: 3x3 stride-2 convs. patch=k: a k x k stride-k conv, then 3x3 stride-1 convs (one
    position per k x k tile). `features` also returns the last conv's output map (for `film_readout`)."""

    def __init__(self, in_channels: int, height: int, width: int, channels: list[int], out_dim: int, patch: int = 0):
        super().__init__()
        if patch and (height < patch or width < patch):
            raise ValueError(f"agent option cnn_patch={patch} is larger than the {height}x{width} image")
        layers: list[nn.Module] = []
        for i, out_channels in enumerate(channels):
            if patch and i == 0:
                conv = nn.Conv2d(in_channels, out_channels, patch, stride=patch)
            elif patch:
                conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
            else:
                conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
            layers += [conv, nn.ReLU()]
            in_channels = out_channels
        # Channels-last weights: observations arrive [N, H, W, C], so the permuted input is already
        # channels-last and mkldnn/cuDNN skip layout conversions (CPU: 12% faster fwd+bwd at 64x64).
        self.convs = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.map_shape = tuple(self.convs(torch.zeros(1, layers[0].in_channels, height, width)).shape[1:])
        self.out = nn.Sequential(nn.Linear(int(np.prod(self.map_shape)), out_dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)[0]

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(embedding [N, out_dim], feature map [N, *map_shape])."""
        feature_map = self.convs(x)
        return self.out(feature_map.flatten(1)), feature_map


class VectorEncoder(nn.Module):
    """MLP for a float vector; `angle_index` (e.g. pose yaw) is replaced by its cos and sin."""

    def __init__(self, size: int, out_dim: int, angle_index: int | None = None):
        super().__init__()
        self.angle_index = angle_index
        in_dim = size + (1 if angle_index is not None else 0)
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.angle_index is not None:
            angle = x[:, self.angle_index]
            rest = torch.cat([x[:, : self.angle_index], x[:, self.angle_index + 1 :]], dim=1)
            x = torch.cat([rest, torch.cos(angle)[:, None], torch.sin(angle)[:, None]], dim=1)
        return self.net(x)


class CategoryEncoder(nn.Module):
    """Embedding of integer ids [N, k] (k >= 1) -> [N, k * dim]; ids from `low` (a Box's low, e.g. -1
    for "none") up, each its own embedding."""

    def __init__(self, key: str, num: int, dim: int, low: int = 0):
        super().__init__()
        self.key = key
        self.num = num
        self.low = low
        self.embedding = nn.Embedding(num, dim)

    def forward(self, ids: Tensor) -> Tensor:
        ids = ids.long().reshape(ids.shape[0], -1)
        _check_ids(self.key, ids, self.num, self.low)
        return self.embedding(ids - self.low).flatten(1)


class TextEncoder(nn.Module):
    """Token ids [N, L] (0 = padding) -> [N, dim] by masked mean or the GRU state at the last token."""

    def __init__(self, vocab: int, dim: int, pooling: str, rarity: bool = False):
        super().__init__()
        self.vocab = vocab
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim, batch_first=True) if pooling == "gru" else None
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.rarity = rarity
        if rarity:
            # Document frequencies for `rare_pool`: texts seen in training, and those holding each token.
            self.register_buffer("texts_seen", torch.zeros((), dtype=torch.float64))
            self.register_buffer("token_texts", torch.zeros(vocab, dtype=torch.float64))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.encode(tokens)[0]

    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(output [N, dim], pooled token embeddings before the output layer [N, dim]); both are
        exactly zero where there is no text."""
        tokens = tokens.long()
        _check_ids("text", tokens, self.vocab)
        present = tokens != 0
        embedded = self.embedding(tokens)
        lengths = present.sum(dim=1)
        if self.gru is None:
            pooled = embedded.sum(dim=1) / lengths.clamp(min=1)[:, None]
        else:
            # Tokens are left-aligned, so the state after token length-1 ignores the padding after it.
            outputs, _ = run_rnn(self.gru, embedded)
            last = (lengths - 1).clamp(min=0)
            pooled = outputs[torch.arange(tokens.shape[0], device=tokens.device), last]
            pooled = pooled * (lengths > 0)[:, None]
        # No text (all padding) embeds to exactly zero, so memories can tell "nothing was said" apart.
        said = (lengths > 0)[:, None].to(pooled.dtype)
        return self.out(pooled) * said, pooled * said

    def rare_pool(self, tokens: Tensor) -> Tensor:
        """Token embeddings [N, L] -> [N, dim] averaged with smoothed inverse document frequency
        weights, 1 + log((1 + texts) / (1 + texts holding the token)), counted over the texts seen in
        training mode (frozen in eval mode, saved with the weights): words in most sentences ("the",
        "this", "lift") weigh little, a name seen a few times much more. Zero where there is no text."""
        tokens = tokens.long()
        present = tokens != 0
        weights = (1 + torch.log((1 + self.texts_seen) / (1 + self.token_texts[tokens]))) * present
        weights = weights.to(self.embedding.weight.dtype)
        pooled = (self.embedding(tokens) * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
        if self.training:
            with torch.no_grad():  # after pooling: every step of this batch used the same weights
                said = present.any(dim=1)
                holds = torch.zeros(tokens.shape[0], self.vocab, dtype=torch.bool, device=tokens.device)
                holds.scatter_(1, tokens, present)
                self.token_texts += holds[said].sum(dim=0)
                self.texts_seen += said.sum()
        return pooled


def _check_ids(key: str, ids: Tensor, num: int, low: int = 0) -> None:
    # On CUDA an out-of-range id already raises a device assert; checking there would sync every step.
    if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < low or int(ids.max()) >= low + num):
        raise ValueError(f"observation {key!r} has ids in [{int(ids.min())}, {int(ids.max())}]; allowed {low}..{low + num - 1}")


class ObservationEncoder(nn.Module):
    """Encodes every known key of a Dict observation space; `forward` takes [N, ...] tensors.

    Returns {"feat": [N, out_dim]} plus "visual" (image embeddings) and "text" when present, and
    with `film_readout` the image CNN's "feature_map" [N, C, h, w], with `memory_text: pooled` the
    pooled token embeddings as "memory_text", with `memory_visual: centre` the feature map's centre
    position [N, C] as "memory_visual".
    """

    def __init__(self, observation_space: spaces.Dict, config: AgentConfig):
        super().__init__()
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"observation space must be gymnasium.spaces.Dict, got {type(observation_space).__name__}")
        self.config = config
        self.spaces = dict(observation_space.spaces)
        unknown = [key for key in self.spaces if key not in KNOWN_KEYS and key not in config.ignore]
        if unknown:
            raise ValueError(
                f"unknown observation keys {unknown}; known: {', '.join(KNOWN_KEYS)} (list others in agent option 'ignore')"
            )
        used = [key for key in self.spaces if key not in config.ignore]
        if not any(key in used for key in IMAGE_KEYS + VECTOR_KEYS + CATEGORY_KEYS + TEXT_KEYS):
            raise ValueError(f"observation space has nothing to encode (keys: {sorted(self.spaces)})")

        # Images: check spaces, then one CNN per resolution over the stacked channels.
        self.semantic_classes = 0
        self.semantic_embedding = None
        groups: dict[tuple[int, int], list[str]] = {}
        for key in IMAGE_KEYS:
            if key not in used:
                continue
            space = self.spaces[key]
            height, width = self._check_image_space(key, space)
            groups.setdefault((height, width), []).append(key)
            if key == "semantic":
                self.semantic_classes = _num_categories(key, space)
                self.semantic_embedding = nn.Embedding(self.semantic_classes, config.semantic_embed)
        self.image_groups = [tuple(keys) for keys in groups.values()]
        channels_of = {"rgb": 3, "depth": 1, "semantic": config.semantic_embed}
        self.cnns = nn.ModuleList(
            ImageCNN(sum(channels_of[k] for k in keys), h, w, list(config.cnn_channels), config.image_dim, config.cnn_patch)
            for (h, w), keys in groups.items()
        )
        self.feature_map_shape: tuple[int, ...] | None = None
        for option, used_by in (("film_readout", config.film_readout), ("memory_visual=centre", config.memory_visual == "centre")):
            if used_by and len(self.cnns) != 1:
                raise ValueError(f"agent option {option} needs exactly one image resolution; this space has {len(self.cnns)}")
        if config.film_readout:
            self.feature_map_shape = self.cnns[0].map_shape
        self.vectors = nn.ModuleDict()
        for key in VECTOR_KEYS:
            if key in used:
                space = self.spaces[key]
                if not isinstance(space, spaces.Box) or len(space.shape) != 1 or _is_integer(space):
                    raise _bad_space(key, space, "a float Box of shape [k]")
                if key == "pose" and space.shape[0] != 4:
                    raise _bad_space(key, space, "a float Box of shape [4] (x, y, z, yaw)")
                angle = 3 if key == "pose" else None
                self.vectors[key] = VectorEncoder(space.shape[0], config.vector_dim, angle_index=angle)
        self.categories = nn.ModuleDict()
        for key in CATEGORY_KEYS:
            if key in used:
                space = self.spaces[key]
                if not _is_integer(space) or len(space.shape) > 1:
                    raise _bad_space(key, space, "Discrete or an integer Box of shape [k]")
                # A Box may reserve ids below 0 (nav/goat: goal_category -1 on goals given otherwise).
                low = 0 if isinstance(space, spaces.Discrete) else min(0, int(np.min(space.low)))
                num = _num_categories(key, space) if low == 0 else int(np.max(space.high)) - low + 1
                self.categories[key] = CategoryEncoder(key, num, config.goal_embed, low)
        self.text = None
        if "text" in used:
            space = self.spaces["text"]
            if not isinstance(space, spaces.Box) or not _is_integer(space) or len(space.shape) != 1:
                raise _bad_space("text", space, "an integer Box of shape [L] (token ids, 0 = padding)")
            self.text = TextEncoder(_num_categories("text", space), config.text_dim, config.text_pooling,
                                    rarity=config.memory_text == "rare")
        for key in MEMORY_ONLY_KEYS:
            if key in used and not _is_integer(self.spaces[key]):
                raise _bad_space(key, self.spaces[key], "Discrete or an integer Box")

        self.input_keys = tuple(used)
        self.visual_dim = config.image_dim * len(self.cnns)
        self.memory_visual_dim = int(self.cnns[0].map_shape[0]) if config.memory_visual == "centre" else self.visual_dim
        self.text_dim = config.text_dim if self.text is not None else 0
        category_dims = sum(
            enc.embedding.embedding_dim * max(1, int(np.prod(self.spaces[key].shape))) for key, enc in self.categories.items()
        )
        self.out_dim = self.visual_dim + config.vector_dim * len(self.vectors) + category_dims + self.text_dim

    @staticmethod
    def _check_image_space(key: str, space: spaces.Space) -> tuple[int, int]:
        if not isinstance(space, spaces.Box):
            raise _bad_space(key, space, "a Box image")
        shape = space.shape
        if key == "rgb" and not (len(shape) == 3 and shape[2] == 3 and space.dtype == np.uint8):
            raise _bad_space(key, space, "uint8 Box [H, W, 3]")
        if key == "depth" and not (len(shape) == 3 and shape[2] == 1 and np.issubdtype(space.dtype, np.floating)):
            raise _bad_space(key, space, "float Box [H, W, 1]")
        if key == "semantic" and not (len(shape) == 2 and _is_integer(space)):
            raise _bad_space(key, space, "integer Box [H, W] of class ids")
        return int(shape[0]), int(shape[1])

    def _image_channels(self, key: str, x: Tensor) -> Tensor:
        """[N, H, W, C] float channels of one image key."""
        if key == "rgb":
            return x.float() / 255.0
        if key == "depth":
            return x.float().clamp(0.0, self.config.depth_max) / self.config.depth_max
        ids = x.long()
        _check_ids(key, ids, self.semantic_classes)
        return self.semantic_embedding(ids)

    def forward(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [key for key in self.input_keys if key not in obs]
        if missing:
            raise ValueError(f"observation is missing keys {missing} (the agent was built for {list(self.input_keys)})")
        parts = []
        visual = []
        out: dict[str, Tensor] = {}
        for keys, cnn in zip(self.image_groups, self.cnns):
            stacked = torch.cat([self._image_channels(key, obs[key]) for key in keys], dim=-1)
            embedding, feature_map = cnn.features(stacked.permute(0, 3, 1, 2))
            visual.append(embedding)
            if self.config.film_readout:
                out["feature_map"] = feature_map
            if self.config.memory_visual == "centre":
                out["memory_visual"] = feature_map[:, :, feature_map.shape[2] // 2, feature_map.shape[3] // 2]
        parts += visual
        parts += [encoder(obs[key]) for key, encoder in self.vectors.items()]
        parts += [encoder(obs[key]) for key, encoder in self.categories.items()]
        if self.text is not None:
            out["text"], pooled = self.text.encode(obs["text"])
            parts.append(out["text"])
            if self.config.memory_text == "pooled":
                out["memory_text"] = pooled
            elif self.config.memory_text == "rare":
                out["memory_text"] = self.text.rare_pool(obs["text"])
        if visual:
            out["visual"] = torch.cat(visual, dim=1)
        out["feat"] = torch.cat(parts, dim=1)
        return out
