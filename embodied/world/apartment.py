"""Procedural apartments: floor plan, doors, walls, furniture and small objects -> SceneSpec.

`generate_apartment(seed)` runs these stages with one numpy Generator, so a seed fixes the scene
down to the JSON bytes:

1. Floor plan - a rectangle of about 10-15 m^2 per room is split recursively (guillotine cuts on a
   10 cm grid) into axis-aligned rooms whose wall centre lines are at least `MIN_ROOM_SIDE` apart.
   Room polygons are those centre-line rectangles; the free interior is `WALL_THICKNESS / 2` smaller.
2. Room types - the largest room is the living room, the smallest the bathroom, the next largest
   the kitchen; the rest are bedrooms, or corridors when long and narrow.
3. Doors - rooms sharing at least `MIN_SHARED_WALL` of wall are adjacent; a random spanning tree of
   that graph gets a door per edge (every room is reachable), plus a few extra doors.
4. Walls - maximal wall centre-line segments, outer walls included; doors are cut from them when
   geometry is built (`embodied.world.geometry.build_geometry`).
5. Furniture - per room type, in priority order, placed against a wall (back to the wall) or free
   on a quarter-turn yaw; rejected if it overlaps other furniture or a door's clear zone, or if
   the room's floor would stop being one walkable region for a disc of radius `CLEARANCE`
   (passages >= 0.6 m; the agent is ~0.18 m in radius) joining every door, or if a receptacle
   could no longer be approached.
6. Objects - small objects rest on receptacle tops (`receptacle` = the furniture's id, z = its top
   height), several distinct categories per scene, no two overlapping.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from embodied.world import library
from embodied.world.spec import Door, Item, Room, SceneSpec, Wall

WALL_THICKNESS = 0.1
WALL_HEIGHT = 2.5
DOOR_HEIGHT = 2.1
DOOR_WIDTH = (0.9, 1.0)
MIN_ROOM_SIDE = 2.6  # wall centre line to centre line: >= 2.5 m of free floor across every room
MIN_SHARED_WALL = 1.7  # a door plus 0.35 m of wall on each side
DOOR_CORNER_MARGIN = 0.35
DOOR_CLEAR_DEPTH = 0.9  # kept free of furniture in front of a door, on both sides
CLEARANCE = 0.3  # half the narrowest passage left between furniture
APPROACH = 0.35  # how close the walkable region must come to every receptacle
WALL_GAP = 0.02
FURNITURE_GAP = 0.05
OBJECT_GAP = 0.02
OBJECT_EDGE_MARGIN = 0.03
GRID = 0.05
MAX_ROOMS = 8
MIN_ROOMS = 2
OBJECT_SPLITS = ("all", "train", "novel_exemplar", "held_out_category")

# (category, probability, placement) in priority order; "wall" puts the back to a wall.
ROOM_FURNITURE = {
    "kitchen": (("counter", 1.0, "wall"), ("fridge", 0.9, "wall"), ("stove", 0.8, "wall"),
                ("counter", 0.4, "wall"), ("table", 0.6, "free"), ("chair", 0.5, "free"),
                ("cabinet", 0.4, "wall"), ("shelf", 0.3, "wall")),
    "living_room": (("sofa", 1.0, "wall"), ("tv_stand", 0.8, "wall"), ("coffee_table", 0.8, "free"),
                    ("armchair", 0.6, "wall"), ("shelf", 0.6, "wall"), ("table", 0.3, "free"),
                    ("cabinet", 0.3, "wall"), ("chair", 0.3, "free")),
    "bedroom": (("bed", 1.0, "wall"), ("nightstand", 0.9, "wall"), ("wardrobe", 0.7, "wall"),
                ("desk", 0.5, "wall"), ("chair", 0.4, "free"), ("dresser", 0.5, "wall"),
                ("nightstand", 0.4, "wall"), ("shelf", 0.3, "wall")),
    "bathroom": (("toilet", 1.0, "wall"), ("sink", 1.0, "wall"), ("cabinet", 0.8, "wall"),
                 ("bathtub", 0.6, "wall"), ("shelf", 0.3, "wall")),
    "corridor": (("shelf", 0.8, "wall"), ("cabinet", 0.6, "wall"), ("table", 0.3, "wall")),
}

_CM = 100  # the floor plan is laid out in integer centimetres: exact adjacency tests


def _r4(x: float) -> float:
    return round(float(x), 4)


# ---------------------------------------------------------------------------------- floor plan


def _split_rects(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]] | None:
    min_side = int(round(MIN_ROOM_SIDE * _CM))
    area = n * rng.uniform(10.0, 15.0) * _CM * _CM
    aspect = rng.uniform(1.0, 1.6)
    w = max(min_side, int(round(math.sqrt(area * aspect) / 10)) * 10)
    h = max(min_side, int(round(area / w / 10)) * 10)
    rects = [(0, 0, w, h)]
    while len(rects) < n:
        splittable = [i for i, (x0, y0, x1, y1) in enumerate(rects) if max(x1 - x0, y1 - y0) >= 2 * min_side]
        if not splittable:
            return None
        areas = np.array([(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]) for i in splittable], float)
        x0, y0, x1, y1 = rects.pop(splittable[int(rng.choice(len(splittable), p=areas / areas.sum()))])
        can_x, can_y = x1 - x0 >= 2 * min_side, y1 - y0 >= 2 * min_side
        if can_x and can_y:
            cut_x = (x1 - x0 >= y1 - y0) == (rng.random() < 0.8)  # mostly cut across the long side
        else:
            cut_x = can_x
        lo, hi = (x0, x1) if cut_x else (y0, y1)
        steps = (hi - lo - 2 * min_side) // 10
        c = lo + min_side + 10 * int(rng.integers(0, steps + 1))
        rects += [(x0, y0, c, y1), (c, y0, x1, y1)] if cut_x else [(x0, y0, x1, c), (x0, c, x1, y1)]
    return sorted(rects, key=lambda r: (r[1], r[0]))


def _shared_walls(rects) -> list[tuple[int, int, str, int, int, int]]:
    """(a, b, axis, coordinate, lo, hi) for room pairs that share enough wall for a door."""
    out = []
    need = int(round(MIN_SHARED_WALL * _CM))
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            ra, rb = rects[a], rects[b]
            for i, j in ((0, 2), (2, 0)):  # vertical walls (run along y)
                if ra[j] == rb[i]:
                    lo, hi = max(ra[1], rb[1]), min(ra[3], rb[3])
                    if hi - lo >= need:
                        out.append((a, b, "y", ra[j], lo, hi))
            for i, j in ((1, 3), (3, 1)):  # horizontal walls (run along x)
                if ra[j] == rb[i]:
                    lo, hi = max(ra[0], rb[0]), min(ra[2], rb[2])
                    if hi - lo >= need:
                        out.append((a, b, "x", ra[j], lo, hi))
    return out


def _spanning_doors(rng, n, shared) -> list[tuple] | None:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chosen, extra = [], []
    for k in rng.permutation(len(shared)):
        a, b = shared[k][0], shared[k][1]
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            chosen.append(shared[k])
        else:
            extra.append(shared[k])
    if len(chosen) != n - 1:
        return None
    for e in extra:  # a few loops make routes less tree-like
        if rng.random() < 0.2:
            chosen.append(e)
    return sorted(chosen, key=lambda e: (e[0], e[1], e[2], e[3]))


def _room_types(rng, rects) -> list[str]:
    n = len(rects)
    dims = [(r[2] - r[0], r[3] - r[1]) for r in rects]
    order = sorted(range(n), key=lambda i: (-dims[i][0] * dims[i][1], i))
    types = [""] * n
    types[order[0]] = "living_room"
    if n == 2:
        types[order[1]] = "bedroom"
        return types
    types[order[-1]] = "bathroom"
    types[order[1]] = "kitchen"
    corridor = False
    for i in order[2:-1]:
        long_narrow = max(dims[i]) >= 1.8 * min(dims[i])
        if long_narrow and not corridor and rng.random() < 0.8:
            types[i], corridor = "corridor", True
        elif n >= 6 and rng.random() < 0.2:
            types[i] = "bathroom"
        else:
            types[i] = "bedroom"
    return types


def _walls(rects) -> list[Wall]:
    lines: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for x0, y0, x1, y1 in rects:
        for key, iv in ((("x", y0), (x0, x1)), (("x", y1), (x0, x1)), (("y", x0), (y0, y1)), (("y", x1), (y0, y1))):
            lines.setdefault(key, []).append(iv)
    walls = []
    for (axis, c), ivs in sorted(lines.items()):
        ivs.sort()
        merged = [list(ivs[0])]
        for lo, hi in ivs[1:]:
            if lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        for lo, hi in merged:
            if axis == "x":
                start, end = [lo / _CM, c / _CM], [hi / _CM, c / _CM]
            else:
                start, end = [c / _CM, lo / _CM], [c / _CM, hi / _CM]
            walls.append(Wall(start=start, end=end, thickness=WALL_THICKNESS, height=WALL_HEIGHT))
    return walls


# ---------------------------------------------------------------------------------- furniture


def _overlap(a, b, gap=0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


class _RoomFloor:
    """Occupancy grid of one room's interior, to keep its floor walkable and connected."""

    def __init__(self, interior, door_openings):
        self.ix0, self.iy0, ix1, iy1 = interior
        self.nx = int(round((ix1 - self.ix0) / GRID))
        self.ny = int(round((iy1 - self.iy0) / GRID))
        occ = np.zeros((self.nx + 2, self.ny + 2), bool)  # one border ring of wall cells
        occ[0, :] = occ[-1, :] = occ[:, 0] = occ[:, -1] = True
        self.anchors = []
        for side, centre, width in door_openings:
            lo = int(math.ceil((centre - width / 2 - (self.ix0 if side in "BT" else self.iy0)) / GRID))
            hi = int(math.floor((centre + width / 2 - (self.ix0 if side in "BT" else self.iy0)) / GRID))
            depth = int(round((CLEARANCE + 0.1) / GRID))
            mid = int(round((centre - (self.ix0 if side in "BT" else self.iy0)) / GRID)) + 1
            if side == "B":
                occ[lo + 1:hi + 1, 0] = False
                self.anchors.append((mid, depth))
            elif side == "T":
                occ[lo + 1:hi + 1, -1] = False
                self.anchors.append((mid, self.ny + 1 - depth))
            elif side == "L":
                occ[0, lo + 1:hi + 1] = False
                self.anchors.append((depth, mid))
            else:
                occ[-1, lo + 1:hi + 1] = False
                self.anchors.append((self.nx + 1 - depth, mid))
        self.base = occ

    def _cells(self, fp):
        i0 = max(1, int(math.floor((fp[0] - self.ix0) / GRID)) + 1)
        i1 = min(self.nx, int(math.ceil((fp[2] - self.ix0) / GRID)))
        j0 = max(1, int(math.floor((fp[1] - self.iy0) / GRID)) + 1)
        j1 = min(self.ny, int(math.ceil((fp[3] - self.iy0) / GRID)))
        return slice(i0, i1 + 1), slice(j0, j1 + 1)

    def walkable(self, footprints, receptacles) -> bool:
        occ = self.base.copy()
        for fp in footprints:
            occ[self._cells(fp)] = True
        # distance between cell centres; an obstacle's edge is half a cell nearer
        free = ndimage.distance_transform_edt(~occ) * GRID >= CLEARANCE + GRID / 2
        labels, _ = ndimage.label(free)
        ids = {int(labels[a]) for a in self.anchors}
        if len(ids) != 1 or 0 in ids:
            return False
        main = labels == ids.pop()
        if not receptacles:
            return True
        to_main = ndimage.distance_transform_edt(~main) * GRID
        return all(to_main[self._cells(fp)].min() <= CLEARANCE + APPROACH for fp in receptacles)


