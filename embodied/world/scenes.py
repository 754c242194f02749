"""Scene files on disk: writing generated apartments and finding the pinned set.

Pinned apartments live in `scenes/apartments/` at the repository root (or wherever the
EMBODIED_SCENES environment variable points: a folder laid out like `scenes/`):
`apt_<seed:04d>.json` specs plus `splits.json` = {"train": [names], "val": [...], "test": [...]}.
GLB files are optional there; `write_scenes` (or `python -m embodied.world`) regenerates them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from embodied.world.apartment import generate_apartment
from embodied.world.geometry import export_glb
from embodied.world.spec import SceneFormatError, SceneSpec

SPLITS = ("train", "val", "test")


def scene_name(seed: int) -> str:
    return f"apt_{int(seed):04d}"


def write_scenes(
    n: int,
    seed: int,
    out: str | Path,
    n_rooms: int | tuple[int, int] | None = None,
    quiet: bool = False,
    glb: bool = True,
    object_split: str = "all",
    objects_per_room: tuple[int, int] = (1, 4),
) -> list[Path]:
    """Generate apartments for seeds seed .. seed+n-1 into `out` as apt_<seed>.json (+ .glb).

    Returns the written paths in seed order (json, then glb when `glb`). Shows a progress bar
    unless `quiet`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in tqdm(range(seed, seed + n), desc="apartments", unit="scene", disable=quiet):
        spec = generate_apartment(s, n_rooms=n_rooms, objects_per_room=objects_per_room, object_split=object_split)
        path = out / f"{scene_name(s)}.json"
        spec.save(path)
        written.append(path)
        if glb:
            written.append(export_glb(spec, out / f"{scene_name(s)}.glb"))
    return written


def scenes_root() -> Path:
    """The pinned-scene folder: $EMBODIED_SCENES if set, else <repository>/scenes."""
    env = os.environ.get("EMBODIED_SCENES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "scenes"


def _apartments_dir() -> Path:
    d = scenes_root() / "apartments"
    if not d.is_dir():
        raise SceneFormatError(
            f"{d}: pinned apartments not found; set EMBODIED_SCENES to a folder holding apartments/"
        )
    return d


def split_names(split: str) -> list[str]:
    """Names of the pinned apartments in a split ('train', 'val' or 'test')."""
    if split not in SPLITS:
        raise ValueError(f"unknown scene split {split!r}; allowed: {SPLITS}")
    path = _apartments_dir() / "splits.json"
    try:
        splits = json.loads(path.read_text())
        return [str(x) for x in splits[split]]
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: no splits file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SceneFormatError(f"{path}: malformed splits file ({e})") from None


def pinned_scene(name: str) -> SceneSpec:
    """A pinned apartment by name, e.g. 'apt_0003'."""
    path = _apartments_dir() / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no pinned scene named {name!r} in {path.parent}")
    return SceneSpec.load(path)


def load_split(split: str) -> list[SceneSpec]:
    """All pinned apartments of a split, in the order splits.json lists them."""
    return [pinned_scene(name) for name in split_names(split)]
