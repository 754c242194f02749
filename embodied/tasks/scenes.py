"""Scene sources for tasks: pinned splits, procedural apartments, or a user's file.

A `NavScene` bundles what an episode needs from one scene (spec, geometry, renderer, navigable
grid). Building one costs tens of milliseconds to a second, so envs keep a small LRU cache.
"""
from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied.render import RaycastRenderer
from embodied.sim import NavigableGrid
from embodied.world import build_geometry, generate_apartment, load_mesh_scene, load_split, pinned_scene
from embodied.world.geometry import SceneGeometry
from embodied.world.spec import SceneFormatError, SceneSpec

SPLITS = ("train", "val", "test")
# Scenes built in this process, shared by every SceneSource (the envs of one worker walk the same
# split and would each build every scene, ~0.3 s apiece). Weak: a scene lives as long as some env's
# LRU cache holds it. Nav scenes are read-only once built (the renderer's objects are never moved).
_BUILT: "weakref.WeakValueDictionary[tuple, NavScene]" = weakref.WeakValueDictionary()
MESH_SUFFIXES = (".glb", ".gltf", ".ply", ".obj")
# Points inside an item's box, as fractions of its size in its own frame (z from its bottom face): a
# view point must see one of them. A 3 x 3 grid at mid height and near the top, so a thing on a high
# shelf of which the camera sees only the upper edge counts, as it counts for a detector.
VIEW_TARGETS = tuple((x, y, z) for z in (0.5, 0.95) for x in (0.0, -0.4, 0.4) for y in (0.0, -0.4, 0.4))


@dataclass
class NavScene:
    key: str
    spec: SceneSpec | None  # None for raw meshes (no rooms or objects known)
    geometry: SceneGeometry
    renderer: RaycastRenderer
    grid: NavigableGrid
    goal_pools: dict = field(default_factory=dict)  # pool size -> [N, 2] goal points (nav/pointnav goal_pool)
    view_masks: dict = field(default_factory=dict)  # (instance, radius, eye height) -> view_cells mask

    def view_cells(self, items, radius: float, eye_height: float) -> np.ndarray:
        """[ny, nx] bool: the view points of object instances (habitat ObjectNav's rule): navigable
        cells within `radius` of an item's footprint from which an eye `eye_height` above the floor
        sees that item, i.e. the segment to one of VIEW_TARGETS points inside its box meets the item
        first or nothing at all. A cell beside the item behind a wall, or behind a wardrobe, is not one."""
        out = np.zeros(self.grid.shape, bool)
        for item in items:
            key = (item.id, float(radius), float(eye_height))
            mask = self.view_masks.get(key)
            if mask is None:
                mask = self.view_masks[key] = self._view_cells(item, radius, eye_height)
            out |= mask
        return out

    def _view_cells(self, item, radius: float, eye_height: float) -> np.ndarray:
        grid = self.grid
        near = grid.goal_cells_near_footprints([(item.position[:2], item.size[:2], item.yaw)], radius)
        rc = np.argwhere(near)
        if not len(rc):
            return near
        xy = grid.grid_to_world(rc)
        eyes = np.c_[xy, grid.floor_height[rc[:, 0], rc[:, 1]].astype(np.float64) + eye_height]
        eyes[:, 2] = np.where(np.isfinite(eyes[:, 2]), eyes[:, 2], eye_height)
        c, s = np.cos(item.yaw), np.sin(item.yaw)
        local = np.asarray(VIEW_TARGETS) * np.asarray(item.size, np.float64)
        targets = np.c_[np.asarray(item.position[:2]) + local[:, :2] @ np.array([[c, s], [-s, c]]),
                        item.position[2] + local[:, 2]]
        sees = np.zeros(len(rc), bool)
        for t in targets:  # the centre first: most cells see it, and the others cast only where it is hidden
            left = np.flatnonzero(~sees)
            if not len(left):
                break
            hit = self.renderer.first_instance(eyes[left], np.broadcast_to(t, (len(left), 3)))
            sees[left] |= (hit == item.id) | (hit == -1)
        near[rc[~sees, 0], rc[~sees, 1]] = False
        return near