def _footprint(cx, cy, sx, sy, yaw):
    quarter = int(round(yaw / (math.pi / 2))) % 2
    hx, hy = (sy / 2, sx / 2) if quarter else (sx / 2, sy / 2)
    return (cx - hx, cy - hy, cx + hx, cy + hy)


def _place_furniture(rng, room_id, entries, interior, door_zones, floor, next_id) -> list[Item]:
    """Furniture of one room from `entries`: (category, probability, placement[, approachable]) in
    priority order; an approachable one (receptacles always) must stay reachable from the room's floor."""
    ix0, iy0, ix1, iy1 = interior
    placed: list[Item] = []
    fps: list[tuple] = []
    rec_fps: list[tuple] = []
    for category, prob, mode, *approachable in entries:
        if rng.random() >= prob:
            continue
        for attempt in range(24):
            if attempt % 8 == 0:  # a few exemplars, in case the first is too big for the room
                ex_seed = library.sample_exemplar(rng, "any")
                sx, sy, sz = (_r4(v) for v in library.build_exemplar(category, ex_seed).size)
            if mode == "wall":
                side = int(rng.integers(4))  # 0: wall at y0, 1: y1, 2: x0, 3: x1
                yaw = (math.pi, 0.0, math.pi / 2, 3 * math.pi / 2)[side]
                along_lo, along_hi = (ix0, ix1) if side < 2 else (iy0, iy1)
                if along_hi - along_lo < sx:
                    continue
                u = rng.random()
                if u < 0.3:
                    t = along_lo + sx / 2
                elif u < 0.6:
                    t = along_hi - sx / 2
                else:
                    t = rng.uniform(along_lo + sx / 2, along_hi - sx / 2)
                depth_c = WALL_GAP + sy / 2
                cx, cy = {0: (t, iy0 + depth_c), 1: (t, iy1 - depth_c),
                          2: (ix0 + depth_c, t), 3: (ix1 - depth_c, t)}[side]
            else:
                yaw = math.pi / 2 * int(rng.integers(4))
                cx = rng.uniform(ix0 + 0.3, ix1 - 0.3)
                cy = rng.uniform(iy0 + 0.3, iy1 - 0.3)
            cx, cy, yaw = _r4(cx), _r4(cy), _r4(yaw)
            fp = _footprint(cx, cy, sx, sy, yaw)
            if fp[0] < ix0 + WALL_GAP / 2 or fp[1] < iy0 + WALL_GAP / 2 or fp[2] > ix1 - WALL_GAP / 2 \
                    or fp[3] > iy1 - WALL_GAP / 2:
                continue
            if any(_overlap(fp, o, FURNITURE_GAP) for o in fps) or any(_overlap(fp, z) for z in door_zones):
                continue
            is_rec = category in library.RECEPTACLE_CATEGORIES or bool(approachable and approachable[0])
            if not floor.walkable(fps + [fp], rec_fps + ([fp] if is_rec else [])):
                continue
            ex = library.build_exemplar(category, ex_seed)
            placed.append(Item(id=next_id + len(placed), kind="furniture", category=category, exemplar=ex_seed,
                               position=[cx, cy, 0.0], yaw=yaw, size=[sx, sy, sz],
                               color=[_r4(c) for c in ex.color], room=room_id))
            fps.append(fp)
            if is_rec:
                rec_fps.append(fp)
            break
    return placed


