"""`embodied eval`: run a checkpoint's agent (or the oracle / random baseline) on a task or a suite,
print a table of success and SPL with 95% confidence intervals, and write it as JSON.

Episode accounting avoids the short-episode bias of "stop after N finished episodes" with
parallel envs: env i runs a fixed quota of episodes (N split evenly), later ones are ignored.
A checkpoint's agent sees the observation layout it was trained on: the task's sensor/camera keys
are taken from the checkpoint's training config, the rest (scenes split, episodes) from here.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from embodied.config import check, check_file_path, config_file, data_dir, provenance
from embodied.envs import finished_episodes
from embodied.eval.report import MemoryTimer, memory_record, result_groups, training_record
from embodied.eval.stats import summarize

POLICIES = ("checkpoint", "oracle", "random")
OBS_LAYOUT_KEYS = ("width", "height", "hfov", "sensors", "camera_height", "max_depth")
EXTRA_MEASURES = ("soft_spl", "distance_to_goal", "collisions", "length", "return")
EVAL_SEED_END = 1 << 30  # = embodied.train.run.TRAIN_SEED_START (eval may not import train)


@dataclass
class EvalConfig:
    """Root of configs/eval.yaml."""

    task: Any = MISSING
    """Task config (configs/task/); ignored when `suite` is set."""
    agent: Any = None
    """null = the checkpoint's agent; `agent=oracle` or `agent=random` for the baselines."""
    ckpt: str | None = None
    """Checkpoint to evaluate (e.g. runs/.../best.pt, or pretrained:NAME for a shipped one)."""
    suite: str | None = None
    """Evaluate every task of this suite in tasks/suites.yaml; `pretrained`: every shipped checkpoint
    on its own task, one table (out: a folder, default runs/pretrained/)."""
    episodes: int = 100
    """Episodes per task (suite=pretrained: each model's pinned count, at most this many)."""
    split: str | None = "test"
    """Scenes split written into task.scenes of navigation tasks (train, val, test); null keeps task.scenes."""
    num_envs: int = 4
    """Parallel envs."""
    num_workers: int | None = None
    """Env worker processes; 0 = in-process, null = min(num_envs, cpus)."""
    seed: int = 0
    """Episode seed (env i is seeded seed + i) and the sampling/bootstrap seed; seed + num_envs at
    most 2**30, below the seeds imitation records its demonstrations with (held-out episodes)."""
    deterministic: bool = True
    """Checkpoint policy: argmax actions (true) or sampled (false)."""
    device: str = "auto"
    """cpu, cuda or auto."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    out: str | None = None
    """JSON output path; null = eval_<task or suite>.json beside the checkpoint (or in the cwd)."""
    quiet: bool = False
    """No progress bar."""
    runs: int = 4
    """MemoryBench: evaluation runs per task over its pinned test seeds (mean +- std over runs)."""
    record: bool = False
    """Also write rerun recordings (.rrd) of the first `record_episodes` evaluated episodes of each
    task (env i's first episode, seed + i) into recordings/<task>/ beside the JSON report."""
    record_episodes: int = 3
    """Episodes recorded per task with record=true."""
    memory_options: dict = field(default_factory=dict)
    """Options laid over the checkpoint's memory config, e.g. `+memory_options.capacity=512` for
    episodes longer than it was trained on (DCEM's rows hold no weights); an option that changes
    the shape of a weight fails to load with the checkpoint's error."""


def register_configs() -> None:
    """Store the schemas of configs/eval.yaml with Hydra (embodied.config.register_schemas calls it)."""
    from hydra.core.config_store import ConfigStore

    from embodied.tasks.config import register_configs as register_task_configs

    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
    register_task_configs()


def _policy(cfg: DictConfig) -> str:
    kind = cfg.agent.get("kind") if isinstance(cfg.agent, DictConfig) else None
    if kind is None:
        check(cfg.ckpt is not None, "ckpt", "missing; allowed: a checkpoint path, or agent=oracle / agent=random")
        return "checkpoint"
    check(kind in POLICIES[1:], "agent.kind", f"{kind!r}; allowed: oracle, random")
    return kind


def check_eval_keys(cfg: DictConfig) -> None:
    """The top-level keys every protocol reads (checkpoints and baselines, nav/goat, household),
    checked before any episode runs; `out` is a file here (suite=pretrained, which takes a folder,
    checks each model's config through this)."""
    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    check(cfg.num_envs >= 1, "num_envs", f"{cfg.num_envs}; allowed: >= 1")
    # Demonstrations are recorded from seeds >= 2**30 (embodied.train.run.TRAIN_SEED_START).
    check(0 <= cfg.seed and cfg.seed + cfg.num_envs <= EVAL_SEED_END, "seed",
          f"{cfg.seed}; allowed: 0 <= seed <= {EVAL_SEED_END} - num_envs (higher seeds record training demos)")
    check(cfg.num_workers is None or cfg.num_workers >= 0, "num_workers", f"{cfg.num_workers}; allowed: >= 0 or null")
    check(0 < cfg.confidence < 1, "confidence", f"{cfg.confidence}; allowed: (0, 1)")
    check(cfg.device in ("cpu", "cuda", "auto"), "device", f"{cfg.device!r}; allowed: cpu, cuda, auto")
    check(cfg.split in (None, "train", "val", "test"), "split", f"{cfg.split!r}; allowed: train, val, test, null")
    check(cfg.record_episodes >= 1, "record_episodes", f"{cfg.record_episodes}; allowed: >= 1")
    check_file_path("out", cfg.out, f"a JSON file path, e.g. {Path(cfg.out or '.') / 'eval.json'} (or null)")


def suite_tasks(name: str) -> list[str]:
    path = data_dir("tasks") / "suites.yaml"
    suites = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}
    check(name in suites, "suite", f"{name!r}; allowed: {', '.join(sorted(suites)) or '(no suites defined)'}")
    return list(suites[name])


