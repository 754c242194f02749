"""Scripted expert demonstrations as HDF5 (one file per task + split).

Layout (version 1): root attrs task, split, cameras, image_size, version; one group per episode
`episode_0000`, ... with attrs seed, variation, instruction, success and datasets
`obs/{cam}_{rgb,depth,pcd}` [K,...], `proprio` [K,8], `timestep` [K], `action` [K,9] and
`keyframe_index` [K] (physics step at which keyframe k's action began). Observation k is the one
seen before action k. Depth and point clouds are stored to 0.1 mm (HDF5 scale-offset filter).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from embodied.tasks.memorybench.env import MemoryBenchConfig
from embodied.tasks.memorybench.scene import CAMERAS

VERSION = 1


def record_demo(env, seed: int) -> dict:
    """Run the expert for one episode; returns the per-keyframe arrays and the episode facts."""
    obs, info = env.reset(seed=seed)
    frames, actions, starts = [], [], []
    success = False
    while True:
        a = env.oracle_action()
        frames.append(obs)
        starts.append(env.scene.physics_steps)
        actions.append(a)
        obs, reward, terminated, truncated, info = env.step(a)
        success = bool(info["success"])
        if terminated or truncated or env.task.keyframe(env.keyframe) is None:
            break
    keys = [k for k in frames[0] if k not in ("proprio", "timestep")]
    return {"obs": {k: np.stack([f[k] for f in frames]) for k in keys},
            "proprio": np.stack([f["proprio"] for f in frames]).astype(np.float32),
            "timestep": np.array([f["timestep"][0] for f in frames], np.float32),
            "action": np.stack(actions).astype(np.float32),
            "keyframe_index": np.array(starts, np.int32),
            "seed": int(seed), "variation": int(info["variation"]), "instruction": env.instruction,
            "success": success}


def split_seeds(task: str, split: str) -> list[int]:
    from embodied.tasks.memorybench import memorybench_spec

    spec = memorybench_spec()["tasks"]
    short = task.split("/", 1)[-1]
    if short not in spec:
        raise ValueError(f"task: {task!r}; allowed: {', '.join('memorybench/' + t for t in spec)}")
    if split not in ("train", "test"):
        raise ValueError(f"split: {split!r}; allowed: train, test")
    return list(spec[short][f"{split}_seeds"])


def write_demos(task: str, split: str, n: int | None, out, image_size: int = 128, progress: bool = True,
                cameras=CAMERAS) -> Path:
    """Generate the first n pinned seeds of a split (all when n is None) into the HDF5 file `out`."""
    from tqdm import tqdm

    from embodied.tasks.memorybench import make_env

    task = task if task.startswith("memorybench/") else f"memorybench/{task}"
    seeds = split_seeds(task, split)
    if n is not None:
        if not 1 <= n <= len(seeds):
            raise ValueError(f"n: {n}; allowed: 1..{len(seeds)} (pinned {split} seeds)")
        seeds = seeds[:n]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = make_env(MemoryBenchConfig(name=task, image_size=image_size, cameras=list(cameras)))
    tmp = out.with_name(out.name + ".tmp")
    failed = []
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(task=task, split=split, cameras=list(cameras), image_size=image_size, version=VERSION)
            for i, seed in enumerate(tqdm(seeds, desc=f"{task} {split}", disable=not progress)):
                d = record_demo(env, seed)
                if not d["success"]:
                    failed.append(seed)
                g = f.create_group(f"episode_{i:04d}")
                g.attrs.update(seed=d["seed"], variation=d["variation"], instruction=d["instruction"],
                               success=d["success"])
                for k, v in d["obs"].items():
                    # depth and point clouds keep 4 decimals (0.1 mm; HDF5 scale-offset filter),
                    # which lets gzip shrink them several-fold; images are lossless
                    lossy = {"scaleoffset": 4} if v.dtype == np.float32 else {}
                    g.create_dataset(f"obs/{k}", data=v, compression="gzip", compression_opts=4,
                                     chunks=(1,) + v.shape[1:], **lossy)
                for k in ("proprio", "timestep", "action", "keyframe_index"):
                    g.create_dataset(k, data=d[k])
        tmp.replace(out)
    finally:
        env.close()
        if tmp.exists():
            tmp.unlink()
    if failed:
        print(f"warning: expert failed on seeds {failed} (kept, with success=False)")
    return out


def load_demos(path) -> list[dict]:
    """Read a file written by write_demos: one dict per episode (arrays as numpy)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"demos: no file at {path}")
    episodes = []
    with h5py.File(path, "r") as f:
        if f.attrs.get("version") != VERSION:
            raise ValueError(f"{path}: dataset version {f.attrs.get('version')!r}; supported: {VERSION}")
        for name in sorted(k for k in f if k.startswith("episode_")):
            g = f[name]
            episodes.append({
                "obs": {k: g["obs"][k][()] for k in g["obs"]},
                **{k: g[k][()] for k in ("proprio", "timestep", "action", "keyframe_index")},
                "seed": int(g.attrs["seed"]), "variation": int(g.attrs["variation"]),
                "instruction": str(g.attrs["instruction"]), "success": bool(g.attrs["success"])})
    return episodes
