"""Fast-mapping's observation renderers: the symbolic map (`task.scenes: symbolic`, an egocentric
top-down tile map) and the room renderer (`task.scenes: room`, the room built as a SceneSpec and ray
cast first-person), each a function of the lattice."""
from __future__ import annotations

import math
import os

import numpy as np

from embodied.render import Camera, RaycastRenderer
from embodied.tasks.config import FastMapConfig
from embodied.tasks.fastmap.layout import Lattice
from embodied.tasks.fastmap.spec import CELL, HEADINGS, TRAY_CATEGORY
from embodied.world import OBJECT_CATEGORIES, build_geometry
from embodied.world.library import build_exemplar
from embodied.world.spec import Item, Room, SceneSpec, Wall

HOLD_DISTANCE, HOLD_DROP = 0.5, 0.45  # a held object sits this far ahead of and below the camera, metres
OBJECT_INSTANCE = 10  # instance id of object k: OBJECT_INSTANCE + k


# --- symbolic map ---------------------------------------------------------------------------------------
def _glyphs() -> dict[str, np.ndarray]:
    masks = [m for m in range(512) if bin(m).count("1") in (4, 5) and m & 16]  # centre pixel always on
    order = np.random.default_rng(7).permutation(len(masks))
    return {c: np.array([(masks[order[i]] >> b) & 1 for b in range(9)], bool).reshape(3, 3)
            for i, c in enumerate(OBJECT_CATEGORIES)}


GLYPHS = _glyphs()
FLOOR_RGB = np.array([30, 30, 30], np.uint8)
WALL_RGB = np.array([128, 128, 128], np.uint8)
BED_RGB = np.array([150, 50, 60], np.uint8)
TRAY_RGB = np.array([50, 90, 170], np.uint8)
AGENT_RGB = np.array([230, 230, 90], np.uint8)


def object_symbol_colour(category: str, exemplar: int) -> np.ndarray:
    """The exemplar's primary colour, lifted away from the floor's darkness."""
    col = np.asarray(build_exemplar(category, exemplar).color, np.float64)
    return (70 + 185 * col).astype(np.uint8)


_GLYPH_CACHE: dict[tuple[str, int], np.ndarray] = {}


def glyph_mask(category: str, px: int) -> np.ndarray:
    """A category's 3x3 glyph resampled to a px x px tile."""
    key = (category, px)
    if key not in _GLYPH_CACHE:
        idx = (np.arange(px) * 3) // px
        _GLYPH_CACHE[key] = GLYPHS[category][np.ix_(idx, idx)]
    return _GLYPH_CACHE[key]


def symbolic_map(lattice: Lattice, px: int) -> np.ndarray:
    """Egocentric tile map: (2R-1)^2 cells centred on the agent, heading up, `px` pixels each."""
    v = 2 * lattice.room - 1
    img = np.empty((v, v, px, px, 3), np.uint8)
    img[:] = WALL_RGB
    dx, dy = HEADINGS[lattice.heading]
    rx, ry = dy, -dx  # the agent's right
    half = v // 2
    for row in range(v):
        fwd = half - row
        for col in range(v):
            right = col - half
            c = (lattice.agent[0] + fwd * dx + right * rx, lattice.agent[1] + fwd * dy + right * ry)
            if not lattice.inside(c):
                continue
            tile = img[row, col]
            fixture = lattice.fixture_at(c)
            tile[:] = BED_RGB if fixture == "bed" else TRAY_RGB if fixture == "tray" else FLOOR_RGB
            if fixture == "tray":
                tile[1:-1, 1:-1] = FLOOR_RGB
            i = lattice.object_at(c)
            if c == lattice.agent:
                # A held object is drawn as it looks on the floor, so recalling how it looked
                # when named is enough to find it again; an empty hand shows the agent's colour.
                i = lattice.held
                if i < 0:
                    tile[:] = AGENT_RGB
            if i >= 0:
                o = lattice.objects[i]
                tile[glyph_mask(o.category, px)] = o.colour
    return np.ascontiguousarray(img.transpose(0, 2, 1, 3, 4).reshape(v * px, v * px, 3))


# --- room renderer ----------------------------------------------------------------------------------------
def _render_threads() -> int:
    return int(os.environ.get("EMBODIED_RENDER_THREADS", "0"))


