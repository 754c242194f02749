"""Parametric object library: furniture and small-object categories, each with unlimited exemplars.

Every category is a small program over trimesh primitives (boxes, cylinders, cones, spheres,
tori, lathe profiles). `build_exemplar(category, exemplar_seed)` runs it with a numpy Generator
seeded by (category, exemplar_seed): the seed picks proportions, optional parts (a mug with or
without a handle, a table on four legs, a pedestal or trestles, a lamp shade that is a cone,
a drum or a dome) and colours. The same (category, seed) always gives the same mesh.

Local frame of an exemplar: metres, z up, the bounding box's bottom face centred on the origin
(so an item's `position` in a SceneSpec is where that point goes). Furniture faces -y: its back
is at +y, which the apartment generator puts against a wall. Receptacle furniture
(`RECEPTACLE_CATEGORIES`) has a flat top covering its whole footprint at the box's top height.

Splits (used by tasks for generalisation tests):

* **Category split** - `category_split("train")` gives the object categories seen in training,
  `category_split("held_out")` the fixed list `HELD_OUT_CATEGORIES` that training never sees.
* **Exemplar split** - exemplar seeds with `seed % 10 < 8` are training exemplars; seeds with
  `seed % 10 >= 8` are novel exemplars of known categories (`exemplar_split(seed)` says which,
  `sample_exemplar(rng, split)` draws one).

Semantic class ids are stable: `semantic_classes()` is STRUCTURE_CLASSES, then
FURNITURE_CATEGORIES, then OBJECT_CATEGORIES, each in the fixed order below.
"""
from __future__ import annotations

import colorsys
import functools
import zlib
from dataclasses import dataclass

import numpy as np
import trimesh
from trimesh import creation

from embodied.world.geometry import STRUCTURE_CLASSES

SECTIONS = 14  # lathe / cylinder sections: round enough at 64-128 px, cheap to ray cast

OBJECT_CATEGORIES = (
    "apple", "ball", "book", "bottle", "bowl", "box", "can", "candle", "clock", "cone", "cup",
    "hat", "keyboard", "lamp", "mug", "phone", "pillow", "plant", "plate", "pot", "shoe",
    "teapot", "toy_car", "vase",
)
FURNITURE_CATEGORIES = (
    "armchair", "bathtub", "bed", "cabinet", "chair", "coffee_table", "counter", "desk",
    "dresser", "fridge", "nightstand", "shelf", "sink", "sofa", "stove", "table", "toilet",
    "tv_stand", "wardrobe",
)
RECEPTACLE_CATEGORIES = (
    "cabinet", "coffee_table", "counter", "desk", "dresser", "nightstand", "shelf", "table",
    "tv_stand",
)
HELD_OUT_CATEGORIES = ("clock", "hat", "teapot", "toy_car")
EXEMPLAR_SPLITS = ("train", "test", "any")

# Typical bounding-box extents (sx, sy, sz) in metres: exemplars draw their proportions from
# this range; the built mesh may differ by a few percent (a handle, a lathe's polygonal rim).
_SIZE_RANGE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "apple": ((0.07, 0.07, 0.065), (0.10, 0.10, 0.09)),
    "ball": ((0.10, 0.10, 0.10), (0.24, 0.24, 0.24)),
    "book": ((0.14, 0.20, 0.02), (0.25, 0.32, 0.15)),  # a stack of one to three
    "bottle": ((0.06, 0.06, 0.18), (0.10, 0.10, 0.33)),
    "bowl": ((0.12, 0.12, 0.05), (0.24, 0.24, 0.11)),
    "box": ((0.10, 0.10, 0.06), (0.35, 0.30, 0.25)),
    "can": ((0.06, 0.06, 0.09), (0.08, 0.08, 0.16)),
    "candle": ((0.04, 0.04, 0.08), (0.10, 0.10, 0.25)),
    "clock": ((0.14, 0.06, 0.14), (0.30, 0.10, 0.32)),
    "cone": ((0.14, 0.14, 0.20), (0.30, 0.30, 0.45)),
    "cup": ((0.06, 0.06, 0.07), (0.09, 0.09, 0.13)),
    "hat": ((0.22, 0.22, 0.08), (0.36, 0.36, 0.20)),
    "keyboard": ((0.30, 0.10, 0.02), (0.46, 0.16, 0.04)),
    "lamp": ((0.15, 0.15, 0.30), (0.35, 0.35, 0.60)),
    "mug": ((0.07, 0.07, 0.08), (0.10, 0.10, 0.12)),
    "phone": ((0.07, 0.14, 0.008), (0.09, 0.17, 0.012)),
    "pillow": ((0.30, 0.30, 0.08), (0.55, 0.45, 0.16)),
    "plant": ((0.15, 0.15, 0.25), (0.35, 0.35, 0.65)),
    "plate": ((0.18, 0.18, 0.015), (0.28, 0.28, 0.03)),
    "pot": ((0.16, 0.16, 0.10), (0.28, 0.28, 0.20)),
    "shoe": ((0.09, 0.24, 0.08), (0.12, 0.31, 0.15)),
    "teapot": ((0.14, 0.14, 0.12), (0.22, 0.22, 0.20)),
    "toy_car": ((0.08, 0.15, 0.05), (0.14, 0.28, 0.10)),
    "vase": ((0.08, 0.08, 0.15), (0.20, 0.20, 0.45)),
    "armchair": ((0.70, 0.70, 0.75), (0.95, 0.90, 1.00)),
    "bathtub": ((1.40, 0.70, 0.50), (1.80, 0.85, 0.60)),
    "bed": ((0.95, 1.95, 0.80), (1.80, 2.15, 1.10)),
    "cabinet": ((0.50, 0.35, 0.70), (1.20, 0.55, 1.10)),
    "chair": ((0.40, 0.42, 0.80), (0.50, 0.50, 1.00)),
    "coffee_table": ((0.70, 0.45, 0.35), (1.20, 0.70, 0.50)),
    "counter": ((1.00, 0.58, 0.88), (2.20, 0.65, 0.95)),
    "desk": ((0.90, 0.50, 0.72), (1.50, 0.75, 0.78)),
    "dresser": ((0.70, 0.40, 0.75), (1.40, 0.55, 1.00)),
    "fridge": ((0.60, 0.60, 1.50), (0.85, 0.75, 1.95)),
    "nightstand": ((0.35, 0.30, 0.45), (0.55, 0.45, 0.65)),
    "shelf": ((0.60, 0.28, 0.90), (1.20, 0.40, 1.80)),
    "sink": ((0.45, 0.40, 0.85), (0.80, 0.55, 1.00)),
    "sofa": ((1.50, 0.80, 0.75), (2.30, 0.95, 0.95)),
    "stove": ((0.55, 0.55, 0.88), (0.80, 0.65, 0.95)),
    "table": ((0.80, 0.70, 0.72), (1.60, 1.00, 0.78)),
    "toilet": ((0.36, 0.60, 0.70), (0.45, 0.75, 0.85)),
    "tv_stand": ((1.00, 0.35, 0.40), (1.80, 0.50, 0.60)),
    "wardrobe": ((0.80, 0.50, 1.80), (1.60, 0.65, 2.20)),
}
# Round things keep sy == sx (and balls sz == sx) so proportions stay believable.
_ROUND = {"apple", "bottle", "bowl", "can", "candle", "cone", "cup", "hat", "lamp", "mug",
          "plant", "plate", "pot", "teapot", "vase"}
