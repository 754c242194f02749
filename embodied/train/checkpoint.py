"""Checkpoints: atomic writes, keep-last-N and best, safe loading, RNG capture.

A checkpoint is one `torch.save`d dict of tensors and primitive containers only, so it loads with
`torch.load(weights_only=True)`. Layout of a run directory's checkpoints:

    ckpt-<update:08d>.pt   the last `keep_last` checkpoints
    latest.pt              hard link to the newest checkpoint (what resume loads)
    best.pt                hard link to the checkpoint with the best `best_metric`

Writes go to a temp file in the same directory, are flushed and fsynced, then `os.replace`d over
the target and the directory is fsynced: a crash (even `kill -9`) at any moment leaves either the
old or the new file, never a truncated one. Links are swapped the same way.
"""
from __future__ import annotations

import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied.config import InputError

FORMAT = "embodied-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "counters", "config")
_CKPT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(InputError, RuntimeError):
    """A checkpoint cannot be written or used; the message names the file and what is wrong."""


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN/inf; training stops and no checkpoint is written."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to `path` so that readers only ever see a complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_link(source: Path, link: Path) -> None:
    """Point `link` at `source`'s content atomically (hard link; a copy where links are unsupported)."""
    tmp = _tmp_path(link)
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating tensor holding NaN/inf, or None."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; CheckpointError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, disallowed pickled globals ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {detail[:200]})") from exc
    return check_checkpoint(obj, path)


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


def load_model_state(module: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """load_state_dict with a one-line CheckpointError on missing/unexpected keys or shape mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: model does not match the checkpoint (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "was it trained with another memory/agent/task config?")
    for name, tensor in state.items():
        if torch.is_tensor(tensor) and tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"{path}: parameter {name} has shape {tuple(tensor.shape)} in the checkpoint, "
                f"{tuple(own[name].shape)} in the model")
    module.load_state_dict(state)


# --- RNG state as tensors/primitives (weights_only-safe) -------------------------------------------

def capture_rng(extra: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    for name, gen in (extra or {}).items():
        state[f"gen/{name}"] = gen.get_state()
    return state


def restore_rng(state: dict[str, Any], extra: dict[str, torch.Generator] | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    # RNG states are CPU ByteTensors; a checkpoint loaded with map_location=cuda holds them on the GPU.
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, gen in (extra or {}).items():
        if f"gen/{name}" in state:
            gen.set_state(state[f"gen/{name}"].cpu())


class CheckpointManager:
    """Writes checkpoints of one run directory; keeps the last N and the best by a metric."""

    def __init__(self, directory: str | Path, keep_last: int = 3, best_metric: str | None = "success",
                 best_mode: str = "max"):
        if keep_last < 1:
            raise ValueError(f"keep_last={keep_last}: must be >= 1")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r}: allowed max, min")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.best_value: float | None = None

    @property
    def latest_path(self) -> Path:
        return self.directory / "latest.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def checkpoints(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CKPT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.best_mode == "max" else value < self.best_value

    def save(self, payload: dict[str, Any], update: int, metric: float | None = None) -> Path:
        """Write ckpt-<update>.pt, move latest (and best if `metric` improved), prune old ones."""
        bad = first_non_finite(payload["model"])
        if bad is not None:
            raise NonFiniteError(f"refusing to checkpoint update {update}: parameter {bad} is not finite; "
                                 f"last good checkpoint: {self.latest_path}")
        improved = metric is not None and self.best_metric is not None and self._is_better(float(metric))
        if improved:
            self.best_value = float(metric)
        payload = {**payload, "format": FORMAT, "version": VERSION,
                   "best": {"metric": self.best_metric, "mode": self.best_mode, "value": self.best_value}}
        path = atomic_save(payload, self.directory / f"ckpt-{update:08d}.pt")
        atomic_link(path, self.latest_path)
        if improved:
            atomic_link(path, self.best_path)
        for old in self.checkpoints()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The latest checkpoint, or None for a fresh run directory; restores the best-so-far value."""
        if not self.latest_path.exists():
            return None
        ckpt = load_checkpoint(self.latest_path, map_location)
        best = ckpt.get("best") or {}
        self.best_value = best.get("value")
        return ckpt
