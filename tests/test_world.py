"""World layer: object library, procedural apartments, geometry, GLB/mesh IO, pinned scenes."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from embodied.world import (
    FURNITURE_CATEGORIES,
    HELD_OUT_CATEGORIES,
    OBJECT_CATEGORIES,
    RECEPTACLE_CATEGORIES,
    STRUCTURE_CLASSES,
    SceneFormatError,
    SceneSpec,
    build_exemplar,
    build_geometry,
    category_size_range,
    category_split,
    exemplar_split,
    export_glb,
    generate_apartment,
    load_mesh_scene,
    load_split,
    pinned_scene,
    sample_exemplar,
    semantic_classes,
    split_names,
    write_scenes,
)
from embodied.world.library import exemplar_arrays

INVARIANT_SEEDS = range(40)
AGENT_RADIUS = 0.18
TOL = 0.01


@pytest.fixture(scope="module")
def apartments() -> list[SceneSpec]:
    return [generate_apartment(s) for s in INVARIANT_SEEDS]


# ------------------------------------------------------------------------------- helpers


def corners(item) -> np.ndarray:
    """[4, 2] corners of an item's oriented footprint."""
    c, s = math.cos(item.yaw), math.sin(item.yaw)
    hx, hy = item.size[0] / 2, item.size[1] / 2
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    return local @ np.array([[c, s], [-s, c]]) + np.asarray(item.position[:2])


