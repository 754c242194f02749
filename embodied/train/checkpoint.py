"""Checkpoints: atomic writes, keep-last-N and best, RNG capture. Reading one back (the format check,
`weights_only` loading, CheckpointError) is embodied.loading's, a layer below train that eval and the
viewer share.

A checkpoint is one `torch.save`d dict of tensors and primitive containers only, so it loads with
`torch.load(weights_only=True)`. Layout of a run directory's checkpoints:

    ckpt-<update:08d>.pt   the last `keep_last` checkpoints
    latest.pt              hard link to the newest checkpoint (what resume loads)
    best.pt                hard link to the checkpoint with the best `best_metric`

Writes go to a temp file in the same directory (`.<name>.tmp-<pid>`), are flushed and fsynced, then
`os.replace`d over the target and the directory is fsynced: a crash (even `kill -9`) at any moment
leaves either the old or the new file, never a truncated one. Links are swapped the same way. A
failed write (a full disk) removes its temp file and raises CheckpointError naming the file; temp
files of writers killed mid-write are removed by the next start (`remove_stale_temp_files`).

One run directory, one process: `RunDirLock` holds an exclusive `flock` on `run_dir/.lock` (the
kernel drops it when the holder dies, even by `kill -9`, so a stale lock is simply taken over) and
writes the holder's pid and host into it for the message a second process gets.
"""
from __future__ import annotations

import errno
import fcntl
import math
import os
import random
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied.config import InputError
from embodied.loading import FORMAT, VERSION, CheckpointError, load_checkpoint

_CKPT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_TMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")  # _tmp_path's names
LOCK_NAME = ".lock"
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN/inf; training stops and no checkpoint is written."""


class RunDirError(InputError):
    """The run directory cannot be used (another process holds it, the disk is full ...); one line."""


def write_error(exc: OSError, path: str | Path) -> str:
    """One line for a failed write of `path`: `no space left on device writing <path>` or the OS's reason."""
    if exc.errno in DISK_FULL:
        return f"no space left on device writing {path}"
    return f"cannot write {path} ({exc.strerror or exc})"


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc`: torch.save reports a failed write as RuntimeError `unexpected pos`
    with the file object's OSError as its context."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


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
    """torch.save `obj` to `path` so that readers only ever see a complete file; a failed write
    raises the OSError behind it (ENOSPC ...) with no temp file left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise cause from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` the same way (temp file, fsync, rename); OSError leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_link(source: Path, link: Path) -> None:
    """Point `link` at `source`'s content atomically (hard link; a copy where links are unsupported)."""
    tmp = _tmp_path(link)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(link.parent)


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Remove the temp files of writes killed mid-way (`.<name>.tmp-<pid>`) in `directory` and its
    `.hydra/`. Only call it holding the run directory's lock: then no live process writes there."""
    removed = []
    for folder in (Path(directory), Path(directory) / ".hydra"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TMP_NAME.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class RunDirLock:
    """Exclusive lock of a run directory: `acquire()` or RunDirError naming the holder (pid, host).

    A start that is then rejected calls `release(restore=True)`, which puts `.lock` back as it was
    (or removes it, and the directory if the lock created it), so a rejected start changes nothing."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        self._created_dir = False
        self._previous: tuple[bytes, int, int] | None = None  # content, atime_ns, mtime_ns

    def acquire(self) -> "RunDirLock":
        try:
            self._created_dir = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                existed = self.path.exists()
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    holder = os.pread(fd, 256, 0).decode(errors="replace").split()
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    who = (f"process {holder[0]} on host {holder[1]}" if len(holder) >= 2
                           else "another process (starting)")
                    raise RunDirError(f"run_dir: {self.directory} is in use by {who} (lock {self.path}); "
                                      "allowed: wait until it ends, or another run_dir") from None
                st = os.fstat(fd)
                try:
                    same = os.stat(self.path).st_ino == st.st_ino
                except FileNotFoundError:
                    same = False
                if same:  # else a rejected start removed the file between our open and flock: retry
                    break
                os.close(fd)
            self._fd = fd
            self._previous = (os.pread(fd, 1 << 16, 0), st.st_atime_ns, st.st_mtime_ns) if existed else None
            info = f"{os.getpid()} {socket.gethostname()}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except OSError as exc:
            self.release(restore=True)
            raise RunDirError(f"run_dir: {write_error(exc, self.path)}") from None
        return self

    def release(self, restore: bool = False) -> None:
        """Drop the lock; with `restore`, first undo what `acquire` wrote."""
        if self._fd is None:
            return
        try:
            if restore and self._previous is None:
                self.path.unlink(missing_ok=True)
                if self._created_dir:
                    try:
                        self.directory.rmdir()
                    except OSError:  # not empty: something else was written meanwhile
                        pass
            elif restore:
                content, atime, mtime = self._previous
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, content, 0)
                os.utime(self._fd, ns=(atime, mtime))
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating tensor holding NaN/inf, or None."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


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

    def best_of(self, metrics: dict) -> float | None:
        """The value of best_metric in `metrics`. `auto` becomes episode/success where the task reports
        success, else episode/return, at the first metrics that hold either."""
        if self.best_metric == "auto":
            key = next((k for k in ("episode/success", "episode/return") if k in metrics), None)
            if key is None:
                return None
            self.best_metric = key
        return metrics.get(self.best_metric) if self.best_metric is not None else None

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
        path = self.directory / f"ckpt-{update:08d}.pt"
        target = path
        try:
            atomic_save(payload, path)
            target = self.latest_path
            atomic_link(path, self.latest_path)
            if improved:
                target = self.best_path
                atomic_link(path, self.best_path)
        except OSError as exc:
            # latest.pt must keep naming a checkpoint a resume can use: drop the new one unless latest is it
            if path.exists() and not (self.latest_path.exists() and os.path.samefile(path, self.latest_path)):
                path.unlink()
            previous = (f"the previous checkpoint {self.latest_path} is intact" if self.latest_path.exists()
                        else "no checkpoint of this run was written before")
            raise CheckpointError(f"{write_error(exc, target)}; {previous}") from None
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
