"""Shipped checkpoints: `embodied export` writes one from a training run, and `embodied eval
suite=pretrained` evaluates every one on its task and prints one table beside the published rows.

A shipped checkpoint (`embodied/pretrained/<name>.pt`, package data) is an ordinary checkpoint
(embodied.loading reads it; `ckpt=pretrained:<name>` names it) with the model's floats in fp16 and
nothing to resume from (no optimizer, RNG or trainer state), plus a `pretrained` record: the recipe
(`+experiment=...` and the other overrides of the run), the training run (embodied.eval.report's
training_record: command, seed, counters, learning curve, the provenance of its start: commit,
machine), the final training metrics, the evaluation figure it was published with (`eval=` a result
JSON) and the episodes the suite evaluates it on (`episodes=`).

The suite evaluates model i exactly as `embodied eval task=<its task> ckpt=pretrained:<name>
episodes=<its count>` would (held-out episode seeds from `seed`, below the demonstration seeds),
writes one result JSON per model (the format of docs/results/, so `embodied report --results DIR`
renders them) and prints the table from those files. A MemoryBench model is evaluated a second time
with `task.strict=true` (the strict success checks, docs/memorybench.md), into `<name>_strict.json`
and a row `<name> strict`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from embodied.config import InputError, check, provenance
from embodied.eval.report import chance, load_results, published_rows, success_of, training_record
from embodied.loading import quantize

MAX_BYTES = 5 * 1024 * 1024  # a shipped file stays small enough for the repository and the wheel
DEFAULT_EPISODES = 100
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
DTYPES = {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8}
QUANTIZE_MIN = 1024  # int8 stores matrices of at least this many weights; smaller tensors stay fp16
NOT_IN_RECIPE = ("run_dir", "quiet", "resume", "requeue")  # where and how a run went, not what it trained


# --- export ----------------------------------------------------------------------------------------

def recipe(training: dict) -> list[str]:
    """The overrides that trained a run (its `embodied train` command without where it ran)."""
    items = shlex.split(training.get("command") or "")[2:]
    return [o for o in items if o.split("=", 1)[0].lstrip("+~") not in NOT_IN_RECIPE]


def evaluation_figure(path: str | Path, training: dict, task: str) -> dict[str, Any]:
    """The published figure of a result JSON that `embodied eval` wrote for this run's checkpoint: its
    result on `task` (the task it trained on), or its one result on another task of that family (a
    held-out level: fast-mapping trains on one level and is tested on held-out objects)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"eval: {path}: not a readable result JSON ({' '.join(str(e).split())[:120]})") from None
    results = (report.get("results") or []) if isinstance(report, dict) else []
    family = task.split("/")[0]
    same = [r for r in results if str(r.get("task", "")).split("/")[0] == family]
    found = [r for r in same if r.get("task") == task] or (same if len(same) == 1 else [])
    check(bool(found), "eval", f"{path} has no result for {task}; allowed: the `embodied eval` JSON of this checkpoint "
          f"(on {task}, or on one other {family} task)")
    theirs = ((report.get("training") or found[0].get("training") or {}).get("provenance") or {})
    ours = training.get("provenance") or {}
    check(not theirs or not ours or (theirs.get("commit"), theirs.get("date")) == (ours.get("commit"), ours.get("date")),
          "eval", f"{path} evaluated a checkpoint of another run (started {theirs.get('date')}, this one {ours.get('date')})")
    prov = report.get("provenance") or {}
    success = success_of(found[0])  # MemoryBench rows pool their runs' episodes
    option = next((o.split("=", 1)[1] for o in shlex.split(prov.get("command") or "") if o.startswith("task=")), None)
    return {"file": str(path), "task": found[0].get("task", task), "success": success, "episodes": success.get("n"),
            # the `task=` the figure was evaluated with: a held-out level's name need not be a task YAML's path
            "task_option": option,
            "command": prov.get("command"), "commit": prov.get("commit"), "hardware": prov.get("hardware")}


def task_option(record: dict) -> str:
    """The `task=` a shipped model is evaluated with: its published figure's, else its task's name."""
    return (record.get("evaluation") or {}).get("task_option") or record["task"]