def penetration(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest overlap of two convex polygons along their edge normals (<= 0: disjoint)."""
    depth = np.inf
    for poly in (a, b):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            n = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            pa, pb = a @ n, b @ n
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return float(depth)


def room_rect(room) -> tuple[float, float, float, float]:
    xy = np.asarray(room.polygon)
    return (*xy.min(0), *xy.max(0))


def walkable_grid(spec: SceneSpec, res: float = 0.05):
    """Independent free-space map: walls (minus door openings) and furniture footprints, eroded
    by the agent radius."""
    xy = np.concatenate([np.asarray(r.polygon) for r in spec.rooms])
    lo, hi = xy.min(0) - 0.2, xy.max(0) + 0.2
    xs = np.arange(lo[0], hi[0], res) + res / 2
    ys = np.arange(lo[1], hi[1], res) + res / 2
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    occ = np.zeros(X.shape, bool)
    for w in spec.walls:
        (x0, y0), (x1, y1) = w.start, w.end
        t = w.thickness / 2
        occ |= (X >= min(x0, x1) - t) & (X <= max(x0, x1) + t) & (Y >= min(y0, y1) - t) & (Y <= max(y0, y1) + t)
    for d in spec.doors:
        px, py = d.position
        hw, ht = d.width / 2, 0.1
        if d.axis == "x":
            occ &= ~((np.abs(X - px) <= hw) & (np.abs(Y - py) <= ht))
        else:
            occ &= ~((np.abs(Y - py) <= hw) & (np.abs(X - px) <= ht))
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    for it in spec.furniture():
        c, s = math.cos(it.yaw), math.sin(it.yaw)
        local = (pts - np.asarray(it.position[:2])) @ np.array([[c, -s], [s, c]])
        inside = (np.abs(local[:, 0]) <= it.size[0] / 2) & (np.abs(local[:, 1]) <= it.size[1] / 2)
        occ |= inside.reshape(X.shape)
    free = ndimage.distance_transform_edt(~occ) * res > AGENT_RADIUS + res
    return free, lo, res


# ------------------------------------------------------------------------------- library


def test_library_has_enough_parametric_categories():
    assert len(OBJECT_CATEGORIES) >= 20 and len(FURNITURE_CATEGORIES) >= 12
    assert set(RECEPTACLE_CATEGORIES) <= set(FURNITURE_CATEGORIES)
    classes = semantic_classes()
    assert classes[: len(STRUCTURE_CLASSES)] == tuple(STRUCTURE_CLASSES)
    assert len(set(classes)) == len(classes)
    for cat in OBJECT_CATEGORIES + FURNITURE_CATEGORIES:
        v0, f0, c0 = exemplar_arrays(cat, 0)
        v0b, f0b, _ = exemplar_arrays(cat, 0)
        assert np.array_equal(v0, v0b) and np.array_equal(f0, f0b)
        for other in (1, 2):
            v1, f1, c1 = exemplar_arrays(cat, other)
            differs = v0.shape != v1.shape or not np.allclose(v0, v1) or not np.allclose(c0, c1)
            assert differs, f"{cat}: exemplars 0 and {other} are identical"
        assert len(f0) < 2000, f"{cat}: {len(f0)} triangles"
        ex = build_exemplar(cat, 3)
        bounds = np.concatenate([p.mesh.vertices for p in ex.parts])
        assert abs(bounds[:, 2].min()) < 1e-6 and np.allclose(bounds[:, :2].min(0) + bounds[:, :2].max(0), 0, atol=1e-6)
        assert np.allclose(bounds.max(0) - bounds.min(0), ex.size, atol=1e-6)
        size_lo, size_hi = category_size_range(cat)
        assert max(ex.size) <= 1.6 * max(size_hi) and min(ex.size) >= 0.5 * min(size_lo)


def test_exemplar_variation_covers_parts_not_only_scale():
    # a category's exemplars differ in structure (triangle counts), not just in proportions
    for cat in ("mug", "table", "lamp", "plant", "book"):
        counts = Counter(len(exemplar_arrays(cat, s)[1]) for s in range(30))
        # at least three structures, none taken by more than two thirds of the exemplars
        assert len(counts) >= 3 and max(counts.values()) <= 20, (cat, counts)


def test_splits_conventions():
    train, held = category_split("train"), category_split("held_out")
    assert set(held) == set(HELD_OUT_CATEGORIES) and not set(train) & set(held)
    assert set(train) | set(held) == set(OBJECT_CATEGORIES)
    assert [exemplar_split(s) for s in range(10)] == ["train"] * 8 + ["test"] * 2
    rng = np.random.default_rng(0)
    assert all(exemplar_split(sample_exemplar(rng, "test")) == "test" for _ in range(50))
    assert all(exemplar_split(sample_exemplar(rng, "train")) == "train" for _ in range(50))
    with pytest.raises(ValueError, match="nope"):
        category_split("nope")
    with pytest.raises(ValueError, match="unicorn"):
        build_exemplar("unicorn", 0)
    with pytest.raises(ValueError, match="-1"):
        build_exemplar("mug", -1)


# ------------------------------------------------------------------------------- apartments


def test_same_seed_same_bytes_different_seed_differs():
    a, b = generate_apartment(7).to_json(), generate_apartment(7).to_json()
    assert a == b
    assert generate_apartment(8).to_json() != a
    assert SceneSpec.from_dict(json.loads(a)).to_json() == a


@pytest.mark.parametrize("n", range(2, 9))
def test_room_count_is_honoured(n):
    spec = generate_apartment(100 + n, n_rooms=n)
    assert len(spec.rooms) == n


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_rooms"):
        generate_apartment(0, n_rooms=9)
    with pytest.raises(ValueError, match="seed"):
        generate_apartment(-3)
    with pytest.raises(ValueError, match="object_split"):
        generate_apartment(0, object_split="nope")
    with pytest.raises(ValueError, match="objects_per_room"):
        generate_apartment(0, objects_per_room=(3, 1))


def test_rooms_doors_and_walls(apartments):
    for spec in apartments:
        assert 2 <= len(spec.rooms) <= 8
        rects = {r.id: room_rect(r) for r in spec.rooms}
        for r in rects.values():
            assert min(r[2] - r[0], r[3] - r[1]) >= 2.5
        # every room is reachable through doors
        parent = {r: r for r in rects}

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i

        for d in spec.doors:
            a, b = d.rooms
            ra, rb = rects[a], rects[b]
            px, py = d.position
            assert 0.85 <= d.width <= 1.05
            if d.axis == "x":  # a wall along x: one room below, one above, at y = py
                assert {ra[1], ra[3]} & {rb[1], rb[3]} and (math.isclose(ra[3], py) or math.isclose(ra[1], py))
                assert math.isclose(py, ra[3]) and math.isclose(py, rb[1]) or math.isclose(py, ra[1]) and math.isclose(py, rb[3])
                lo, hi = max(ra[0], rb[0]), min(ra[2], rb[2])
                assert lo + 0.1 <= px - d.width / 2 and px + d.width / 2 <= hi - 0.1
            else:
                assert math.isclose(px, ra[2]) and math.isclose(px, rb[0]) or math.isclose(px, ra[0]) and math.isclose(px, rb[2])
                lo, hi = max(ra[1], rb[1]), min(ra[3], rb[3])
                assert lo + 0.1 <= py - d.width / 2 and py + d.width / 2 <= hi - 0.1
            # the door cuts a wall segment of the spec
            on_wall = [w for w in spec.walls
                       if (d.axis == "x" and math.isclose(w.start[1], py) and math.isclose(w.end[1], py)
                           and min(w.start[0], w.end[0]) <= px <= max(w.start[0], w.end[0]))
                       or (d.axis == "y" and math.isclose(w.start[0], px) and math.isclose(w.end[0], px)
                           and min(w.start[1], w.end[1]) <= py <= max(w.start[1], w.end[1]))]
            assert len(on_wall) == 1
            parent[find(a)] = find(b)
        assert len({find(r) for r in rects}) == 1, f"{spec.name}: rooms not connected"
        # outer walls enclose the footprint
        xy = np.concatenate([np.asarray(r.polygon) for r in spec.rooms])
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        outer = sum(abs(w.end[0] - w.start[0]) + abs(w.end[1] - w.start[1]) for w in spec.walls
                    if (w.start[0] == w.end[0] and w.start[0] in (x0, x1)) or (w.start[1] == w.end[1] and w.start[1] in (y0, y1)))
        assert math.isclose(outer, 2 * (x1 - x0 + y1 - y0), abs_tol=1e-6)


def test_furniture_and_objects_do_not_intersect(apartments):
    for spec in apartments:
        for group in (spec.furniture(), spec.objects()):
            polys = [corners(it) for it in group]
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    if group[i].kind == "object" and group[i].receptacle != group[j].receptacle:
                        continue  # different heights
                    assert penetration(polys[i], polys[j]) <= TOL, (spec.name, group[i].id, group[j].id)


def test_furniture_inside_rooms_and_clear_of_doors(apartments):
    for spec in apartments:
        rooms = {r.id: room_rect(r) for r in spec.rooms}
        for it in spec.furniture():
            x0, y0, x1, y1 = rooms[it.room]
            c = corners(it)
            assert (c[:, 0] >= x0 + 0.05 - TOL).all() and (c[:, 0] <= x1 - 0.05 + TOL).all(), (spec.name, it.id)
            assert (c[:, 1] >= y0 + 0.05 - TOL).all() and (c[:, 1] <= y1 - 0.05 + TOL).all(), (spec.name, it.id)
            assert it.position[2] == 0.0
            for d in spec.doors:  # a 0.6 m deep zone on both sides of each door stays empty
                px, py = d.position
                if d.axis == "x":
                    zone = np.array([[px - d.width / 2, py - 0.6], [px + d.width / 2, py - 0.6],
                                     [px + d.width / 2, py + 0.6], [px - d.width / 2, py + 0.6]])
                else:
                    zone = np.array([[px - 0.6, py - d.width / 2], [px + 0.6, py - d.width / 2],
                                     [px + 0.6, py + d.width / 2], [px - 0.6, py + d.width / 2]])
                assert penetration(c, zone) <= TOL, (spec.name, it.id, d)


def test_objects_rest_on_receptacles(apartments):
    n_categories = []
    for spec in apartments:
        objects = spec.objects()
        n_categories.append(len({o.category for o in objects}))
        for o in objects:
            rec = spec.item(o.receptacle)
            assert rec.kind == "furniture" and rec.category in RECEPTACLE_CATEGORIES and rec.room == o.room
            assert abs(o.position[2] - (rec.position[2] + rec.size[2])) <= TOL
            c, s = math.cos(rec.yaw), math.sin(rec.yaw)
            local = (corners(o) - np.asarray(rec.position[:2])) @ np.array([[c, -s], [s, c]])
            assert (np.abs(local[:, 0]) <= rec.size[0] / 2 + TOL).all(), (spec.name, o.id)
            assert (np.abs(local[:, 1]) <= rec.size[1] / 2 + TOL).all(), (spec.name, o.id)
    assert min(n_categories) >= 2 and np.mean(n_categories) >= 5


def test_agent_can_reach_every_room(apartments):
    for spec in apartments[:15]:
        free, lo, res = walkable_grid(spec)
        labels, _ = ndimage.label(free)
        ids = set()
        for d in spec.doors:
            i, j = ((np.asarray(d.position) - lo) / res).astype(int)
            ids.add(int(labels[i, j]))
        assert 0 not in ids and len(ids) == 1, f"{spec.name}: doors not all reachable"
        main = labels == ids.pop()
        for r in spec.rooms:  # every room keeps some walkable floor joined to the doors
            x0, y0, x1, y1 = room_rect(r)
            sl = (slice(int((x0 - lo[0]) / res), int((x1 - lo[0]) / res)),
                  slice(int((y0 - lo[1]) / res), int((y1 - lo[1]) / res)))
            assert main[sl].sum() * res * res >= 0.5, (spec.name, r.id, main[sl].sum() * res * res)


def test_object_splits_are_respected():
    held = generate_apartment(3, object_split="held_out_category").objects()
    assert held and all(o.category in HELD_OUT_CATEGORIES for o in held)
    train = generate_apartment(3, object_split="train").objects()
    assert train and all(o.category not in HELD_OUT_CATEGORIES and exemplar_split(o.exemplar) == "train" for o in train)
    novel = generate_apartment(3, object_split="novel_exemplar").objects()
    assert novel and all(exemplar_split(o.exemplar) == "test" for o in novel)


# ------------------------------------------------------------------------------- geometry


def test_build_geometry_parts_and_door_openings():
    spec = generate_apartment(5)
    geom = build_geometry(spec)
    classes = geom.semantic_classes
    assert classes == list(semantic_classes())
    floors = [p for p in geom.parts if p.semantic == classes.index("floor")]
    assert len(floors) == len(spec.rooms) and all(np.allclose(p.vertices[:, 2], 0) for p in floors)
    walls = [p for p in geom.parts if p.semantic == classes.index("wall")]
    lintels = [p for p in geom.parts if p.semantic == classes.index("door_frame")]
    assert len(lintels) == len(spec.doors)
    for d in spec.doors:  # nothing solid in the opening at head height, a lintel above it
        pt = np.array([d.position[0], d.position[1], 1.0])
        assert not any((p.vertices.min(0) <= pt).all() and (pt <= p.vertices.max(0)).all() for p in walls)
        above = pt + [0, 0, 1.3]
        assert any((p.vertices.min(0) <= above).all() and (above <= p.vertices.max(0)).all() for p in lintels)
    items = {p.instance: p for p in geom.parts if p.instance}
    assert set(items) == {it.id for it in spec.items}
    for it in spec.items:
        part = items[it.id]
        assert classes[part.semantic] == it.category and part.movable == (it.kind == "object")
        lo, hi = part.vertices.min(0), part.vertices.max(0)
        assert abs(lo[2] - it.position[2]) < 1e-3 and abs(hi[2] - it.position[2] - it.size[2]) < 1e-3
        assert np.allclose((lo[:2] + hi[:2]) / 2, it.position[:2], atol=0.02 + 0.5 * max(it.size[:2]) * (it.kind == "object"))
        assert part.vertex_colors is not None and part.vertex_colors.shape == part.vertices.shape
    assert 1000 < geom.num_triangles() < 100_000


def test_item_colour_and_size_in_spec_drive_geometry():
    spec = generate_apartment(6)
    obj = spec.objects()[0]
    obj.color = [1.0, 0.0, 0.0]
    obj.size = [2 * v for v in obj.size]
    part = next(p for p in build_geometry(spec).parts if p.instance == obj.id)
    assert part.color == (1.0, 0.0, 0.0)
    assert (part.vertex_colors == np.float32([1, 0, 0])).all(1).any()
    assert np.isclose(part.vertices[:, 2].max() - part.vertices[:, 2].min(), obj.size[2], atol=1e-3)


def test_glb_round_trip(tmp_path):
    spec = generate_apartment(2)
    geom = build_geometry(spec)
    path = export_glb(spec, tmp_path / "apt.glb")
    loaded = trimesh.load(str(path), force="scene")
    assert sum(len(g.faces) for g in loaded.geometry.values()) == geom.num_triangles()
    back = load_mesh_scene(path)  # glb is y-up: converted back to z-up
    assert back.num_triangles() == geom.num_triangles() and len(back.parts) == len(geom.parts)
    for a, b in zip(geom.bounds(), back.bounds()):
        assert np.allclose(a, b, atol=1e-4)
    assert any(p.vertex_colors is not None for p in back.parts)


def test_load_mesh_scene_ply_obj_and_errors(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))  # tallest along z
    box.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(box.vertices), 1))
    box.export(tmp_path / "scan.ply")
    g = load_mesh_scene(tmp_path / "scan.ply")  # z-up by default
    ext = g.bounds()[1] - g.bounds()[0]
    assert np.allclose(ext, (1, 2, 3)) and np.isclose(g.bounds()[0][2], 0)
    assert g.semantic_classes[g.parts[0].semantic] == "mesh" and np.allclose(g.parts[0].vertex_colors, (1, 0, 0))
    y_up = trimesh.creation.box(extents=(1.0, 3.0, 2.0))  # tallest along y, as an OBJ exporter writes it
    y_up.export(tmp_path / "scan.obj")
    g = load_mesh_scene(tmp_path / "scan.obj")
    assert np.allclose(g.bounds()[1] - g.bounds()[0], (1, 2, 3), atol=1e-5)
    g = load_mesh_scene(tmp_path / "scan.obj", up_axis="z")
    assert np.allclose(g.bounds()[1] - g.bounds()[0], (1, 3, 2), atol=1e-5)
    (tmp_path / "garbage.ply").write_bytes(b"\x00\x01 not a mesh at all" * 10)
    with pytest.raises(SceneFormatError, match="garbage.ply"):
        load_mesh_scene(tmp_path / "garbage.ply")
    (tmp_path / "empty.obj").write_text("")
    with pytest.raises(SceneFormatError, match="empty.obj"):
        load_mesh_scene(tmp_path / "empty.obj")
    with pytest.raises(SceneFormatError, match="missing.glb"):
        load_mesh_scene(tmp_path / "missing.glb")
    with pytest.raises(SceneFormatError, match="scan.xyz"):
        (tmp_path / "scan.xyz").write_text("1 2 3")
        load_mesh_scene(tmp_path / "scan.xyz")


# ------------------------------------------------------------------------------- scene files


def test_pinned_scenes_load_and_splits_are_disjoint():
    names = {s: split_names(s) for s in ("train", "val", "test")}
    assert len(names["train"]) >= 8 and names["val"] and names["test"]
    all_names = sum(names.values(), [])
    assert len(all_names) == len(set(all_names))
    for split in ("val", "test"):
        for spec in load_split(split):
            assert spec.name in names[split] and 4 <= len(spec.rooms) <= 6 and spec.objects()
    spec = pinned_scene(names["train"][0])
    assert not {o.category for o in spec.objects()} & set(HELD_OUT_CATEGORIES)
    with pytest.raises(ValueError, match="apt_9999"):
        pinned_scene("apt_9999")
    with pytest.raises(ValueError, match="nope"):
        load_split("nope")


def test_write_scenes_and_env_override(tmp_path, monkeypatch):
    out = tmp_path / "apartments"
    paths = write_scenes(2, 40, out, n_rooms=(2, 3), quiet=True)
    assert [p.name for p in paths] == ["apt_0040.json", "apt_0040.glb", "apt_0041.json", "apt_0041.glb"]
    assert SceneSpec.load(paths[0]).to_json() == generate_apartment(40, n_rooms=(2, 3)).to_json()
    (out / "splits.json").write_text(json.dumps({"train": ["apt_0040"], "val": ["apt_0041"], "test": []}))
    monkeypatch.setenv("EMBODIED_SCENES", str(tmp_path))
    assert [s.name for s in load_split("val")] == ["apt_0041"]
    assert load_split("test") == []
