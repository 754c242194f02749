"""Agent options (the schema of `configs/agent/*.yaml`)."""
from __future__ import annotations

from dataclasses import dataclass, field

TEXT_POOLINGS = ("mean", "gru")
MEMORY_TEXTS = ("encoded", "pooled", "rare")
MEMORY_VISUALS = ("embedding", "centre")


@dataclass
class AgentConfig:
    """Encoders, fusion and heads around a memory. Keys equal `configs/agent/default.yaml`."""

    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """Output channels of each 3x3 stride-2 conv layer of the image CNN (one CNN per image resolution)."""
    cnn_patch: int = 0
    """0: every conv is 3x3 stride 2. k > 0: the first conv is k x k with stride k (one feature
    vector per k x k tile, aligned with a tile map such as symbolic fastmap's `cell_pixels`), the
    others 3x3 stride 1, so the CNN keeps one position per tile."""
    image_dim: int = 256
    """Size of the image embedding (Linear+ReLU after the CNN)."""
    semantic_embed: int = 8
    """Embedding size of a semantic class id, per pixel, before the CNN."""
    depth_max: float = 10.0
    """Depth (metres) is clipped to [0, depth_max] and divided by it."""
    vector_dim: int = 32
    """Embedding size of each float vector observation (pose, pointgoal)."""
    goal_embed: int = 32
    """Embedding size of an integer goal category (objectgoal)."""
    text_dim: int = 64
    """Token embedding size and text embedding size."""
    text_pooling: str = "mean"
    """How token embeddings become one text embedding: 'mean' (masked mean) or 'gru' (last GRU state)."""
    memory_text: str = "encoded"
    """What a memory that stores language apart (DCEM's language column) gets: 'encoded' (the text
    encoder's output, also fused into the step feature) or 'pooled' (the pooled token embeddings
    before the encoder's Linear+ReLU, a fixed mean in which the name stays a quarter of "this is a
    <name>"). The output layer is trained for the policy and can drop the name (measured for DCEM
    on fast-mapping, docs/fastmap.md). 'rare': the token embeddings averaged with inverse document
    frequency weights counted over the training texts (TextEncoder.rare_pool), so a name outweighs
    the words every sentence shares ("the" in "lift the dax" and "go to the bed")."""
    hidden: int = 256
    """Size of the fused feature given to the memory (concat of embeddings -> Linear -> ReLU)."""
    use_prev_action: bool = True
    """Fuse an embedding of the previous action (a 'none' id at episode start)."""
    prev_action_embed: int = 16
    """Embedding size of the previous action."""
    action_prior: list[float] = field(default_factory=list)
    """Discrete actions: the policy's initial probability of each action (one per action, in the
    action space's order, positive, summing to 1), set as the policy head's bias; empty: uniform.
    A random policy on a task whose `stop` ends the goal stops every few steps and never explores
    (docs/goat.md); a small initial `stop` probability lets it walk long enough to learn."""
    head_hidden: int = 0
    """Hidden width of the policy and value MLP heads; 0 = a single Linear layer each."""
    ignore: list[str] = field(default_factory=list)
    """Observation keys to skip; any other key the agent does not know is an error."""
    aux_heads: list[str] = field(default_factory=list)
    """Auxiliary heads to attach (names in embodied.agents.AUX_HEADS); none by default."""
    film_readout: int = 0
    """0: the heads see the memory read only. k > 0: they also see a k-wide memory-conditioned
    readout of the image CNN's last feature map (FiLM, Perez et al. 2018: the read scales and
    shifts every channel at every position, a 1x1 conv, flatten, Linear). It lets "find the object
    the memory recalled" be a per-position match instead of a function learned from a flat vector."""

    memory_visual: str = "embedding"
    """What a memory that stores vision apart (DCEM's visual column) gets: 'embedding' (the image
    CNN's output) or 'centre' (the feature vector at the centre of the CNN's last feature map: on an
    egocentric tile map with `cnn_patch`, the agent's own cell, where it holds what it lifts). A
    whole-view embedding mixes the held object with everything else in view."""
    match_readout: bool = False
    """With `film_readout`: match a projection of the memory read against the features at every
    position (cosine, then a softmax over positions with a learned sharpness) and give that map to
    the readout, as a channel and flat into its Linear, so "where is the thing the memory recalled"
    is a match, not a function to learn. When the memory appends what it
    retrieved from its visual column to its read (dcem `read_retrieved`), the projection starts as
    that retrieved vector; otherwise it is learned from the read."""

    def __post_init__(self) -> None:
        for key in ("cnn_patch", "film_readout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"agent option {key}={value!r}: must be an integer >= 0")
        for key in ("image_dim", "semantic_embed", "vector_dim", "goal_embed", "text_dim", "hidden", "prev_action_embed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"agent option {key}={value!r}: must be a positive integer")
        if isinstance(self.head_hidden, bool) or not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ValueError(f"agent option head_hidden={self.head_hidden!r}: must be an integer >= 0")
        channels = list(self.cnn_channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"agent option cnn_channels={channels!r}: must be a non-empty list of positive integers")
        if not self.depth_max > 0:
            raise ValueError(f"agent option depth_max={self.depth_max!r}: must be > 0")
        if self.memory_text not in MEMORY_TEXTS:
            raise ValueError(f"agent option memory_text={self.memory_text!r}; allowed: {', '.join(MEMORY_TEXTS)}")
        if self.memory_visual not in MEMORY_VISUALS:
            raise ValueError(f"agent option memory_visual={self.memory_visual!r}; allowed: {', '.join(MEMORY_VISUALS)}")
        if not isinstance(self.match_readout, bool):
            raise ValueError(f"agent option match_readout={self.match_readout!r}: must be true or false")
        if self.match_readout and not self.film_readout:
            raise ValueError("agent option match_readout=true needs film_readout > 0 (the match is a channel of that readout)")
        prior = self.action_prior
        if not isinstance(prior, (list, tuple)) or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0
                                                       for p in prior) or (prior and abs(sum(prior) - 1) > 1e-6):
            raise ValueError(f"agent option action_prior={prior!r}: must be empty or positive probabilities summing to 1")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"agent option text_pooling={self.text_pooling!r}; allowed: {', '.join(TEXT_POOLINGS)}")
