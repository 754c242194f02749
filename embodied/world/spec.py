"""SceneSpec: the versioned, JSON-serialisable description of one scene.

Coordinates: metres, right-handed, z up, floor at z = 0. Yaw is the rotation about +z,
counter-clockwise from +x. Everything a renderer, simulator or task needs is derived from a
SceneSpec (see `embodied.world.geometry.build_geometry`), so the JSON is the single source of
truth and the same seed gives the same bytes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embodied.config import InputError

SCHEMA_VERSION = 1
ROOM_TYPES = ("kitchen", "living_room", "bedroom", "bathroom", "corridor")


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
        try:
            spec = cls(
                seed=int(d["seed"]),
                name=str(d["name"]),
                wall_height=float(d["wall_height"]),
                rooms=[Room(**r) for r in d["rooms"]],
                walls=[Wall(**w) for w in d["walls"]],
                doors=[Door(**x) for x in d["doors"]],
                items=[Item(**i) for i in d["items"]],
                version=version,
            )
        except KeyError as e:
            raise SceneFormatError(f"{source}: missing field {e.args[0]!r}") from None
        except TypeError as e:
            raise SceneFormatError(f"{source}: bad field: {e}") from None
        for r in spec.rooms:
            if r.type not in ROOM_TYPES:
                raise SceneFormatError(f"{source}: room {r.id} has type {r.type!r}; allowed: {ROOM_TYPES}")
        ids = [i.id for i in spec.items]
        if len(ids) != len(set(ids)) or any(i < 1 for i in ids):
            raise SceneFormatError(f"{source}: item ids must be unique and >= 1")
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
        return cls.from_dict(d, source=str(path))