class SceneSource:
    """Picks the scene of each episode and caches built scenes."""

    def __init__(self, scenes: str, n_rooms: int | None, agent_radius: float, agent_height: float,
                 cache_size: int, max_depth: float = 10.0) -> None:
        self.max_depth = max_depth
        # Env worker processes set this to 1: one ray-casting thread per worker beats oversubscription.
        self.render_threads = int(os.environ.get("EMBODIED_RENDER_THREADS", "0"))
        self.scenes, self.n_rooms = scenes, n_rooms
        self.agent_radius, self.agent_height = agent_radius, agent_height
        self.cache: OrderedDict[str, NavScene] = OrderedDict()
        self.cache_size = cache_size
        self.specs: list[SceneSpec] | None = None
        self.path: Path | None = None
        if scenes in SPLITS:
            self.specs = load_split(scenes)
            if not self.specs:
                raise SceneFormatError(f"scene split {scenes!r} is empty")
        elif scenes != "procedural":
            self.path = Path(scenes)
            if not self.path.exists():
                raise SceneFormatError(
                    f"{scenes}: no such scene file (task.scenes takes {', '.join(SPLITS)}, procedural, "
                    f"or a path to a SceneSpec .json or a mesh {'/'.join(MESH_SUFFIXES)})"
                )
            # A bad file fails now, at construction, not at the first reset.
            self.sample(np.random.default_rng(0))

    def sample(self, rng: np.random.Generator) -> NavScene:
        if self.specs is not None:
            spec = self.specs[int(rng.integers(len(self.specs)))]
            return self._get(spec.name, lambda: spec)
        if self.path is None:
            seed = int(rng.integers(2**31 - 1))
            return self._get(f"procedural_{seed}", lambda: generate_apartment(seed, n_rooms=self.n_rooms))
        if self.path.suffix.lower() == ".json":
            return self._get(str(self.path), lambda: SceneSpec.load(self.path))
        if self.path.suffix.lower() in MESH_SUFFIXES:
            return self._get(str(self.path), None)
        raise SceneFormatError(f"{self.path}: unsupported scene file type; use .json or {'/'.join(MESH_SUFFIXES)}")

    def named(self, name: str) -> NavScene:
        """The scene a name refers to (an episode file's scene_id stem): the file of `task.scenes` when
        its stem is `name`, else the pinned apartment of that name (any split). SceneFormatError when
        neither exists."""
        if self.path is not None and self.path.stem == name:
            return self.sample(np.random.default_rng(0))
        try:
            spec = pinned_scene(name)
        except ValueError:
            where = f"nor the stem of task.scenes ({self.path.name})" if self.path is not None else \
                "(a scene of your own: set task.scenes to its file)"
            raise SceneFormatError(f"{name}: not a pinned apartment {where}") from None
        return self._get(spec.name, lambda: spec)

    def prebuild(self) -> int:
        """Build every scene of a pinned split (up to the cache size) now, so that later resets
        never pay a first-visit build; returns how many scenes are cached. Procedural scenes are
        new every episode and a file is built at construction: nothing to do for them."""
        if self.specs is not None:
            for spec in self.specs[: self.cache_size]:
                self._get(spec.name, lambda spec=spec: spec)
        return len(self.cache)

    def _get(self, key: str, make_spec) -> NavScene:
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        shared_key = (key, self.n_rooms, self.agent_radius, self.agent_height, self.max_depth, self.render_threads)
        scene = _BUILT.get(shared_key)
        if scene is None:
            scene = self._build(key, make_spec)
            _BUILT[shared_key] = scene
        self.cache[key] = scene
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return scene

    def _build(self, key: str, make_spec) -> NavScene:
        if make_spec is None:
            spec, geometry = None, load_mesh_scene(self.path)
        else:
            spec = make_spec()
            geometry = build_geometry(spec)
        try:
            grid = NavigableGrid.from_geometry(geometry, agent_radius=self.agent_radius, agent_height=self.agent_height)
        except ValueError as e:  # the scene's geometry (the agent's options were checked by the task config)
            raise SceneFormatError(f"{key}: {e}") from None
        if not grid.navigable.any():
            raise SceneFormatError(
                f"{key}: no navigable floor for an agent of radius {self.agent_radius} m and height "
                f"{self.agent_height} m (a mesh needs a level floor at its lowest point with that much room above "
                "it; is its up axis right?)")
        return NavScene(key, spec, geometry, RaycastRenderer(geometry, nthreads=self.render_threads, max_depth=self.max_depth),
                        grid)
