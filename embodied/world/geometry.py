"""SceneGeometry: triangle meshes with per-part colour, semantic class and instance id.

This is the contract between the world layer and everything that draws or collides:
the renderer and the navigation simulator consume a SceneGeometry and nothing else, so a
procedural apartment and a user's scanned mesh look the same to them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied.world.spec import SceneFormatError

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
    ground_shift: float = 0.0  # metres subtracted from the source file's up coordinate (load_mesh_scene, ground=True)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.concatenate([p.vertices for p in self.parts])
        return v.min(0), v.max(0)

    def class_id(self, name: str) -> int:
        return self.semantic_classes.index(name)

    def num_triangles(self) -> int:
        return int(sum(len(p.faces) for p in self.parts))


# ----------------------------------------------------------------------------------------------
# Building geometry from a SceneSpec, GLB export, and loading external meshes (scans).

FLOOR_COLORS = {  # by room type
    "kitchen": (0.78, 0.76, 0.70),
    "living_room": (0.62, 0.45, 0.30),
    "bedroom": (0.70, 0.55, 0.40),
    "bathroom": (0.80, 0.85, 0.88),
    "corridor": (0.55, 0.52, 0.48),
}
WALL_COLOR = (0.90, 0.88, 0.84)
DOOR_FRAME_COLOR = (0.45, 0.32, 0.22)
DOOR_HEIGHT = 2.1  # the lintel over every door opening starts here
DEFAULT_MESH_COLOR = (0.7, 0.7, 0.7)


def _box_arrays(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and outward-facing triangles of an axis-aligned box."""
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], np.float32)
    v = lo + corners * (hi - lo)
    f = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
                  [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]], np.int32)
    return v, f


def _wall_parts(spec, wall, index: int, wall_id: int, frame_id: int) -> list[MeshPart]:
    (sx, sy), (ex, ey) = wall.start, wall.end
    along_x = abs(ey - sy) < 1e-9
    t, h = wall.thickness, wall.height
    a, b = (min(sx, ex), max(sx, ex)) if along_x else (min(sy, ey), max(sy, ey))
    c = sy if along_x else sx
    axis = "x" if along_x else "y"
    # extend by half a thickness so walls meeting at a corner close it
    lo_end, hi_end = a - t / 2, b + t / 2
    openings = sorted(
        (d.position[0] if along_x else d.position[1], d.width)
        for d in spec.doors
        if d.axis == axis and abs((d.position[1] if along_x else d.position[0]) - c) < 1e-4
        and a - 1e-6 <= (d.position[0] if along_x else d.position[1]) <= b + 1e-6
    )
    solid, lintels, cursor = [], [], lo_end
    for centre, width in openings:
        solid.append((cursor, centre - width / 2))
        lintels.append((centre - width / 2, centre + width / 2))
        cursor = centre + width / 2
    solid.append((cursor, hi_end))

    def box(u0, u1, z0, z1):
        if along_x:
            return _box_arrays((u0, c - t / 2, z0), (u1, c + t / 2, z1))
        return _box_arrays((c - t / 2, u0, z0), (c + t / 2, u1, z1))

    parts = []
    for k, (u0, u1) in enumerate(solid):
        if u1 - u0 > 1e-6:
            v, f = box(u0, u1, 0.0, h)
            parts.append(MeshPart(f"wall_{index}_{k}", v, f, WALL_COLOR, wall_id, 0))
    for k, (u0, u1) in enumerate(lintels):
        if h > DOOR_HEIGHT:
            v, f = box(u0, u1, DOOR_HEIGHT, h)
            parts.append(MeshPart(f"lintel_{index}_{k}", v, f, DOOR_FRAME_COLOR, frame_id, 0))
    return parts


