"""`embodied bench soak`: random actions for many steps over one level of every task family in
vector envs (worker processes, autoreset). A family passes when no worker crashes or restarts and
the resident memory of the parent and its workers grows by less than GROWTH_LIMIT_PCT after warm-up."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from embodied.config import config_file, provenance
from embodied.envs import available_cpus, make_vector_env
from embodied.envs.bench import _table
from embodied.tasks import TaskConfig

# One level of each family (configs/task/<name>.yaml) -> its share of the total steps. MemoryBench
# steps are keyframes (a motion plan and physics each: ~7 steps/s on one core against 100-15,000
# for the others), so it gets 0.5% to keep the default soak near 10 minutes on 2 cores.
LEVELS = {
    "nav/pointnav": 0.2,
    "nav/objectnav": 0.2,
    "ballet/2_delay16": 0.2,
    "room_ballet/budget": 0.2,
    "fastmap/architecture_comparison/fast_map_three_objs": 0.2,
    "memorybench/put_block_back": 0.005,
}
GROWTH_LIMIT_PCT = 5.0
# Share of a level's steps before the first memory sample. Bounded caches fill in it: navigation
# keeps up to 32 goal distance fields per cached scene per env, about 170 MB over 4 envs, filled
# after ~6,000 random-action steps (pointnav, 4 envs: 712 -> 882 MB, then flat to 24,000 steps).
WARMUP = 0.4


def load_level(name: str) -> TaskConfig:
    from omegaconf import OmegaConf

    path = config_file(f"task/{name}.yaml")
    if path is None:
        raise FileNotFoundError(f"no task config {name!r} under the config folders (configs/task/{name}.yaml)")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    node.pop("defaults", None)
    return TaskConfig.from_any(node)


def resident_mb(venv) -> float:
    """Resident memory of this process and the env workers (shared observation pages count in each)."""
    import os

    import psutil

    pids = [os.getpid(), *venv.worker_pids()]
    return sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


def random_actions(space, n: int, rng: np.random.Generator) -> np.ndarray:
    if hasattr(space, "n"):
        return rng.integers(space.n, size=n)
    return rng.uniform(space.low, space.high, (n, *space.shape)).astype(space.dtype)


def soak_level(name: str, steps: int, num_envs: int, num_workers: int, seed: int = 0, samples: int = 10) -> dict:
    """Run `steps` env steps (summed over envs) of one level; memory sampled `samples` times after warm-up."""
    result: dict = {"task": name, "num_envs": num_envs, "num_workers": num_workers, "steps_planned": steps,
                    "steps": 0, "episodes": 0, "restarts": 0, "crash": None}
    rng = np.random.default_rng(seed)
    iters = max(2, steps // num_envs)
    warm = max(1, int(iters * WARMUP))
    every = max(1, (iters - warm) // samples)
    rss: list[float] = []
    venv = None
    t0 = time.perf_counter()
    try:
        venv = make_vector_env(load_level(name), num_envs=num_envs, seed=seed, num_workers=num_workers)
        if name.startswith("nav/"):  # the split's scenes are cached within a run's first episodes anyway
            venv.call("prebuild_scenes")
        space = venv.single_action_space
        t = time.perf_counter()
        for i in range(iters):
            if i == warm:
                result["warmup_steps"] = i * num_envs
            if i >= warm and (i - warm) % every == 0:
                rss.append(resident_mb(venv))
            _, _, term, trunc, infos = venv.step(random_actions(space, num_envs, rng))
            result["steps"] += num_envs
            result["episodes"] += int(np.sum(term | trunc))
        result["seconds"] = time.perf_counter() - t
        rss.append(resident_mb(venv))
        result["restarts"] = venv.restarts
    except Exception as e:  # noqa: BLE001 - a crash is this family's result, the soak goes on
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        result["crash"] = f"{type(e).__name__}: {first}"
        result["seconds"] = time.perf_counter() - t0
    finally:
        if venv is not None:
            result["restarts"] = venv.restarts
            venv.close()
    result["steps_per_s"] = result["steps"] / result["seconds"] if result["seconds"] else None
    result["rss_mb_samples"] = [round(r, 1) for r in rss]
    result["rss_warm_mb"] = rss[0] if rss else None
    result["rss_end_mb"] = rss[-1] if rss else None
    result["rss_growth_pct"] = 100 * (rss[-1] - rss[0]) / rss[0] if len(rss) >= 2 else None
    result["passed"] = (result["crash"] is None and result["restarts"] == 0
                        and result["rss_growth_pct"] is not None and result["rss_growth_pct"] < GROWTH_LIMIT_PCT)
    return result


def bench_soak(out: str | Path = "bench_soak.json", steps: int = 100_000, quick: bool = False,
               levels: dict[str, float] | None = None) -> dict:
    """`steps` random-action env steps in all, each level its share (LEVELS), 4 envs in 2 workers
    (MemoryBench: 2 in 2); a JSON report and a table. quick: 2,000 steps in all, and only crashes
    decide (too few steps for the caches to fill: the growth is reported, not judged)."""
    if quick:
        steps = min(steps, 2_000)
    levels = LEVELS if levels is None else levels
    workers = max(1, min(2, len(available_cpus())))
    results: dict = {"provenance": provenance(),
                     "steps_total": steps, "quick": quick, "growth_limit_pct": GROWTH_LIMIT_PCT,
                     "growth_judged": not quick, "warmup_share": WARMUP, "shares": levels, "levels": {}}
    rows = [["task", "steps", "steps/s", "RSS warm MB", "RSS end MB", "growth %", "restarts", "result"]]
    for name, share in levels.items():
        n_envs = 2 if name.startswith("memorybench/") else 4
        r = soak_level(name, max(4 * n_envs, int(steps * share)), n_envs, workers)
        if quick:
            r["passed"] = r["crash"] is None and r["restarts"] == 0
        results["levels"][name] = r
        growth = "-" if r["rss_growth_pct"] is None else f"{r['rss_growth_pct']:+.1f}"
        rows.append([name, str(r["steps"]), f"{r['steps_per_s']:.0f}" if r["steps_per_s"] else "-",
                     f"{r['rss_warm_mb']:.0f}" if r["rss_warm_mb"] else "-",
                     f"{r['rss_end_mb']:.0f}" if r["rss_end_mb"] else "-", growth, str(r["restarts"]),
                     "pass" if r["passed"] else f"FAIL{': ' + r['crash'] if r['crash'] else ''}"])
        print(f"  {name}: {r['steps']} steps, {growth}% RSS, {'pass' if r['passed'] else 'FAIL'}", flush=True)
    results["passed"] = all(r["passed"] for r in results["levels"].values())
    print(_table(rows))
    Path(out).write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return results
