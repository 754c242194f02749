"""Scripted expert demonstrations as HDF5 (one file per task + split).

Layout (version 1): root attrs task, split, cameras, image_size, version; one group per episode
`episode_0000`, ... with attrs seed, variation, instruction, success, noise, noise_seed, attempt and datasets
`obs/{cam}_{rgb,depth,pcd}` [K,...], `proprio` [K,8], `timestep` [K], `action` [K,9] (the expert's
label: what was executed, unless the episode's noise > 0) and `keyframe_index` [K] (physics step at
which keyframe k's action began). Observation k is the one seen before action k. Depth and point clouds are stored to 0.1 mm (HDF5 scale-offset filter).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from embodied.config import InputError
from embodied.tasks.memorybench.env import MemoryBenchConfig
from embodied.tasks.memorybench.scene import CAMERAS

VERSION = 1
NOISE_ATTEMPTS = 8


def record_demo(env, seed: int, noise: float = 0.0, noise_seed: int = 0, attempt: int = 0,
                noise_on_contact: bool = False) -> dict:
    """Run the expert for one episode; returns the per-keyframe arrays and the episode facts.

    noise > 0 records a DART-style demo (Laskey et al. 2017): each free-space keyframe (ignore
    collisions off) is executed with its position moved by Gaussian noise of this std (metres,
    clipped to 2 std), while the label stays the expert's clean action. The policy then sees states
    a little off the expert's path, labelled with the way back, which a keyframe policy's own small
    errors produce at test time. Contact moves are executed as labelled, unless noise_on_contact
    (the expert's tolerance check, bench.expert_tolerance)."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng([int(seed), int(noise_seed), int(attempt)])
    frames, actions, starts = [], [], []
    success = False
    while True:
        a = env.oracle_action()
        frames.append(obs)
        starts.append(env.scene.physics_steps)
        actions.append(a)
        executed = a
        if noise > 0 and (noise_on_contact or a[8] < 0.5):
            executed = a.copy()
            executed[:3] += np.clip(rng.normal(0.0, noise, 3), -2 * noise, 2 * noise).astype(a.dtype)
        obs, reward, terminated, truncated, info = env.step(executed)
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
                cameras=CAMERAS, noise: float = 0.0, noise_seed: int = 0) -> Path:
    """Generate the first n pinned seeds of a split (all when n is None) into the HDF5 file `out`;
    noise / noise_seed: DART-style perturbed execution (see record_demo), stored as episode attrs."""
    from tqdm import tqdm

    from embodied.tasks.memorybench import make_env

    task = task if task.startswith("memorybench/") else f"memorybench/{task}"
    seeds = split_seeds(task, split)
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"noise: {noise!r}; allowed: >= 0 (metres)")
    if n is not None:
        if not 1 <= n <= len(seeds):
            raise ValueError(f"n: {n}; allowed: 1..{len(seeds)} (pinned {split} seeds)")
        seeds = seeds[:n]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = make_env(MemoryBenchConfig(name=task, width=image_size, height=image_size, cameras=list(cameras)))
    tmp = out.with_name(out.name + ".tmp")
    failed = []
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(task=task, split=split, cameras=list(cameras), image_size=image_size, version=VERSION)
            for i, seed in enumerate(tqdm(seeds, desc=f"{task} {split}", disable=not progress)):
                # a perturbed execution can fail (a knocked handle); draw the noise again, so the
                # labels never come from a state the expert could not finish from
                for attempt in range(NOISE_ATTEMPTS if noise > 0 else 1):
                    d = record_demo(env, seed, noise, noise_seed, attempt)
                    if d["success"]:
                        break
                if not d["success"]:
                    failed.append(seed)
                g = f.create_group(f"episode_{i:04d}")
                g.attrs.update(seed=d["seed"], variation=d["variation"], instruction=d["instruction"],
                               success=d["success"], noise=float(noise), noise_seed=int(noise_seed),
                               attempt=int(attempt))
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
    """Read a file written by write_demos: one dict per episode (arrays as numpy). A missing,
    foreign, truncated or corrupt file raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no demo file there (write one with `embodied demos`)")
    episodes = []
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("version") != VERSION:
                raise InputError(f"{path}: demo file version {f.attrs.get('version')!r}; supported: {VERSION}")
            for name in sorted(k for k in f if k.startswith("episode_")):
                g = f[name]
                episodes.append({
                    "obs": {k: g["obs"][k][()] for k in g["obs"]},
                    **{k: g[k][()] for k in ("proprio", "timestep", "action", "keyframe_index")},
                    "seed": int(g.attrs["seed"]), "variation": int(g.attrs["variation"]),
                    "instruction": str(g.attrs["instruction"]), "success": bool(g.attrs["success"]),
                    "noise": float(g.attrs.get("noise", 0.0)),
                    **{k: int(g.attrs.get(k, 0)) for k in ("noise_seed", "attempt")}})
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:  # h5py's errors on foreign or cut files
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        if isinstance(e, OSError):
            raise InputError(f"{path}: not a readable HDF5 demo file (truncated?): {reason}") from None
        raise InputError(f"{path}: not a demo file of `embodied demos` ({reason})") from None
    if not episodes:
        raise InputError(f"{path}: demo file holds no episodes")
    return episodes
