"""Throughput of RaycastRenderer: frames/s for RGB + depth + semantic at several image sizes.

`python -m embodied.render.bench` prints JSON for a synthetic ~80k-triangle room (boxes and
spheres), so the figure does not depend on the world generator.
"""
from __future__ import annotations

import json
import time

import numpy as np
import trimesh

from embodied.render.raycast import Camera, RaycastRenderer
from embodied.world.geometry import MeshPart, SceneGeometry


def synthetic_scene(
    seed: int = 0, room: float = 8.0, target_triangles: int = 80_000, movable_objects: int = 16
) -> SceneGeometry:
    """A walled room with furniture-like boxes and spheres (about `target_triangles` triangles)
    and `movable_objects` small movable spheres on the floor."""
    rng = np.random.default_rng(seed)
    parts: list[MeshPart] = []

    def add(mesh: trimesh.Trimesh, color, semantic: int, instance: int, movable: bool = False):
        parts.append(
            MeshPart(
                name=f"part{len(parts)}",
                vertices=np.asarray(mesh.vertices, np.float32),
                faces=np.asarray(mesh.faces, np.int32),
                color=tuple(float(c) for c in color),
                semantic=semantic,
                instance=instance,
                movable=movable,
            )
        )

    h = 2.6
    add(trimesh.creation.box((room, room, 0.1)).apply_translation((room / 2, room / 2, -0.05)), (0.6, 0.5, 0.4), 1, 0)
    add(trimesh.creation.box((room, room, 0.1)).apply_translation((room / 2, room / 2, h + 0.05)), (0.9, 0.9, 0.9), 3, 0)
    for x, y, sx, sy in [(room / 2, 0, room, 0.1), (room / 2, room, room, 0.1), (0, room / 2, 0.1, room), (room, room / 2, 0.1, room)]:
        add(trimesh.creation.box((sx, sy, h)).apply_translation((x, y, h / 2)), (0.85, 0.8, 0.75), 2, 0)
    classes = ["void", "floor", "wall", "ceiling", "door_frame", "mesh", "table", "ball", "cup"]
    instance = 1
    for _ in range(movable_objects):  # small carryable things: few triangles each
        centre = rng.uniform(0.5, room - 0.5, 2)
        r = rng.uniform(0.05, 0.15)
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=r).apply_translation((*centre, r))
        add(mesh, rng.uniform(0.2, 1, 3), 8, instance, movable=True)
        instance += 1
    while sum(len(p.faces) for p in parts) < target_triangles:
        centre = rng.uniform(0.5, room - 0.5, 2)
        if rng.random() < 0.5:
            size = rng.uniform(0.3, 1.2, 3)
            mesh = trimesh.creation.box(size).apply_translation((*centre, size[2] / 2))
            add(mesh, rng.uniform(0.2, 1, 3), 6, instance)
        else:
            r = rng.uniform(0.1, 0.4)
            mesh = trimesh.creation.icosphere(subdivisions=4, radius=r).apply_translation((*centre, r))
            add(mesh, rng.uniform(0.2, 1, 3), 7, instance)
        instance += 1
    return SceneGeometry(parts=parts, semantic_classes=classes)


def _poses(geometry: SceneGeometry, n: int, seed: int) -> np.ndarray:
    lo, hi = geometry.bounds()
    rng = np.random.default_rng(seed)
    xy = rng.uniform(lo[:2] + 0.5, hi[:2] - 0.5, (n, 2))
    return np.column_stack([xy, np.zeros(n), rng.uniform(-np.pi, np.pi, n)])


def bench_render(
    geometry: SceneGeometry,
    sizes=(64, 128),
    frames: int = 300,
    outputs=("rgb", "depth", "semantic"),
    batch: int = 1,
    nthreads: int = 0,
    move_objects: bool = False,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Frames/s per image size (best of `repeats` passes over `frames` poses), with a bare
    `cast_rays` of the same rays as the baseline. batch=1 times `render_one` calls (one env
    worker's pattern); batch>1 times `render` with that many poses per call. move_objects=True first moves every
    movable object 5 cm, so they are drawn from the dynamic scene (the cost of moved objects).
    Returns {"64": fps, ...} plus the settings."""
    renderer = RaycastRenderer(geometry, nthreads=nthreads)
    if move_objects:
        shift = np.eye(4)
        shift[0, 3] = 0.05
        for instance in renderer.movable_instances:
            renderer.set_object_pose(instance, shift)
    result = {
        "triangles": geometry.num_triangles(),
        "movable_parts": sum(p.movable for p in geometry.parts),
        "move_objects": move_objects,
        "batch": batch,
        "nthreads": nthreads,
        "outputs": list(outputs),
    }
    for size in sizes:
        cam = Camera(width=size, height=size)
        calls = max(1, frames // batch)
        poses = _poses(geometry, calls * batch, seed).reshape(calls, batch, 4)
        renderer.render(poses[0], cam, outputs)  # warm-up: ray cache, lazy BVH commit
        setup = renderer._setup(batch, (cam,))
        fps = raw = 0.0
        for _ in range(repeats):  # best of `repeats`: the least disturbed by other processes
            start = time.perf_counter()
            for p in poses:
                if batch == 1:
                    renderer.render_one(p[0], cam, outputs)
                else:
                    renderer.render(p, cam, outputs)
            fps = max(fps, calls * batch / (time.perf_counter() - start))
            # baseline in the same run: placing the rays and a bare cast on the static scene
            start = time.perf_counter()
            for p in poses:
                setup.place(p)
                renderer._static.cast_rays(setup.rays, nthreads=nthreads)
            raw = max(raw, calls * batch / (time.perf_counter() - start))
        result[str(size)] = round(fps, 1)
        result[f"{size}_raw_cast"] = round(raw, 1)
        result[f"{size}_ratio_to_raw"] = round(fps / raw, 3)
    return result


if __name__ == "__main__":
    geo = synthetic_scene()
    runs = {
        "single": bench_render(geo, frames=1000),
        "single_moved_objects": bench_render(geo, frames=1000, move_objects=True),
        "batch16": bench_render(geo, frames=1024, batch=16),
    }
    print(json.dumps(runs, indent=1))
