"""`embodied eval task=household/tier3 agent=optimus` | `suite=household`: Optimus-1's
self-evolution protocol on the household tasks (docs/household.md).

For each variant (agent.variants) and each world (agent.worlds, default the task's world_seed):
memory starts empty (one SQLite file per variant in agent.memory, default <out>_memory/, in a
world<w>/ folder per world when there are several), then `epochs` times: `tasks_per_epoch` learning tasks over all
tiers in turn (every `teacher_every`-th one acted by the teacher, the env's oracle, while the memory
watches; learning seeds from 2**29), then `episodes` evaluation episodes per evaluated tier on seeds
seed .. seed + episodes - 1 with the memory read only. Success by tier after each epoch with Wilson
intervals, the episodes of every world pooled (each row keeps its worlds' own figures in
`by_world`); the table shows the last epoch. `agent=oracle` (the ceiling) and the `reactive`
memoryless baseline are variants too.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from embodied.config import agent_defaults, check
from embodied.eval.stats import summarize

LEARN_SEED_START = 1 << 29  # learning tasks; evaluation seeds stay below (and all below EVAL_SEED_END)
KINDS = ("optimus", "oracle", "reactive")


def is_household(cfg: DictConfig) -> bool:
    return cfg.suite == "household" or (not cfg.suite and str(cfg.task.get("name", "")).startswith("household/"))


def household_agent(cfg: DictConfig) -> dict:
    """The agent options with their defaults, checked: one line naming a bad key or value."""
    from embodied.agents.household import VARIANTS

    node = OmegaConf.to_container(cfg.agent, resolve=True) if isinstance(cfg.agent, DictConfig) else {}
    check(node.get("kind") in KINDS, "agent", f"{node.get('kind')!r} for household tasks; allowed: agent=optimus, "
          "agent=oracle (or agent.kind=reactive)")
    defaults = agent_defaults("optimus")
    unknown = sorted(set(node) - set(defaults))
    check(not unknown, f"agent.{unknown[0] if unknown else ''}", f"unknown key; allowed: {', '.join(sorted(defaults))}")
    opts = {**defaults, **node}
    if opts["kind"] != "optimus":
        opts["variants"], opts["epochs"] = [opts["kind"]], 1
    variants = opts["variants"] if isinstance(opts["variants"], list) else [opts["variants"]]
    allowed = list(VARIANTS) + ["oracle"]
    bad = [v for v in variants if v not in allowed]
    check(variants and not bad, "agent.variants", f"{bad or variants}; allowed: a list of {', '.join(allowed)}")
    opts["variants"] = variants
    check(not (opts["memory"] and Path(opts["memory"]).is_file()), "agent.memory",
          f"{opts['memory']} is a file; allowed: a folder of <variant>.sqlite memory files, or null")
    for key, low in (("epochs", 0), ("tasks_per_epoch", 0), ("teacher_every", 0), ("cases", 0)):
        check(isinstance(opts[key], int) and not isinstance(opts[key], bool) and opts[key] >= low, f"agent.{key}",
              f"{opts[key]!r}; allowed: an integer >= {low}")
    check(cfg.seed >= 0 and cfg.seed + cfg.episodes <= LEARN_SEED_START, "seed",
          f"{cfg.seed}; allowed: 0 <= seed <= 2**29 - episodes (learning tasks use seeds from 2**29)")
    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    worlds = opts["worlds"]
    ok = worlds is None or (isinstance(worlds, list) and worlds and len(set(worlds)) == len(worlds) and all(
        isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 2**31 for w in worlds))
    check(ok, "agent.worlds", f"{worlds!r}; allowed: null (the task's world_seed) or a list of distinct world seeds "
          "in 0..2**31-1")
    world_seed = cfg.task.get("world_seed", 0) if isinstance(cfg.task, DictConfig) else 0
    check(worlds is None or not world_seed, "agent.worlds", f"{worlds} with task.world_seed={world_seed}; give the "
          "worlds in one place")
    if isinstance(cfg.task, DictConfig) and cfg.task.get("world") == "apartment" and set(variants) - {"oracle"}:
        from embodied.tasks.config import HouseholdConfig

        sensors = list(cfg.task.sensors or []) if "sensors" in cfg.task else HouseholdConfig().sensors
        check("depth" in sensors, "task.sensors", f"{sensors}; the agent walks on a map it builds from depth: "
              "allowed: a list with depth (or agent=oracle)")
    return opts


def evaluate_household(cfg: DictConfig) -> dict[str, Any]:
    from embodied.agents.household_nav import household_agent as build_agent
    from embodied.eval.runner import load_task_config, suite_tasks, write_report
    from embodied.tasks import make_env
    from embodied.tasks.config import TaskConfig

    opts = household_agent(cfg)
    names = suite_tasks(cfg.suite) if cfg.suite else [str(cfg.task.name)]
    task = OmegaConf.to_container(cfg.task, resolve=True)
    # A suite's tiers share the options given for task (e.g. task.world=apartment): tiers differ by name only.
    shared = {k: v for k, v in task.items() if k != "name"} if str(task.get("name", "")).startswith("household/") else {}
    tasks = [{**load_task_config(n), **shared} for n in names] if cfg.suite else [task]
    check(all(str(t["name"]).startswith("household/") for t in tasks), "suite", f"{cfg.suite!r} mixes household and "
          "other tasks; allowed: household tasks only")
    for t in tasks:  # bad options are one line before any work
        TaskConfig.from_any(t)
    base = {k: v for k, v in tasks[0].items() if k != "name"}
    worlds = opts["worlds"] or [int(base.get("world_seed", 0))]
    label = cfg.suite or str(tasks[0]["name"]).replace("/", "_")
    out = Path(cfg.out) if cfg.out else Path(f"eval_{label}.json")
    memory_dir = Path(opts["memory"]) if opts["memory"] else out.with_name(out.stem + "_memory")
    results, curves = [], []
    bar = None
    if not cfg.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(worlds) * len(opts["variants"]) * (
            opts["epochs"] * opts["tasks_per_epoch"] + max(opts["epochs"], 1) * cfg.episodes * len(tasks)),
            unit="ep", desc=f"eval {label}", file=sys.stderr)
    for variant in opts["variants"]:
        cells: dict[tuple, list] = {}  # (epoch, task) -> per world: (world, row, episodes)
        for world in worlds:
            folder = memory_dir / f"world{world}" if len(worlds) > 1 else memory_dir
            envs = {t["name"]: make_env({**t, "world_seed": world}) for t in tasks}
            learn_envs = learning_envs({**base, "world_seed": world})
            memory = agent = None
            try:
                if variant != "oracle":
                    memory = open_memory(variant, folder, str(world), fresh=not opts["memory"])
                    agent = build_agent(variant, memory, next(iter(learn_envs.values())).floor_plan(),
                                        cases=opts["cases"], seed=cfg.seed)
                learned = 0
                for epoch in range(max(opts["epochs"], 1)):
                    if opts["epochs"] and variant != "oracle":
                        learned = learn(agent, learn_envs, opts, learned, on_task=bar.update if bar else None)
                    for name, env in envs.items():
                        row, episodes = _evaluate(env, agent, memory, str(world), cfg)
                        row.update(variant=variant, method=variant if variant == "oracle" else f"optimus {variant}",
                                   task=name, tier=env.level.tier, epoch=epoch + 1, learned_tasks=learned)
                        cells.setdefault((epoch + 1, name), []).append((world, row, episodes))
                        if bar:
                            bar.update(len(episodes))
            finally:
                if memory is not None:
                    memory.close()
                for env in list(envs.values()) + list(learn_envs.values()):
                    env.close()
        last = max(opts["epochs"], 1)
        for (epoch, name), per_world in cells.items():
            row = _pooled(per_world, cfg.confidence)
            curves.append(row)
            if epoch == last:
                results.append({**row, "per_episode": [e for _, _, eps in per_world for e in eps]})
    if bar:
        bar.close()
    table = format_household(results, curves, cfg.confidence)
    print(table)
    report = {"policy": "household", "agent": opts, "suite": cfg.suite, "confidence": cfg.confidence,
              "ci_methods": {"success": "wilson"}, "config": OmegaConf.to_container(cfg, resolve=True),
              "results": results, "curves": curves, "table": table, "memory_dir": str(memory_dir)}
    return write_report(report, out)


def _evaluate(env, agent, memory, world: str, cfg: DictConfig) -> tuple[dict, list[dict]]:
    """`cfg.episodes` evaluation episodes of one tier in one world: their row and the episodes."""
    from embodied.agents.household import run_episode

    pool = memory.pool if memory is not None else None
    read = pool.read_seconds if pool is not None else 0.0
    episodes = [{**run_episode(env, agent, cfg.seed + i), "world": int(world)} for i in range(cfg.episodes)]
    row = {"episodes": len(episodes), "success": summarize([e["success"] for e in episodes], True, cfg.confidence),
           **{k: float(np.mean([e[k] for e in episodes]))
              for k in ("steps", "subgoals_done", "subgoals_total", "replans", "reflections")}}
    if memory is not None:  # its cost (the report's memory-efficiency comparison): the file, its retrievals
        steps = sum(e["steps"] for e in episodes)
        row["memory"] = {"name": "HybridMemory", "graph_version": memory.store.graph_version(world),
                         "cases": memory.store.count_cases(world), "state_bytes": memory.store.nbytes()}
        if pool is not None and steps:
            row["memory"]["read_s_per_env_step"] = (pool.read_seconds - read) / steps
    return row, episodes


def _pooled(per_world: list[tuple], confidence: float) -> dict:
    """One row from the rows of several worlds (one world: its row): success over every episode,
    means weighted by episodes, each world's success in `by_world`, the memory's cost averaged."""
    if len(per_world) == 1:
        return per_world[0][1]
    rows = [r for _, r, _ in per_world]
    episodes = [e for _, _, eps in per_world for e in eps]
    row = {**rows[0], "episodes": len(episodes),
           "success": summarize([e["success"] for e in episodes], True, confidence),
           **{k: float(np.mean([e[k] for e in episodes]))
              for k in ("steps", "subgoals_done", "subgoals_total", "replans", "reflections")},
           "worlds": [w for w, _, _ in per_world],
           "by_world": {str(w): r["success"]["mean"] for w, r, _ in per_world}}
    if "memory" in rows[0]:  # per world, averaged: each world has its own memory file
        mems = [r["memory"] for r in rows]
        row["memory"] = {"name": "HybridMemory", "worlds": len(mems),
                         "state_bytes": float(np.mean([m["state_bytes"] for m in mems])),
                         "graph_version": float(np.mean([m["graph_version"] for m in mems]))}
        reads = [m["read_s_per_env_step"] for m in mems if "read_s_per_env_step" in m]
        if reads:
            row["memory"]["read_s_per_env_step"] = float(np.mean(reads))
    return row


def open_memory(variant: str, memory_dir: Path, world: str, fresh: bool, readonly: bool = False):
    """A variant's HybridMemory in `memory_dir/<variant>.sqlite` (None for a memoryless variant);
    `fresh`: the file is emptied first (self-evolution from empty memory)."""
    from embodied.agents.household import VARIANTS, HybridMemory

    graph, pool, _ = VARIANTS[variant]
    if not (graph or pool):
        return None
    path = Path(memory_dir) / f"{variant}.sqlite"
    if fresh:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
    return HybridMemory(path, world, graph, pool, readonly=readonly)


def learning_envs(task: dict) -> dict:
    """One env per tier, with the evaluated tasks' options (world), for the learning tasks."""
    from embodied.tasks import make_env
    from embodied.tasks.household import MAX_TIER

    base = {k: v for k, v in task.items() if k != "name"}
    return {f"household/tier{t}": make_env({**base, "name": f"household/tier{t}"}) for t in range(1, MAX_TIER + 1)}