def item_part(item, class_id: int) -> MeshPart:
    """The mesh of one SceneSpec item (furniture or object) in world coordinates."""
    from embodied.world import library  # library imports this module: import when used

    verts, faces, cols = library.exemplar_arrays(item.category, item.exemplar)
    ex_size = np.maximum(np.asarray(library.build_exemplar(item.category, item.exemplar).size), 1e-9)
    scale = np.asarray(item.size, float) / ex_size  # 1 for generated scenes; honours edited sizes
    c, s = np.cos(item.yaw), np.sin(item.yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    v = (verts * scale) @ rot.T + np.asarray(item.position, float)
    color = tuple(float(x) for x in item.color)
    vcols = cols.copy()
    vcols[library.primary_vertex_mask(item.category, item.exemplar)] = color
    return MeshPart(
        name=f"{item.category}_{item.id}", vertices=v.astype(np.float32), faces=faces.copy(), color=color,
        semantic=class_id, instance=item.id, movable=item.kind == "object", vertex_colors=vcols.astype(np.float32),
    )


def build_geometry(spec) -> SceneGeometry:
    """Triangle meshes of a SceneSpec: a floor quad per room, walls with door openings (and a
    'door_frame' lintel above each), then one part per item (instance = item id). No ceiling."""
    from embodied.world import library

    classes = list(library.semantic_classes())
    floor_id, wall_id, frame_id = classes.index("floor"), classes.index("wall"), classes.index("door_frame")
    parts: list[MeshPart] = []
    for room in spec.rooms:
        xy = np.asarray(room.polygon, np.float32)
        lo, hi = xy.min(0), xy.max(0)
        v = np.array([[lo[0], lo[1], 0], [hi[0], lo[1], 0], [hi[0], hi[1], 0], [lo[0], hi[1], 0]], np.float32)
        f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)  # counter-clockwise from above: normal +z
        parts.append(MeshPart(f"floor_{room.id}", v, f, FLOOR_COLORS.get(room.type, FLOOR_COLORS["corridor"]),
                              floor_id, 0))
    for i, wall in enumerate(spec.walls):
        parts += _wall_parts(spec, wall, i, wall_id, frame_id)
    for item in spec.items:
        if item.category not in classes:
            raise SceneFormatError(f"scene {spec.name}: item {item.id} has unknown category {item.category!r}")
        parts.append(item_part(item, classes.index(item.category)))
    return SceneGeometry(parts=parts, semantic_classes=classes)


# glTF is y-up; our scenes are z-up. These rotate between the two (right-handed, no mirroring).
_Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # (x, y, z) -> (x, z, -y)
_Y_UP_TO_Z_UP = _Z_UP_TO_Y_UP.T  # (x, y, z) -> (x, -z, y)


def export_glb(spec_or_geometry, path) -> Path:
    """Write a SceneSpec or SceneGeometry as a binary glTF (y-up, as glTF requires) with vertex
    colours, one node per MeshPart named after it. Returns the path."""
    import trimesh

    from embodied.world.spec import SceneSpec

    geom = build_geometry(spec_or_geometry) if isinstance(spec_or_geometry, SceneSpec) else spec_or_geometry
    if not isinstance(geom, SceneGeometry):
        raise ValueError(f"export_glb expects a SceneSpec or SceneGeometry, got {type(spec_or_geometry).__name__}")
    scene = trimesh.Scene()
    for part in geom.parts:
        cols = part.vertex_colors if part.vertex_colors is not None else np.tile(part.color, (len(part.vertices), 1))
        rgba = np.c_[np.clip(np.asarray(cols) * 255, 0, 255), np.full(len(cols), 255)].astype(np.uint8)
        mesh = trimesh.Trimesh(np.asarray(part.vertices, np.float64) @ _Z_UP_TO_Y_UP.T, part.faces,
                               vertex_colors=rgba, process=False)
        scene.add_geometry(mesh, geom_name=part.name, node_name=part.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scene.export(file_type="glb"))
    return path


_MESH_SUFFIXES = {".glb": "y", ".gltf": "y", ".obj": "y", ".ply": "z", ".stl": "z", ".off": "z"}


