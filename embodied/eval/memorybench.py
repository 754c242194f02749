"""`embodied eval suite=memorybench ckpt=...`: MemoryBench's protocol (SAM2Act's eval.py) on our
pybullet rebuild: per task the pinned test seeds (25), `runs` evaluation runs, at most 25
keyframe actions per episode, memory reset every episode, deterministic policy; success printed
as mean +- std over runs beside the published rows of tasks/memorybench.yaml with their sources.

Models are single-task (as in the paper), so `ckpt` may hold `TASK`, replaced by each task's short
name (e.g. `ckpt=runs/memorybench/TASK/membank/seed0/latest.pt`); a plain path evaluates the task
its checkpoint was trained on. `agent=oracle` runs the scripted expert (a check of the benchmark).
`task.strict=true` evaluates with the strict success conditions (memorybench/tasks.py; a checkpoint
trained in either mode), its rows labelled "strict".

Our simulation and policy are deterministic given the seed, so the runs of one checkpoint repeat
the same episodes; the paper's run-to-run spread came from CoppeliaSim's sampling-based planner.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied.config import ConfigError, check, config_file

def _task_dict(name: str, trained: dict | None) -> dict:
    from omegaconf import OmegaConf

    path = config_file(f"task/{name}.yaml")
    task = OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path is not None else {"name": name}
    task.pop("defaults", None)
    for key in ("width", "height"):  # the policy sees the image size it was trained on
        if trained and key in trained:
            task[key] = trained[key]
    return task


def _checkpoint_for(ckpt_arg: str, task_name: str) -> Path | None:
    from embodied.tasks.memorybench import task_short_name

    from embodied.loading import resolve_checkpoint

    return resolve_checkpoint(ckpt_arg.replace("TASK", task_short_name(task_name)))  # a path, or pretrained:<name>


def load_keyframe_policy(path: Path, device: torch.device):
    """(agent, training config) of a keyframe checkpoint."""
    from embodied.agents.keyframe import build_from_run_config
    from embodied.loading import load_checkpoint, load_model_state

    ckpt = load_checkpoint(path, map_location=device)
    config = ckpt["config"]
    check(str((config.get("agent") or {}).get("name")) == "keyframe", "ckpt",
          f"{path} was not trained with agent=keyframe; allowed: a keyframe checkpoint")
    agent = build_from_run_config(config).to(device)
    load_model_state(agent, ckpt["model"], path)
    agent.eval()
    return agent, config


class _Oracle:
    """The scripted expert behind the keyframe-policy interface."""

    def __init__(self, env):
        self.env = env

    def initial_state(self, batch, device=None):
        return None

    def act(self, obs, state, first):
        return np.asarray(self.env.oracle_action(), dtype=np.float32), state, {}

    def eval(self):
        return self

    def parameters(self):
        yield torch.zeros(())


def run_task(task: dict, policy, seeds: list[int], runs: int, quiet: bool, env=None) -> dict[str, Any]:
    """Success per run over `seeds` (each run = every seed once). `policy`: a keyframe agent or
    'oracle'."""
    from embodied.agents.keyframe import rollout
    from embodied.tasks.memorybench import make_env

    env = env if env is not None else make_env(task)
    agent = _Oracle(env) if policy == "oracle" else policy
    per_run, episodes = [], []
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=runs * len(seeds), unit="ep", desc=f"eval {task['name']}", file=sys.stderr)
    try:
        for r in range(runs):
            outcomes = []
            for s in seeds:
                outcome = rollout(env, agent, s)
                outcome["run"] = r
                outcomes.append(outcome)
                if bar:
                    bar.update(1)
                    bar.set_postfix({"success": f"{np.mean([o['success'] for o in outcomes]):.2f}"}, refresh=False)
            per_run.append(float(np.mean([o["success"] for o in outcomes])))
            episodes += outcomes
    finally:
        if bar:
            bar.close()
        env.close()
    return {"task": task["name"], "runs": per_run, "success_mean": float(np.mean(per_run)),
            "success_std": float(np.std(per_run)), "episodes_per_run": len(seeds), "per_episode": episodes}


def format_memorybench_table(results: list[dict], spec: dict) -> str:
    """Our rows beside the published ones (percent, in the order of tasks/memorybench.yaml), then
    the sources."""
    from embodied.tasks.memorybench import task_short_name

    refs = {r["task"]: (spec.get(task_short_name(r["task"])) or spec.get(r["task"]) or {}).get("reference") or {}
            for r in results}
    methods: list[str] = []
    for ref in refs.values():
        methods += [m for m in ref if m not in methods]
    header = f"{'task':<18} {'ours':<32} " + " ".join(f"{m:>9}" for m in methods)
    lines = [header, "-" * len(header)]
    sources: dict[str, str] = {}
    for r in results:
        ours = f"{100 * r['success_mean']:.1f} ± {100 * r['success_std']:.1f} ({r['method']})"
        cells = []
        for m in methods:
            row = refs[r["task"]].get(m)
            value = row.get("success") if isinstance(row, dict) else row
            if value is None:
                cells.append(f"{'-':>9}")
                continue
            value = float(value) * (100.0 if float(value) <= 1.0 else 1.0)  # fractions or percent
            cells.append(f"{value:>9.1f}")
            if isinstance(row, dict) and row.get("source"):
                sources[m] = str(row["source"])
        lines.append(f"{task_short_name(r['task']):<18} {ours:<32} " + " ".join(cells))
    if sources:
        lines.append("")
        lines += [f"{m}: {s}" for m, s in sources.items()]
    return "\n".join(lines)


def evaluate_memorybench(cfg, policy_kind: str, task_names: list[str]) -> dict[str, Any]:
    """The MemoryBench table for `task_names` (see module docstring); writes the JSON report."""
    from omegaconf import OmegaConf

    from embodied.loading import resolve_device
    from embodied.tasks.memorybench import memorybench_spec, task_spec

    check(cfg.runs >= 1, "runs", f"{cfg.runs}; allowed: >= 1")
    device = resolve_device(cfg.device)
    results = []
    for name in task_names:
        seeds = [int(s) for s in task_spec(name)["test_seeds"]][: cfg.episodes]
        if policy_kind == "oracle":
            policy, method, trained, path = "oracle", "expert", None, None
        else:
            check(policy_kind == "checkpoint", "agent.kind", f"{policy_kind!r}; allowed with MemoryBench: oracle")
            path = _checkpoint_for(str(cfg.ckpt), name)
            if not path.is_file():
                if "TASK" in str(cfg.ckpt) or not cfg.suite:
                    raise ConfigError(f"ckpt: {path} not found; allowed: a keyframe checkpoint path "
                                      "(use TASK for one checkpoint per task)")
                continue
            policy, config = load_keyframe_policy(path, device)
            if config["task"]["name"] != name:
                if cfg.suite and "TASK" not in str(cfg.ckpt):
                    continue  # a single-task checkpoint in a suite: only its own task
                raise ConfigError(f"ckpt: {path} was trained on {config['task']['name']}, not {name}; "
                                  "allowed: a checkpoint of this task")
            method, trained = f"keyframe+{config['memory']['name']}", config["task"]
        task = _task_dict(name, trained)
        task["strict"] = bool((cfg.task or {}).get("strict", False))  # task.strict=true: the strict success checks
        if task["strict"]:
            method += ", strict"
        result = run_task(task, policy, seeds, cfg.runs, cfg.quiet)
        result.update(method=method, ckpt=str(path) if path else None)
        if trained is not None:
            from embodied.eval.report import training_record

            result["training"] = training_record(path, {"config": config})
        results.append(result)
    check(bool(results), "ckpt", f"{cfg.ckpt} matches no task of {', '.join(task_names)}")
    spec = memorybench_spec()
    spec = spec.get("tasks", spec)
    table = format_memorybench_table(results, spec)
    print(table)
    tag = cfg.suite or task_names[0].replace("/", "_")
    base = Path(str(cfg.ckpt).replace("TASK", "all")).parent if cfg.ckpt else Path(".")
    out = Path(cfg.out) if cfg.out else base / f"eval_{tag}.json"
    report = {"ckpt": cfg.ckpt, "policy": policy_kind, "suite": cfg.suite, "runs": cfg.runs,
              "config": OmegaConf.to_container(cfg, resolve=True), "results": results, "table": table}
    from embodied.eval.runner import write_report

    return write_report(report, out)
