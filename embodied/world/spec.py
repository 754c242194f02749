"""SceneSpec: the versioned, JSON-serialisable description of one scene.

Coordinates: metres, right-handed, z up, floor at z = 0. Yaw is the rotation about +z,
counter-clockwise from +x. Everything a renderer, simulator or task needs is derived from a
SceneSpec (see `embodied.world.geometry.build_geometry`), so the JSON is the single source of
truth and the same seed gives the same bytes.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from embodied.config import InputError

SCHEMA_VERSION = 1
ROOM_TYPES = ("kitchen", "living_room", "bedroom", "bathroom", "corridor")
ITEM_KINDS = ("furniture", "object")


class SceneFormatError(InputError):
    """A scene file that cannot be read: names the file and what is wrong."""


def _r(x: float) -> float:
    # Rounded floats keep the JSON byte-identical across platforms for the same seed.
    return round(float(x), 5)


@dataclass
class Room:
    id: int
    type: str  # one of ROOM_TYPES
    polygon: list[list[float]]  # [[x, y], ...] counter-clockwise, axis-aligned rectangles today


@dataclass
class Wall:
    start: list[float]  # [x, y] of the centre line
    end: list[float]
    thickness: float
    height: float


@dataclass
class Door:
    rooms: list[int]  # the two room ids it connects
    position: list[float]  # [x, y] centre of the opening
    width: float
    axis: str  # "x" if the wall it cuts runs along x, else "y"


@dataclass
class Item:
    """A piece of furniture or a small object."""

    id: int  # instance id, unique in the scene, >= 1 (0 is structure)
    kind: str  # "furniture" | "object"
    category: str  # e.g. "bed", "mug"
    exemplar: int  # seed of the parametric exemplar inside its category
    position: list[float]  # [x, y, z] centre of the bounding box's bottom face
    yaw: float
    size: list[float]  # [sx, sy, sz] axis-aligned extents before yaw
    color: list[float]  # [r, g, b] in [0, 1]
    room: int
    receptacle: int | None = None  # id of the furniture it rests on


@dataclass
class SceneSpec:
    seed: int
    name: str
    wall_height: float
    rooms: list[Room] = field(default_factory=list)
    walls: list[Wall] = field(default_factory=list)
    doors: list[Door] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    version: int = SCHEMA_VERSION

    # -- queries used by tasks -------------------------------------------------------------
    def item(self, item_id: int) -> Item:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(f"scene {self.name} has no item with id {item_id}")

    def objects(self) -> list[Item]:
        return [it for it in self.items if it.kind == "object"]

    def furniture(self) -> list[Item]:
        return [it for it in self.items if it.kind == "furniture"]

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float):
                return _r(v)
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "SceneSpec":
        if not isinstance(d, dict):
            raise SceneFormatError(f"{source}: expected a JSON object, got {type(d).__name__}")
        version = d.get("version")
        if version != SCHEMA_VERSION:
            raise SceneFormatError(
                f"{source}: SceneSpec version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        _check_fields(cls, d, source, "", skip=("rooms", "walls", "doors", "items"))
        parts = {}
        for key, part_cls in (("rooms", Room), ("walls", Wall), ("doors", Door), ("items", Item)):
            if key not in d:
                raise SceneFormatError(f"{source}: missing field '{key}'")
            if not isinstance(d[key], list):
                raise SceneFormatError(f"{source}: {key}: {_kind(d[key])}; expected a list")
            for i, x in enumerate(d[key]):
                _check_fields(part_cls, x, source, f"{key}[{i}].")
            parts[key] = [part_cls(**x) for x in d[key]]
        spec = cls(seed=d["seed"], name=d["name"], wall_height=float(d["wall_height"]), version=version, **parts)
        if not spec.rooms:
            raise SceneFormatError(f"{source}: rooms: empty; a scene needs at least one room (its floor)")
        for i, r in enumerate(spec.rooms):
            if r.type not in ROOM_TYPES:
                raise SceneFormatError(f"{source}: rooms[{i}].type: {r.type!r}; allowed: {', '.join(ROOM_TYPES)}")
            if len(r.polygon) < 3:
                raise SceneFormatError(f"{source}: rooms[{i}].polygon: {len(r.polygon)} points; expected >= 3")
        for i, x in enumerate(spec.doors):
            if x.axis not in ("x", "y"):
                raise SceneFormatError(f"{source}: doors[{i}].axis: {x.axis!r}; allowed: x, y")
        from embodied.world.library import FURNITURE_CATEGORIES, OBJECT_CATEGORIES  # it imports trimesh

        categories = {"furniture": FURNITURE_CATEGORIES, "object": OBJECT_CATEGORIES}
        for i, it in enumerate(spec.items):
            if it.kind not in ITEM_KINDS:
                raise SceneFormatError(f"{source}: items[{i}].kind: {it.kind!r}; allowed: {', '.join(ITEM_KINDS)}")
            if it.category not in categories[it.kind]:
                raise SceneFormatError(f"{source}: items[{i}].category: unknown {it.kind} category {it.category!r}; "
                                       f"allowed: {', '.join(categories[it.kind])}")
        ids = [i.id for i in spec.items]
        if len(ids) != len(set(ids)) or any(i < 1 for i in ids):
            raise SceneFormatError(f"{source}: item ids must be unique and >= 1")
        for i, it in enumerate(spec.items):
            if it.receptacle is not None and it.receptacle not in ids:
                raise SceneFormatError(f"{source}: items[{i}].receptacle: {it.receptacle}; no item has that id")
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "SceneSpec":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise SceneFormatError(f"{path}: no such scene file") from None
        except json.JSONDecodeError as e:
            raise SceneFormatError(f"{path}: not valid JSON ({e})") from None
        except UnicodeDecodeError:
            raise SceneFormatError(f"{path}: not a text (JSON) file") from None
        except OSError as e:
            raise SceneFormatError(f"{path}: cannot read the scene file ({e.strerror or e})") from None
        return cls.from_dict(d, source=str(path))


# What each field annotation of the dataclasses above must hold in the JSON; list lengths by (class, field).
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, float) and math.isfinite(v)) or _is_int(v)


def _is_numbers(v, n: int | None = None) -> bool:
    return isinstance(v, list) and (n is None or len(v) == n) and all(_is_number(x) for x in v)


_FIELD_CHECKS = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int | None": (lambda v: v is None or _is_int(v), "an integer or null"),
    "list[int]": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "list[float]": (_is_numbers, "a list of finite numbers"),
    "list[list[float]]": (lambda v: isinstance(v, list) and all(_is_numbers(p, 2) for p in v),
                          "a list of [x, y] points"),
}
_LENGTHS = {("Wall", "start"): 2, ("Wall", "end"): 2, ("Door", "rooms"): 2, ("Door", "position"): 2,
            ("Item", "position"): 3, ("Item", "size"): 3, ("Item", "color"): 3}


def _kind(v) -> str:
    return "null" if v is None else f"{type(v).__name__} {json.dumps(v)[:40]}"


def _check_fields(cls, d, source: str, where: str, skip: tuple[str, ...] = ()) -> None:
    """Raise SceneFormatError naming the first missing, unknown or mistyped field of `d`."""
    if not isinstance(d, dict):
        raise SceneFormatError(f"{source}: {where[:-1] or 'scene'}: {_kind(d)}; expected a JSON object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise SceneFormatError(f"{source}: {where}{unknown[0]}: unknown field; allowed: {', '.join(known)}")
    for name, f in known.items():
        if name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SceneFormatError(f"{source}: missing field '{where}{name}'")
            continue
        if name in skip or name == "version":
            continue
        ok, what = _FIELD_CHECKS[f.type]
        v, n = d[name], _LENGTHS.get((cls.__name__, name))
        if not ok(v) or (n is not None and len(v) != n):
            what = f"{what} of length {n}" if n is not None else what
            raise SceneFormatError(f"{source}: {where}{name}: {_kind(v)}; expected {what}")
