"""The warp BatchRenderer against the embree one, on Warp's CPU backend (the CUDA path is the same kernel).

Rays of the two backends differ in the last float bits, so a ray that grazes a triangle edge may hit
the neighbouring triangle in one and not the other. Exact agreement is asserted away from edges:
pixels whose 3x3 neighbourhood in Embree's image sees one triangle (its own cast, below).
"""
import importlib
import math
import sys

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from embodied.render.batch import make_batch_renderer
from embodied.render.raycast import RaycastRenderer
from embodied.render.warp import WarpBatchRenderer
from embodied.sim import NavigableGrid
from embodied.world import load_split
from embodied.world.geometry import MeshPart, SceneGeometry, build_geometry

OUTPUTS = ("rgb", "depth", "semantic", "instance")
SIZE = dict(width=64, height=64, miss_depth=-1.0)  # misses stand out from any hit's depth


def faces_seen(geometry, renderer, poses, tilts):
    """[B, H, W] int64 triangle key (part << 32 | triangle) that Embree's rays hit, -1 on a miss."""
    scene = o3d.t.geometry.RaycastingScene(nthreads=1)
    for part in geometry.parts:
        scene.add_triangles(o3d.core.Tensor(part.vertices.astype(np.float32)),
                            o3d.core.Tensor(part.faces.astype(np.uint32)))
    keys = []
    for (x, y, z, yaw), tilt in zip(poses, tilts):
        cam = renderer.camera(tilt)
        c, s = math.cos(yaw), math.sin(yaw)
        d = cam.ray_directions() @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]], np.float32)
        eye = np.broadcast_to(np.float32([x, y, z + cam.mount_height]), d.shape)
        ans = scene.cast_rays(o3d.core.Tensor(np.concatenate([eye, d], 1)))
        g = ans["geometry_ids"].numpy().astype(np.int64)
        key = np.where(g == np.iinfo(np.uint32).max, -1, g << 32 | ans["primitive_ids"].numpy().astype(np.int64))
        keys.append(key.reshape(cam.height, cam.width))
    return np.stack(keys)


def away_from_edges(faces):
    """[B, H, W] bool: the pixel's 3x3 neighbourhood sees a single triangle (or only sky)."""
    pad = np.pad(faces, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = faces.shape[1:]
    return np.all([pad[:, i:i + h, j:j + w] == faces for i in range(3) for j in range(3)], axis=0)


def assert_parity(warp, embree, faces):
    inner = away_from_edges(faces)
    hit = faces >= 0
    assert inner.mean() > 0.7, "the edge mask would hide most of the image"
    for key in ("semantic", "instance"):
        differ = warp[key] != embree[key]
        assert differ.mean() < 0.01, f"{key}: {differ.mean():.2%} of pixels differ"
        assert not differ[inner].any(), f"{key} differs away from edges at {np.argwhere(differ & inner)[:5]}"
    np.testing.assert_array_equal(embree["depth"] == -1, ~hit)  # the helper's cast is Embree's
    np.testing.assert_array_equal((warp["depth"] == -1)[inner], ~hit[inner])
    both = inner & hit
    np.testing.assert_allclose(warp["depth"][both], embree["depth"][both], atol=1e-4, rtol=0)
    rgb_gap = np.abs(warp["rgb"].astype(int) - embree["rgb"].astype(int)).max(-1)
    assert rgb_gap[inner].max() <= 1, f"rgb differs by {rgb_gap[inner].max()} away from edges"


@pytest.fixture(scope="module")
def apartments():
    """Three pinned apartments registered in both backends; 10 agents over them: navigable poses with
    tilts 0, +30, -30 and random yaws, and one agent outside the first apartment looking at it."""
    geometries = [build_geometry(spec) for spec in load_split("train")[:3]]
    warp, embree = make_batch_renderer("warp", **SIZE), make_batch_renderer("embree", nthreads=1, **SIZE)
    rng = np.random.default_rng(0)
    scene, poses = [], []
    for slot, geometry in enumerate(geometries):
        assert warp.add_scene(f"apt{slot}", geometry) == embree.add_scene(f"apt{slot}", geometry) == slot
        xy = NavigableGrid.from_geometry(geometry).sample_navigable(rng, 3)
        poses += [(x, y, 0.0, rng.uniform(-math.pi, math.pi)) for x, y in xy]
        scene += [slot] * 3
    lo, hi = geometries[0].bounds()
    poses.append((hi[0] + 3.0, (lo[1] + hi[1]) / 2, 0.0, math.pi))
    scene.append(0)
    tilts = [(0.0, 30.0, -30.0)[i % 3] for i in range(len(poses))]
    return geometries, warp, embree, torch.tensor(scene), torch.tensor(poses), torch.tensor(tilts)


def test_warp_matches_embree_on_a_mixed_batch_of_pinned_apartments(apartments):
    geometries, warp, embree, scene, poses, tilts = apartments
    got = warp.render(scene, poses, tilts, OUTPUTS)
    want = embree.render(scene, poses, tilts, OUTPUTS)
    b = len(scene)
    for key, shape, dtype in (("rgb", (b, 64, 64, 3), torch.uint8), ("depth", (b, 64, 64), torch.float32),
                              ("semantic", (b, 64, 64), torch.int32), ("instance", (b, 64, 64), torch.int32)):
        assert got[key].shape == shape and got[key].dtype == dtype and got[key].device == torch.device("cpu"), key
    faces = np.concatenate([
        faces_seen(geometries[slot], warp, poses[scene == slot].numpy(), tilts[scene == slot].tolist())
        for slot in range(len(geometries))])
    order = np.argsort(scene.numpy(), kind="stable")  # faces_seen went scene by scene
    got = {k: v.numpy()[order] for k, v in got.items()}
    want = {k: v.numpy()[order] for k, v in want.items()}
    assert (faces < 0).any() and (faces >= 0).mean() > 0.5, "the batch should see sky and mostly geometry"
    assert len(np.unique(want["instance"])) > 5, "the batch should see several objects"
    assert_parity(got, want, faces)


def test_vertex_colours_blend_with_embrees_barycentric_convention():
    box = trimesh.creation.box((2, 4, 3)).apply_translation((3, 0, 1.5))
    colors = np.random.default_rng(1).random((len(box.vertices), 3))  # every corner its own colour
    geometry = SceneGeometry([
        MeshPart("scan", np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int32), (0.5, 0.5, 0.5),
                 semantic=5, instance=7, vertex_colors=colors),
    ])
    # The scene's own renderer (other lighting, red sky) is what both backends shade like.
    renderer = RaycastRenderer(geometry, nthreads=1, ambient=0.5, sky_color=(1, 0, 0), miss_depth=-1.0)
    warp, embree = make_batch_renderer("warp", **SIZE), make_batch_renderer("embree", **SIZE)
    for r in (warp, embree):
        r.add_scene("scan", geometry, renderer)
    poses = torch.tensor([[0.0, 3.0, 0.0, -0.6], [0.5, -1.0, 0.2, 0.3]])  # two faces seen, then one closer
    tilts = torch.tensor([0.0, -30.0])
    got = {k: v.numpy() for k, v in warp.render(torch.zeros(2, dtype=torch.long), poses, tilts, OUTPUTS).items()}
    want = {k: v.numpy() for k, v in embree.render(torch.zeros(2, dtype=torch.long), poses, tilts, OUTPUTS).items()}
    faces = faces_seen(geometry, warp, poses.numpy(), tilts.tolist())
    seen = want["instance"] == 7
    assert len(np.unique(want["rgb"][seen], axis=0)) > 500, "the colours should vary across each triangle"
    assert np.all(got["rgb"][~seen] == (255, 0, 0))
    assert_parity(got, want, faces)


