"""World layer: procedural apartments and objects -> SceneSpec (JSON) -> SceneGeometry (meshes)."""
from embodied.world.apartment import generate_apartment
from embodied.world.geometry import (
    STRUCTURE_CLASSES,
    MeshPart,
    SceneGeometry,
    build_geometry,
    export_glb,
    load_mesh_scene,
)
from embodied.world.library import (
    COLOUR_NAMES,
    FURNITURE_CATEGORIES,
    HELD_OUT_CATEGORIES,
    OBJECT_CATEGORIES,
    RECEPTACLE_CATEGORIES,
    build_exemplar,
    category_size_range,
    category_split,
    colour_name,
    exemplar_split,
    sample_exemplar,
    semantic_classes,
)
from embodied.world.scenes import load_split, pinned_scene, scenes_root, split_names, write_scenes
from embodied.world.spec import SCHEMA_VERSION, Door, Item, Room, SceneFormatError, SceneSpec, Wall

__all__ = [
    "COLOUR_NAMES", "FURNITURE_CATEGORIES", "HELD_OUT_CATEGORIES", "OBJECT_CATEGORIES", "RECEPTACLE_CATEGORIES",
    "SCHEMA_VERSION", "STRUCTURE_CLASSES", "Door", "Item", "MeshPart", "Room", "SceneFormatError",
    "SceneGeometry", "SceneSpec", "Wall", "build_exemplar", "build_geometry", "category_size_range",
    "category_split", "colour_name", "exemplar_split", "export_glb", "generate_apartment", "load_mesh_scene",
    "load_split", "pinned_scene", "sample_exemplar", "scenes_root", "semantic_classes", "split_names",
    "write_scenes",
]
