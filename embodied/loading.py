"""Loading: the device, envs from a task config, an agent from a run config, checkpoints read back.

Layer order (DESIGN.md, "Contracts between layers"): config < world < render < sim < tasks < envs <
memory < agents < loading < train < eval < viewer < cli. This layer builds what tasks/, envs/ and
agents/ define; train, eval and viewer all load through it, so evaluating and viewing never import a
trainer. Checkpoint reading lives here (the format check, `torch.load(weights_only=True)`, matching a
model's state); writing (CheckpointManager, atomic saves, the run-directory lock) stays in train.

A checkpoint is one `torch.save`d dict of tensors and primitive containers only, holding at least
`format`, `version`, `model`, `counters` and `config` (the composed run config).

Shipped checkpoints (`embodied/pretrained/<name>.pt`, written by `embodied export`) are checkpoints of
that format with the model's floats in fp16 (or int8, see `quantize`), no optimizer or RNG state, and a
`pretrained` record (recipe, training run, figures); `ckpt=pretrained:<name>` names one wherever a
checkpoint path goes. Readers always get float32 weights back: `load_checkpoint` undoes both.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from embodied.config import ConfigError, InputError

FORMAT = "embodied-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "counters", "config")
QUANTIZED = "quantized"  # {model key: per-row float32 scale} of the weights stored as int8
PRETRAINED = "pretrained:"  # ckpt=pretrained:<name>: a checkpoint shipped in embodied/pretrained/


class CheckpointError(InputError, RuntimeError):
    """A checkpoint cannot be written or used; the message names the file and what is wrong."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """cpu, cuda (the local rank's GPU) or auto (cuda when available); cuda without a GPU is a ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but no CUDA device is available; allowed: cpu, auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


# --- envs ----------------------------------------------------------------------------------------

def make_envs(task_cfg, num_envs: int, seed: int, num_workers: int | None):
    """The vectorised envs of a task config, as training and evaluation run them (a task registered as
    a whole vectorised env, e.g. toy/corridor, or `num_envs` copies of a gymnasium task)."""
    from embodied.envs import make_vector_env

    return make_vector_env(task_cfg, num_envs, seed=seed, num_workers=num_workers)


def env_spaces(task_cfg) -> tuple[Any, Any]:
    """(observation space, action space) of one env of the task, built in this process without a reset
    (no scene built for pinned or procedural scenes): enough to build and check an agent in a second."""
    from embodied.envs import VECTOR_ENVS
    from embodied.tasks import make_env

    name = task_cfg.get("name") if hasattr(task_cfg, "get") else getattr(task_cfg, "name", None)
    if name in VECTOR_ENVS:
        env = VECTOR_ENVS[name](task_cfg, 1, 0, 0)
        spaces = env.single_observation_space, env.single_action_space
    else:
        env = make_env(task_cfg)
        spaces = env.observation_space, env.action_space
    env.close()
    return spaces


# --- agents --------------------------------------------------------------------------------------

def build_agent_from_config(config: dict | DictConfig, observation_space, action_space,
                            device: torch.device) -> torch.nn.Module:
    """The agent described by a run config's `memory` and `agent` nodes (training, eval, record)."""
    from embodied.agents import build_agent, build_agent_kind

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    try:
        kind = build_agent_kind(config)  # e.g. agent=keyframe: its own observation pipeline, not the spaces
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    if kind is not None:
        return kind.to(device)
    memory = dict(config["memory"])
    name = memory.pop("name")
    try:
        agent = build_agent(observation_space, action_space, memory=name, memory_options=memory,
                            **dict(config.get("agent") or {}))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    return agent.to(device)


class EnvAgent:
    """A trained Agent playing one unbatched env (record, nav/goat's eval): its memory state, the
    episode-start flag and the previous action, kept between `step`s; `reset` at each episode."""

    def __init__(self, agent, deterministic: bool = True, device: str | torch.device = "cpu"):
        self.agent = agent.eval()
        self.deterministic = deterministic
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.state = self.agent.initial_state(1, self.device)
        self.first = torch.ones(1, dtype=torch.bool, device=self.device)
        self.prev = torch.zeros((1, *self.agent.action_shape), dtype=self.agent.action_dtype, device=self.device)

    @torch.no_grad()
    def step(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(action [1, ...], value [1]) for one observation of the env (arrays without a batch axis)."""
        import numpy as np

        tensors = {k: torch.as_tensor(np.asarray(v))[None].to(self.device) for k, v in obs.items()}
        action, _, value, self.state = self.agent.act(tensors, self.state, self.first, self.prev,
                                                      deterministic=self.deterministic)
        self.first = torch.zeros_like(self.first)
        self.prev = action
        return action, value


# --- checkpoints ---------------------------------------------------------------------------------

def pretrained_dir() -> Path:
    """The shipped checkpoints: package data beside this module, so `pip install` ships them."""
    return Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    return sorted(p.stem for p in pretrained_dir().glob("*.pt"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint argument as a file: `pretrained:<name>` is the shipped file of that name (an
    unknown name is a CheckpointError listing the shipped ones); anything else is a path."""
    text = str(path)
    if not text.startswith(PRETRAINED):
        return Path(path)
    name = text[len(PRETRAINED):]
    names = pretrained_names()
    if name not in names:
        raise CheckpointError(f"ckpt: {text}: no shipped checkpoint of that name; allowed: "
                              + (", ".join(PRETRAINED + n for n in names) or f"(none in {pretrained_dir()})"))
    return pretrained_dir() / f"{name}.pt"


def pretrained_record(path: str | Path) -> dict[str, Any] | None:
    """The `pretrained` record of a shipped checkpoint (`pretrained:<name>` or its file), else None."""
    path = resolve_checkpoint(path)
    if path.resolve().parent != pretrained_dir():
        return None
    return load_checkpoint(path).get("pretrained")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint (a path or `pretrained:<name>`); CheckpointError names the
    file and the problem."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: a directory; allowed: a checkpoint file (a run directory's latest.pt or best.pt)"
                              if path.is_dir() else f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, disallowed pickled globals ...
        raise CheckpointError(f"{path}: not a checkpoint file (unreadable: {_unreadable_reason(exc)})") from exc
    return dequantize(check_checkpoint(obj, path), path)


def quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row (dim 0): the weight is `q * scale`, each row's
    largest magnitude mapping to 127. Per-row scales keep a row of small weights from being rounded
    to zero by a large row elsewhere in the matrix."""
    rows = tensor.detach().float().reshape(tensor.shape[0], -1)
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(tensor.shape), scale


def dequantize(ckpt: dict[str, Any], path: str | Path = "") -> dict[str, Any]:
    """The checkpoint with its int8 weights (`quantize`) as float32 again, ready for load_state_dict."""
    scales = ckpt.pop(QUANTIZED, None)
    if not scales:
        return ckpt
    model = dict(ckpt["model"])
    for key, scale in scales.items():
        q = model.get(key)
        if not torch.is_tensor(q) or q.dtype != torch.int8 or scale.shape != (q.shape[0],):
            raise CheckpointError(f"{path}: quantized weight {key} does not match its scale")
        model[key] = q.float() * scale.float().reshape(-1, *([1] * (q.dim() - 1)))
    ckpt["model"] = model
    return ckpt


def _unreadable_reason(exc: Exception) -> str:
    """torch.load's error in a few words, without its advice to load with weights_only=False."""
    text = " ".join(str(exc).split())
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1]
        found = re.search(r"GLOBAL (\S+) was not an allowed global", detail)
        if found:
            return f"it pickles {found.group(1)}, and only tensors and plain data are loaded"
        return f"not a tensor pickle ({detail.split(' Check the documentation')[0].strip()[:120]})"
    if "PytorchStreamReader" in text:  # the zip container: truncated or corrupt
        return text.split("PytorchStreamReader ", 1)[1].split(". This is an internal")[0][:160] + ", truncated?"
    if isinstance(exc, EOFError):
        return "empty or truncated"
    if isinstance(exc, (KeyError, pickle.UnpicklingError)):
        return "neither a torch zip archive nor a pickle"
    return f"{type(exc).__name__}: {text[:160]}"


def check_checkpoint(obj: Any, path: str | Path) -> dict[str, Any]:
    """`obj` (a loaded file) if it is a checkpoint this code reads, else CheckpointError naming `path`."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an embodied checkpoint (missing format={FORMAT!r})")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')!r}, this code reads version {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks keys {missing}")
    return obj


def load_model_state(module: torch.nn.Module, state: dict[str, Any], path: str | Path, task: str | None = None,
                     trained_task: str | None = None) -> None:
    """load_state_dict with a one-line CheckpointError on missing/unexpected keys or shape mismatch. With
    `task` (what the model is loaded to run) and `trained_task` (the checkpoint's task.name) of two task
    families (`nav/...`, `ballet/...`), a mismatch says that, not which weights differ."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [name for name, tensor in state.items()
              if name in own and torch.is_tensor(tensor) and tuple(tensor.shape) != tuple(own[name].shape)]
    family = str(trained_task).split("/")[0]
    if (missing or unexpected or shapes) and task and trained_task and str(task).split("/")[0] != family:
        raise CheckpointError(f"ckpt: {path} was trained on {trained_task}, another task family than task={task}; "
                              f"allowed: a {family}/ task (e.g. task={trained_task})")
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: model does not match the checkpoint (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "was it trained with another memory/agent/task config?")
    if shapes:
        name = shapes[0]
        raise CheckpointError(f"{path}: parameter {name} has shape {tuple(state[name].shape)} in the checkpoint, "
                              f"{tuple(own[name].shape)} in the model")
    module.load_state_dict(state)
