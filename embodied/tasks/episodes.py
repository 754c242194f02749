"""Episode files: the one on-disk format of every demonstration (torch-free).

A file is a numpy `.npz` archive (zip, deflate) holding several episodes concatenated along axis 0.
Per step (S rows over all episodes):
- `obs/<key>` [S, ...]: the env's observation arrays;
- `actions` [S, ...]: the expert's action at that observation, any dtype and trailing shape
  (int64 [S] for discrete actions, float32 [S, 9] for MemoryBench keyframes);
- `first` [S] bool: True at each episode's first step;
- `labels/<key>` [S, ...] (optional): the task's privileged labels of each step (-1 = none);
- `steps/<key>` [S, ...] (optional): other per-step values (e.g. MemoryBench's `keyframe_index`).
Per episode (E rows): `episode/<key>` [E, ...] (optional): numbers, booleans and strings (fixed-width
unicode, never object arrays), e.g. seed, variation, success, instruction.
Per file: `meta`, a JSON string {"format": "embodied-episodes", "version": 1, "quantised": {...}, ...}
plus what the writer adds (MemoryBench: task, split, cameras, image_size).

Float arrays named in `quantised` (depth and point clouds) are stored as unsigned integers
round(x / scale) - offset, the smallest of uint16/uint32 that holds the range, which deflate shrinks
several-fold; reading decodes them back to float32 within scale / 2 of the original.

In memory an episode is a dict of the same parts: {"obs": {key: [L, ...]}, "actions": [L, ...]},
plus "labels", "steps" ({key: [L, ...]}) and "episode" ({key: scalar}) when the file has them.
Pickled (object) arrays are never written nor read: loading a pickle runs code.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from embodied.config import InputError

Episode = dict[str, Any]
"""{"obs": {key: [L, ...]}, "actions": [L, ...]} (+ "labels", "steps": {key: [L, ...]}, "episode": {key: value})."""

FORMAT = "embodied-episodes"
VERSION = 1
STEP_PARTS = ("obs", "labels", "steps")  # dicts of per-step arrays
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REGENERATE = "regenerate it with the command that wrote it (`embodied demos ... out=FILE.npz`, or trainer=bc)"


def write_episodes(path: str | Path, episodes: list[Episode], meta: dict | None = None,
                   quantise: dict[str, float] | None = None) -> Path:
    """Write episodes to one .npz file atomically (temp file, fsync, rename). `meta`: JSON-able
    file-level facts; `quantise`: {array name (e.g. "obs/front_depth"): step} for float arrays kept to
    that step (0.1 mm = 1e-4)."""
    if not episodes:
        raise ValueError(f"{path}: no episodes to write")
    path = Path(path)
    lengths = [len(e["actions"]) for e in episodes]
    if min(lengths) < 1:
        raise ValueError(f"{path}: episode {lengths.index(min(lengths))} has no steps")
    columns = {"actions": [np.asarray(e["actions"]) for e in episodes]}
    for part in STEP_PARTS:
        for k in sorted(episodes[0].get(part) or {}):
            columns[f"{part}/{k}"] = [np.asarray(_part(e, part, k, path)) for e in episodes]
    for name, values in columns.items():
        for i, (value, n) in enumerate(zip(values, lengths)):
            if value.ndim == 0 or len(value) != n:
                raise ValueError(f"{path}: episode {i}'s {name} has shape {value.shape}; expected {n} rows (actions)")
    quantise = dict(quantise or {})
    if set(quantise) - set(columns):
        raise ValueError(f"{path}: quantise names {sorted(set(quantise) - set(columns))}; not per-step arrays")
    arrays, quantised = {}, {}
    for name, values in columns.items():
        if name in quantise:  # episode by episode: no float64 copy of the whole column
            arrays[name], quantised[name] = _quantise(values, float(quantise[name]), f"{path}: {name}")
        else:
            arrays[name] = np.concatenate(values)
    for k in sorted(episodes[0].get("episode") or {}):
        arrays[f"episode/{k}"] = np.asarray([_part(e, "episode", k, path) for e in episodes])
    first = np.zeros(sum(lengths), dtype=bool)
    first[np.cumsum([0, *lengths[:-1]])] = True
    arrays["first"] = first
    for name, value in arrays.items():
        if value.dtype.kind not in "biufcUS":  # object arrays would be pickled
            raise ValueError(f"{path}: {name} has dtype {value.dtype}; allowed: numbers, booleans, strings")
    reserved = {"format", "version", "quantised"} & set(meta or {})
    if reserved:
        raise ValueError(f"{path}: meta keys {sorted(reserved)} are the format's own")
    meta = {"format": FORMAT, "version": VERSION, "quantised": quantised, **(meta or {})}
    arrays["meta"] = np.array(json.dumps(meta))  # a 0-d unicode array: no pickle
    # a file object: numpy appends no .npz to the name
    return write_atomically(path, lambda f: np.savez_compressed(f, allow_pickle=False, **arrays))


def write_atomically(path: str | Path, write) -> Path:
    """Call `write(binary file)` on a temp file beside `path`, fsync it and rename it to `path`: a
    crash leaves the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _part(episode: Episode, part: str, key: str, path: Path):
    try:
        return episode[part][key]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: an episode lacks {part}/{key} (every episode needs the same keys)") from None


