"""Scripted expert demonstrations of MemoryBench as episode files (embodied.tasks.episodes; one
.npz file per task + split).

Each episode's K keyframes: `obs/{cam}_{rgb,depth,pcd}` [K,...], `obs/proprio` [K,8] and
`obs/timestep` [K,1] (the env's observations), `actions` [K,9] float32 (the expert's label: what was
executed, unless the episode's noise > 0) and `steps/keyframe_index` [K] (physics step at which
keyframe k's action began); per episode `episode/{seed, variation, instruction, success, noise,
noise_seed, attempt}`; file meta task, split, cameras, image_size. Observation k is the one seen
before action k. Depth and point clouds are stored to 0.1 mm (quantised, see episodes.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from embodied.tasks.episodes import Episode, read_episodes, write_episodes
from embodied.tasks.memorybench.env import MemoryBenchConfig
from embodied.tasks.memorybench.scene import CAMERAS

NOISE_ATTEMPTS = 8
DEPTH_STEP = 1e-4  # metres: depth and point clouds are stored to 0.1 mm


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
    """Generate the first n pinned seeds of a split (all when n is None) into the episode file `out`
    (.npz); noise / noise_seed: DART-style perturbed execution (see record_demo), stored per episode."""
    from tqdm import tqdm

    from embodied.tasks.memorybench import make_env

    task = task if "/" in task else f"memorybench/{task}"  # a short name: put_block_back
    seeds = split_seeds(task, split)
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"noise: {noise!r}; allowed: >= 0 (metres)")
    if n is not None:
        if not 1 <= n <= len(seeds):
            raise ValueError(f"n: {n}; allowed: 1..{len(seeds)} (pinned {split} seeds)")
        seeds = seeds[:n]
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # an unusable out fails now, not after the demos
    env = make_env(MemoryBenchConfig(name=task, width=image_size, height=image_size, cameras=list(cameras)))
    episodes, failed = [], []
    try:
        for seed in tqdm(seeds, desc=f"{task} {split}", disable=not progress):
            # a perturbed execution can fail (a knocked handle); draw the noise again, so the
            # labels never come from a state the expert could not finish from
            for attempt in range(NOISE_ATTEMPTS if noise > 0 else 1):
                d = record_demo(env, seed, noise, noise_seed, attempt)
                if d["success"]:
                    break
            if not d["success"]:
                failed.append(seed)
            episodes.append(demo_episode(d, noise=float(noise), noise_seed=int(noise_seed), attempt=int(attempt)))
    finally:
        env.close()
    # depth and point clouds keep 0.1 mm, which lets deflate shrink them several-fold; images are lossless
    lossy = {f"obs/{cam}_{m}": DEPTH_STEP for cam in cameras for m in ("depth", "pcd")}
    path = write_episodes(out, episodes, meta={"task": task, "split": split, "cameras": list(cameras),
                                               "image_size": image_size}, quantise=lossy)
    if failed:
        print(f"warning: expert failed on seeds {failed} (kept, with success=False)")
    return path


def demo_episode(d: dict, **facts) -> Episode:
    """A record_demo result as an episode of the episode-file format (facts: more per-episode values)."""
    return {"obs": {**d["obs"], "proprio": d["proprio"], "timestep": d["timestep"][:, None]},
            "actions": d["action"], "steps": {"keyframe_index": d["keyframe_index"]},
            "episode": {"seed": d["seed"], "variation": d["variation"], "instruction": d["instruction"],
                        "success": d["success"], **facts}}


def record_train_demos(task_cfg, n: int, data_dir: Path, noise: float = 0.0, copy: int = 0,
                       progress: bool = True) -> Path:
    """The first `n` pinned train demos of a task config at its camera size, in `data_dir` (reused
    when the file exists); noise > 0: DART copy `copy` (record_demo). Registered as MemoryBench's
    demo source (embodied.tasks.registry.DemoSource)."""
    from embodied.tasks.memorybench import task_short_name

    name = str(task_cfg["name"])
    image_size = int(task_cfg.get("width") or 128)
    tag = f"_dart{noise:g}_{copy}" if noise > 0 else ""
    out = Path(data_dir) / f"{task_short_name(name)}_train_{n}_{image_size}{tag}.npz"
    if not out.exists():
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        write_demos(name, "train", n, out, image_size, progress, noise=noise, noise_seed=copy)
    return out


def read_keyframe_demos(path) -> list[Episode]:
    """MemoryBench demonstrations of an episode file (or directory); a file of other demonstrations
    (discrete actions, no proprio) is one line naming it."""
    from embodied.config import ConfigError

    episodes = read_episodes(path, action_shape=(9,))
    for i, ep in enumerate(episodes):
        if not {"proprio", "timestep"} <= set(ep["obs"]):
            raise ConfigError(f"trainer.demos: {path}: episode {i} has obs {sorted(ep['obs'])}; allowed: "
                              "MemoryBench keyframe demos (obs proprio, timestep) from `embodied demos`")
    return episodes