def load_mesh_scene(path, up_axis: str = "auto", ground: bool = True) -> SceneGeometry:
    """Load an external mesh (a user's scan or a GLB we exported) as a SceneGeometry.

    up_axis: 'y' or 'z', the file's up direction; 'auto' means 'y' for .glb/.gltf/.obj (the glTF
        convention and most OBJ exporters) and 'z' for .ply/.stl/.off (most scanners). y-up files
        are rotated to our z-up frame.
    ground: shift the scene vertically so its lowest point is at z = 0 (our floor height); the shift
        is kept as `ground_shift`, so coordinates given in the file's frame (habitat episodes) convert.
    Every geometry becomes one MeshPart with semantic class 'mesh' and instance 0, keeping vertex
    colours when the file has them (textures are baked to vertex colours when trimesh can).
    Raises SceneFormatError naming the file when it cannot be read or holds no triangles.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _MESH_SUFFIXES:
        raise SceneFormatError(f"{path}: unsupported mesh format {suffix!r}; supported: {sorted(_MESH_SUFFIXES)}")
    if up_axis not in ("auto", "y", "z"):
        raise ValueError(f"up_axis must be 'auto', 'y' or 'z', got {up_axis!r}")
    if not path.is_file():
        raise SceneFormatError(f"{path}: no such mesh file")
    up = _MESH_SUFFIXES[suffix] if up_axis == "auto" else up_axis
    try:
        loaded = trimesh.load(str(path), force="scene")
        meshes = [(name, m) for name, m in _scene_meshes(loaded)]
    except Exception as e:  # trimesh raises many types on corrupt input
        raise SceneFormatError(f"{path}: cannot read mesh ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    meshes = [(n, m) for n, m in meshes if len(m.faces) > 0]
    if not meshes:
        raise SceneFormatError(f"{path}: file holds no triangles")
    classes = list(STRUCTURE_CLASSES)
    mesh_id = classes.index("mesh")
    parts = []
    for name, m in meshes:
        v = np.asarray(m.vertices, np.float64)
        if up == "y":
            v = v @ _Y_UP_TO_Z_UP.T
        vcols = _vertex_colors(m)
        color = tuple(float(x) for x in vcols.mean(0)) if vcols is not None else DEFAULT_MESH_COLOR
        parts.append(MeshPart(str(name), v.astype(np.float32), np.asarray(m.faces, np.int32), color, mesh_id, 0,
                              vertex_colors=vcols))
    z0 = 0.0
    if ground:
        z0 = min(float(p.vertices[:, 2].min()) for p in parts)
        for p in parts:
            p.vertices[:, 2] -= z0
    return SceneGeometry(parts=parts, semantic_classes=classes, ground_shift=z0)


def _scene_meshes(loaded):
    import trimesh

    if isinstance(loaded, trimesh.Trimesh):
        return [("mesh", loaded)]
    out = []
    for node in loaded.graph.nodes_geometry:  # world transforms applied, one entry per instance
        transform, geom_name = loaded.graph[node]
        geom = loaded.geometry[geom_name]
        if isinstance(geom, trimesh.Trimesh):
            m = geom.copy()
            m.apply_transform(transform)
            out.append((node, m))
    return out


def _vertex_colors(mesh) -> np.ndarray | None:
    visual = mesh.visual
    try:
        if visual.kind == "texture":
            visual = visual.to_color()
        if visual.kind == "vertex":
            return (np.asarray(visual.vertex_colors)[:, :3] / 255.0).astype(np.float32)
        if visual.kind == "face":
            fc = np.asarray(visual.face_colors)[:, :3] / 255.0
            vc = np.zeros((len(mesh.vertices), 3))
            cnt = np.zeros(len(mesh.vertices))
            for k in range(3):
                np.add.at(vc, mesh.faces[:, k], fc)
                np.add.at(cnt, mesh.faces[:, k], 1)
            return (vc / np.maximum(cnt, 1)[:, None]).astype(np.float32)
    except Exception:  # a visual trimesh cannot convert: keep the default colour
        return None
    return None