def load_task_config(name: str) -> dict:
    path = config_file(f"task/{name}.yaml")
    check(path is not None, "suite", f"task config {name!r} not found under configs/task/")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    node.pop("defaults", None)  # the family's schema, whose defaults fill in what the YAML leaves out
    from embodied.tasks import TaskConfig

    return asdict(TaskConfig.from_any(node))


class _PolicyRunner:
    def __init__(self, kind: str, envs, ckpt: dict | None, device: torch.device, deterministic: bool, seed: int,
                 task: str | None = None):
        self.kind, self.envs, self.device, self.deterministic = kind, envs, device, deterministic
        self.rng = np.random.default_rng(seed)
        self.action_space = envs.single_action_space
        self.agent = None
        if kind == "checkpoint":
            from embodied.agents import Agent
            from embodied.loading import build_agent_from_config, load_model_state

            trained = (ckpt["config"].get("task") or {}).get("name")
            self.agent = build_agent_from_config(ckpt["config"], envs.single_observation_space,
                                                 envs.single_action_space, device)
            # A keyframe policy (MemoryBench) acts through its own protocol, not step by step here.
            check(isinstance(self.agent, Agent), "ckpt", f"{ckpt['_path']} holds a {type(self.agent).__name__} trained "
                  f"on {trained}, which plays its own task family only; allowed: task={trained}")
            load_model_state(self.agent, ckpt["model"], ckpt["_path"], task=task, trained_task=trained)
            self.agent.eval()
            self.state = self.agent.initial_state(envs.num_envs, device)
        self.first = torch.ones(envs.num_envs, dtype=torch.bool, device=device)
        shape, dtype = (self.agent.action_shape, self.agent.action_dtype) if self.agent is not None else ((), torch.long)
        self.prev = torch.zeros((envs.num_envs, *shape), dtype=dtype, device=device)

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        if self.kind == "oracle":
            return np.asarray(self.envs.call("oracle_action"), dtype=np.int64)
        if self.kind == "random":
            space = self.action_space
            if hasattr(space, "n"):
                return self.rng.integers(0, int(space.n), size=self.envs.num_envs)
            return self.rng.uniform(space.low, space.high, (self.envs.num_envs, *space.shape)).astype(space.dtype)
        tensors = {k: torch.as_tensor(v).to(self.device) for k, v in obs.items()}
        action, _, _, self.state = self.agent.act(tensors, self.state, self.first, self.prev,
                                                  deterministic=self.deterministic)
        self.prev = action
        return action.cpu().numpy()

    def episode_facts(self) -> dict[str, list[str]]:
        """The memory's words about each env's episode so far (Memory.episode_facts), read when
        episodes end, before the next step resets their rows."""
        return self.agent.memory.episode_facts(self.state) if self.agent is not None else {}

    def observe_done(self, done: np.ndarray) -> None:
        d = torch.as_tensor(done, device=self.device)
        self.first = d
        ended = d.reshape(-1, *(1,) * (self.prev.dim() - 1))
        self.prev = torch.where(ended, torch.zeros_like(self.prev), self.prev)