def _quantise(parts: list[np.ndarray], scale: float, name: str) -> tuple[np.ndarray, dict]:
    """round(x / scale) - offset as the smallest unsigned type that holds it (HDF5's scale-offset)."""
    if not scale > 0 or any(p.dtype.kind != "f" for p in parts):
        raise ValueError(f"{name}: quantise needs float arrays and a step > 0 (got {parts[0].dtype}, {scale})")
    if any(p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise ValueError(f"{name}: episodes differ in shape {sorted({p.shape[1:] for p in parts})}")
    if not all(np.isfinite(p).all() for p in parts):
        raise ValueError(f"{name}: holds NaN or inf; cannot quantise")
    ends = [(int(np.round(float(p.min()) / scale)), int(np.round(float(p.max()) / scale))) for p in parts if p.size]
    offset = min((lo for lo, _ in ends), default=0)
    top = max((hi for _, hi in ends), default=0) - offset
    if top >= 2**32:
        raise ValueError(f"{name}: range {top * scale:g} too wide for step {scale:g}")
    out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), np.uint16 if top < 2**16 else np.uint32)
    a = 0
    for p in parts:
        out[a:a + len(p)] = np.round(p.astype(np.float64) / scale) - offset
        a += len(p)
    return out, {"scale": scale, "offset": offset, "dtype": str(parts[0].dtype)}


def _dequantise(q: np.ndarray, offset: int, scale: float, dtype: str) -> np.ndarray:
    # float32 holds every integer below 2**24 exactly: then no float64 copy of a large column
    wide = np.float64 if abs(offset) + (int(q.max()) if q.size else 0) >= 2**24 else np.float32
    x = q.astype(wide)
    x += offset
    x *= scale
    return x.astype(dtype, copy=False)


def episode_files(path: str | Path) -> list[Path]:
    """The .npz file at `path`, or every *.npz in a directory (sorted), each checked to be a zip
    archive: cheap, so a bad demo path fails before any env worker starts."""
    path = Path(path)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InputError(f"{path}: no .npz episode files there")
    for f in files:
        with open(f, "rb") as handle:
            head = handle.read(len(HDF5_SIGNATURE))
        if head == HDF5_SIGNATURE:
            raise InputError(f"{f}: an HDF5 demo file, a format no longer read; demonstrations are .npz episode "
                             "files now: regenerate with `embodied demos task=memorybench/<task> split=<split> "
                             "out=FILE.npz`")
        if not zipfile.is_zipfile(f):  # np.load would try it as a pickle or a bare .npy
            raise InputError(f"{f}: not a .npz archive (truncated, or not an episode file)")
    return files


def read_episodes(path: str | Path, action_shape: tuple[int, ...] | None = None) -> list[Episode]:
    """Episodes of a .npz file or of every *.npz in a directory (sorted); InputError naming the file
    on a missing, foreign, truncated, pickled, inconsistent or other-version file, and on actions
    of another shape per step than `action_shape` (a consumer's check: () for discrete actions)."""
    episodes: list[Episode] = []
    for f in episode_files(path):
        episodes += _guarded(f, lambda f: _read_file(f, action_shape))
    return episodes