def _place_objects(rng, room_id, receptacles, n_objects, categories, ex_split, used, next_id) -> list[Item]:
    placed: list[Item] = []
    boxes: dict[int, list[tuple]] = {r.id: [] for r in receptacles}
    if not receptacles:
        return placed
    for _ in range(n_objects):
        for attempt in range(16):
            fresh = [c for c in categories if c not in used]
            pool = fresh if fresh and attempt < 12 else list(categories)
            category = pool[int(rng.integers(len(pool)))]
            ex_seed = library.sample_exemplar(rng, ex_split)
            sx, sy, sz = (_r4(v) for v in library.build_exemplar(category, ex_seed).size)
            rec = receptacles[int(rng.integers(len(receptacles)))]
            top_z = _r4(rec.position[2] + rec.size[2])
            if top_z + sz > WALL_HEIGHT - 0.05:
                continue
            x0, y0, x1, y1 = _footprint(rec.position[0], rec.position[1], rec.size[0], rec.size[1], rec.yaw)
            yaw = _r4(rng.uniform(0, 2 * math.pi))
            c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
            hx, hy = c * sx / 2 + s * sy / 2, s * sx / 2 + c * sy / 2
            lo_x, hi_x = x0 + OBJECT_EDGE_MARGIN + hx, x1 - OBJECT_EDGE_MARGIN - hx
            lo_y, hi_y = y0 + OBJECT_EDGE_MARGIN + hy, y1 - OBJECT_EDGE_MARGIN - hy
            if lo_x > hi_x or lo_y > hi_y:
                continue
            cx, cy = _r4(rng.uniform(lo_x, hi_x)), _r4(rng.uniform(lo_y, hi_y))
            box = (cx - hx, cy - hy, cx + hx, cy + hy)
            if any(_overlap(box, o, OBJECT_GAP) for o in boxes[rec.id]):
                continue
            ex = library.build_exemplar(category, ex_seed)
            placed.append(Item(id=next_id + len(placed), kind="object", category=category, exemplar=ex_seed,
                               position=[cx, cy, top_z], yaw=yaw, size=[sx, sy, sz],
                               color=[_r4(v) for v in ex.color], room=room_id, receptacle=rec.id))
            boxes[rec.id].append(box)
            used.add(category)
            break
    return placed