def cast_weights(source: dict[str, Any], dtype: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(model, int8 scales, keys kept in float32) of a float32 state dict stored as `dtype`. A tensor
    that does not fit fp16 (a running count past 65504) stays float32: it is small, and inf would
    change the model."""
    model, scales, kept = {}, {}, []
    for key, tensor in source.items():
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()) or dtype == "float32":
            model[key] = tensor
            continue
        if dtype == "int8" and tensor.dim() >= 2 and tensor.numel() >= QUANTIZE_MIN:
            model[key], scales[key] = quantize(tensor)
            continue
        half = tensor.to(torch.float16)
        if torch.isfinite(half.float()).all() or not torch.isfinite(tensor).all():
            model[key] = half
        else:
            model[key] = tensor.float()
            kept.append(key)
    return model, scales, kept


def export(ckpt: str, name: str, evaluation: str | None = None, episodes: int = DEFAULT_EPISODES,
           dtype: str = "float16", force: bool = False, out: str | Path | None = None) -> Path:
    """Write `out/<name>.pt` (default embodied/pretrained/) from a training checkpoint and its run
    directory; an existing file is replaced only with `force`."""
    from embodied.loading import FORMAT, QUANTIZED, VERSION, load_checkpoint, pretrained_dir, resolve_checkpoint

    check(bool(NAME.match(name)), "name", f"{name!r}; allowed: lower-case letters, digits and _ (e.g. ballet_hcam)")
    check(dtype in DTYPES, "dtype", f"{dtype!r}; allowed: {', '.join(DTYPES)}")
    check(episodes >= 1, "episodes", f"{episodes}; allowed: >= 1")
    target = Path(out) if out else pretrained_dir()
    target = target / f"{name}.pt"
    check(force or not target.exists(), "name",
          f"{name}: {target} exists; pass force=true to replace it, or another name=")
    source = load_checkpoint(ckpt)
    config = source["config"]
    earlier = source.get("pretrained") or {}  # re-exporting a shipped file (another episodes=, name=): keep its record
    training = training_record(ckpt, source)
    steps = recipe(training)
    check(any(o.startswith("+experiment=") for o in steps), "ckpt",
          f"{ckpt}: its run directory names no `+experiment=` recipe (.hydra/overrides.yaml); allowed: a checkpoint "
          "of `embodied train +experiment=NAME`, so that the shipped file can be reproduced")
    trained_on = str(config["task"]["name"])
    figure = evaluation_figure(evaluation, training, trained_on) if evaluation else earlier.get("evaluation")
    task = figure["task"] if figure else str(earlier.get("task") or trained_on)  # where the suite evaluates it
    model, scales, kept = cast_weights({k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                                        for k, v in source["model"].items()}, dtype)
    start = training.get("provenance") or {}
    record = {
        "name": name,
        "task": task,
        "trained_on": trained_on,
        "memory": (config.get("memory") or {}).get("name"),
        "seed": config.get("seed"),
        "recipe": steps,
        "experiment": next(o.split("=", 1)[1] for o in steps if o.startswith("+experiment=")),
        "command": start.get("command") or training.get("command"),
        "commit": start.get("commit"),
        "dirty": start.get("dirty"),
        "training": training,
        "final_metrics": earlier.get("final_metrics") or
        {k: v for k, v in (source.get("metrics") or {}).items() if isinstance(v, (int, float))},
        "evaluation": figure,
        "benchmark": {"episodes": int(episodes)},
        "dtype": dtype,
        "float32_kept": kept,
        "source": earlier.get("source") or
        {"file": str(ckpt), "sha256": hashlib.sha256(resolve_checkpoint(ckpt).read_bytes()).hexdigest()},
        "exported": provenance(),
    }
    record = json.loads(json.dumps(record, default=str))  # plain data only: what weights_only=True loads
    shipped = {"format": FORMAT, "version": VERSION, "model": model, "counters": dict(source["counters"]),
               "config": config, "pretrained": record, **({QUANTIZED: scales} if scales else {})}
    buffer = io.BytesIO()
    torch.save(shipped, buffer)
    size = buffer.getbuffer().nbytes
    check(size < MAX_BYTES, "ckpt", f"{ckpt}: {size / 2**20:.1f} MB as {dtype}; allowed: under {MAX_BYTES // 2**20} MB "
          "(a smaller model, or dtype=float16 | int8)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    try:
        load_checkpoint(tmp)  # as every reader will: weights_only=True
    except InputError:
        tmp.unlink()
        raise
    tmp.replace(target)  # a crash leaves the old file or none
    print(f"wrote {target} ({size / 1024:.0f} KB, {dtype}): {task}, memory {record['memory']}, "
          f"recipe `embodied train {shlex.join(steps)}`, commit {str(record['commit'])[:10]}"
          + (" (with uncommitted changes)" if record["dirty"] else "")
          + (f", kept in float32 (past the fp16 range): {', '.join(kept)}" if kept else "")
          + (f", success {figure['success']['mean']:.3f} on {figure['episodes']} episodes" if figure else ""))
    return target


# --- the suite -------------------------------------------------------------------------------------

def _model_config(cfg: DictConfig, name: str, record: dict, strict: bool = False) -> DictConfig:
    """The eval config of one shipped model: `task=<its task> ckpt=pretrained:<name>` and its pinned
    episodes (at most `cfg.episodes`), the rest (seed, num_envs, device, ...) from `cfg`; `strict`:
    also `task.strict=true` (MemoryBench's strict success checks), written to `<name>_strict.json`."""
    from embodied.eval.runner import load_task_config

    ckpt = f"pretrained:{name}"  # every runner resolves it (MemoryBench's too)
    pinned = dict(record.get("benchmark") or {"episodes": DEFAULT_EPISODES})
    sub = cfg.copy()
    task = load_task_config(task_option(record))
    if strict:
        task["strict"] = True
    # runs=1: MemoryBench's runs repeat the same episodes (deterministic simulation and policy)
    values = {**pinned, "runs": 1, "suite": None, "ckpt": ckpt, "task": task,
              "episodes": min(int(pinned.get("episodes", DEFAULT_EPISODES)), int(cfg.episodes)),
              "out": str(Path(cfg.out or "runs/pretrained") / f"{name}{'_strict' if strict else ''}.json")}
    for key, value in values.items():
        OmegaConf.update(sub, key, value, merge=False)
    return sub


def evaluate_pretrained(cfg: DictConfig, env_factory=None) -> dict[str, Any]:
    """`embodied eval suite=pretrained`: every shipped checkpoint on its task; prints one table and
    writes one result JSON per model into `cfg.out` (a folder; default runs/pretrained/)."""
    from embodied.eval.runner import evaluate
    from embodied.loading import load_checkpoint, pretrained_dir, pretrained_names

    check(cfg.ckpt is None, "ckpt", f"{cfg.ckpt} with suite=pretrained, which evaluates every shipped checkpoint; "
          "allowed: no ckpt (or task=... ckpt=pretrained:NAME for one)")
    check(cfg.agent is None, "agent", "with suite=pretrained: allowed: null (the shipped agents)")
    check(not cfg.record, "record", "not with suite=pretrained; allowed: `embodied record ckpt=pretrained:NAME`")
    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    names = pretrained_names()
    check(bool(names), "suite", f"pretrained: no shipped checkpoints in {pretrained_dir()}; write one with `embodied export`")
    records = {name: load_checkpoint(f"pretrained:{name}")["pretrained"] for name in names}
    out = Path(cfg.out or "runs/pretrained")
    started = time.perf_counter()
    written, labels = {}, {}
    # MemoryBench models are evaluated twice: with the original's success checks and the strict ones
    jobs = [(name, strict) for name in names
            for strict in ((False, True) if str(records[name]["task"]).startswith("memorybench/") else (False,))]
    # One intra-op thread: these small models act for a few envs per step, and a second thread only
    # spins against the env workers (24 HCAM episodes took 4.7x as long with 2 on the loaded 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (name, strict) in enumerate(jobs):
            sub = _model_config(cfg, name, records[name], strict)
            if not cfg.quiet:
                print(f"[{i + 1}/{len(jobs)}] pretrained:{name} on {records[name]['task']}"
                      f"{' (strict success checks)' if strict else ''}, {sub.episodes} episodes",
                      file=sys.stderr, flush=True)
            with contextlib.redirect_stdout(io.StringIO()):  # the suite prints one table for all models
                report = evaluate(sub, env_factory)
            written[Path(report["path"]).name] = name
            labels[Path(report["path"]).name] = f"{name} strict" if strict else name
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    rows = [r for r in load_results(out) if r["file"] in written]  # the table is what `embodied report` reads
    table = format_pretrained_table(rows, written, records, labels)
    print(table)
    print(f"\n{len(names)} shipped checkpoints evaluated in {seconds:.0f} s; wrote {', '.join(str(out / f) for f in written)}"
          f"\n(`embodied report --results {out} --out {out / 'results.md'}` renders them)")
    return {"results": rows, "table": table, "seconds": seconds, "files": [str(out / f) for f in written]}


def format_pretrained_table(rows: list[dict], names: dict[str, str], records: dict[str, dict],
                            labels: dict[str, str] | None = None) -> str:
    """model, task, memory, episodes, success [95% CI], chance and the figure the model was shipped
    with; then the published rows of each family with their sources. `labels`: a row's model column
    (default its name; MemoryBench's strict rows: `<name> strict`)."""
    labels = labels or names
    wm = max([16, *(len(labels[r["file"]]) for r in rows)])  # columns as wide as their longest entry
    wt = max([20, *(len(r["task"]) for r in rows)])
    header = (f"{'model':<{wm}} {'task':<{wt}} {'memory':<8} {'episodes':>8}  {'success [95% CI]':<19} {'chance':>6}"
              f"  shipped with")
    lines = [header, "-" * len(header)]
    for r in rows:
        record = records[names[r["file"]]]
        s, c = r["success"], chance(r["family"], r["task"])
        figure = record.get("evaluation") if labels[r["file"]] == names[r["file"]] else None  # shipped: default checks
        shipped = f"{figure['success']['mean']:.2f} on {figure['episodes']}" if figure else "-"
        lines.append(f"{labels[r['file']]:<{wm}} {r['task']:<{wt}} {str(record.get('memory')):<8} {r['episodes']:>8}  "
                     f"{s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]{'':<3} "
                     f"{'-' if c is None else f'{c:.2f}':>6}  {shipped}")
    for family in sorted({r["family"] for r in rows}):
        published, sources = published_rows(family, sorted({r["task"] for r in rows if r["family"] == family}))
        if not published:
            continue
        lines += ["", f"published ({family}, tasks/{family}.yaml):"]
        lines += [f"  {task:<14} {method:<48} {value:>6}  [{source}]" for task, method, value, source in published]
        lines += [f"  [{key}] {text}" for key, text in sources.items() if any(key in s for *_, s in published)]
    return "\n".join(lines)