_SPHERE = {"ball"}


def _check_category(category: str) -> None:
    if category not in _SIZE_RANGE:
        raise ValueError(
            f"unknown category {category!r}; known: {OBJECT_CATEGORIES + FURNITURE_CATEGORIES}"
        )


def category_size_range(category: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(min (sx, sy, sz), max (sx, sy, sz)) of a category's typical bounding box, metres."""
    _check_category(category)
    return _SIZE_RANGE[category]


def category_split(name: str) -> tuple[str, ...]:
    """Object categories of a split: 'train', 'held_out' (never trained on) or 'all'."""
    if name == "train":
        return tuple(c for c in OBJECT_CATEGORIES if c not in HELD_OUT_CATEGORIES)
    if name == "held_out":
        return HELD_OUT_CATEGORIES
    if name == "all":
        return OBJECT_CATEGORIES
    raise ValueError(f"unknown category split {name!r}; allowed: ('train', 'held_out', 'all')")


def exemplar_split(exemplar_seed: int) -> str:
    """'train' for seeds with seed % 10 < 8, else 'test' (a novel exemplar of a known category)."""
    return "train" if int(exemplar_seed) % 10 < 8 else "test"


def sample_exemplar(rng: np.random.Generator, split: str = "any", high: int = 100_000) -> int:
    """Draw an exemplar seed in [0, high) belonging to `split` ('train', 'test' or 'any')."""
    if split not in EXEMPLAR_SPLITS:
        raise ValueError(f"unknown exemplar split {split!r}; allowed: {EXEMPLAR_SPLITS}")
    seed = int(rng.integers(0, high // 10)) * 10
    if split == "train":
        return seed + int(rng.integers(0, 8))
    if split == "test":
        return seed + int(rng.integers(8, 10))
    return seed + int(rng.integers(0, 10))


def semantic_classes() -> tuple[str, ...]:
    """All semantic class names; a class id is an index into this tuple."""
    return tuple(STRUCTURE_CLASSES) + FURNITURE_CATEGORIES + OBJECT_CATEGORIES


# --------------------------------------------------------------------------------------------
# primitives (all return trimesh meshes in the exemplar's local frame)


def _box(ex, ey, ez, cx=0.0, cy=0.0, z0=0.0):
    return creation.box(extents=(ex, ey, ez), transform=trimesh.transformations.translation_matrix(
        (cx, cy, z0 + ez / 2)))


def _cyl(r, h, cx=0.0, cy=0.0, z0=0.0, sections=SECTIONS):
    return creation.cylinder(radius=r, height=h, sections=sections,
                             transform=trimesh.transformations.translation_matrix((cx, cy, z0 + h / 2)))


def _cyl_axis(r, h, center, axis, sections=SECTIONS):
    """Cylinder of length h centred at `center` along unit axis 'x' or 'y'."""
    rot = (trimesh.transformations.rotation_matrix(np.pi / 2, (0, 1, 0)) if axis == "x"
           else trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    m = creation.cylinder(radius=r, height=h, sections=sections)
    m.apply_transform(rot)
    m.apply_translation(center)
    return m


def _lathe(profile, z0=0.0, cx=0.0, cy=0.0, sections=SECTIONS):
    """Solid of revolution of (radius, z) points; start and end on the axis for a closed solid."""
    m = creation.revolve(np.asarray(profile, dtype=float), sections=sections)
    m.apply_translation((cx, cy, z0))
    return m


def _dome(r, h, z0=0.0, cx=0.0, cy=0.0, steps=5):
    """Upper half of an ellipsoid: radius r at z0, height h, as a closed lathe."""
    a = np.linspace(0, np.pi / 2, steps + 1)
    prof = [(0.0, 0.0)] + [(r * np.cos(t), h * np.sin(t)) for t in a[:-1]] + [(0.0, h)]
    return _lathe(prof, z0=z0, cx=cx, cy=cy)


def _sphere(r, center=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0)):
    m = creation.uv_sphere(radius=r, count=[8, 12])
    m.apply_scale(scale)
    m.apply_translation(center)
    return m


def _torus(major, minor, center, axis="z"):
    m = creation.torus(major, minor, major_sections=12, minor_sections=6)
    if axis == "x":  # ring in the y-z plane
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (0, 1, 0)))
    elif axis == "y":  # ring in the x-z plane
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    m.apply_translation(center)
    return m


# --------------------------------------------------------------------------------------------
# colours

_WOODS = ((0.55, 0.38, 0.22), (0.68, 0.50, 0.32), (0.40, 0.26, 0.15), (0.80, 0.67, 0.50),
          (0.30, 0.20, 0.13))
_NEUTRALS = ((0.93, 0.93, 0.91), (0.85, 0.84, 0.80), (0.25, 0.25, 0.27), (0.60, 0.62, 0.64),
             (0.95, 0.92, 0.85))
_METALS = ((0.75, 0.76, 0.78), (0.55, 0.56, 0.58), (0.82, 0.70, 0.40))
_DARK = (0.08, 0.08, 0.09)
_WHITE = (0.96, 0.96, 0.95)


COLOUR_NAMES = ("black", "white", "gray", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
# Upper hue bounds (degrees, HSV) of the chromatic names; hues at or above the last wrap to red.
_HUE_BINS = ((15.0, "red"), (45.0, "orange"), (70.0, "yellow"), (160.0, "green"), (200.0, "cyan"),
             (260.0, "blue"), (290.0, "purple"), (345.0, "pink"))


def colour_name(rgb) -> str:
    """The coarse name (one of COLOUR_NAMES) of an rgb colour with channels in [0, 1]: an item's
    `color`, or the mean colour of its rendered pixels (uint8 / 255). Deterministic.

    HSV rule: value < 0.15 is black; saturation < 0.2 is white (value > 0.45) or gray; otherwise the
    hue picks red / orange / yellow / green / cyan / blue / purple / pink (red wraps around 360
    degrees). The renderer shades a face by a factor in [0.35, 1] (about 0.6 on average over an
    object seen from eye height), which keeps hue and saturation and lowers value: the achromatic
    thresholds sit low so that a white item still reads white in its pixels (light grays and
    silver count as white, dark grays as gray). On procedural apartments the name of an object's
    mean rendered colour agrees with the name of its `color` for about 85% of objects (the rest:
    mostly multi-coloured exemplars and hues near a bin edge).
    """
    r, g, b = (float(x) for x in np.asarray(rgb, np.float64).reshape(-1)[:3])
    if not all(0.0 <= x <= 1.0 for x in (r, g, b)):
        raise ValueError(f"rgb channels must lie in [0, 1], got {rgb!r}")
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.15:
        return "black"
    if s < 0.2:
        return "white" if v > 0.45 else "gray"
    hue = h * 360.0
    return next((name for top, name in _HUE_BINS if hue < top), "red")


def _pick(rng, palette, jitter=0.04):
    c = np.asarray(palette[int(rng.integers(len(palette)))]) + rng.uniform(-jitter, jitter, 3)
    return tuple(float(x) for x in np.clip(c, 0.0, 1.0))


def _vivid(rng, s=(0.45, 0.9), v=(0.45, 0.95)):
    h = rng.random()
    return tuple(float(x) for x in colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v)))


