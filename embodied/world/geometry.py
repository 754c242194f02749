"""SceneGeometry: triangle meshes with per-part colour, semantic class and instance id.

This is the contract between the world layer and everything that draws or collides:
the renderer and the navigation simulator consume a SceneGeometry and nothing else, so a
procedural apartment and a user's scanned mesh look the same to them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Semantic class ids. 0 means "nothing" (sky / miss). Structure classes come first, then
# furniture and object categories in the order the object library registers them.
STRUCTURE_CLASSES = ("void", "floor", "wall", "ceiling", "door_frame", "mesh")


@dataclass
class MeshPart:
    name: str
    vertices: np.ndarray  # [V, 3] float32, metres, z up
    faces: np.ndarray  # [F, 3] int32
    color: tuple[float, float, float]  # rgb in [0, 1]
    semantic: int  # index into SceneGeometry.semantic_classes
    instance: int  # SceneSpec item id; 0 for structure
    movable: bool = False  # small objects that can be carried: the renderer keeps them apart
    vertex_colors: np.ndarray | None = None  # optional [V, 3] in [0, 1] (scanned meshes)


@dataclass
class SceneGeometry:
    parts: list[MeshPart]
    semantic_classes: list[str] = field(default_factory=lambda: list(STRUCTURE_CLASSES))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.concatenate([p.vertices for p in self.parts])
        return v.min(0), v.max(0)

    def class_id(self, name: str) -> int:
        return self.semantic_classes.index(name)

    def num_triangles(self) -> int:
        return int(sum(len(p.faces) for p in self.parts))
