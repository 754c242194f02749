"""`embodied bench train`: end-to-end training throughput (env + forward + PPO update), JSON output.

Runs real PPO training of pointnav at 64x64 with memory=gru for a fixed number of updates and
reports env steps per second of wall time, excluding the first (warm-up) update; the split's scenes
(and goal-pool fields) are built before training starts. CPU: 2 env worker processes, fp32, with the
opt-in `trainer.cpu_bf16=true`, with `task.goal_pool=32`, and with both. CUDA (when available or
asked): more envs (`--num-envs 64,256`), a worker process per core but one, with default goals and
with goal_pool=32. Both add a row for the batched simulator (`task.batched=true`: the envs as tensors
in the trainer's process; Warp ray casting on CUDA).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from embodied.config import provenance
from embodied.envs import available_cpus


def bench_train(device: str = "cpu", num_envs: int = 8, num_workers: int = 2, rollout_steps: int = 64,
                updates: int = 4, memory: str = "gru", task: str = "nav/pointnav",
                extra: list[str] | None = None) -> dict[str, Any]:
    """Train for `updates` PPO updates and return throughput figures (JSON-serialisable)."""
    from embodied.config import compose
    from embodied.loading import make_envs
    from embodied.train.run import train

    def prebuilt_envs(*args):
        # Steady state, as in a long run (and as `embodied bench sim`): the split's scenes (and, with
        # goal_pool, their goal fields) are built before training starts, not during timed updates.
        envs = make_envs(*args)
        if task.startswith("nav/"):
            envs.call("prebuild_scenes")
        return envs

    if updates < 2:
        raise ValueError(f"updates={updates}: need >= 2 (the first one is warm-up)")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"task={task}", "task.width=64", "task.height=64", f"memory={memory}", f"device={device}",
                     f"num_envs={num_envs}", f"num_workers={num_workers}", f"trainer.rollout_steps={rollout_steps}",
                     f"total_steps={updates * num_envs * rollout_steps}", "quiet=true", f"run_dir={tmp}/run",
                     "ckpt_every=1000000", *(extra or [])]
        train(compose("train", overrides), env_factory=prebuilt_envs)
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = lines[1:]
    steps = timed[-1]["step"] - lines[0]["step"]
    wall = timed[-1]["time"] - lines[0]["time"]
    rollout = sum(m["rollout_time"] for m in timed)
    update = sum(m["update_time"] for m in timed)
    env = sum(m["env_time"] for m in timed)
    return {"task": task, "memory": memory, "device": device, "overrides": list(extra or []),
            "num_envs": num_envs, "num_workers": num_workers,
            "rollout_steps": rollout_steps, "timed_updates": len(timed), "steps": steps,
            "train_steps_per_s": steps / wall, "rollout_steps_per_s": steps / rollout,
            "update_s_per_update": update / len(timed), "rollout_fraction": rollout / wall,
            "env_fraction": env / wall}


# Goals from a fixed pool per scene: resets stop paying a Dijkstra (~3 ms), which an untrained
# policy (stopping at random, episodes of ~4 steps) pays at a quarter of all steps.
POOL = "task.goal_pool=32"
BATCHED_CPU = ["task.batched=true", "task.sim_device=cpu"]
BATCHED_CUDA = ["task.batched=true", "task.sim_device=cuda"]


def bench_train_cli(out: str | None = None, quick: bool = False, device: str = "cpu",
                    cuda_envs: tuple[int, ...] = (256,), cuda_workers: int | None = None) -> dict[str, Any]:
    """Run the CPU configuration (and CUDA when available or asked) and write JSON to `out`.

    CUDA runs one configuration per entry of `cuda_envs`, with `cuda_workers` env worker processes
    (default: one per core but one, which the trainer's own process needs)."""
    runs = []
    updates = 3 if quick else 6
    if device in ("cpu", "auto"):
        runs.append(bench_train("cpu", num_envs=8, num_workers=2, updates=updates))
        # Opt-in bf16 autocast, same configuration: faster only where the CPU has native bf16.
        runs.append(bench_train("cpu", num_envs=8, num_workers=2, updates=updates, extra=["trainer.cpu_bf16=true"]))
        runs.append(bench_train("cpu", num_envs=8, num_workers=2, updates=updates, extra=[POOL]))
        runs.append(bench_train("cpu", num_envs=8, num_workers=2, updates=updates,
                                extra=["trainer.cpu_bf16=true", POOL]))
        # The batched simulator: the same 8 envs as tensors in the trainer's process (no workers).
        runs.append(bench_train("cpu", num_envs=8, num_workers=0, updates=updates, extra=BATCHED_CPU))
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        workers = cuda_workers or max(1, len(available_cpus()) - 1)
        for n in cuda_envs:
            for extra in ([], [POOL]):
                runs.append(bench_train("cuda", num_envs=n, num_workers=min(workers, n), updates=updates, extra=extra))
                print(json.dumps(runs[-1]), flush=True)
            # every env in one batched simulator on the GPU (Warp ray casting), observations never leave it
            runs.append(bench_train("cuda", num_envs=n, num_workers=0, updates=updates, extra=BATCHED_CUDA))
            print(json.dumps(runs[-1]), flush=True)
    report = {"benchmark": "train", "provenance": provenance(), "runs": runs}
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return report
