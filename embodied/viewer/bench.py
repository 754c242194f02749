"""`embodied bench record`: evaluation steps/s with and without rerun recording, same episodes, same run.

One env in this process, the shortest-path oracle as the policy (so the figure is env + recording
cost, not network cost), one camera. Configurations:
  baseline          no recording
  record            recording of what the agent observes (rgb + depth), written by the writer
                    process (the default; embodied/viewer/stream.py)
  record+semantic   the same plus a semantic view rendered for it (`embodied record`'s default)
  record inline     the `record` recording converted and written in this process
Each configuration runs the same episodes (seeds 0..) for the same number of steps; resets count.
The clock stops only when every file of the run is complete on disk (`sync`).
The configurations are interleaved over `repeats` rounds and the best round is kept, which
removes most of the noise of a shared machine.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from embodied.config import provenance
from embodied.tasks import make_env
from embodied.tasks.config import NavConfig
from embodied.viewer.recording import EpisodeRecorder
from embodied.viewer.stream import sync

# name -> None (no recording) or (extra sensors, writer)
CONFIGS = {"baseline": None, "record": ((), "process"), "record+semantic": (("semantic",), "process"),
           "record inline": ((), "inline")}


def _run(env, steps: int, config, directory: Path) -> float:
    """Steps/s over `steps` oracle steps, episodes seeded 0, 1, ... and recorded when asked."""
    done_steps, episode = 0, 0
    start = time.perf_counter()
    while done_steps < steps:
        obs, info = env.reset(seed=episode)
        recorder = None
        if config is not None:
            recorder = EpisodeRecorder(directory / f"episode_{episode:03d}.rrd", extra_sensors=config[0],
                                       writer=config[1])
            recorder.start(env, obs, info)
        done = False
        while not done and done_steps < steps:
            action = env.oracle_action()
            obs, reward, terminated, truncated, info = env.step(action)
            if recorder is not None:
                recorder.step(action, obs, reward, info)
            done = terminated or truncated
            done_steps += 1
        if recorder is not None:
            recorder.close(wait=False)  # the writer finishes it while the next episode runs
        episode += 1
    sync()
    return steps / (time.perf_counter() - start)


def bench_record(size: int = 64, steps: int = 600, repeats: int = 3, task: str = "nav/pointnav",
                 scenes: str = "train") -> dict:
    env = make_env(NavConfig(name=task, scenes=scenes, width=size, height=size, sensors=["rgb", "depth"],
                             max_steps=200))
    with tempfile.TemporaryDirectory(prefix="embodied-bench-record-") as tmp:
        for config in CONFIGS.values():  # builds the scene caches, starts the writer process
            if config is not None:
                _run(env, 50, config, Path(tmp) / "warmup")
        best = {name: 0.0 for name in CONFIGS}
        sizes = {}
        for round_ in range(repeats):
            for name, extra in CONFIGS.items():
                directory = Path(tmp) / f"{name}_{round_}"
                directory.mkdir(parents=True)
                best[name] = max(best[name], _run(env, steps, extra, directory))
                files = list(directory.glob("*.rrd"))
                if files:
                    sizes[name] = round(sum(f.stat().st_size for f in files) / steps / 1024, 2)
    base = best["baseline"]
    runs = [{"config": name, "steps_per_s": round(sps, 1), "relative": round(sps / base, 3),
             "cost": round(1 - sps / base, 3), **({"kib_per_step": sizes[name]} if name in sizes else {})}
            for name, sps in best.items()]
    return {"benchmark": "record", "task": task, "size": size, "cameras": 1, "steps": steps, "repeats": repeats,
            "policy": "oracle", "provenance": provenance(), "target_cost": 0.30, "runs": runs}


def bench_record_cli(out: str | None = None, quick: bool = False) -> dict:
    report = bench_record(steps=200 if quick else 600, repeats=2 if quick else 3)
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return report