class RoomView:
    """The room (walls, bed, tray, objects) ray cast first-person. Objects are stored at the origin and
    posed with `set_object_pose`; fixtures are posed per layout, so the scene is rebuilt (`reset`)
    when the layout changes (once per episode)."""

    def __init__(self, cfg: FastMapConfig):
        self.cfg = cfg
        self.renderer: RaycastRenderer | None = None
        self.fixture_spec: SceneSpec | None = None

    def reset(self) -> None:
        """The fixtures moved: build the scene again at the next render."""
        self.renderer = None

    def render(self, lattice: Lattice, tilt: int, bed_exemplar: int, tray_exemplar: int) -> dict[str, np.ndarray]:
        """The configured sensors (`rgb`, `depth`, `semantic`) from the agent's cell and heading, the
        camera tilted by `tilt` steps of `tilt_angle`."""
        if self.renderer is None:
            self._build(lattice, bed_exemplar, tray_exemplar)
        if lattice.moved:
            self._pose_objects(lattice)
        pose = np.array([(lattice.agent[0] + 0.5) * CELL, (lattice.agent[1] + 0.5) * CELL, 0.0,
                         lattice.heading * math.pi / 2], np.float32)
        c = self.cfg
        cam = Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height,
                     tilt_deg=tilt * c.tilt_angle)
        out = self.renderer.render(pose[None], [cam], outputs=tuple(c.sensors))
        obs = {}
        if "rgb" in out:
            obs["rgb"] = out["rgb"][0, 0]
        if "depth" in out:
            obs["depth"] = out["depth"][0, 0][..., None]
        if "semantic" in out:
            obs["semantic"] = out["semantic"][0, 0].astype(np.int32)
        return obs

    def _build(self, lattice: Lattice, bed_exemplar: int, tray_exemplar: int) -> None:
        """Room + fixtures + objects as a SceneSpec built with the world layer's parts."""
        side = lattice.room * CELL
        items: list[Item] = []
        if lattice.fixtures:
            (b0, b1) = lattice.bed_cells
            along_x = b0[1] == b1[1]
            centre = [(b0[0] + b1[0] + 1) / 2 * CELL, (b0[1] + b1[1] + 1) / 2 * CELL, 0.0]
            bed_size = [2 * CELL * 0.92, CELL * 0.92, 0.45] if along_x else [CELL * 0.92, 2 * CELL * 0.92, 0.45]
            items.append(Item(1, "furniture", "bed", bed_exemplar, centre, 0.0, bed_size, [0.6, 0.2, 0.25], 0))
            tx, ty = lattice.tray_cell
            items.append(Item(2, "furniture", TRAY_CATEGORY, tray_exemplar, [(tx + 0.5) * CELL, (ty + 0.5) * CELL, 0.0],
                              0.0, [CELL * 0.7, CELL * 0.7, 0.12], [0.2, 0.35, 0.7], 0))
        for k, o in enumerate(lattice.objects):
            ex = build_exemplar(o.category, o.exemplar)
            scale = self.cfg.object_extent / max(ex.size)
            items.append(Item(OBJECT_INSTANCE + k, "object", o.category, o.exemplar, [0.0, 0.0, 0.0], 0.0,
                              [s * scale for s in ex.size], list(ex.color), 0))
        walls = [Wall([0, 0], [side, 0], 0.1, 1.5), Wall([side, 0], [side, side], 0.1, 1.5),
                 Wall([side, side], [0, side], 0.1, 1.5), Wall([0, side], [0, 0], 0.1, 1.5)]
        spec = SceneSpec(seed=0, name="fastmap_room", wall_height=1.5,
                         rooms=[Room(0, "bedroom", [[0, 0], [side, 0], [side, side], [0, side]])], walls=walls, items=items)
        self.fixture_spec = spec
        self.renderer = RaycastRenderer(build_geometry(spec), nthreads=_render_threads(), max_depth=self.cfg.max_depth,
                                        bake_movables=False)
        lattice.moved = True

    def _pose_objects(self, lattice: Lattice) -> None:
        heights = {"bed": 0.45, "tray": 0.12}
        for k, o in enumerate(lattice.objects):
            tf = np.eye(4)
            if k == lattice.held:
                # In the hand: in front of and below the camera, in view at the default tilt.
                dx, dy = HEADINGS[lattice.heading]
                tf[:3, 3] = [(lattice.agent[0] + 0.5) * CELL + HOLD_DISTANCE * dx,
                             (lattice.agent[1] + 0.5) * CELL + HOLD_DISTANCE * dy,
                             self.cfg.camera_height - HOLD_DROP]
            else:
                tf[:3, 3] = [(o.cell[0] + 0.5) * CELL, (o.cell[1] + 0.5) * CELL, heights.get(o.on, 0.0)]
            self.renderer.set_object_pose(OBJECT_INSTANCE + k, tf)
        lattice.moved = False
