"""`embodied bench memorybench`: demos generated per minute per task and env keyframe steps per
second (4 cameras at 128x128 by default), beside RLBench's ~0.12 s per step headless;
`--verify` also runs the expert on all 100 + 25 pinned seeds of every task (default and strict
success conditions), and measures its
tolerance: success when every keyframe target is moved by 1 cm noise."""
from __future__ import annotations

import json
import time
from pathlib import Path

from embodied.config import provenance

RLBENCH_SECONDS_PER_STEP = 0.12  # RLBench headless, per keyframe step (issue #4)


def bench_demos(task: str, n: int, image_size: int, seeds_from: int = 0) -> dict:
    """Time n expert demos (rendering every keyframe's observation)."""
    from embodied.tasks.memorybench import make_env
    from embodied.tasks.memorybench.dataset import record_demo

    env = make_env({"name": task, "width": image_size, "height": image_size})
    record_demo(env, seeds_from)  # warm-up: first render builds TinyRenderer's state
    keyframes, successes = 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(seeds_from + 1, seeds_from + 1 + n):
        d = record_demo(env, s)
        keyframes += len(d["action"])
        successes += d["success"]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    env.close()
    # CPU seconds of this process as well: on a shared machine wall time includes other jobs' share
    return {"demos": n, "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3),
            "demos_per_minute": round(60 * n / dt, 2), "demos_per_cpu_minute": round(60 * n / cpu, 2),
            "keyframe_steps_per_cpu_second": round(keyframes / cpu, 3),
            "keyframe_steps_per_second": round(keyframes / dt, 3),
            "seconds_per_keyframe_step": round(dt / keyframes, 4),
            "speedup_vs_rlbench": round(RLBENCH_SECONDS_PER_STEP / (dt / keyframes), 2),
            "expert_success": successes / n}


def verify_expert(task: str, splits=("train", "test"), progress: bool = True, strict: bool = False) -> dict:
    """Run the expert on every pinned seed of the splits without rendering (with the strict success
    conditions when `strict`); count successes."""
    from tqdm import tqdm

    from embodied.tasks.memorybench import make_env
    from embodied.tasks.memorybench.dataset import record_demo, split_seeds

    env = make_env({"name": task, "cameras": [], "strict": strict})
    seeds = [s for split in splits for s in split_seeds(task, split)]
    t0 = time.perf_counter()
    desc = f"verify {task}" + (" (strict)" if strict else "")
    failed = [s for s in tqdm(seeds, desc=desc, disable=not progress) if not record_demo(env, s)["success"]]
    env.close()
    return {"seeds": len(seeds), "succeeded": len(seeds) - len(failed), "failed_seeds": failed,
            "seconds": round(time.perf_counter() - t0, 1)}


def expert_tolerance(task: str, sigma: float = 0.01, n: int = 30, progress: bool = False) -> dict:
    """Success of the expert, per variation, when every keyframe's target position (contact moves
    included) is moved by Gaussian noise of std `sigma` metres (clipped to 2 std), over seeds 0..n-1:
    how precise a policy that imitates it must be."""
    from tqdm import tqdm

    from embodied.tasks.memorybench import make_env
    from embodied.tasks.memorybench.dataset import record_demo

    env = make_env({"name": task, "cameras": []})
    per: dict[int, list[bool]] = {}
    for seed in tqdm(range(n), desc=f"tolerance {task}", disable=not progress):
        d = record_demo(env, seed, noise=sigma, noise_seed=7, noise_on_contact=True)
        per.setdefault(d["variation"], []).append(bool(d["success"]))
    env.close()
    return {"sigma_m": sigma, "episodes": n, "success": round(sum(map(sum, per.values())) / n, 3),
            "per_variation": {v: round(sum(r) / len(r), 3) for v, r in sorted(per.items())}}


def bench_memorybench(out, quick: bool = False, extra: dict | None = None, image_size: int = 128,
                      verify: bool = False) -> dict:
    """Run the benchmark, print a summary, write JSON to `out`. `extra` (e.g. policy steps/s from
    the agents layer) is merged into the result under its own keys."""
    from embodied.tasks.memorybench import TASK_NAMES

    n = 2 if quick else 10
    result = {"benchmark": "memorybench", "image_size": image_size, "cameras": 4, "quick": quick,
              "provenance": provenance(),
              "baseline": {"rlbench_seconds_per_keyframe_step": RLBENCH_SECONDS_PER_STEP,
                           "source": "issue #4 (RLBench headless, about 0.12 s per step)"},
              "tasks": {}}
    for task in TASK_NAMES:
        r = bench_demos(task, n, image_size)
        result["tasks"][task] = r
        print(f"{task:32s} {r['demos_per_minute']:7.1f} demos/min  {r['keyframe_steps_per_second']:6.2f} "
              f"keyframe steps/s  ({r['seconds_per_keyframe_step']:.3f} s/step, "
              f"{r['speedup_vs_rlbench']:.2f}x RLBench)")
    if verify:
        for key, strict in (("expert_verification", False), ("expert_verification_strict", True)):
            result[key] = {}
            for task in TASK_NAMES:
                v = verify_expert(task, strict=strict)
                result[key][task] = v
                print(f"{task:32s} expert succeeded on {v['succeeded']}/{v['seeds']} pinned seeds"
                      f"{' (strict)' if strict else ''} ({v['seconds']} s)")
        result["expert_tolerance"] = {}
        for task in TASK_NAMES:
            t = expert_tolerance(task)
            result["expert_tolerance"][task] = t
            print(f"{task:32s} expert with 1 cm noise on every keyframe: {t['success']:.2f} success "
                  f"(per variation {t['per_variation']})")
    if extra:
        result.update(extra)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return result