def _mix(rng, palette, p_vivid=0.5):
    return _vivid(rng) if rng.random() < p_vivid else _pick(rng, palette)


# --------------------------------------------------------------------------------------------
# category programs: f(rng, (sx, sy, sz)) -> list of (mesh, colour, primary)
# `primary` parts take the item's colour in a SceneSpec; the others keep their own.

_BUILDERS = {}


def _builder(name):
    def register(fn):
        _BUILDERS[name] = fn
        return fn
    return register


@_builder("apple")
def _apple(rng, s):
    r = s[0] / 2
    col = _pick(rng, ((0.75, 0.1, 0.08), (0.45, 0.7, 0.15), (0.9, 0.75, 0.15), (0.6, 0.12, 0.1)))
    parts = [(_sphere(r, (0, 0, s[2] / 2), (1, 1, s[2] / s[0])), col, True),
             (_cyl(r * 0.08, s[2] * 0.25, z0=s[2] * 0.9, sections=6), (0.35, 0.22, 0.1), False)]
    if rng.random() < 0.5:
        parts.append((_box(r * 0.6, r * 0.25, 0.004, cx=r * 0.3, z0=s[2] * 1.05), (0.2, 0.55, 0.15), False))
    return parts


@_builder("ball")
def _ball(rng, s):
    r = s[0] / 2
    parts = [(_sphere(r, (0, 0, r)), _vivid(rng), True)]
    for _ in range(int(rng.integers(0, 3))):  # stripes
        axis = ("x", "y", "z")[int(rng.integers(3))]
        parts.append((_torus(r * 0.98, r * 0.05, (0, 0, r), axis), _mix(rng, _NEUTRALS), False))
    return parts


@_builder("book")
def _book(rng, s):
    parts, z = [], 0.0
    for i in range(int(rng.integers(1, 4))):  # a stack of one to three books
        ex, ey = s[0] * rng.uniform(0.85, 1.0), s[1] * rng.uniform(0.85, 1.0)
        ez = rng.uniform(0.02, 0.05)
        cover = _vivid(rng, v=(0.3, 0.8))
        t = min(0.003, ez * 0.15)
        parts.append((_box(ex, ey, t, z0=z), cover, i == 0))
        parts.append((_box(ex - 0.006, ey - 0.008, ez - 2 * t, cx=0.003, z0=z + t), (0.95, 0.93, 0.86), False))
        parts.append((_box(ex, ey, t, z0=z + ez - t), cover, i == 0))
        parts.append((_box(t, ey, ez, cx=-ex / 2 + t / 2, z0=z), cover, i == 0))
        z += ez
    return parts


@_builder("bottle")
def _bottle(rng, s):
    r, h = s[0] / 2, s[2]
    neck = r * rng.uniform(0.25, 0.45)
    body_h = h * rng.uniform(0.5, 0.7)
    shoulder = h * rng.uniform(0.05, 0.15)
    cap_h = h * rng.uniform(0.05, 0.1)
    prof = [(0, 0), (r, 0), (r, body_h)]
    if rng.random() < 0.5:  # rounded shoulder
        prof.append((r * 0.8, body_h + shoulder * 0.6))
    prof += [(neck, body_h + shoulder), (neck, h - cap_h), (0, h - cap_h)]
    glass = _pick(rng, ((0.2, 0.5, 0.25), (0.45, 0.3, 0.15), (0.6, 0.75, 0.85), (0.15, 0.3, 0.6)))
    return [(_lathe(prof), glass, True),
            (_cyl(neck * 1.15, cap_h, z0=h - cap_h, sections=10), _mix(rng, _METALS), False)]


@_builder("bowl")
def _bowl(rng, s):
    R, h = s[0] / 2, s[2]
    foot = R * rng.uniform(0.35, 0.6)
    f = h * rng.uniform(0.05, 0.15)
    t = min(0.006, R * 0.08)
    mid = (R * rng.uniform(0.75, 0.95), h * rng.uniform(0.4, 0.6))
    prof = [(0, 0), (foot, 0), (foot, f), mid, (R, h), (R - t, h), (mid[0] - t, mid[1]),
            (foot - t, f + t), (0, f + t)]
    return [(_lathe(prof), _mix(rng, _NEUTRALS), True)]


@_builder("box")
def _box_obj(rng, s):
    col = _mix(rng, ((0.7, 0.55, 0.35), (0.8, 0.7, 0.5)) + _NEUTRALS)
    if rng.random() < 0.6:  # lidded
        lid_h = s[2] * rng.uniform(0.12, 0.25)
        parts = [(_box(s[0] * 0.97, s[1] * 0.97, s[2] - lid_h * 0.5), col, True),
                 (_box(s[0], s[1], lid_h, z0=s[2] - lid_h), _mix(rng, _NEUTRALS), False)]
    else:
        parts = [(_box(*s), col, True)]
    if rng.random() < 0.4:  # tape or ribbon
        parts.append((_box(s[0] * 0.15, s[1] + 0.004, s[2] + 0.002), _vivid(rng), False))
    return parts


@_builder("can")
def _can(rng, s):
    r, h = s[0] / 2, s[2]
    rim = h * 0.06
    metal = _pick(rng, _METALS)
    return [(_cyl(r * 0.96, rim, sections=12), metal, False),
            (_cyl(r, h - 2 * rim, z0=rim, sections=12), _vivid(rng), True),
            (_cyl(r * 0.96, rim, z0=h - rim, sections=12), metal, False)]


@_builder("candle")
def _candle(rng, s):
    R, h = s[0] / 2, s[2]
    parts, z0 = [], 0.0
    if rng.random() < 0.6:  # a holder dish
        dish_h = h * 0.1
        parts.append((_cyl(R, dish_h, sections=12), _mix(rng, _METALS, 0.2), False))
        z0 = dish_h
    r = R * (rng.uniform(0.4, 0.6) if z0 else 1.0)
    wax_h = h - z0 - 0.012
    parts.append((_cyl(r, wax_h, z0=z0, sections=12), _mix(rng, _NEUTRALS, 0.5), True))
    parts.append((_cyl(0.002, 0.012, z0=z0 + wax_h, sections=4), _DARK, False))
    return parts


@_builder("clock")
def _clock(rng, s):
    w, d, h = s
    base_h = h * rng.uniform(0.1, 0.2)
    frame = _mix(rng, _WOODS + _METALS, 0.4)
    face_r = min(w, h - base_h) / 2
    cz = base_h + face_r
    parts = [(_box(w * rng.uniform(0.6, 1.0), d, base_h), frame, False)]
    if rng.random() < 0.6:  # round face
        parts.append((_cyl_axis(face_r, d * 0.6, (0, 0, cz), "y"), frame, True))
        parts.append((_cyl_axis(face_r * 0.85, d * 0.62, (0, 0, cz), "y", sections=12), _WHITE, False))
    else:
        parts.append((_box(2 * face_r, d * 0.6, 2 * face_r, z0=base_h), frame, True))
        parts.append((_box(1.7 * face_r, d * 0.62, 1.7 * face_r, z0=cz - 0.85 * face_r), _WHITE, False))
    a = rng.uniform(0, 2 * np.pi)
    hand = _box(face_r * 0.05, d * 0.64, face_r * 0.7, z0=0)
    hand.apply_translation((0, 0, -face_r * 0.05))
    hand.apply_transform(trimesh.transformations.rotation_matrix(a, (0, 1, 0)))
    hand.apply_translation((0, 0, cz))
    parts.append((hand, _DARK, False))
    return parts