def learn(agent, learn_envs: dict, opts: dict, learned: int = 0, on_task=None) -> int:
    """One learning epoch: `tasks_per_epoch` tasks over tiers 1..5 in turn, every `teacher_every`-th
    acted by the teacher while the memory watches; learning seeds from LEARN_SEED_START + `learned`.
    Returns the number of tasks learned so far."""
    from embodied.agents.household import run_episode
    from embodied.tasks.household import MAX_TIER

    for j in range(opts["tasks_per_epoch"]):
        env = learn_envs[f"household/tier{1 + j % MAX_TIER}"]
        teacher = opts["teacher_every"] > 0 and (j + 1) % opts["teacher_every"] == 0
        run_episode(env, agent, LEARN_SEED_START + learned, learning=True, teacher=teacher)
        learned += 1
        if on_task is not None:
            on_task(1)
    return learned


def format_household(results: list[dict], curves: list[dict], confidence: float = 0.95) -> str:
    pct = f"{round(confidence * 100)}% CI"
    header = (f"{'variant':<13} {'task':<17} {'episodes':>8}  {'success':>7} [{pct:^13}]  {'steps':>6} "
              f"{'subgoals':>9} {'replans':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        s = r["success"]
        lines.append(f"{r['variant']:<13} {r['task']:<17} {r['episodes']:>8}  {s['mean']:>7.3f} [{s['ci_low']:.3f}, "
                     f"{s['ci_high']:.3f}]  {r['steps']:>6.1f} {r['subgoals_done']:>4.1f}/{r['subgoals_total']:<4.1f} "
                     f"{r['replans']:>7.2f}")
    epochs = sorted({c["epoch"] for c in curves})
    if len(epochs) > 1:
        lines += ["", "success by epoch (self-evolution from empty memory):"]
        for variant in dict.fromkeys(c["variant"] for c in curves):
            for task in dict.fromkeys(c["task"] for c in curves):
                row = [c for c in curves if c["variant"] == variant and c["task"] == task]
                lines.append(f"  {variant:<13} {task:<17} " + "  ".join(f"{c['success']['mean']:.3f}" for c in row))
    return "\n".join(lines)


__all__ = ["evaluate_household", "format_household", "household_agent", "is_household", "learn", "learning_envs",
           "open_memory"]