def test_without_warp_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "warp", None)  # what an import of an uninstalled package meets
    monkeypatch.delitem(sys.modules, "embodied.render.warp")
    with pytest.raises(ImportError, match="pip install warp-lang"):
        importlib.import_module("embodied.render.warp")


def test_output_subset_empty_batch_and_bad_inputs():
    wall = trimesh.creation.box((0.2, 40, 40)).apply_translation((3.1, 0, 0))
    part = MeshPart("wall", np.asarray(wall.vertices, np.float32), np.asarray(wall.faces, np.int32), (1, 1, 1), 2, 0)
    r = make_batch_renderer("warp", width=8, height=6)
    assert isinstance(r, WarpBatchRenderer) and r.backend == "warp"
    assert r.add_scene("wall", SceneGeometry([part])) == 0
    out = r.render(torch.zeros(1, dtype=torch.long), torch.zeros(1, 4), torch.zeros(1), "depth")
    assert set(out) == {"depth"} and out["depth"].shape == (1, 6, 8)
    np.testing.assert_allclose(out["depth"][0], 3.0, atol=1e-5)  # the wall's near face, straight ahead
    empty = r.render(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0), OUTPUTS)
    assert empty["rgb"].shape == (0, 6, 8, 3) and empty["depth"].shape == (0, 6, 8)
    with pytest.raises(ValueError, match="scene slots"):
        r.render(torch.tensor([1]), torch.zeros(1, 4), torch.zeros(1))
    with pytest.raises(ValueError, match="scene slots"):
        r.render(torch.tensor([-1]), torch.zeros(1, 4), torch.zeros(1))
    with pytest.raises(ValueError, match=r"poses \[B, 4\]"):
        r.render(torch.zeros(2, dtype=torch.long), torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"tilt_deg \[B\]"):
        r.render(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="outputs"):
        r.render(torch.zeros(1, dtype=torch.long), torch.zeros(1, 4), torch.zeros(1), "normals")
    with pytest.raises(ValueError, match="SceneGeometry"):
        r.add_scene("mesh", part)
    with pytest.raises(ValueError, match="no triangles"):
        r.add_scene("empty", SceneGeometry([MeshPart("e", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                                                      (1, 1, 1), 2, 0)]))
    with pytest.raises(ValueError, match="faces must be"):
        r.add_scene("bad", SceneGeometry([MeshPart("b", part.vertices, part.faces + 100, (1, 1, 1), 2, 0)]))
    assert r.keys == {"wall": 0}, "a scene that failed to build takes no slot"
    with pytest.raises(ValueError, match="CUDA device"):
        make_batch_renderer("warp", device=f"cuda:{torch.cuda.device_count() + 8}")
