"""The 3D-Mem scene memory (embodied/memory/scene.py): snapshot invariants, frontiers, determinism."""
import numpy as np
import pytest

from embodied.config import ConfigError
from embodied.memory.scene import FREE, OCCUPIED, UNKNOWN, Frame, SceneMemory, SceneMemoryConfig, SceneObject
from embodied.render import Camera

CAM = Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25)


def _check_invariant(mem: SceneMemory) -> None:
    owners: dict[int, int] = {}
    for fid, snap in mem.snapshots.items():
        for oid in snap.objects:
            assert oid not in owners, f"object {oid} in snapshots {owners[oid]} and {fid}"
            owners[oid] = fid
            assert oid in mem.frames[fid].objects, f"snapshot frame {fid} does not see object {oid}"
    want = {o.id for o in mem.objects.values() if o.detections >= mem.cfg.min_detections}
    assert set(owners) == want


def _random_world(seed: int, n_objects: int = 30, n_frames: int = 60):
    """Objects scattered over 10 x 10 m; each frame sees the objects within 3 m of a random camera
    (a random subset of them, as occlusion would)."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 10, (n_objects, 2))
    frames = []
    for _ in range(n_frames):
        cam = rng.uniform(0, 10, 2)
        near = np.flatnonzero(np.hypot(*(pos - cam).T) < 3.0)
        seen = near[rng.random(len(near)) < 0.8]
        frames.append((cam, {int(o) + 1: float(rng.uniform(0.01, 0.2)) for o in seen}))
    return pos, frames


def _feed(mem: SceneMemory, pos, frames) -> None:
    """Drive the memory's bookkeeping with synthetic detections (no rendering)."""
    for cam, seen in frames:
        mem.pose = np.array([cam[0], cam[1], 0.0, 0.0])
        for oid in seen:
            obj = mem.objects.get(oid)
            if obj is None:
                obj = mem.objects[oid] = SceneObject(oid, "mug", np.r_[pos[oid - 1], 0.5], np.zeros(3))
            obj.detections += 1
            obj.frames.add(mem.step)
        if seen:
            mem.frames[mem.step] = Frame(mem.step, mem.pose.copy(), dict(seen))
        mem._update_snapshots(sorted(seen))
        mem.step += 1
        _check_invariant(mem)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_object_in_exactly_one_snapshot_whose_frame_sees_it(seed):
    mem = SceneMemory(CAM)
    pos, frames = _random_world(seed)
    _feed(mem, pos, frames)
    assert mem.objects, "the synthetic world produced no detections"
    # Far fewer snapshots than frames: clustering picks few images that cover everything.
    assert len(mem.snapshots) < len(mem.frames)


def test_clustering_prefers_one_frame_that_sees_a_whole_cluster():
    mem = SceneMemory(CAM)
    pos = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.3], [8.0, 8.0]])
    frames = [(np.zeros(2), {1: 0.1}), (np.zeros(2), {2: 0.1}), (np.zeros(2), {1: 0.05, 2: 0.05, 3: 0.05}),
              (np.array([8.0, 8.0]), {4: 0.2})]
    _feed(mem, pos, frames)
    assert sorted(mem.snapshots) == [2, 3]
    assert mem.snapshots[2].objects == [1, 2, 3] and mem.snapshots[3].objects == [4]


def test_frontiers_on_a_hand_made_map():
    mem = SceneMemory(CAM, SceneMemoryConfig(map_radius=2.0, min_frontier_cells=3))
    mem.grid[:] = OCCUPIED
    mem.grid[10:30, 10:30] = FREE  # a free 2 x 2 m room, explored (seen from up close)
    mem.explored[10:30, 10:30] = True
    mem.grid[10:30, 30:34] = UNKNOWN  # its east wall unseen: one frontier along x = 1.0 m
    mem.grid[5:8, 5:8] = UNKNOWN  # unknown but not bordering free space: no frontier
    mem._update_frontiers(np.array([0.0, 0.0, 0.0, 0.0]))
    assert len(mem.frontiers) == 1
    f = mem.frontiers[0]
    assert (f.cells[:, 1] == 29).all() and f.size == 20
    assert f.centre[0] == pytest.approx(0.95) and -1.0 <= f.centre[1] <= 1.0
    assert f.frame is None  # no frame kept yet
    mem.give_up(f.centre, 1.2)  # the agent went there and could not see more: no frontier left
    mem._update_frontiers(np.array([0.0, 0.0, 0.0, 0.0]))
    assert not mem.frontiers


def test_integrate_marks_free_floor_and_occupied_walls():
    mem = SceneMemory(CAM, SceneMemoryConfig(map_radius=5.0))
    # A wall 2 m ahead filling the view at tilt 0: its points are obstacles, the cells before it free.
    depth = np.full((32, 32), 2.0, np.float32)
    obs = {"depth": depth, "pose": np.zeros(4, np.float32), "instance": np.zeros((32, 32), np.int32),
           "semantic": np.zeros((32, 32), np.int32)}
    mem.observe(obs, 0.0)
    assert mem.grid[mem.cell_of((2.02, 0.0))] == OCCUPIED
    assert mem.grid[mem.cell_of((1.0, 0.0))] == FREE
    assert mem.grid[mem.cell_of((-2.0, 0.0))] == UNKNOWN  # behind the agent
    assert not mem.objects and not mem.snapshots