# ---------------------------------------------------------------------------------- public API


def _room_count(rng, n_rooms) -> int:
    if n_rooms is None:
        n_rooms = (MIN_ROOMS, MAX_ROOMS)
    if isinstance(n_rooms, (tuple, list)):
        if len(n_rooms) != 2 or not all(isinstance(v, (int, np.integer)) for v in n_rooms) \
                or not MIN_ROOMS <= n_rooms[0] <= n_rooms[1] <= MAX_ROOMS:
            raise ValueError(f"n_rooms range must be (lo, hi) with {MIN_ROOMS} <= lo <= hi <= {MAX_ROOMS}, got {n_rooms!r}")
        return int(rng.integers(n_rooms[0], n_rooms[1] + 1))
    if isinstance(n_rooms, bool) or not isinstance(n_rooms, (int, np.integer)) or not MIN_ROOMS <= n_rooms <= MAX_ROOMS:
        raise ValueError(f"n_rooms must be an integer in [{MIN_ROOMS}, {MAX_ROOMS}], got {n_rooms!r}")
    return int(n_rooms)


def generate_apartment(
    seed: int,
    n_rooms: int | tuple[int, int] | None = None,
    objects_per_room: tuple[int, int] = (1, 4),
    object_split: str = "all",
    furniture=None,
) -> SceneSpec:
    """A procedural apartment; the same arguments always give byte-identical JSON.

    n_rooms: a count in [2, 8], a (lo, hi) range drawn from with the seed, or None for (2, 8).
    objects_per_room: (lo, hi) small objects attempted per room (fewer when receptacles are full).
    object_split: which small objects may appear - 'all'; 'train' (training categories, training
        exemplars); 'novel_exemplar' (training categories, test exemplars); 'held_out_category'
        (held-out categories). See `embodied.world.library` for the split conventions.
    furniture: None (each room's type picks from ROOM_FURNITURE) or a function of the rooms (with
        their types) giving, per room id, the entries to place: (category, probability, "wall" |
        "free"[, approachable]) in priority order. The floor plan, room types and doors do not depend
        on it (they are drawn first), so a task can choose furniture for the rooms a seed lays out.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (not isinstance(objects_per_room, (tuple, list)) or len(objects_per_room) != 2
            or not all(isinstance(v, (int, np.integer)) for v in objects_per_room)
            or not 0 <= objects_per_room[0] <= objects_per_room[1]):
        raise ValueError(f"objects_per_room must be (lo, hi) with 0 <= lo <= hi, got {objects_per_room!r}")
    splits = {"all": ("all", "any"), "train": ("train", "train"), "novel_exemplar": ("train", "test"),
              "held_out_category": ("held_out", "any")}
    if object_split not in splits:
        raise ValueError(f"unknown object_split {object_split!r}; allowed: {OBJECT_SPLITS}")
    categories = library.category_split(splits[object_split][0])
    ex_split = splits[object_split][1]

    rng = np.random.default_rng(int(seed))
    n = _room_count(rng, n_rooms)
    for _ in range(200):
        rects = _split_rects(rng, n)
        if rects is None:
            continue
        doors_cm = _spanning_doors(rng, n, _shared_walls(rects))
        if doors_cm is not None:
            break
    else:  # pragma: no cover - the split always succeeds well before this for n <= 8
        raise RuntimeError(f"could not lay out {n} rooms for seed {seed}")

    types = _room_types(rng, rects)
    rooms = [Room(id=i, type=types[i], polygon=[[x0 / _CM, y0 / _CM], [x1 / _CM, y0 / _CM], [x1 / _CM, y1 / _CM],
                                                [x0 / _CM, y1 / _CM]])
             for i, (x0, y0, x1, y1) in enumerate(rects)]
    doors = []
    for a, b, axis, c, lo, hi in doors_cm:
        width = _r4(rng.uniform(*DOOR_WIDTH))
        lo_m, hi_m = lo / _CM + DOOR_CORNER_MARGIN + width / 2, hi / _CM - DOOR_CORNER_MARGIN - width / 2
        t = _r4(round(rng.uniform(lo_m, hi_m) / 0.05) * 0.05)
        t = min(max(t, lo_m), hi_m)
        pos = [_r4(t), c / _CM] if axis == "x" else [c / _CM, _r4(t)]
        doors.append(Door(rooms=[a, b], position=pos, width=width, axis=axis))

    half = WALL_THICKNESS / 2
    entries = [ROOM_FURNITURE[room.type] for room in rooms] if furniture is None else list(furniture(rooms))
    if len(entries) != len(rooms):
        raise ValueError(f"furniture gave entries for {len(entries)} rooms; the apartment has {len(rooms)}")
    items: list[Item] = []
    for room in rooms:
        (x0, y0), (x1, y1) = room.polygon[0], room.polygon[2]
        interior = (x0 + half, y0 + half, x1 - half, y1 - half)
        zones, openings = [], []
        for d in doors:
            if room.id not in d.rooms:
                continue
            px, py = d.position
            w2 = d.width / 2 + 0.1
            if d.axis == "x":  # wall along x at y = py: the room is above or below it
                if abs(py - y0) < 1e-6:
                    zones.append((px - w2, interior[1], px + w2, interior[1] + DOOR_CLEAR_DEPTH))
                    openings.append(("B", px, d.width))
                else:
                    zones.append((px - w2, interior[3] - DOOR_CLEAR_DEPTH, px + w2, interior[3]))
                    openings.append(("T", px, d.width))
            else:
                if abs(px - x0) < 1e-6:
                    zones.append((interior[0], py - w2, interior[0] + DOOR_CLEAR_DEPTH, py + w2))
                    openings.append(("L", py, d.width))
                else:
                    zones.append((interior[2] - DOOR_CLEAR_DEPTH, py - w2, interior[2], py + w2))
                    openings.append(("R", py, d.width))
        floor = _RoomFloor(interior, openings)
        items += _place_furniture(rng, room.id, entries[room.id], interior, zones, floor, len(items) + 1)

    used: set[str] = set()
    for room in rooms:
        receptacles = [it for it in items if it.room == room.id and it.kind == "furniture"
                       and it.category in library.RECEPTACLE_CATEGORIES]
        k = int(rng.integers(objects_per_room[0], objects_per_room[1] + 1))
        items += _place_objects(rng, room.id, receptacles, k, categories, ex_split, used, len(items) + 1)

    spec = SceneSpec(seed=int(seed), name=f"apt_{int(seed):04d}", wall_height=WALL_HEIGHT, rooms=rooms,
                     walls=_walls(rects), doors=doors, items=items)
    # a JSON round trip makes the returned object equal to what loading the saved file gives
    return SceneSpec.from_dict(spec.to_dict(), source=spec.name)