def read_meta(path: str | Path) -> dict:
    """The file-level `meta` of an episode file (of the first, for a directory), without its arrays."""
    def read(f: Path) -> dict:
        with np.load(f) as data:
            return _meta(f, data)

    return _guarded(episode_files(path)[0], read)


def _guarded(f: Path, read):
    try:
        return read(f)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # np.load's
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        if "pickle" in reason:  # never loaded: pickles run code
            raise InputError(f"{f}: holds pickled (object) arrays, never loaded (loading runs code)") from None
        raise InputError(f"{f}: not a readable .npz episode file (truncated?): {reason}") from None


def _meta(f: Path, data) -> dict:
    if "meta" not in data.files:
        raise InputError(f"{f}: not an episode file (no meta array: episode files are written by "
                         "embodied.tasks.episodes, e.g. by `embodied demos` or trainer=bc)")
    try:
        meta = json.loads(data["meta"].item())
    except (ValueError, TypeError, AttributeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{f}: not an episode file (its meta is not {FORMAT!r} JSON)")
    if meta.get("version") != VERSION:
        raise InputError(f"{f}: episode format version {meta.get('version')!r}; supported: {VERSION}; {REGENERATE}")
    return meta


def _read_file(f: Path, action_shape: tuple[int, ...] | None = None) -> list[Episode]:
    with np.load(f) as data:  # allow_pickle=False: object arrays raise instead of unpickling
        meta = _meta(f, data)
        missing = [k for k in ("actions", "first") if k not in data.files]
        if missing or not any(k.startswith("obs/") for k in data.files):
            raise InputError(f"{f}: not an episode file (missing {missing or 'obs/* arrays'})")
        arrays = {k: data[k] for k in data.files if k != "meta"}
    for name, q in (meta.get("quantised") or {}).items():
        if name not in arrays:
            raise InputError(f"{f}: meta names quantised array {name}, which the file lacks")
        arrays[name] = _dequantise(arrays[name], int(q["offset"]), float(q["scale"]), q.get("dtype", "float32"))
    actions, first = arrays.pop("actions"), arrays.pop("first").astype(bool)
    if action_shape is not None and actions.shape[1:] != tuple(action_shape):
        raise InputError(f"{f}: actions of shape {actions.shape[1:]} per step; expected {tuple(action_shape)} "
                         "(demonstrations of another task family?)")
    if len(first) == 0 or not first[0]:
        raise InputError(f"{f}: first[0] must be True (files hold whole episodes)")
    starts = np.flatnonzero(first).tolist() + [len(first)]
    for name, v in [("actions", actions), *arrays.items()]:
        if name != "actions" and name.split("/")[0] not in (*STEP_PARTS, "episode"):
            raise InputError(f"{f}: unknown array {name}; allowed: actions, first, meta, "
                             f"{', '.join(p + '/*' for p in (*STEP_PARTS, 'episode'))}")
        rows = len(starts) - 1 if name.startswith("episode/") else len(first)
        if v.ndim == 0 or len(v) != rows:
            raise InputError(f"{f}: {name} has {len(v) if v.ndim else 0} rows; expected {rows} "
                             f"({'episodes' if name.startswith('episode/') else 'steps'}, from first)")
    parts: dict[str, dict[str, np.ndarray]] = {}
    for name, v in arrays.items():
        part, key = name.split("/", 1)
        parts.setdefault(part, {})[key] = v
    episodes = []
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        episode: Episode = {"obs": {k: v[a:b] for k, v in parts["obs"].items()}, "actions": actions[a:b]}
        for part in STEP_PARTS[1:]:
            if part in parts:
                episode[part] = {k: v[a:b] for k, v in parts[part].items()}
        if "episode" in parts:  # numpy scalars become Python's (str, int, float, bool)
            episode["episode"] = {k: v[i].item() if v.ndim == 1 else v[i] for k, v in parts["episode"].items()}
        episodes.append(episode)
    return episodes
