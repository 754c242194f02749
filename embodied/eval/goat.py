"""`embodied eval task=nav/goat agent=scenemem`: 3D-Mem's claim on lifelong multi-modal navigation
(docs/goat.md). Every variant of agent.variants plays the same episodes (seeds seed ..
seed + episodes - 1); success and SPL per goal with Wilson / bootstrap intervals, over all goals,
over goals 2..K (where memory can help), by goal index, by modality, and by whether the goal
instance was seen earlier in the episode; plus the memory's cost per step (update time, snapshot
count, bytes). `ckpt=` of a policy trained on nav/goat (the GRU baselines, +experiment=goat_ppo_gru or goat_bc_gru)
plays the same episodes with the same per-goal records and summaries, in place of the 3D-Mem agent.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from embodied.config import agent_defaults, check
from embodied.eval.stats import summarize



def is_goat(cfg: DictConfig) -> bool:
    return not cfg.suite and str(cfg.task.get("name", "")) == "nav/goat"


def goat_agent(cfg: DictConfig, policy: bool = False) -> dict:
    """The agent options with their defaults, checked: one line naming a bad key or value. A policy
    checkpoint (`policy`) plays itself: it takes no agent options."""
    from embodied.agents.goat import VARIANTS
    from embodied.memory.scene import SceneMemoryConfig

    node = OmegaConf.to_container(cfg.agent, resolve=True) if isinstance(cfg.agent, DictConfig) else {}
    if policy:
        key = "agent" if "kind" in node else f"agent.{next(iter(node), '')}"
        check(not node, key, f"{node.get('kind', 'an option of agent=scenemem')} with ckpt={cfg.ckpt}, a policy "
              "checkpoint (it plays itself); allowed: no agent options, or agent=scenemem with a goat_pointer checkpoint")
        return {}
    if cfg.ckpt and not node:  # a learned chooser's checkpoint alone: the agent's defaults
        node = {"kind": "scenemem"}
    check(node.get("kind") == "scenemem", "agent", f"{node.get('kind')!r} for nav/goat; allowed: agent=scenemem "
          "(with ckpt=PATH of a goat_pointer run for the learned chooser)")
    defaults = agent_defaults("scenemem")
    unknown = sorted(set(node) - set(defaults))
    check(not unknown, f"agent.{unknown[0] if unknown else ''}", f"unknown key; allowed: {', '.join(sorted(defaults))}")
    opts = {**defaults, **node}
    variants = opts["variants"] if isinstance(opts["variants"], list) else [opts["variants"]]
    bad = [v for v in variants if v not in VARIANTS]
    check(variants and not bad, "agent.variants", f"{bad or variants}; allowed: a list of {', '.join(VARIANTS)}")
    opts["variants"] = variants
    opts["memory"] = opts["memory"] or {}
    SceneMemoryConfig.from_options(opts["memory"])
    for key in ("questions", "active_questions"):
        q = opts[key]
        check(isinstance(q, int) and not isinstance(q, bool) and q >= 0, f"agent.{key}", f"{q!r}; allowed: an integer >= 0")
    return opts


def goat_checkpoint(path: str) -> tuple[str, dict]:
    """("chooser" | "policy", the checkpoint): a goat_pointer checkpoint (the learned chooser of the
    3D-Mem agent) or a policy (encoders, memory, heads) trained on nav/goat by PPO or by imitation
    (bc); any other checkpoint is one line."""
    from embodied.loading import load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    name = (config.get("agent") or {}).get("name")
    if name == "goat_pointer":
        return "chooser", ckpt
    task = (config.get("task") or {}).get("name")
    policy = name is None and (config.get("trainer") or {}).get("name") in ("ppo", "bc")
    check(policy and task == "nav/goat", "ckpt", f"{path} holds a {name or config.get('memory', {}).get('name')!r} "
          f"agent trained on {task}; allowed with task=nav/goat: a goat_pointer checkpoint (embodied train "
          "+experiment=goat_pointer) or a policy trained on nav/goat (embodied train +experiment=goat_ppo_gru, "
          "+experiment=goat_bc_gru)")
    return "policy", ckpt


def build_chooser(ckpt: dict, path: str):
    """The learned chooser of a loaded goat_pointer checkpoint (embodied/agents/goat_chooser.py), in
    eval mode on the CPU."""
    import torch

    from embodied.loading import build_agent_from_config, load_model_state

    chooser = build_agent_from_config(ckpt["config"], None, None, torch.device("cpu"))
    load_model_state(chooser, ckpt["model"], path)
    return chooser.eval()


class PolicyAgent:
    """A policy checkpoint's agent in run_episode's place of the 3D-Mem agent: `reset()`, `act(obs)`;
    no scene memory (so no memory cost and no questions)."""

    variant = "policy"  # not a scene-memory variant (run_episode asks no questions of it)
    memory = None

    def __init__(self, agent, deterministic: bool):
        from embodied.loading import EnvAgent

        self.player = EnvAgent(agent, deterministic)

    def reset(self) -> None:
        self.player.reset()

    def act(self, obs: dict) -> int:
        return int(self.player.step(obs)[0][0])


def run_episode(env, agent, seed: int, n_questions: int = 0, n_active: int = 0) -> dict:
    """One lifelong episode; its per-goal records, the memory's cost per step, and the answers to
    `n_questions` questions about what this trajectory saw (EM-EQA style), asked twice: at the end,
    and in the middle, once the agent has begun goal K//2 + 1 (for `cleared`, after it wiped its
    memory for that goal), about what it had seen until then; then `n_active` questions the agent may
    walk to answer (`ask_active`)."""
    from embodied.agents.goat import answer
    from embodied.tasks.goat import questions

    obs, info = env.reset(seed=seed)
    agent.reset()
    task = env.unwrapped
    scene = agent.memory is not None  # the 3D-Mem agent; a policy checkpoint has no scene memory
    if scene:
        agent.look = task.look  # frontier snapshots, for a chooser that looks at them (the VLM adapter)
    # The frontier baseline keeps no objects to answer from (its memory holds only the map).
    n_questions = 0 if agent.variant == "frontier" or not scene else n_questions
    n_active = 0 if agent.variant == "frontier" or not scene else n_active

    def ask(rng_key: int) -> list[dict]:
        asked = questions(task.scene.spec, task.seen_instances, np.random.default_rng([seed, rng_key]), n_questions)
        return [{"kind": q.kind, "text": q.text, "correct": answer(q, agent.memory) == q.answer,
                 "chance": 1.0 / len(q.choices)} for q in asked]

    update_ms, snapshots, nbytes = [], [], []
    middle = task.num_goals // 2 if task.num_goals > 1 and n_questions else None
    mid: list[dict] = []
    done, steps = False, 0
    while not done:
        action = agent.act(obs)
        if middle is not None and int(np.asarray(obs["goal_index"]).reshape(-1)[0]) == middle:
            mid, middle = ask(8), None
        if scene:
            update_ms.append(agent.memory.update_seconds * 1000)
            snapshots.append(len(agent.memory.snapshots))
            nbytes.append(agent.memory.nbytes())
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        steps += 1
    records = [dict(r, seed=seed) for r in task.goal_records]
    out = {"seed": seed, "goals": records, "questions": ask(7) if n_questions else [], "questions_mid": mid, "steps": steps}
    if scene:
        out.update(update_ms=float(np.mean(update_ms)), update_ms_p95=float(np.percentile(update_ms, 95)),
                   snapshots=float(np.mean(snapshots)), snapshots_final=snapshots[-1],
                   objects_final=len(agent.memory.objects), bytes=float(np.mean(nbytes)), bytes_final=nbytes[-1])
    if n_active:  # after everything above: the walks to answer them grow the memory
        out["questions_active"] = ask_active(env, agent, seed, n_active)
    return out


def ask_active(env, agent, seed: int, n: int) -> list[dict]:
    """`n` questions asked after the lifelong episode that the agent may walk to answer (A-EQA style;
    OpenEQA's active questions): the colour of the {category} on the {furniture}, the room of the
    {colour} {category}, about any reachable instance of the apartment, seen or not. Each starts
    from the episode's start pose (a reset with the episode's seed: the same apartment, the same pose
    frame as the memory's) and hands the agent its subject as a description goal; the agent answers
    from its memory once its chooser picks a remembered object for that goal, or gives up when it has
    nothing left to explore or `steps_per_goal` steps are spent (unanswered: its guess still counts
    for accuracy, but scores 0 when weighted, as A-EQA's scoring does). `cleared` wipes its memory
    for each question as for each goal.

    Per question: correct, answered, steps, `path` walked (m), `shortest` (geodesic m from the start
    to within success_distance of the subject, as a goal of it is measured), and `score` =
    correct x answered x shortest / max(shortest, path): LLM-Match SPL's weighting with an exact
    answer in place of the LLM judge's score (1 when it answers where it stands)."""
    from embodied.agents.goat import answer
    from embodied.sim import ACTIONS
    from embodied.tasks.goat import ACTIVE_KINDS, MODALITIES, encode, questions
    from embodied.tasks.measures import efficiency

    task = env.unwrapped
    budget, first = task.cfg.steps_per_goal, task.num_goals  # goal indices past the episode's: new goals
    obs, _ = env.reset(seed=seed)
    # Every question starts here: one geodesic per instance serves the question set and their shortest paths.
    distance = {o.id: task.instance_distance(o.id) for o in task.scene.spec.objects()}
    reachable = {i for i, d in distance.items() if np.isfinite(d)}
    asked = questions(task.scene.spec, reachable, np.random.default_rng([seed, 9]), n, ACTIVE_KINDS)
    out = []
    for i, q in enumerate(asked):
        if i:
            obs, _ = env.reset(seed=seed)
        agent.relocated()
        shortest = distance[q.instance]
        goal = {"goal_index": np.array([first + i], np.int64), "goal_text": encode(q.goal_text()),
                "goal_modality": np.array([MODALITIES.index("description")], np.int64)}
        answered, steps, path = False, 0, 0.0
        while steps < budget:
            action = agent.act({**obs, **goal})
            if agent.recalled is not None:
                answered = True  # a remembered object matches the subject: answer from memory now
                break
            if ACTIONS[action] == "stop":  # nothing left to explore
                break
            before = np.asarray(obs["pose"], np.float64)[:2]
            obs, _, terminated, truncated, _ = env.step(action)
            path += float(np.linalg.norm(np.asarray(obs["pose"], np.float64)[:2] - before))
            steps += 1
            if terminated or truncated:
                break
        correct = answer(q, agent.memory) == q.answer
        out.append({"kind": q.kind, "text": q.text, "instance": q.instance, "correct": bool(correct),
                    "answered": answered, "steps": steps, "path": path, "shortest": shortest,
                    "score": float(correct and answered) * efficiency(shortest, path), "chance": 1.0 / len(q.choices)})
    return out


def _rates(goals: list[dict], confidence: float) -> dict:
    if not goals:
        return {"goals": 0}
    return {"goals": len(goals), "success": summarize([g["success"] for g in goals], True, confidence),
            "spl": summarize([g["spl"] for g in goals], False, confidence)}


def summarize_variant(episodes: list[dict], confidence: float) -> dict:
    goals = [g for e in episodes for g in e["goals"]]
    later = [g for g in goals if g["index"] >= 1]
    k = max(g["index"] for g in goals) + 1
    out = {"all": _rates(goals, confidence), "goals_2_to_k": _rates(later, confidence),
           "by_index": [_rates([g for g in goals if g["index"] == i], confidence) for i in range(k)],
           "by_modality": {m: _rates([g for g in goals if g["modality"] == m], confidence)
                           for m in sorted({g["modality"] for g in goals})},
           "seen": _rates([g for g in goals if g["seen"]], confidence),
           "unseen": _rates([g for g in goals if not g["seen"]], confidence)}
    costed = all("update_ms" in e for e in episodes)  # the scene memory's cost; a policy has none
    for key in ("update_ms", "update_ms_p95", "snapshots", "bytes") if costed else ():
        out[key] = float(np.mean([e[key] for e in episodes]))
    for key in ("questions", "questions_mid", "questions_active"):
        answers = [a for e in episodes for a in e.get(key, [])]
        if not answers:
            continue
        mean = lambda field: float(np.mean([a[field] for a in answers]))  # noqa: E731
        out[key] = {"n": len(answers), "accuracy": summarize([a["correct"] for a in answers], True, confidence),
                    "chance": mean("chance"),
                    "by_kind": {k: summarize([a["correct"] for a in answers if a["kind"] == k], True, confidence)
                                for k in sorted({a["kind"] for a in answers})}}
        if key == "questions_active":  # asked where the agent may walk: the path-weighted score and the walk
            out[key].update(score=summarize([a["score"] for a in answers], False, confidence),
                            **{f: mean(f) for f in ("answered", "path", "shortest", "steps")})
    for key in ("snapshots_final", "objects_final") if costed else ():
        out[key] = float(np.mean([e[key] for e in episodes]))
    return out


def policy_task(task: dict, trained_config: dict, path: str) -> dict:
    """The task a policy checkpoint plays: the observation layout it was trained with (image size,
    sensors; the episodes do not depend on it) over `task`; goals given in a way it never trained on
    are one line (its agent ignores their keys)."""
    from embodied.eval.runner import trained_layout

    task = trained_layout(task, trained_config)
    trained = list((trained_config.get("task") or {}).get("modalities") or [])
    extra = [m for m in task.get("modalities") or [] if m not in trained]
    names = lambda ms: "[" + ",".join(ms) + "]"  # noqa: E731 - as they are typed: task.modalities=[category]
    check(not extra, "task.modalities", f"{names(task.get('modalities'))}: {path} was trained on {names(trained)} "
          f"goals only; allowed: a subset, e.g. task.modalities={names(trained)}")
    return task


def policy_agent(ckpt: dict, cfg: DictConfig, env) -> PolicyAgent:
    """The checkpoint's policy on `env`'s spaces, on the CPU; sampled actions (deterministic=false)
    are seeded by cfg.seed."""
    import torch

    from embodied.loading import build_agent_from_config, load_model_state

    torch.manual_seed(cfg.seed)
    agent = build_agent_from_config(ckpt["config"], env.observation_space, env.action_space, torch.device("cpu"))
    load_model_state(agent, ckpt["model"], cfg.ckpt)
    return PolicyAgent(agent, bool(cfg.deterministic))


def evaluate_goat(cfg: DictConfig) -> dict[str, Any]:
    from pathlib import Path

    from embodied.agents.goat import GoatAgent
    from embodied.eval.report import training_record
    from embodied.eval.runner import write_report
    from embodied.memory.scene import SceneMemoryConfig
    from embodied.tasks import make_env

    kind, ckpt = goat_checkpoint(cfg.ckpt) if cfg.ckpt else (None, None)
    opts = goat_agent(cfg, policy=kind == "policy")
    task = OmegaConf.to_container(cfg.task, resolve=True)
    if kind == "policy":
        task = policy_task(task, ckpt["config"], cfg.ckpt)
    env = make_env(task)
    tc = env.unwrapped.cfg
    if kind == "policy":
        agents = {"argmax" if cfg.deterministic else "sampled": policy_agent(ckpt, cfg, env)}  # how it picks actions
    else:
        missing = [s for s in ("depth", "semantic", "instance") if s not in tc.sensors]
        check(not missing, "task.sensors", f"{tc.sensors} lacks {missing}; the scene memory needs depth, semantic, instance")
        chooser = build_chooser(ckpt, cfg.ckpt) if kind == "chooser" else None
        agents = {v: GoatAgent.for_task(tc, v, chooser, SceneMemoryConfig(**opts["memory"], seed=cfg.seed))
                  for v in opts["variants"]}
    chooser_name = {"chooser": "learned", "policy": None}.get(kind, "scripted")
    out = Path(cfg.out) if cfg.out else Path("eval_nav_goat.json")
    bar = None
    if not cfg.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(agents) * cfg.episodes, unit="ep", desc="eval nav/goat", file=sys.stderr)
    episodes = {v: [] for v in agents}
    seconds = dict.fromkeys(agents, 0.0)
    for i in range(cfg.episodes):  # variants side by side per seed: each apartment is built once
        for variant, agent in agents.items():
            t0 = time.perf_counter()
            episodes[variant].append(run_episode(env, agent, cfg.seed + i, opts.get("questions", 0),
                                                 opts.get("active_questions", 0)))
            seconds[variant] += time.perf_counter() - t0
            if bar:
                bar.update(1)
    results = []
    for v, eps in episodes.items():
        summary = summarize_variant(eps, cfg.confidence)
        # task/method/success/spl over all goals: the row `embodied report` renders (docs/goat.md has the rest).
        name = f"{ckpt['config']['trainer']['name']} {ckpt['config']['memory']['name']}" if kind == "policy" else \
            "scenemem learned chooser" if kind == "chooser" else "scenemem"
        method = f"{name} ({v})"
        results.append({"task": "nav/goat", "method": method, "variant": v, "chooser": chooser_name, "episodes": len(eps),
                        "seconds": seconds[v], "success": summary["all"]["success"], "spl": summary["all"]["spl"],
                        **summary, "per_episode": eps})
        if "bytes" in summary:  # the scene memory in the report's memory-efficiency comparison
            results[-1]["memory"] = {"name": "SceneMemory", "state_bytes": int(round(summary["bytes"])),
                                     "read_s_per_env_step": summary["update_ms"] / 1000.0}
    if bar:
        bar.close()
    env.close()
    table = format_goat(results, cfg.confidence)
    print(table)
    report = {"policy": "goat", "agent": opts or name, "chooser": chooser_name,
              "ckpt": cfg.ckpt, "modalities": list(tc.modalities), "image": [tc.width, tc.height],
              "training": training_record(cfg.ckpt, ckpt) if ckpt is not None else None,
              "task": "nav/goat", "confidence": cfg.confidence,
              "ci_methods": {"success": "wilson", "spl": "bootstrap"},
              "config": OmegaConf.to_container(cfg, resolve=True), "results": results, "table": table}
    return write_report(report, out)


def _cell(r: dict, key: str) -> str:
    if not r.get("goals", r.get("n")):
        return "-"
    s = r[key]
    return f"{s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def format_goat(results: list[dict], confidence: float = 0.95) -> str:
    pct = f"{round(confidence * 100)}% CI"
    lines = [f"| variant | goals 2..K | success [{pct}] | SPL [{pct}] | seen-earlier SPL | all goals success "
             "| ms/step | snapshots | KiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        later = r["goals_2_to_k"]
        cost = (f"{r['update_ms']:.1f} | {r['snapshots']:.1f} | {r['bytes'] / 1024:.0f}" if "update_ms" in r
                else "- | - | -")  # a policy checkpoint has no scene memory
        lines.append(f"| {r['variant']} | {later.get('goals', 0)} | {_cell(later, 'success')} | {_cell(later, 'spl')} "
                     f"| {_cell(r['seen'], 'spl')} | {_cell(r['all'], 'success')} | {cost} |")
    lines += ["", "| variant | " + " | ".join(f"goal {i + 1}" for i in range(len(results[0]["by_index"]))) + " |",
              "|---|" + "---|" * len(results[0]["by_index"])]
    for r in results:
        lines.append(f"| {r['variant']} success | " + " | ".join(_cell(x, "success") for x in r["by_index"]) + " |")
    lines += ["", "| variant | " + " | ".join(results[0]["by_modality"]) + " |",
              "|---|" + "---|" * len(results[0]["by_modality"])]
    for r in results:
        lines.append(f"| {r['variant']} success | " + " | ".join(_cell(x, "success") for x in r["by_modality"].values()) + " |")
    asked = [(r, key, when) for r in results for key, when in (("questions", "end"), ("questions_mid", "middle"))
             if key in r]
    if asked:
        kinds = sorted({k for r, key, _ in asked for k in r[key]["by_kind"]})
        lines += ["", f"| variant | asked at | questions | accuracy [{pct}] | chance | " + " | ".join(kinds) + " |",
                  "|---|---|---|---|---|" + "---|" * len(kinds)]
        for r, key, when in asked:
            q = r[key]
            a = q["accuracy"]
            lines.append(f"| {r['variant']} | {when} | {q['n']} | {a['mean']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}] "
                         f"| {q['chance']:.2f} | " + " | ".join(f"{q['by_kind'][k]['mean']:.2f}" if k in q["by_kind"]
                                                            else "-" for k in kinds) + " |")
    active = [r for r in results if "questions_active" in r]
    if active:
        lines += ["", f"| variant | active questions | accuracy [{pct}] | weighted by path (LLM-Match SPL) [{pct}] "
                  "| answered | chance | steps | walked m | shortest m |", "|---|---|---|---|---|---|---|---|---|"]
        for r in active:
            q = r["questions_active"]
            lines.append(f"| {r['variant']} | {q['n']} | {_cell(q, 'accuracy')} | {_cell(q, 'score')} | {q['answered']:.2f} "
                         f"| {q['chance']:.2f} | {q['steps']:.0f} | {q['path']:.1f} | {q['shortest']:.1f} |")
    return "\n".join(lines)


def bench_scene_memory(out: str, quick: bool = False) -> dict:
    """`embodied bench scenemem`: the scene memory's update per step (fusing one observation: map,
    objects, snapshots, frontiers) on one core in 6-room apartments, beside the env step (render +
    simulation) measured in the same run; snapshot count and memory bytes per step. The 3D-Mem agent
    (memory kept) drives the episodes."""
    import json
    import os

    os.environ.setdefault("EMBODIED_RENDER_THREADS", "1")
    from embodied.agents.goat import GoatAgent
    from embodied.config import provenance
    from embodied.tasks import make_env
    from embodied.tasks.config import GoatConfig

    cfg = GoatConfig(name="nav/goat", scenes="procedural", n_rooms=6, num_goals=2 if quick else 5)
    env = make_env(cfg)
    c = env.unwrapped.cfg
    agent = GoatAgent.for_task(c, "kept")
    update, env_step, snaps, nbytes = [], [], [], []
    for seed in range(1 if quick else 3):
        obs, _ = env.reset(seed=seed)
        agent.reset()
        done = False
        while not done:
            action = agent.act(obs)
            update.append(agent.memory.update_seconds)
            snaps.append(len(agent.memory.snapshots))
            nbytes.append(agent.memory.nbytes())
            t0 = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            env_step.append(time.perf_counter() - t0)
            done = terminated or truncated
    env.close()
    ms = lambda x, q=None: float(1000 * (np.mean(x) if q is None else np.percentile(x, q)))  # noqa: E731
    result = {"what": "scenemem", "steps": len(update), "image": [c.width, c.height], "rooms": 6,
              "update_ms": ms(update), "update_ms_p95": ms(update, 95), "env_step_ms": ms(env_step),
              "update_per_env_step": float(np.mean(update) / np.mean(env_step)),
              "snapshots_mean": float(np.mean(snaps)), "snapshots_final": snaps[-1],
              "bytes_mean": float(np.mean(nbytes)), "bytes_final": nbytes[-1], "provenance": provenance()}
    print(f"scene memory update {result['update_ms']:.1f} ms/step (p95 {result['update_ms_p95']:.1f}), "
          f"env step {result['env_step_ms']:.1f} ms (ratio {result['update_per_env_step']:.2f}), "
          f"{result['snapshots_mean']:.1f} snapshots, {result['bytes_mean'] / 1024:.0f} KiB mean over {len(update)} steps")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return result