@_builder("cone")
def _traffic_cone(rng, s):
    R, h = s[0] / 2, s[2]
    base_h = h * 0.06
    col = _pick(rng, ((0.95, 0.45, 0.05), (0.95, 0.8, 0.1), (0.2, 0.5, 0.9)), 0.05)
    top_r = R * rng.uniform(0.05, 0.15)
    parts = [(_box(2 * R, 2 * R, base_h), col, True),
             (_lathe([(0, base_h), (R * 0.75, base_h), (top_r, h), (0, h)]), col, True)]
    if rng.random() < 0.7:  # reflective band
        z1, z2 = base_h + (h - base_h) * 0.45, base_h + (h - base_h) * 0.6
        r1 = R * 0.75 + (top_r - R * 0.75) * 0.45 + 0.002
        r2 = R * 0.75 + (top_r - R * 0.75) * 0.6 + 0.002
        parts.append((_lathe([(0, z1), (r1, z1), (r2, z2), (0, z2)]), _WHITE, False))
    return parts


@_builder("cup")
def _cup(rng, s):
    R, h = s[0] / 2, s[2]
    r0 = R * rng.uniform(0.6, 0.95)
    col = _mix(rng, _NEUTRALS + ((0.7, 0.85, 0.9),), 0.5)
    return [(_lathe([(0, 0), (r0, 0), (R, h), (0, h)]), col, True),
            (_cyl(R * 0.85, 0.002, z0=h, sections=12), (0.35, 0.2, 0.1) if rng.random() < 0.5 else _WHITE, False)]


@_builder("hat")
def _hat(rng, s):
    R, h = s[0] / 2, s[2]
    brim_h = 0.006
    col = _mix(rng, ((0.15, 0.12, 0.1), (0.75, 0.65, 0.45), (0.3, 0.3, 0.35)), 0.4)
    crown_r = R * rng.uniform(0.5, 0.65)
    brim_r = R if rng.random() < 0.8 else crown_r * 1.1  # some are brimless caps
    parts = [(_cyl(brim_r, brim_h, sections=16), col, True)]
    style = int(rng.integers(3))
    if style == 0:  # top hat / fedora drum
        parts.append((_cyl(crown_r, h - brim_h, z0=brim_h), col, True))
    elif style == 1:  # dome
        parts.append((_dome(crown_r, h - brim_h, brim_h), col, True))
    else:  # witch cone
        parts.append((_lathe([(0, brim_h), (crown_r, brim_h), (0, h)]), col, True))
    if style != 2 and rng.random() < 0.7:
        parts.append((_cyl(crown_r * 1.02, (h - brim_h) * 0.15, z0=brim_h, sections=SECTIONS), _vivid(rng), False))
    return parts


@_builder("keyboard")
def _keyboard(rng, s):
    w, d, h = s
    body = _mix(rng, _NEUTRALS, 0.2)
    keys = _pick(rng, _NEUTRALS)
    base_h = h * 0.55
    parts = [(_box(w, d, base_h), body, True)]
    rows = int(rng.integers(4, 7))
    pitch = (d * 0.85) / rows
    for i in range(rows):  # one strip per key row keeps triangle counts low
        y = -d * 0.425 + (i + 0.5) * pitch
        parts.append((_box(w * 0.92, pitch * 0.75, h - base_h, cy=y, z0=base_h), keys, False))
    return parts


@_builder("lamp")
def _lamp(rng, s):
    R, h = s[0] / 2, s[2]
    metal = _mix(rng, _METALS + _WOODS, 0.3)
    base_h = h * rng.uniform(0.04, 0.08)
    shade_h = h * rng.uniform(0.3, 0.45)
    stem_top = h - shade_h * 0.8
    parts = [(_cyl(R * rng.uniform(0.45, 0.7), base_h), metal, False)
             if rng.random() < 0.7 else (_box(R * 1.1, R * 1.1, base_h), metal, False),
             (_cyl(R * 0.07, stem_top - base_h, z0=base_h, sections=8), metal, False)]
    shade = _mix(rng, _NEUTRALS, 0.4)
    style = int(rng.integers(3))
    z0 = h - shade_h
    if style == 0:  # cone frustum
        top = R * rng.uniform(0.4, 0.7)
        parts.append((_lathe([(0, z0), (R, z0), (top, h), (0, h)]), shade, True))
    elif style == 1:  # drum
        parts.append((_cyl(R, shade_h, z0=z0), shade, True))
    else:  # dome
        parts.append((_dome(R, shade_h, z0), shade, True))
    return parts


@_builder("mug")
def _mug(rng, s):
    R, h = s[0] / 2 * rng.uniform(0.75, 0.85), s[2]
    col = _mix(rng, _NEUTRALS)
    parts = [(_cyl(R, h, sections=SECTIONS), col, True),
             (_cyl(R * 0.85, 0.002, z0=h, sections=12), (0.3, 0.18, 0.1) if rng.random() < 0.5 else _DARK, False)]
    if rng.random() < 0.8:  # handle
        hr = h * rng.uniform(0.25, 0.35)
        parts.append((_torus(hr, hr * 0.18, (R, 0, h * 0.5), "y"), col, True))  # half hidden in the body
    if rng.random() < 0.4:  # printed band
        parts.append((_cyl(R * 1.01, h * 0.2, z0=h * 0.4), _vivid(rng), False))
    return parts


@_builder("phone")
def _phone(rng, s):
    w, d, h = s
    body = _pick(rng, ((0.1, 0.1, 0.1), (0.85, 0.85, 0.87), (0.75, 0.6, 0.5), (0.2, 0.3, 0.5)))
    return [(_box(w, d, h * 0.8), body, True),
            (_box(w * 0.9, d * 0.9, h * 0.2, z0=h * 0.8), (0.05, 0.07, 0.12), False)]


@_builder("pillow")
def _pillow(rng, s):
    w, d, h = s
    col = _mix(rng, _NEUTRALS)
    if rng.random() < 0.5:
        parts = [(_sphere(0.5, (0, 0, h / 2), (w, d, h)), col, True)]
    else:
        parts = [(_box(w * 0.9, d * 0.9, h), col, True),
                 (_box(w, d, h * 0.2, z0=h * 0.4), col, True)]
    if rng.random() < 0.4:
        parts.append((_sphere(h * 0.12, (0, 0, h * 0.9)), _vivid(rng), False))
    return parts