def eval_task_config(task: dict, cfg: DictConfig, trained_config: dict | None = None) -> dict:
    """The task as evaluated: the eval split for navigation tasks (pinned apartments; other families
    use task.scenes for their own purpose, e.g. fastmap room | symbolic, or ignore it) and, for a
    checkpoint, the observation layout it was trained on."""
    from embodied.tasks.scenes import SPLITS

    task = dict(task)
    if cfg.split is not None and str(task.get("name", "")).startswith("nav/"):
        scenes = str(task.get("scenes"))  # a scene file of one's own is not silently swapped for a split
        check(scenes in (*SPLITS, "procedural"), "split", f"{cfg.split} would replace task.scenes={scenes}; allowed: "
              "split=null to evaluate on task.scenes")
        task["scenes"] = cfg.split
    return trained_layout(task, trained_config) if trained_config is not None else task


def trained_layout(task: dict, trained_config: dict) -> dict:
    """`task` with the observation layout (image size, camera, sensors) of the run config a
    checkpoint was trained with, where both tasks have those keys."""
    task, trained = dict(task), trained_config.get("task", {})
    for key in OBS_LAYOUT_KEYS:
        if key in trained and key in task:
            task[key] = trained[key]
    return task


def evaluate_task(task: dict, policy: str, ckpt: dict | None, cfg: DictConfig, device: torch.device,
                  env_factory=None) -> dict[str, Any]:
    from embodied.loading import make_envs

    task = eval_task_config(task, cfg, ckpt["config"] if ckpt is not None else None)
    num_envs = min(cfg.num_envs, cfg.episodes)
    quota = [cfg.episodes // num_envs + (i < cfg.episodes % num_envs) for i in range(num_envs)]
    envs = (env_factory or make_envs)(OmegaConf.create(task), num_envs, cfg.seed, cfg.num_workers)
    episodes: list[dict] = []
    timer = None
    try:
        runner = _PolicyRunner(policy, envs, ckpt, device, cfg.deterministic, cfg.seed, task=task.get("name"))
        if runner.agent is not None:
            timer = MemoryTimer(runner.agent.memory)
        obs, _ = envs.reset(seed=cfg.seed)
        counts = [0] * num_envs
        bar = None
        if not cfg.quiet:
            from tqdm import tqdm

            bar = tqdm(total=cfg.episodes, unit="ep", desc=f"eval {task.get('name')}", file=sys.stderr)
        while any(c < q for c, q in zip(counts, quota)):
            obs, _, terminated, truncated, infos = envs.step(runner.act(obs))
            done = np.asarray(terminated) | np.asarray(truncated)
            facts = runner.episode_facts() if done.any() else {}
            runner.observe_done(done)
            ended = finished_episodes(infos)  # not a worker restart's lost episodes
            for i in np.flatnonzero(done):
                if counts[i] < quota[i] and i in ended:
                    counts[i] += 1
                    episodes.append({**{k: (v if isinstance(v, str) else float(v)) for k, v in ended[i].items()},
                                     **{f"memory/{k}": v[i] for k, v in facts.items()}})
                    if bar:
                        bar.update(1)
        if bar:
            bar.close()
    finally:
        envs.close()
        if timer is not None:
            timer.close()
    result: dict[str, Any] = {"task": task.get("name"), "policy": policy, "episodes": len(episodes)}
    if any("success" in e for e in episodes):
        result["success"] = summarize([e.get("success", 0.0) for e in episodes], True, cfg.confidence)
    else:  # an env without success (a gymnasium env's own task) is evaluated on return and length
        for key in ("return", "length"):
            result[key] = summarize([e[key] for e in episodes], False, cfg.confidence, seed=cfg.seed)
    if timer is not None:
        result["memory"] = memory_record(runner.agent.memory, timer)
    if all("spl" in e for e in episodes):
        result["spl"] = summarize([e["spl"] for e in episodes], False, cfg.confidence, seed=cfg.seed)
    for key in EXTRA_MEASURES:
        if key not in result and all(key in e for e in episodes):
            result[key] = float(np.mean([e[key] for e in episodes]))
    numeric = sorted({k for e in episodes for k, v in e.items() if isinstance(v, float) and not k.startswith("memory/")})
    result["measures"] = {k: float(np.mean([e[k] for e in episodes if k in e])) for k in numeric}  # every number the env reported
    from embodied.tasks.registry import task_class

    declared = getattr(task_class(task.get("name")), "result_groups", ())
    groups = sorted({k for e in episodes for k, v in e.items() if isinstance(v, str)
                     and (k in declared or k.startswith("memory/"))})
    if groups and "success" in result:  # success per value of the task's declared words (question type) and the memory's choices
        result["by"] = {key: {value: summarize([e["success"] for e in episodes if e.get(key) == value], True, cfg.confidence)
                              for value in sorted({e[key] for e in episodes if key in e})} for key in groups}
    result["per_episode"] = episodes
    return result


def format_table(results: list[dict], confidence: float = 0.95) -> str:
    """Success and SPL with intervals; tasks without success show return and length instead."""
    pct = f"{round(confidence * 100)}% CI"

    def cell(summary: dict, width: int) -> str:
        return f"{summary['mean']:>{width}.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"

    header = f"{'task':<22} {'policy':<10} {'episodes':>8}  {'success':>7} [{pct:^13}]  {'SPL':>6} [{pct:^13}]"
    if not any("success" in r for r in results):
        header = f"{'task':<22} {'policy':<10} {'episodes':>8}  return [{pct}], length [{pct}]"
    lines = [header, "-" * len(header)]
    for r in results:
        row = f"{str(r['task']):<22} {r['policy']:<10} {r['episodes']:>8}  "
        if "success" in r:
            row += cell(r["success"], 7)
            if "spl" in r:
                row += "  " + cell(r["spl"], 6)
        else:
            row += f"return {cell(r['return'], 0)}, length {cell(r['length'], 0)}"
        lines.append(row)
        lines += _group_lines(r)
    return "\n".join(lines)


def _group_lines(result: dict) -> list[str]:
    """Success per value of each word the task declares, with the memory's choices (memory/*) in them."""
    lines = []
    for key, value, s, picked in result_groups(result):
        choice = ", ".join(f"{w} {n}" for w, n in sorted(picked.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {key}={value}: success {s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] of {s['n']}"
                     + (f"; memory: {choice}" if choice else ""))
    return lines


def fastmap_published(results: list[dict]) -> str:
    """Fast-mapping levels beside tasks/fastmap.yaml: role, the train levels a test level pairs with,
    chance and what the papers report, with sources. Adds those fields to each fastmap result."""
    table = OmegaConf.to_container(OmegaConf.load(data_dir("tasks") / "fastmap.yaml"))
    levels, published, sources = table["levels"], table.get("published") or {}, table["sources"]
    rows = [(r, str(r["task"]).removeprefix("fastmap/")) for r in results]
    rows = [(r, level) for r, level in rows if level in levels]
    width = max([len("fast-mapping level")] + [len(level) for _, level in rows])
    lines = [f"{'fast-mapping level':<{width}} {'role':<5} {'success':>7} {'chance':>6}  published (source)"]
    used = set()
    for r, level in rows:
        info = levels[level]
        ref = published.get(level)
        r.update(role=info["role"], chance=info["chance"], train_levels=info.get("train_levels", []),
                 published=ref and {**ref, "source_text": sources[ref["source"]]})
        text = f"{ref['note']} [{ref['source']}, {ref['figure']}]" if ref else "no published figure for this level"
        if ref:
            used.add(ref["source"])
        lines.append(f"{level:<{width}} {info['role']:<5} {r['success']['mean']:>7.3f} {info['chance']:>6.3f}  {text}")
        if info.get("train_levels"):
            lines.append(f"{'':<4}test level; trained on: {', '.join(info['train_levels'])}")
    lines += [f"[{key}] {sources[key]}" for key in sorted(used)]
    return "\n".join(lines)


def with_memory_options(config: dict | DictConfig, options: dict | DictConfig) -> dict:
    """A checkpoint's run config with `options` laid over its memory node; an option the memory
    does not have is an error naming the ones it has."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    options = OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options or {})
    memory = dict(config["memory"])
    for key in options:
        check(key in memory and key != "name", f"memory_options.{key}",
              f"not an option of the checkpoint's memory {memory.get('name')!r}; allowed: "
              + ", ".join(k for k in memory if k != "name"))
    return {**config, "memory": {**memory, **options}}


def evaluate(cfg: DictConfig, env_factory=None) -> dict[str, Any]:
    """Evaluate per the eval config; prints the table, writes the JSON; returns the report."""
    from embodied.loading import load_checkpoint, resolve_device

    if cfg.suite == "pretrained":  # every shipped checkpoint on its own task, one table
        from embodied.eval.pretrained import evaluate_pretrained

        return evaluate_pretrained(cfg, env_factory)
    from embodied.eval.household import evaluate_household, is_household

    check_eval_keys(cfg)  # before the household and nav/goat protocols too: they read the same keys
    if is_household(cfg):  # symbolic agents with a persistent memory, no checkpoint: their own protocol
        return evaluate_household(cfg)
    from embodied.eval.goat import evaluate_goat, is_goat

    if is_goat(cfg):  # the scene-memory agent and its ablations on the same lifelong episodes
        return evaluate_goat(cfg)
    policy = _policy(cfg)
    memorybench = cfg.suite == "memorybench" or (not cfg.suite and str(cfg.task.get("name", "")).startswith("memorybench/"))
    if memorybench:  # keyframe policies, pinned seeds, published rows: its own protocol
        from embodied.eval.memorybench import evaluate_memorybench

        return evaluate_memorybench(cfg, policy, suite_tasks(cfg.suite) if cfg.suite else [str(cfg.task.name)])
    device = resolve_device(cfg.device)
    ckpt = None
    if policy == "checkpoint":
        ckpt = load_checkpoint(cfg.ckpt, map_location=device)
        ckpt["_path"] = str(cfg.ckpt)
        ckpt["config"] = with_memory_options(ckpt["config"], cfg.memory_options)
    if cfg.suite:
        tasks = [load_task_config(name) for name in suite_tasks(cfg.suite)]
    else:
        tasks = [OmegaConf.to_container(cfg.task, resolve=True)]
    results = [evaluate_task(t, policy, ckpt, cfg, device, env_factory) for t in tasks]
    table = format_table(results, cfg.confidence)
    if any(str(r["task"]).startswith("fastmap/") for r in results):
        table += "\n\n" + fastmap_published(results)
    print(table)
    name = cfg.suite or str(tasks[0].get("name")).replace("/", "_")
    out = Path(cfg.out) if cfg.out else (Path(cfg.ckpt).parent if cfg.ckpt else Path(".")) / f"eval_{name}.json"
    agent = policy if ckpt is None else str(ckpt["config"].get("memory", {}).get("name", policy))
    report = {"ckpt": cfg.ckpt, "policy": policy, "agent": agent, "suite": cfg.suite, "confidence": cfg.confidence,
              "training": training_record(cfg.ckpt, ckpt) if ckpt is not None else None,
              "ci_methods": {"success": "wilson", "spl": "percentile bootstrap (10000 resamples)"},
              "config": OmegaConf.to_container(cfg, resolve=True), "results": results, "table": table}
    return write_report(report, out)


def print_result(result: dict[str, Any], out: str | Path | None = None) -> None:
    """Print a results script's JSON, and with `out` also write it there (write_report)."""
    print(json.dumps(result, indent=2, default=float))
    if out:
        write_report(result, Path(out))


def write_report(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write an evaluation report as JSON atomically (a crash leaves the old file or none) and
    return it with its `path`."""
    report.setdefault("provenance", provenance())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(out)
    print(f"wrote {out}")
    report["path"] = str(out)
    return report
