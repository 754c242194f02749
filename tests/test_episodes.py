"""Episode files (embodied.tasks.episodes): the one format of every demonstration. Round trips of
discrete-action episodes with labels and of MemoryBench-like keyframe episodes; what the writer
refuses. Bad files on read: tests/test_bad_inputs.py."""
from __future__ import annotations

import numpy as np
import pytest

from embodied.config import InputError
from embodied.tasks.episodes import episode_files, read_episodes, read_meta, write_episodes


def _discrete(n: int, rng) -> dict:
    return {"obs": {"rgb": rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8),
                    "text": rng.integers(0, 50, (n, 4), dtype=np.int64)},
            "actions": rng.integers(0, 6, n).astype(np.int64),
            "labels": {"dance": rng.integers(-1, 3, n), "counterfactual/action": rng.integers(-1, 6, (n, 2))}}


def test_discrete_episodes_with_labels_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [_discrete(n, rng) for n in (5, 1, 9)]
    path = write_episodes(tmp_path / "sub" / "d.npz", episodes)
    assert path == tmp_path / "sub" / "d.npz" and [p.name for p in (tmp_path / "sub").iterdir()] == ["d.npz"]
    loaded = read_episodes(path)
    assert len(loaded) == 3
    for a, b in zip(loaded, episodes):
        assert set(a) == {"obs", "actions", "labels"}  # no empty parts: the bc trainer reads these three
        assert a["actions"].dtype == np.int64 and np.array_equal(a["actions"], b["actions"])
        for part in ("obs", "labels"):
            assert set(a[part]) == set(b[part])
            for k in b[part]:
                assert a[part][k].dtype == b[part][k].dtype and np.array_equal(a[part][k], b[part][k]), (part, k)
    with np.load(path) as data:
        assert data["first"].tolist() == [True] + [False] * 4 + [True, True] + [False] * 8
    write_episodes(tmp_path / "sub" / "e.npz", episodes[:1])
    assert len(read_episodes(tmp_path / "sub")) == 4  # a directory: every file, sorted
    assert [p.name for p in episode_files(tmp_path / "sub")] == ["d.npz", "e.npz"]


def _keyframes(k: int, seed: int, rng) -> dict:
    """A MemoryBench-like episode: float keyframe actions, depth and point clouds in metres."""
    depth = rng.uniform(0.03, 4.0, (k, 8, 8)).astype(np.float32)
    pcd = rng.uniform(-4.2, 4.2, (k, 8, 8, 3)).astype(np.float32)  # 8.4 m: more than 16 bits of 0.1 mm
    return {"obs": {"front_rgb": rng.integers(0, 256, (k, 8, 8, 3), dtype=np.uint8), "front_depth": depth,
                    "front_pcd": pcd, "proprio": rng.normal(size=(k, 8)).astype(np.float32),
                    "timestep": (np.arange(k, dtype=np.float32) / 25)[:, None]},
            "actions": rng.normal(size=(k, 9)).astype(np.float32),
            "steps": {"keyframe_index": np.cumsum(rng.integers(50, 300, k)).astype(np.int32)},
            "episode": {"seed": seed, "variation": seed % 3, "success": seed != 1, "noise": 0.02 * seed,
                        "noise_seed": 7, "attempt": seed, "instruction": f"öffne die Schublade {'✓' * seed}"}}