@_builder("plant")
def _plant(rng, s):
    R, h = s[0] / 2, s[2]
    pot_h = h * rng.uniform(0.25, 0.4)
    pot_r = R * rng.uniform(0.45, 0.6)
    pot = _pick(rng, ((0.72, 0.4, 0.25), (0.9, 0.9, 0.88), (0.2, 0.2, 0.22), (0.4, 0.5, 0.6)))
    green = _pick(rng, ((0.2, 0.5, 0.2), (0.3, 0.6, 0.25), (0.15, 0.4, 0.2)), 0.05)
    parts = [(_lathe([(0, 0), (pot_r * 0.75, 0), (pot_r, pot_h), (0, pot_h)]), pot, False)]
    style = int(rng.integers(3))
    fh = h - pot_h
    if style == 0:  # bushy: a few spheres
        for _ in range(int(rng.integers(2, 5))):
            r = R * rng.uniform(0.45, 0.7)
            c = (rng.uniform(-R + r, R - r), rng.uniform(-R + r, R - r), pot_h + r * 0.7)
            parts.append((_sphere(r, c, (1, 1, min(1.0, (fh - 0.01) / (1.7 * r)))), green, True))
    elif style == 1:  # conifer
        parts.append((_cyl(R * 0.06, fh * 0.3, z0=pot_h, sections=6), (0.35, 0.22, 0.1), False))
        parts.append((_lathe([(0, pot_h + fh * 0.2), (R, pot_h + fh * 0.2), (0, h)]), green, True))
    else:  # upright leaves
        for k in range(int(rng.integers(3, 7))):
            a = rng.uniform(0, np.pi)
            leaf = _box(R * 0.5, 0.01, fh * rng.uniform(0.6, 1.0))
            leaf.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(-0.3, 0.3), (1, 0, 0)))
            leaf.apply_transform(trimesh.transformations.rotation_matrix(a, (0, 0, 1)))
            leaf.apply_translation((0, 0, pot_h))
            parts.append((leaf, green, True))
    return parts


@_builder("plate")
def _plate(rng, s):
    R, h = s[0] / 2, s[2]
    well = R * rng.uniform(0.55, 0.75)
    col = _mix(rng, _NEUTRALS, 0.3)
    parts = [(_lathe([(0, 0), (well, 0), (R, h), (R * 0.97, h), (well, h * 0.35), (0, h * 0.35)], sections=16),
              col, True)]
    if rng.random() < 0.4:  # coloured rim ring
        parts.append((_lathe([(R * 0.85, h * 0.8), (R * 0.98, h * 1.02), (R * 0.9, h * 1.02)], sections=16),
                      _vivid(rng), False))
    return parts


@_builder("pot")
def _pot(rng, s):
    R, h = s[0] / 2, s[2]
    r = R * 0.75
    metal = _mix(rng, _METALS + ((0.2, 0.2, 0.22),), 0.3)
    parts = [(_cyl(r, h * 0.85), metal, True)]
    if rng.random() < 0.7:  # lid with knob
        parts.append((_cyl(r * 1.02, h * 0.05, z0=h * 0.85), metal, True))
        parts.append((_sphere(r * 0.12, (0, 0, h * 0.93), (1, 1, 0.6)), _DARK, False))
    if rng.random() < 0.5:  # two side handles
        for sx in (-1, 1):
            parts.append((_box(R - r, r * 0.3, h * 0.08, cx=sx * (r + (R - r) / 2), z0=h * 0.7), _DARK, False))
    else:  # a saucepan's long handle (still inside the bounding radius)
        parts.append((_box(R - r, r * 0.2, h * 0.07, cx=r + (R - r) / 2, z0=h * 0.72), _DARK, False))
    return parts


@_builder("shoe")
def _shoe(rng, s):
    w, d, h = s
    sole_h = h * rng.uniform(0.12, 0.2)
    upper = _mix(rng, ((0.15, 0.1, 0.08), (0.45, 0.3, 0.2), _WHITE, (0.1, 0.1, 0.12)), 0.4)
    sole = _pick(rng, (_WHITE, _DARK, (0.6, 0.45, 0.3)))
    heel_h = h * (rng.uniform(0.8, 1.0) if rng.random() < 0.3 else rng.uniform(0.5, 0.7))
    parts = [(_box(w, d, sole_h), sole, False),
             (_box(w * 0.92, d * 0.55, heel_h - sole_h, cy=d * 0.2, z0=sole_h), upper, True),
             (_sphere(0.5, (0, -d * 0.2, sole_h), (w * 0.92, d * 0.55, (h * 0.45 - sole_h) * 2)), upper, True)]
    return parts


@_builder("teapot")
def _teapot(rng, s):
    R, h = s[0] / 2, s[2]
    col = _mix(rng, _NEUTRALS, 0.5)
    br = R * 0.6
    body_h = h * 0.75
    parts = [(_sphere(br, (0, 0, body_h / 2), (1, 1, body_h / (2 * br))), col, True)]
    if rng.random() < 0.6:
        parts.append((_lathe([(0, body_h * 0.9), (br * 0.5, body_h * 0.9), (0, h)]), col, True))
    else:
        parts.append((_sphere(br * 0.3, (0, 0, body_h * 0.95), (1, 1, (h - body_h * 0.95) / (br * 0.3))), col, True))
    spout = _cyl(R * 0.06, R * 0.55, sections=8)
    spout.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 4 * rng.uniform(0.7, 1.2), (0, 1, 0)))
    spout.apply_translation((-br * 0.95 - R * 0.05, 0, body_h * 0.5))
    parts.append((spout, col, True))
    hr = body_h * 0.25
    parts.append((_torus(hr, hr * 0.15, (br * 0.9, 0, body_h * 0.5), "y"), col, True))
    return parts


@_builder("toy_car")
def _toy_car(rng, s):
    w, d, h = s
    wheel_r = h * rng.uniform(0.2, 0.3)
    body_h = h * rng.uniform(0.35, 0.5)
    col = _vivid(rng)
    parts = [(_box(w, d, body_h, z0=wheel_r), col, True)]
    cab_d = d * rng.uniform(0.35, 0.6)
    parts.append((_box(w * 0.85, cab_d, h - wheel_r - body_h, cy=rng.uniform(-0.15, 0.15) * d, z0=wheel_r + body_h),
                  (0.55, 0.7, 0.85) if rng.random() < 0.5 else col, False))
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append((_cyl_axis(wheel_r, w * 0.15, (sx * w * 0.45, sy * d * 0.32, wheel_r), "x", sections=10),
                          _DARK, False))
    return parts


@_builder("vase")
def _vase(rng, s):
    R, h = s[0] / 2, s[2]
    k = int(rng.integers(3, 6))
    zs = np.linspace(0, h, k + 1)
    rs = R * rng.uniform(0.35, 1.0, k + 1)
    rs[int(rng.integers(k + 1))] = R  # at least one full-width ring
    prof = [(0, 0)] + [(float(r), float(z)) for r, z in zip(rs, zs)] + [(0, h)]
    return [(_lathe(prof), _mix(rng, _NEUTRALS, 0.7), True)]


# ---------------------------------------------------------------------- furniture (front = -y)


def _legs(w, d, h, r, inset, square=True):
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (w / 2 - inset), sy * (d / 2 - inset)
            out.append(_box(2 * r, 2 * r, h, cx, cy) if square else _cyl(r, h, cx, cy, sections=8))
    return out


