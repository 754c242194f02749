"""Baselines without attention: `none` (per-step MLP), `gru` and `lstm`."""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from embodied.memory.base import Memory, Step, register_memory
from embodied.memory.config import GRUConfig, LSTMConfig, NoMemoryConfig


@register_memory("none", config=NoMemoryConfig)
class NoMemory(Memory):
    """Memoryless baseline: read = ReLU(Linear(feat)); the state is empty."""

    def __init__(self, input_dim: int, config: NoMemoryConfig):
        super().__init__(input_dim, config)
        self.output_dim = config.hidden
        self.net = nn.Sequential(nn.Linear(input_dim, config.hidden), nn.ReLU())

    def initial_state(self, batch: int, device=None) -> TensorDict:
        return TensorDict({}, batch_size=[batch], device=device)

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        return self.net(step["feat"]), state

    def forward_sequence(self, steps: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        self._check_step(steps, sequence=True)
        return self.net(steps["feat"]), state


def run_rnn(rnn: nn.RNNBase, x: Tensor, hx=None):
    """`rnn(x, hx)`, in float32 under CPU autocast.

    oneDNN has no bf16 RNN primitive on CPUs without native bf16 (AVX2-only x86-64 fails with "could
    not create a primitive descriptor"), so under CPU autocast the cell runs in float32 on every CPU,
    as it would without autocast. CUDA autocast is left to cuDNN."""
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return rnn(x, hx)
    if hx is not None:
        hx = hx.float() if torch.is_tensor(hx) else tuple(h.float() for h in hx)
    with torch.autocast("cpu", enabled=False):
        return rnn(x.float(), hx)


class _RecurrentMemory(Memory):
    """Shared code of GRU/LSTM: state leaves are `[B, layers, hidden]` (batch first, so rows index)."""

    rnn: nn.RNNBase
    state_keys: tuple[str, ...]

    def __init__(self, input_dim: int, config: GRUConfig | LSTMConfig):
        super().__init__(input_dim, config)
        self.output_dim = config.hidden
        self.layers = config.layers

    def initial_state(self, batch: int, device=None) -> TensorDict:
        zeros = {key: torch.zeros(batch, self.layers, self.output_dim, device=device) for key in self.state_keys}
        return TensorDict(zeros, batch_size=[batch], device=device)

    def _run(self, feat: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """Run the RNN over `feat [T, B, D]` with no resets inside."""
        hidden = tuple(state.get(key).transpose(0, 1).contiguous() for key in self.state_keys)
        out, hidden = run_rnn(self.rnn, feat, hidden if len(hidden) > 1 else hidden[0])
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        # Autocast runs the LSTM in bf16; the carried state keeps its own dtype (rollout storage is float32).
        new = {key: h.transpose(0, 1).to(state.get(key).dtype) for key, h in zip(self.state_keys, hidden)}
        return out, TensorDict(new, batch_size=state.batch_size, device=state.device)

    def update(self, step: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        out, state = self._run(step["feat"].unsqueeze(0), state)
        return out[0], state

    def forward_sequence(self, steps: Step, state: TensorDict) -> tuple[Tensor, TensorDict]:
        # The cuDNN/ATen RNN runs whole segments; a new segment starts wherever some row resets.
        self._check_step(steps, sequence=True)
        feat = steps["feat"]
        first = steps.get("first", None)
        length = feat.shape[0]
        if first is None or self.lifelong:
            starts = [0]
        else:
            first = first.to(dtype=torch.bool)
            any_first = first.any(dim=1).tolist()
            starts = [0] + [t for t in range(1, length) if any_first[t]]
        outs = []
        for start, end in zip(starts, starts[1:] + [length]):
            if first is not None and not self.lifelong:
                state = self.reset_rows(state, first[start])
            out, state = self._run(feat[start:end], state)
            outs.append(out)
        return torch.cat(outs), state


@register_memory("gru", config=GRUConfig)
class GRUMemory(_RecurrentMemory):
    """GRU baseline; state `h [B, layers, hidden]`; read = top layer's hidden state."""

    state_keys = ("h",)

    def __init__(self, input_dim: int, config: GRUConfig):
        super().__init__(input_dim, config)
        self.rnn = nn.GRU(input_dim, config.hidden, num_layers=config.layers)


@register_memory("lstm", config=LSTMConfig)
class LSTMMemory(_RecurrentMemory):
    """LSTM baseline; state `h, c [B, layers, hidden]`; read = top layer's hidden state."""

    state_keys = ("h", "c")

    def __init__(self, input_dim: int, config: LSTMConfig):
        super().__init__(input_dim, config)
        self.rnn = nn.LSTM(input_dim, config.hidden, num_layers=config.layers)
        # Forget-gate bias 1 (Jozefowicz et al. 2015): gates start open, so long delays learn at all.
        with torch.no_grad():
            for name, bias in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    bias[config.hidden : 2 * config.hidden].fill_(1.0)
                elif name.startswith("bias_hh"):
                    bias[config.hidden : 2 * config.hidden].fill_(0.0)
