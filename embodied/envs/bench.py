"""`embodied bench sim|render`: throughput of our envs, with peers measured in the same run.

Steps are taken with a random policy over move_forward / turn_left / turn_right (no stop, so
episodes run to max_steps as in habitat's benchmark scripts); resets are included in the time.
Peers run in subprocesses so their GL state cannot affect ours.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from embodied.config import provenance
from embodied.envs import make_vector_env
from embodied.envs.batched import BatchedNavEnv
from embodied.tasks.config import FastMapConfig, NavConfig

MOVE_ACTIONS = (1, 2, 3)
BATCHED_CPU = "64x64 rgb+depth+semantic, 8 envs batched in 1 process"
WORKERS_8 = "64x64 rgb+depth+semantic, 8 envs in 2 workers"  # move_forward, turn_left, turn_right
FASTMAP = dict(name="fastmap/architecture_comparison/fast_map_three_objs")

PEERS = {
    "MiniWorld-Hallway-v0": textwrap.dedent("""
        import pyglet; pyglet.options["headless"] = True
        import time, gymnasium as gym, miniworld, numpy as np
        env = gym.make("MiniWorld-Hallway-v0"); env.reset(seed=0); rng = np.random.default_rng(0)
        for _ in range(20): env.step(int(rng.integers(3)))
        n = STEPS; t = time.perf_counter()
        for _ in range(n):
            _, _, te, tr, _ = env.step(int(rng.integers(3)))
            if te or tr: env.reset()
        print(n / (time.perf_counter() - t))
    """),
    "MemoryMaze-9x9": textwrap.dedent("""
        import os; os.environ.setdefault("MUJOCO_GL", "egl"); os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        import time, numpy as np
        from memory_maze import tasks
        env = tasks.memory_maze_9x9(); env.reset(); rng = np.random.default_rng(0)
        k = env.action_spec().num_values
        for _ in range(5): env.step(int(rng.integers(k)))
        n = max(STEPS // 20, 20); t = time.perf_counter()
        for _ in range(n):
            ts = env.step(int(rng.integers(k)))
            if ts.last(): env.reset()
        print(n / (time.perf_counter() - t))
    """),
}


def measure_env(task: NavConfig | FastMapConfig, num_envs: int, num_workers: int, steps: int, seed: int = 0,
                render_threads: int | None = None) -> dict:
    """Env steps/s (summed over envs) and, for worker processes, the largest worker RSS.

    Steady state, as in a long training run: every scene of a pinned split is built before the
    clock starts (a run visits each one within its first few hundred episodes and keeps it cached),
    and the one-off cost per scene is reported apart as `scene_build_s`. `render_threads` caps the
    ray caster's threads of envs in this process (default: all cores)."""
    saved = os.environ.get("EMBODIED_RENDER_THREADS")
    if render_threads is not None:  # read when the envs' scene sources are made
        os.environ["EMBODIED_RENDER_THREADS"] = str(render_threads)
    try:
        env = make_vector_env(task, num_envs=num_envs, seed=seed, num_workers=num_workers)
    finally:
        if saved is None:
            os.environ.pop("EMBODIED_RENDER_THREADS", None)
        else:
            os.environ["EMBODIED_RENDER_THREADS"] = saved
    rng = np.random.default_rng(seed)
    # Navigation: moves and turns (no stop); other tasks: every action of their space.
    actions = MOVE_ACTIONS if task.name.startswith("nav/") else np.arange(env.single_action_space.n)
    try:
        built, build_s = 0, None
        if task.name.startswith("nav/"):
            t = time.perf_counter()
            built = max(env.call("prebuild_scenes"))
            build_s = (time.perf_counter() - t) / built if built else None
        for _ in range(10):  # warm-up: scene cache, ray caches
            env.step(rng.choice(actions, num_envs))
        iters = max(10, steps // num_envs)
        t = time.perf_counter()
        for _ in range(iters):
            env.step(rng.choice(actions, num_envs))
        dt = time.perf_counter() - t
        render_only = None
        if isinstance(env, BatchedNavEnv) and task.sensors:
            # The batched env's ray casting alone, from its current poses: the ceiling of its steps/s.
            poses = torch.stack([env.x, env.y, env.z, env.yaw], 1)
            tilt, sensors = env.tilt * (180.0 / np.pi), tuple(task.sensors)
            t = time.perf_counter()
            for _ in range(iters):
                env.renderer.render(env.scene_slot, poses, tilt, sensors)
            render_only = iters * num_envs / (time.perf_counter() - t)
        rss = None
        if num_workers > 0:
            import psutil

            rss = max(psutil.Process(pid).memory_info().rss for pid in env.worker_pids()) / 2**20
        else:
            import psutil

            rss = psutil.Process().memory_info().rss / 2**20
    finally:
        env.close()
    out = {"steps_per_s": iters * num_envs / dt, "rss_mb": rss, "scenes_prebuilt": built, "scene_build_s": build_s}
    if render_only is not None:
        out["render_only_steps_per_s"] = render_only
    return out


def measure_peer(name: str, steps: int, timeout: float = 300) -> dict:
    code = PEERS[name].replace("STEPS", str(steps))
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    if r.returncode != 0 or not r.stdout.strip():
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"not measured: {last[:160]}"}
    return {"status": "ok", "steps_per_s": float(r.stdout.strip().splitlines()[-1])}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bench_sim(out: str | Path = "bench_sim.json", quick: bool = False, peers: bool = True, batched: bool = False) -> dict:
    """`batched`: only the batched simulator's rows beside their baseline, the worker-process env at 8
    envs (the short run to take to a GPU machine: its CUDA rows come with it)."""
    steps = 300 if quick else 3000
    base = dict(name="nav/pointnav", scenes="train", sensors=["rgb", "depth", "semantic"], max_steps=500)
    configs = [
        ("64x64 rgb+depth+semantic, 1 process", NavConfig(**base, width=64, height=64), 1, 0),
        ("128x128 rgb+depth+semantic, 1 process", NavConfig(**base, width=128, height=128), 1, 0),
        # Several envs per worker amortise the pipe round trip (~0.3 ms), as any vectorised trainer does.
        (WORKERS_8, NavConfig(**base, width=64, height=64), 8, 2),
        ("128x128 6-room apartment, 1 worker (memory)",
         NavConfig(**{**base, "scenes": "procedural"}, n_rooms=6, width=128, height=128), 1, 1),
        # Fast-mapping's default level: rendered 96x72 as the original, and the symbolic CPU config.
        ("fastmap 96x72 rgb, 1 process", FastMapConfig(**FASTMAP, scenes="room"), 1, 0),
        ("fastmap 96x72 rgb, 8 envs in 2 workers", FastMapConfig(**FASTMAP, scenes="room"), 8, 2),
        ("fastmap symbolic (CPU config), 1 process", FastMapConfig(**FASTMAP, scenes="symbolic"), 1, 0),
        ("fastmap symbolic (CPU config), 8 envs in 2 workers", FastMapConfig(**FASTMAP, scenes="symbolic"), 8, 2),
        # The process above casts rays on every core, so 2 workers can add only what is not ray casting;
        # against one ray thread, the ratio shows how the workers themselves scale.
        ("64x64 rgb+depth+semantic, 1 process, 1 ray thread", NavConfig(**base, width=64, height=64), 1, 0, 1),
        # task.batched: the same 8 envs stepped as tensors in this process (Embree on every core).
        (BATCHED_CPU, NavConfig(**base, width=64, height=64, batched=True, sim_device="cpu"), 8, 0),
    ]
    if torch.cuda.is_available():  # the GPU rows: Warp ray casting, tensors on the device
        configs += [(f"64x64 rgb+depth+semantic, {n} envs batched on cuda (warp)",
                     NavConfig(**base, width=64, height=64, batched=True, sim_device="cuda"), n, 0)
                    for n in (256, 1024)]
    if batched:
        configs = [c for c in configs if c[0] == WORKERS_8 or "batched" in c[0]]
    elif quick:
        configs = configs[:1]
    results: dict = {"provenance": provenance(),
                     "quick": quick, "configs": {}}
    rows = [["configuration", "scenes", "steps/s", "RSS MB"]]
    for label, task, n, workers, *threads in configs:
        ray_threads = threads[0] if threads else None
        r = measure_env(task, n, workers, steps, render_threads=ray_threads)
        results["configs"][label] = {"task": task.name, "scenes": task.scenes, "width": task.width,
                                     "height": task.height, "num_envs": n, "num_workers": workers,
                                     "render_threads": ray_threads, **r}
        rows.append([label, task.scenes, f"{r['steps_per_s']:.0f}", f"{r['rss_mb']:.0f}"])
        print(f"  {label}: {r['steps_per_s']:.0f} steps/s", flush=True)
        if "render_only_steps_per_s" in r:
            rows.append([f"  its ray casting alone ({n} frames per call)", task.scenes,
                         f"{r['render_only_steps_per_s']:.0f}", "-"])
    c = results["configs"]
    one = c[configs[0][0]]["steps_per_s"]
    if batched:
        results["ratios"] = {"batched / 2 workers (64x64, 8 envs)": c[BATCHED_CPU]["steps_per_s"] / c[WORKERS_8]["steps_per_s"]}
    elif len(configs) > 2:
        two = c[WORKERS_8]["steps_per_s"]
        results["ratios"] = {"2 workers / 1 process (64x64)": two / one,
                             "2 workers / 1 process with 1 ray thread (64x64)":
                                 two / c["64x64 rgb+depth+semantic, 1 process, 1 ray thread"]["steps_per_s"],
                             "batched / 2 workers (64x64, 8 envs)": c[BATCHED_CPU]["steps_per_s"] / two}
    if peers and not quick and not batched:
        results["peers"] = {}
        for name in PEERS:
            p = measure_peer(name, steps=1000)
            results["peers"][name] = p
            if p["status"] == "ok":
                results.setdefault("ratios", {})[f"ours 64x64 / {name}"] = one / p["steps_per_s"]
                rows.append([name + " (peer)", "-", f"{p['steps_per_s']:.0f}", "-"])
            else:
                rows.append([name + " (peer)", "-", p["status"], "-"])
    print(_table(rows))
    builds = [c["scene_build_s"] for c in results["configs"].values() if c.get("scene_build_s")]
    if builds:
        print(f"steady state: the split's scenes were built before timing (first visit: {max(builds):.2f} s per scene)")
    for k, v in results.get("ratios", {}).items():
        print(f"{k}: {v:.2f}x")
    Path(out).write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return results


def bench_render_cli(out: str | Path = "bench_render.json", quick: bool = False) -> dict:
    from embodied.render.bench import bench_render
    from embodied.world import build_geometry, load_split

    geometry = build_geometry(load_split("train")[0])
    r = bench_render(geometry, sizes=(64, 128), frames=100 if quick else 500)
    result = {"triangles": geometry.num_triangles(), **r}
    print(json.dumps(result, indent=1))
    Path(out).write_text(json.dumps(result, indent=1))
    return result