@_builder("armchair")
def _armchair(rng, s):
    w, d, h = s
    fabric = _mix(rng, _NEUTRALS + ((0.4, 0.3, 0.25),), 0.5)
    seat_h = h * rng.uniform(0.4, 0.5)
    arm_w = w * rng.uniform(0.1, 0.16)
    back_d = d * rng.uniform(0.15, 0.25)
    arm_h = seat_h + (h - seat_h) * rng.uniform(0.3, 0.6)
    return [(_box(w, d, seat_h), fabric, True),
            (_box(w, back_d, h, cy=d / 2 - back_d / 2), fabric, True),
            (_box(arm_w, d, arm_h, cx=-w / 2 + arm_w / 2), fabric, True),
            (_box(arm_w, d, arm_h, cx=w / 2 - arm_w / 2), fabric, True),
            (_box(w - 2 * arm_w - 0.02, d - back_d - 0.02, 0.06, cy=-back_d / 2, z0=seat_h), _mix(rng, _NEUTRALS), False)]


@_builder("bathtub")
def _bathtub(rng, s):
    w, d, h = s
    col = _pick(rng, (_WHITE, (0.9, 0.9, 0.85), (0.8, 0.85, 0.9)))
    rim = rng.uniform(0.06, 0.1)
    parts = [(_box(w, d, h), col, True),
             (_box(w - 2 * rim, d - 2 * rim, 0.004, z0=h), (0.7, 0.8, 0.85), False)]
    if rng.random() < 0.6:
        parts.append((_cyl(0.015, 0.12, cx=-w / 2 + rim / 2, z0=h, sections=8), _METALS[0], False))
    return parts


@_builder("bed")
def _bed(rng, s):
    w, d, h = s
    wood = _pick(rng, _WOODS + _NEUTRALS[2:3])
    frame_h = rng.uniform(0.25, 0.35)
    mat_h = rng.uniform(0.18, 0.25)
    head_d = 0.06
    blanket = _vivid(rng, v=(0.5, 0.9))
    parts = [(_box(w, d - head_d, frame_h, cy=-head_d / 2), wood, True),
             (_box(w - 0.04, d - head_d - 0.04, mat_h, cy=-head_d / 2, z0=frame_h), _WHITE, False),
             (_box(w - 0.02, (d - head_d) * rng.uniform(0.55, 0.75), 0.03, cy=-(d - head_d) * 0.15,
                   z0=frame_h + mat_h), blanket, False),
             (_box(w, head_d, h, cy=d / 2 - head_d / 2), wood, True)]
    n_pillows = 1 if w < 1.2 else 2
    pw = (w - 0.1) / n_pillows
    for i in range(n_pillows):
        parts.append((_box(pw - 0.05, 0.35, 0.1, cx=-w / 2 + 0.05 + pw * (i + 0.5), cy=d / 2 - head_d - 0.25,
                           z0=frame_h + mat_h), _mix(rng, _NEUTRALS, 0.3), False))
    if rng.random() < 0.4:  # footboard
        parts.append((_box(w, 0.05, frame_h + mat_h + 0.1, cy=-d / 2 + 0.025), wood, True))
    return parts


def _case_with_fronts(rng, s, rows, cols, body, front, handle_col, top=None, legs=False):
    """A carcass with drawer/door fronts and handles; its top covers the full footprint."""
    w, d, h = s
    leg_h = rng.uniform(0.08, 0.15) if legs else 0.0
    top_t = 0.03
    parts = [(_box(w, d, top_t, z0=h - top_t), top or body, top is None)]
    parts.append((_box(w - 0.02, d - 0.03, h - top_t - leg_h, cy=0.015, z0=leg_h), body, True))
    if legs:
        parts += [(m, body, True) for m in _legs(w - 0.02, d - 0.03, leg_h, 0.02, 0.04)]
    fh = (h - top_t - leg_h - 0.02) / rows
    fw = (w - 0.04) / cols
    for i in range(rows):
        for j in range(cols):
            cx = -w / 2 + 0.02 + fw * (j + 0.5)
            z0 = leg_h + 0.01 + fh * i
            parts.append((_box(fw - 0.01, 0.012, fh - 0.01, cx=cx, cy=-d / 2 + 0.021, z0=z0 + 0.005), front, False))
            hx = cx if cols == 1 or rows > 1 else cx + (0.35 if j % 2 == 0 else -0.35) * fw
            parts.append((_box(min(0.1, fw * 0.3), 0.012, 0.015, cx=hx, cy=-d / 2 + 0.007, z0=z0 + fh * 0.7),
                          handle_col, False))
    return parts


@_builder("cabinet")
def _cabinet(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.2)
    return _case_with_fronts(rng, s, int(rng.integers(1, 3)), int(rng.integers(1, 3)), body,
                             _pick(rng, (body,), 0.05), _pick(rng, _METALS), legs=rng.random() < 0.3)


@_builder("chair")
def _chair(rng, s):
    w, d, h = s
    wood = _mix(rng, _WOODS + _NEUTRALS[2:4], 0.3)
    seat_h = rng.uniform(0.42, 0.48)
    t = 0.04
    parts = [(m, wood, True) for m in _legs(w, d, seat_h - t, rng.uniform(0.015, 0.025), 0.03,
                                            square=rng.random() < 0.5)]
    parts.append((_box(w, d, t, z0=seat_h - t), _mix(rng, _NEUTRALS + (wood,), 0.4), False))
    if rng.random() < 0.5:  # solid back
        parts.append((_box(w, 0.03, h - seat_h, cy=d / 2 - 0.015, z0=seat_h), wood, True))
    else:  # two posts and a rail
        for sx in (-1, 1):
            parts.append((_box(0.03, 0.03, h - seat_h, cx=sx * (w / 2 - 0.015), cy=d / 2 - 0.015, z0=seat_h), wood, True))
        parts.append((_box(w, 0.03, 0.1, cy=d / 2 - 0.015, z0=h - 0.1), wood, True))
    return parts


def _table_like(rng, s, top_col, leg_col, top_t):
    w, d, h = s
    parts = [(_box(w, d, top_t, z0=h - top_t), top_col, True)]
    style = int(rng.integers(3))
    lh = h - top_t
    if style == 0:  # four legs
        parts += [(m, leg_col, False) for m in _legs(w, d, lh, rng.uniform(0.02, 0.035), rng.uniform(0.04, 0.1),
                                                     square=rng.random() < 0.5)]
    elif style == 1:  # two side panels (trestles)
        for sx in (-1, 1):
            parts.append((_box(0.04, d * 0.8, lh, cx=sx * (w / 2 - 0.08)), leg_col, False))
    else:  # pedestal column(s)
        n = 1 if w < 1.1 else 2
        for i in range(n):
            cx = 0.0 if n == 1 else (-1 + 2 * i) * w * 0.28
            parts.append((_cyl(0.05, lh, cx=cx, sections=10), leg_col, False))
            parts.append((_box(min(0.45, d * 0.7), min(0.45, d * 0.7), 0.03, cx=cx), leg_col, False))
    return parts


