"""Fast-mapping's object pools: the unfamiliar objects a level's split draws from (categories x
exemplars of the object library, embodied.world.library), and the fixed global sets."""
from __future__ import annotations

import zlib

import numpy as np

from embodied.tasks.fastmap.spec import TRAY_CATEGORY
from embodied.world.library import exemplar_split, sample_exemplar


def split_categories(split: str) -> tuple[str, ...]:
    """Unfamiliar-object categories of a split (the tray's category is a fixture, never an object)."""
    from embodied.world.library import category_split

    # held_out mixes held-out categories with novel exemplars of training categories: all categories.
    which = {"train": "train", "novel_exemplar": "train", "held_out_category": "held_out", "held_out": "all"}[split]
    cats = category_split(which)
    return tuple(c for c in cats if c != TRAY_CATEGORY)


def object_in_split(category: str, exemplar: int, split: str) -> bool:
    """Whether (category, exemplar) belongs to an object split."""
    from embodied.world.library import HELD_OUT_CATEGORIES

    held_cat = category in HELD_OUT_CATEGORIES
    ex = exemplar_split(exemplar)
    if category == TRAY_CATEGORY:
        return False
    if split == "train":
        return not held_cat and ex == "train"
    if split == "novel_exemplar":
        return not held_cat and ex == "test"
    if split == "held_out_category":
        return held_cat
    return held_cat or ex == "test"  # held_out: either kind of novelty


def sample_objects(rng: np.random.Generator, split: str, n: int) -> list[tuple[str, int]]:
    """n objects of distinct categories from a split."""
    if split == "held_out":
        # Mix the two kinds of novelty: each object is a held-out category or a novel exemplar.
        cats = list(split_categories("held_out"))
        picks = rng.choice(len(cats), n, replace=False)
        out = []
        from embodied.world.library import HELD_OUT_CATEGORIES

        for i in picks:
            c = cats[int(i)]
            out.append((c, sample_exemplar(rng, "any" if c in HELD_OUT_CATEGORIES else "test")))
        return out
    cats = split_categories(split)
    if n > len(cats):
        raise ValueError(f"fastmap: split {split!r} has {len(cats)} categories, fewer than {n} objects")
    picks = rng.choice(len(cats), n, replace=False)
    ex_split = {"train": "train", "novel_exemplar": "test", "held_out_category": "any"}[split]
    return [(cats[int(i)], sample_exemplar(rng, ex_split)) for i in picks]


def global_set(split: str, size: int) -> list[tuple[str, int]]:
    """The fixed global object set G of a `global_set` level (same for every env and seed): distinct
    objects, categories repeating only once every category is used (|G| = 20 > 19 categories)."""
    rng = np.random.default_rng([zlib.crc32(split.encode()), size])
    out: list[tuple[str, int]] = []
    while len(out) < size:
        k = min(size - len(out), len(split_categories(split)))
        out += [o for o in sample_objects(rng, split, k) if o not in out]
    return out


def draw_from_set(rng: np.random.Generator, objects: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """n objects of distinct categories from a fixed set."""
    for _ in range(1000):
        picks = [objects[int(i)] for i in rng.choice(len(objects), n, replace=False)]
        if len({c for c, _ in picks}) == n:
            return picks
    raise ValueError(f"fastmap: cannot draw {n} objects of distinct categories from a set of {len(objects)}")