def test_keyframe_episodes_round_trip_with_depth_to_a_tenth_of_a_millimetre(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [_keyframes(k, seed, rng) for seed, k in enumerate((12, 10, 11))]
    lossy = {"obs/front_depth": 1e-4, "obs/front_pcd": 1e-4}
    meta = {"task": "memorybench/reopen_drawer", "split": "train", "cameras": ["front"], "image_size": 8}
    path = write_episodes(tmp_path / "mb.npz", episodes, meta=meta, quantise=lossy)
    loaded = read_episodes(path)
    for a, b in zip(loaded, episodes):
        assert set(a) == {"obs", "actions", "steps", "episode"}
        assert a["actions"].dtype == np.float32 and np.array_equal(a["actions"], b["actions"])
        for k in ("front_rgb", "proprio", "timestep"):  # lossless
            assert a["obs"][k].dtype == b["obs"][k].dtype and np.array_equal(a["obs"][k], b["obs"][k]), k
        for k in ("front_depth", "front_pcd"):
            assert a["obs"][k].dtype == np.float32 and a["obs"][k].shape == b["obs"][k].shape
            assert np.abs(a["obs"][k] - b["obs"][k]).max() <= 0.5e-4 + 1e-6, k  # rounded, not truncated
        assert np.array_equal(a["steps"]["keyframe_index"], b["steps"]["keyframe_index"])
        assert a["episode"] == b["episode"]
        assert {k: type(v) for k, v in a["episode"].items()} == {k: type(v) for k, v in b["episode"].items()}
    got = read_meta(path)
    assert {k: got[k] for k in meta} == meta and got["version"] == 1
    with np.load(path) as data:  # loads without pickle: no object arrays anywhere
        assert data["episode/instruction"].dtype.kind == "U"
        assert data["obs/front_depth"].dtype == np.uint16 and data["obs/front_pcd"].dtype == np.uint32
    # quantised depth is what keeps the files small: a slanted surface with millimetre noise
    y, x = np.mgrid[0:32, 0:32].astype(np.float32)
    depth = (1.0 + 0.01 * x + 0.02 * y + rng.normal(0, 1e-3, (10, 32, 32))).astype(np.float32)
    table = [{"obs": {"depth": depth}, "actions": np.zeros(10)}]
    exact = write_episodes(tmp_path / "exact.npz", table).stat().st_size
    assert write_episodes(tmp_path / "q.npz", table, quantise={"obs/depth": 1e-4}).stat().st_size < 0.7 * exact


def test_the_writer_refuses_what_it_cannot_store_and_leaves_the_old_file(tmp_path):
    rng = np.random.default_rng(2)
    path = write_episodes(tmp_path / "d.npz", [_discrete(3, rng)])
    before = path.read_bytes()
    cases = [
        ([{**_discrete(3, rng), "episode": {"note": None}}], {}, "episode/note has dtype object"),
        ([{**_discrete(3, rng), "episode": {"seed": 1}}, _discrete(2, rng)], {}, "lacks episode/seed"),
        ([{**_discrete(3, rng), "steps": {"t": np.zeros(2)}}], {}, "steps/t has shape (2,); expected 3 rows"),
        ([{**_discrete(3, rng), "steps": {"t": np.array([0, np.nan, 1])}}], {"quantise": {"steps/t": 0.1}}, "NaN"),
        ([_discrete(3, rng)], {"quantise": {"obs/depth": 1e-4}}, "quantise names ['obs/depth']"),
        ([_discrete(3, rng)], {"meta": {"version": 2}}, "meta keys ['version']"),
        ([], {}, "no episodes"),
    ]
    for episodes, kw, message in cases:
        with pytest.raises(ValueError) as err:
            write_episodes(path, episodes, **kw)
        assert message in str(err.value) and str(path) in str(err.value), (message, str(err.value))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_keyframe_trainer_takes_memorybench_demos_only(tmp_path):
    from embodied.config import ConfigError
    from embodied.tasks.memorybench.dataset import read_keyframe_demos as load_episodes

    rng = np.random.default_rng(3)
    write_episodes(tmp_path / "mb.npz", [_keyframes(4, 0, rng)])
    (ep,) = load_episodes(tmp_path / "mb.npz")
    assert ep["actions"].shape == (4, 9) and ep["episode"]["seed"] == 0
    discrete = write_episodes(tmp_path / "bc.npz", [_discrete(3, rng)])
    with pytest.raises(InputError) as err:
        load_episodes(discrete)
    message = str(err.value)
    assert str(discrete) in message and "per step; expected (9,)" in message and "\n" not in message
    floats = write_episodes(tmp_path / "nine.npz", [{"obs": {"x": np.zeros((2, 3))}, "actions": np.zeros((2, 9))}])
    with pytest.raises(ConfigError, match="nine.npz: episode 0 has obs"):
        load_episodes(floats)  # keyframe-shaped actions, but no proprio to condition on
    assert len(read_episodes(tmp_path / "mb.npz", action_shape=(9,))) == 1
    with pytest.raises(InputError, match=r"mb.npz: actions of shape \(9,\) per step; expected \(\)"):
        read_episodes(tmp_path / "mb.npz", action_shape=())  # what the bc trainer asks of its demos
    with pytest.raises(InputError, match="missing.npz"):
        load_episodes(tmp_path / "missing.npz")