@_builder("coffee_table")
def _coffee_table(rng, s):
    top = _mix(rng, _WOODS + ((0.75, 0.85, 0.85),), 0.2)
    parts = _table_like(rng, s, top, _pick(rng, _WOODS + _METALS), rng.uniform(0.03, 0.06))
    if rng.random() < 0.4:  # lower shelf
        parts.append((_box(s[0] * 0.85, s[1] * 0.8, 0.02, z0=0.1), top, True))
    return parts


@_builder("counter")
def _counter(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.25)
    stone = _pick(rng, ((0.2, 0.2, 0.22), (0.85, 0.84, 0.8), (0.55, 0.5, 0.45), (0.9, 0.9, 0.92)))
    cols = max(1, int(round(s[0] / rng.uniform(0.4, 0.6))))
    return _case_with_fronts(rng, s, 1, cols, body, _pick(rng, (body,), 0.05), _pick(rng, _METALS), top=stone)


@_builder("desk")
def _desk(rng, s):
    w, d, h = s
    wood = _mix(rng, _WOODS + _NEUTRALS, 0.15)
    if rng.random() < 0.5:
        return _table_like(rng, s, wood, _pick(rng, _METALS + _WOODS), 0.03)
    parts = [(_box(w, d, 0.03, z0=h - 0.03), wood, True),
             (_box(w * 0.35, d - 0.04, h - 0.03, cx=w / 2 - w * 0.175, cy=0.02), wood, True),
             (_box(0.03, d - 0.04, h - 0.03, cx=-w / 2 + 0.015, cy=0.02), wood, True)]
    for i in range(3):  # pedestal drawers
        parts.append((_box(w * 0.33, 0.012, (h - 0.05) / 3 - 0.01, cx=w / 2 - w * 0.175, cy=-d / 2 + 0.026,
                           z0=0.01 + i * (h - 0.05) / 3), _pick(rng, (wood,), 0.05), False))
    return parts


@_builder("dresser")
def _dresser(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.2)
    return _case_with_fronts(rng, s, int(rng.integers(2, 5)), int(rng.integers(1, 3)), body,
                             _pick(rng, (body,), 0.06), _pick(rng, _METALS), legs=rng.random() < 0.4)


@_builder("fridge")
def _fridge(rng, s):
    w, d, h = s
    col = _pick(rng, (_WHITE, (0.75, 0.76, 0.78), (0.15, 0.15, 0.16), (0.85, 0.3, 0.25), (0.6, 0.8, 0.8)))
    split = h * rng.uniform(0.3, 0.7)
    parts = [(_box(w, d - 0.04, h, cy=0.02), col, True),
             (_box(w - 0.01, 0.025, split - 0.01, cy=-d / 2 + 0.0275), col, True),
             (_box(w - 0.01, 0.025, h - split - 0.01, cy=-d / 2 + 0.0275, z0=split), col, True)]
    hx = w / 2 - 0.08 if rng.random() < 0.5 else -w / 2 + 0.08
    parts.append((_box(0.025, 0.015, split * 0.4, cx=hx, cy=-d / 2 + 0.0075, z0=split * 0.5), _METALS[1], False))
    parts.append((_box(0.025, 0.015, (h - split) * 0.3, cx=hx, cy=-d / 2 + 0.0075, z0=split + 0.05), _METALS[1], False))
    return parts


@_builder("nightstand")
def _nightstand(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.2)
    return _case_with_fronts(rng, s, int(rng.integers(1, 3)), 1, body, _pick(rng, (body,), 0.06),
                             _pick(rng, _METALS), legs=rng.random() < 0.5)


@_builder("shelf")
def _shelf(rng, s):
    w, d, h = s
    wood = _mix(rng, _WOODS + _NEUTRALS, 0.15)
    t = rng.uniform(0.02, 0.035)
    parts = [(_box(t, d, h, cx=-w / 2 + t / 2), wood, True),
             (_box(t, d, h, cx=w / 2 - t / 2), wood, True),
             (_box(w, t, h, cy=d / 2 - t / 2), wood, True),
             (_box(w, d, t, z0=h - t), wood, True)]
    n = int(rng.integers(2, 6))
    for i in range(n):  # shelf boards, the lowest at the floor: the case is solid for navigation
        parts.append((_box(w - 2 * t, d - t, t, cy=-t / 2, z0=i * (h - t) / n), wood, True))
    if rng.random() < 0.5:  # some filler books on the boards
        for i in range(1, n):
            bw = (w - 2 * t) * rng.uniform(0.2, 0.6)
            parts.append((_box(bw, d * 0.7, min(0.25, (h - t) / n * 0.7), cx=-w / 2 + t + bw / 2 + 0.01,
                               z0=i * (h - t) / n + t), _vivid(rng, v=(0.3, 0.7)), False))
    return parts


@_builder("sink")
def _sink(rng, s):
    w, d, h = s
    counter_h = h * rng.uniform(0.8, 0.88)
    body = _mix(rng, _WOODS + _NEUTRALS, 0.2)
    parts = [(_box(w, d - 0.02, counter_h - 0.04, cy=0.01), body, True),
             (_box(w, d, 0.04, z0=counter_h - 0.04), _WHITE, False),
             (_box(w * 0.6, d * 0.55, 0.004, cy=-d * 0.05, z0=counter_h), (0.75, 0.8, 0.85), False),
             (_cyl(0.02, h - counter_h, cy=d / 2 - 0.06, z0=counter_h, sections=8), _METALS[0], False),
             (_box(0.03, 0.12, 0.03, cy=d / 2 - 0.12, z0=h - 0.03), _METALS[0], False)]
    return parts


@_builder("sofa")
def _sofa(rng, s):
    w, d, h = s
    fabric = _mix(rng, _NEUTRALS + ((0.35, 0.3, 0.45), (0.3, 0.4, 0.3)), 0.5)
    seat_h = h * rng.uniform(0.42, 0.5)
    arm_w = rng.uniform(0.1, 0.22)
    back_d = d * rng.uniform(0.18, 0.25)
    arm_h = seat_h + (h - seat_h) * rng.uniform(0.2, 0.6)
    parts = [(_box(w, d, seat_h - 0.08), fabric, True),
             (_box(w, back_d, h, cy=d / 2 - back_d / 2), fabric, True),
             (_box(arm_w, d, arm_h, cx=-w / 2 + arm_w / 2), fabric, True),
             (_box(arm_w, d, arm_h, cx=w / 2 - arm_w / 2), fabric, True)]
    n = int(rng.integers(2, 4))
    cw = (w - 2 * arm_w) / n
    cushion = _pick(rng, (fabric,), 0.05)
    for i in range(n):
        parts.append((_box(cw - 0.015, d - back_d - 0.02, 0.08, cx=-w / 2 + arm_w + cw * (i + 0.5),
                           cy=-back_d / 2, z0=seat_h - 0.08), cushion, False))
    return parts