def test_integrate_keeps_what_was_occupied_and_explores_only_up_close():
    mem = SceneMemory(CAM, SceneMemoryConfig(map_radius=5.0))
    table = mem.cell_of((1.2, 0.0))
    mem.grid[table] = OCCUPIED  # seen earlier; rays over it now (a table top below the camera) must not free it
    depth = np.full((32, 32), 3.0, np.float32)
    obs = {"depth": depth, "pose": np.zeros(4, np.float32), "instance": np.zeros((32, 32), np.int32),
           "semantic": np.zeros((32, 32), np.int32)}
    mem.observe(obs, 0.0)
    assert mem.grid[table] == OCCUPIED and not mem.explored[table]
    near, far = mem.cell_of((1.0, 0.0)), mem.cell_of((2.2, 0.0))  # explored_range is 1.7 m
    assert mem.grid[near] == FREE and mem.explored[near]
    assert mem.grid[far] == FREE and not mem.explored[far]


def test_a_held_object_seen_below_min_pixels_is_glimpsed_not_added():
    """A detection needs min_pixels to add an object; fewer pixels of an object the memory already
    holds still say it is in view (the agent's check that a place sees its goal), of an unknown one
    nothing."""
    mem = SceneMemory(CAM, SceneMemoryConfig(map_radius=5.0, min_pixels=8))
    mug = mem.classes.index("mug")
    depth = np.full((32, 32), 2.0, np.float32)

    def obs(pixels: dict[int, int]) -> dict:
        inst, sem = np.zeros((32, 32), np.int32), np.zeros((32, 32), np.int32)
        for k, (oid, n) in enumerate(pixels.items()):
            inst.reshape(-1)[k * 64:k * 64 + n] = oid
            sem.reshape(-1)[k * 64:k * 64 + n] = mug
        return {"depth": depth, "pose": np.zeros(4, np.float32), "instance": inst, "semantic": sem}

    assert mem.observe(obs({5: 12}), 0.0) == [5] and not mem.glimpsed
    assert mem.observe(obs({5: 3, 6: 3}), 0.0) == [] and mem.glimpsed == {5}
    assert set(mem.objects) == {5} and mem.objects[5].detections == 1
    mem.observe(obs({}), 0.0)
    assert not mem.glimpsed
    mem.clear()
    mem.observe(obs({5: 3}), 0.0)
    assert not mem.glimpsed and not mem.objects


def test_bad_options_fail_naming_the_key():
    with pytest.raises(ConfigError, match="memory.miss_rate"):
        SceneMemoryConfig(miss_rate=1.5).validate()
    with pytest.raises(ConfigError, match="memory.cell"):
        SceneMemoryConfig(cell=0).validate()
    with pytest.raises(ConfigError, match="memory.confusion.*allowed: object, detection"):
        SceneMemoryConfig(confusion="frame").validate()
    # From the command line's options, the error names the key as the user wrote it.
    with pytest.raises(ConfigError, match=r"^agent\.memory\.confusion_rate: 1\.5; allowed: \[0, 1\)"):
        SceneMemoryConfig.from_options({"confusion_rate": 1.5})


def test_split_is_deterministic_and_separates_two_groups():
    mem = SceneMemory(CAM)
    for i, xy in enumerate([(0, 0), (0.2, 0.1), (5, 5), (5.1, 5.2), (0.1, 0.3)]):
        mem.objects[i + 1] = SceneObject(i + 1, "mug", np.r_[xy, 0.0], np.zeros(3))
    a, b = mem._split([1, 2, 3, 4, 5])
    assert sorted(map(sorted, (a, b))) == [[1, 2, 5], [3, 4]]
    assert mem._split([1, 2, 3, 4, 5]) == [a, b]


def test_reexplore_brings_frontiers_back_and_keeps_map_and_objects():
    mem = SceneMemory(CAM, SceneMemoryConfig(map_radius=2.0, min_frontier_cells=3))
    mem.grid[:] = OCCUPIED
    mem.grid[10:30, 10:30] = FREE
    mem.explored[10:30, 10:30] = True  # all explored: nothing left to explore
    mem.objects[7] = SceneObject(7, "vase", np.zeros(3), np.ones(3) * 0.5)
    mem._update_frontiers(np.zeros(4))
    assert not mem.frontiers
    grid = mem.grid.copy()
    mem.reexplore()
    mem.explored[18:22, 18:22] = True  # what the agent sees next, around where it stands
    mem._update_frontiers(np.zeros(4))
    assert len(mem.frontiers) == 1 and mem.frontiers[0].size == 12  # the ring of seen cells next to unseen ones
    assert np.array_equal(mem.grid, grid) and set(mem.objects) == {7}