@_builder("stove")
def _stove(rng, s):
    w, d, h = s
    col = _pick(rng, (_WHITE, (0.75, 0.76, 0.78), (0.15, 0.15, 0.16)))
    parts = [(_box(w, d - 0.02, h - 0.02, cy=0.01), col, True),
             (_box(w, d, 0.02, z0=h - 0.02), _DARK, False),
             (_box(w * 0.8, 0.012, h * 0.5, cy=-d / 2 + 0.006, z0=h * 0.15), (0.1, 0.1, 0.12), False)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append((_cyl(min(w, d) * rng.uniform(0.1, 0.15), 0.008, cx=sx * w * 0.25, cy=sy * d * 0.22,
                               z0=h - 0.004, sections=12), (0.3, 0.3, 0.32), False))
    return parts


@_builder("table")
def _table(rng, s):
    top = _mix(rng, _WOODS + _NEUTRALS, 0.15)
    return _table_like(rng, s, top, _pick(rng, (top,) + _METALS + _WOODS), rng.uniform(0.03, 0.05))


@_builder("toilet")
def _toilet(rng, s):
    w, d, h = s
    col = _pick(rng, (_WHITE, (0.92, 0.92, 0.88)))
    seat_h = rng.uniform(0.38, 0.44)
    tank_d = rng.uniform(0.15, 0.22)
    bowl_d = d - tank_d
    parts = [(_box(w * 0.55, bowl_d * 0.7, seat_h - 0.05, cy=-d / 2 + bowl_d * 0.5), col, True),
             (_cyl(0.5, seat_h - (seat_h - 0.05), z0=seat_h - 0.05, sections=SECTIONS), col, True),
             (_box(w, tank_d, h, cy=d / 2 - tank_d / 2), col, True)]
    parts[1][0].apply_scale((w * 0.95, bowl_d * 0.95, 1))
    parts[1][0].apply_translation((0, -d / 2 + bowl_d * 0.5, 0))
    parts.append((_box(0.05, 0.02, 0.015, cx=w * 0.3, cy=d / 2 - tank_d - 0.01, z0=h - 0.06), _METALS[0], False))
    return parts


@_builder("tv_stand")
def _tv_stand(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.1)
    return _case_with_fronts(rng, s, 1, int(rng.integers(2, 5)), body, _pick(rng, (body,), 0.08),
                             _pick(rng, _METALS), legs=rng.random() < 0.5)


@_builder("wardrobe")
def _wardrobe(rng, s):
    body = _mix(rng, _WOODS + _NEUTRALS, 0.15)
    w, d, h = s
    parts = []
    cols = int(rng.integers(2, 4))
    fw = (w - 0.02) / cols
    parts.append((_box(w, d - 0.02, h, cy=0.01), body, True))
    for j in range(cols):
        cx = -w / 2 + 0.01 + fw * (j + 0.5)
        parts.append((_box(fw - 0.01, 0.012, h - 0.12, cx=cx, cy=-d / 2 + 0.014, z0=0.06), _pick(rng, (body,), 0.06), False))
        hx = cx + (0.4 if j % 2 == 0 else -0.4) * fw
        parts.append((_box(0.02, 0.008, 0.25, cx=hx, cy=-d / 2 + 0.004, z0=h * 0.45), _pick(rng, _METALS), False))
    return parts


assert set(_BUILDERS) == set(_SIZE_RANGE) == set(OBJECT_CATEGORIES) | set(FURNITURE_CATEGORIES)


# --------------------------------------------------------------------------------------------
# exemplars


@dataclass(frozen=True)
class ExemplarPart:
    mesh: trimesh.Trimesh
    color: tuple[float, float, float]
    primary: bool  # takes the item's colour when placed in a scene


@dataclass(frozen=True)
class Exemplar:
    """One concrete member of a category. Shared through a cache: do not mutate its meshes."""

    category: str
    seed: int
    parts: tuple[ExemplarPart, ...]
    size: tuple[float, float, float]  # bounding-box extents
    color: tuple[float, float, float]  # colour of the primary parts

    def mesh(self) -> trimesh.Trimesh:
        """All parts in one mesh with per-vertex colours (primary parts in `self.color`)."""
        v, f, c = exemplar_arrays(self.category, self.seed)
        return trimesh.Trimesh(v, f, vertex_colors=(np.c_[c, np.ones(len(c))] * 255).astype(np.uint8),
                               process=False)


def _rng(category: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(category.encode()), int(seed)])


def _draw_size(rng: np.random.Generator, category: str) -> tuple[float, float, float]:
    lo, hi = (np.asarray(x) for x in _SIZE_RANGE[category])
    s = lo + rng.random(3) * (hi - lo)
    if category in _SPHERE:
        s[1] = s[2] = s[0]
    elif category in _ROUND:
        s[1] = s[0]
    return tuple(float(x) for x in s)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"exemplar seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# Exemplars repeat within a scene and across a pinned split's scenes (built once, then kept by the
# scene cache); procedural scenes and fast-mapping episodes draw new ones all the time, so the caches
# are small (each entry ~30 kB over the three): a worker's memory stays flat (`embodied bench soak`).
EXEMPLAR_CACHE = 512


@functools.lru_cache(maxsize=EXEMPLAR_CACHE)
def build_exemplar(category: str, exemplar_seed: int) -> Exemplar:
    """The exemplar `exemplar_seed` of `category`; deterministic, cached."""
    _check_category(category)
    seed = _check_seed(exemplar_seed)
    rng = _rng(category, seed)
    raw = _BUILDERS[category](rng, _draw_size(rng, category))
    lo = np.min([m.bounds[0] for m, _, _ in raw], axis=0)
    hi = np.max([m.bounds[1] for m, _, _ in raw], axis=0)
    shift = (-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2])  # bottom face centred on origin
    parts = []
    for m, col, primary in raw:
        m = m.copy()
        m.apply_translation(shift)
        parts.append(ExemplarPart(m, tuple(float(x) for x in col), bool(primary)))
    primary_colors = [p.color for p in parts if p.primary] or [parts[0].color]
    return Exemplar(category, seed, tuple(parts), tuple(float(x) for x in hi - lo), primary_colors[0])


@functools.lru_cache(maxsize=EXEMPLAR_CACHE)
def exemplar_arrays(category: str, exemplar_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [V,3] float64, faces [F,3] int32, vertex colours [V,3] float32) of an exemplar.

    Primary parts are coloured with the exemplar's own colour; `primary_vertex_mask` tells which
    vertices to recolour when a scene item carries another colour.
    """
    ex = build_exemplar(category, exemplar_seed)
    verts, faces, cols, off = [], [], [], 0
    for p in ex.parts:
        verts.append(np.asarray(p.mesh.vertices))
        faces.append(np.asarray(p.mesh.faces) + off)
        cols.append(np.tile(np.asarray(ex.color if p.primary else p.color, np.float32), (len(p.mesh.vertices), 1)))
        off += len(p.mesh.vertices)
    return np.concatenate(verts), np.concatenate(faces).astype(np.int32), np.concatenate(cols)


@functools.lru_cache(maxsize=EXEMPLAR_CACHE)
def primary_vertex_mask(category: str, exemplar_seed: int) -> np.ndarray:
    """Boolean [V] mask of the vertices of an exemplar's primary parts (see `exemplar_arrays`)."""
    ex = build_exemplar(category, exemplar_seed)
    return np.concatenate([np.full(len(p.mesh.vertices), p.primary) for p in ex.parts])
