"""`embodied record`: run episodes of a task with the oracle, a random policy or a checkpoint's agent
and write one `.rrd` recording per episode (optionally an MP4 beside each).

Recordings of an earlier run in `out` (episode_XXX.rrd / .mp4) are never replaced silently: the run
stops at start with one line naming the file, unless overwrite=true."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from embodied.config import check, check_dir_path
from embodied.tasks import make_env
from embodied.viewer.play import refuse_overwrite
from embodied.agents import Agent
from embodied.viewer.recording import AgentPolicy, KeyframePolicy, OraclePolicy, RandomPolicy, record_episode
from embodied.viewer.stream import sync

POLICIES = ("oracle", "random", "scenemem", "optimus")


def checkpoint_policy(ckpt_path: str, task: dict, device: str = "cpu", deterministic: bool = True,
                      ckpt: dict | None = None):
    """(AgentPolicy, task dict with the checkpoint's observation layout) for a training checkpoint
    (`ckpt`: the checkpoint already loaded from ckpt_path)."""
    from embodied.eval.runner import trained_layout
    from embodied.loading import build_agent_from_config, load_checkpoint, load_model_state

    ckpt = ckpt if ckpt is not None else load_checkpoint(ckpt_path, map_location=device)
    env = make_env(trained_layout(task, ckpt["config"]))  # the agent sees the layout it was trained on
    agent = build_agent_from_config(ckpt["config"], env.observation_space, env.action_space, device)
    load_model_state(agent, ckpt["model"], ckpt_path, task=task.get("name"),
                     trained_task=(ckpt["config"].get("task") or {}).get("name"))
    if not isinstance(agent, Agent):  # agent=keyframe: keyframe actions from its own observation pipeline
        return KeyframePolicy(agent, device=device), env
    return AgentPolicy(agent, deterministic=deterministic, device=device), env


def scene_memory_policy(cfg, env, ckpt: dict | None = None):
    """The 3D-Mem agent (agent=scenemem) on a nav/goat env: the first of agent.variants; with
    `ckpt` (cfg.ckpt, loaded) the learned chooser of that goat_pointer checkpoint, else the scripted one."""
    from embodied.agents.goat import GoatAgent
    from embodied.eval.goat import build_chooser
    from embodied.memory.scene import SceneMemoryConfig
    from embodied.viewer.recording import SceneMemoryPolicy

    check(env.cfg.name == "nav/goat", "agent", f"scenemem on {env.cfg.name}; allowed: task=nav/goat")
    agent = OmegaConf.to_container(cfg.agent, resolve=True) if cfg.agent else {}
    variants = agent.get("variants") or ["kept"]
    variant = variants[0] if isinstance(variants, list) else variants
    chooser = build_chooser(ckpt, cfg.ckpt) if ckpt is not None else None
    return SceneMemoryPolicy(GoatAgent.for_task(env.cfg, variant, chooser, SceneMemoryConfig.from_options(agent.get("memory") or {})))


def household_memory_path(cfg, out: Path) -> Path | None:
    """Where `household_policy` keeps the memory it learns (None when agent.memory names one to read)."""
    from embodied.eval.household import household_agent

    opts = household_agent(cfg)
    if opts["memory"] or opts["variants"][0] in ("oracle", "reactive"):
        return None
    return out / "memory" / f"{opts['variants'][0]}.sqlite"


def household_policy(cfg, env, out: Path):
    """(policy, memory): Optimus-1's agent (agent=optimus) on a household task, the first of
    agent.variants, reading a memory: agent.memory=DIR (e.g. an eval's <out>_memory/) holding
    <variant>.sqlite; else one learned first from empty memory by the eval's protocol (agent.epochs x
    agent.tasks_per_epoch tasks) into <out>/memory/."""
    from embodied.agents.household_nav import household_agent as build_agent
    from embodied.eval.household import household_agent, learn, learning_envs, open_memory

    check(env.cfg.name.startswith("household/"), "agent", f"optimus on {env.cfg.name}; allowed: task=household/...")
    opts = household_agent(cfg)
    check(opts["worlds"] is None, "agent.worlds", f"{opts['worlds']}; a recording plays one world: task.world_seed=W "
          "(and agent.memory=<out>_memory/worldW for the memory of an eval over several worlds)")
    variant, memory_dir = opts["variants"][0], opts["memory"]
    if variant not in ("oracle", "reactive") and memory_dir:
        path = Path(memory_dir) / f"{variant}.sqlite"
        check(path.is_file(), "agent.memory", f"{memory_dir} holds no {path.name} (the memory an eval of variant "
              f"{variant} wrote: <out>_memory/)")
    elif variant not in ("oracle", "reactive"):
        from tqdm import tqdm

        memory_dir = out / "memory"
        memory = open_memory(variant, memory_dir, str(env.cfg.world_seed), fresh=True)
        learner = build_agent(variant, memory, env.floor_plan(), cases=opts["cases"], seed=cfg.seed)
        envs = learning_envs(OmegaConf.to_container(cfg.task, resolve=True))
        with tqdm(total=opts["epochs"] * opts["tasks_per_epoch"], unit="task", desc=f"learn {variant}",
                  disable=cfg.quiet, file=sys.stderr) as bar:
            learned = 0
            for _ in range(opts["epochs"]):
                learned = learn(learner, envs, opts, learned, on_task=bar.update)
        for e in envs.values():
            e.close()
        memory.close()  # the recorded episodes only read it
    return household_replay(env, variant, memory_dir, opts["cases"], cfg.seed)


def household_replay(env, variant: str, memory_dir, cases: int, seed: int):
    """(policy, memory): a household variant's agent reading memory_dir/<variant>.sqlite read-only
    (the oracle: the env's; reactive: no memory). The caller closes the memory."""
    from embodied.agents.household_nav import household_agent as build_agent
    from embodied.eval.household import open_memory
    from embodied.viewer.recording import HouseholdPolicy

    if variant == "oracle":
        return OraclePolicy(), None
    memory = None
    if variant != "reactive":
        memory = open_memory(variant, Path(memory_dir), str(env.cfg.world_seed), fresh=False, readonly=True)
    agent = build_agent(variant, memory, env.floor_plan(), cases=cases, seed=seed)
    return HouseholdPolicy(agent), memory


def record(cfg) -> list[dict]:
    """Record `cfg.episodes` episodes into `cfg.out`; returns one result dict per episode."""
    from tqdm import tqdm

    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    check(cfg.seed >= 0, "seed", f"{cfg.seed}; allowed: >= 0")
    check_dir_path("out", cfg.out, "a directory path (new, or an earlier one: its recordings are kept unless overwrite=true)")
    out = Path(cfg.out)
    paths = [out / f"episode_{ep:03d}.rrd" for ep in range(cfg.episodes)]
    task = OmegaConf.to_container(cfg.task, resolve=True)
    kind = (cfg.agent or {}).get("kind", None)
    learned = household_memory_path(cfg, out) if kind == "optimus" and not cfg.ckpt else None
    refuse_overwrite(paths + ([p.with_suffix(".mp4") for p in paths] if cfg.video else []) + ([learned] if learned else []),
                     bool(cfg.get("overwrite", False)))
    from embodied.eval.goat import goat_checkpoint

    ckpt_kind, ckpt = goat_checkpoint(cfg.ckpt) if cfg.ckpt and task.get("name") == "nav/goat" else (None, None)
    memory = None
    if ckpt_kind == "chooser":  # a learned chooser inside the 3D-Mem agent (else a policy, below)
        env = make_env(task)
        policy, name = scene_memory_policy(cfg, env, ckpt), f"scenemem, checkpoint {cfg.ckpt}"
    elif cfg.ckpt:
        policy, env = checkpoint_policy(cfg.ckpt, task, deterministic=bool(cfg.deterministic), ckpt=ckpt)
        name = f"checkpoint {cfg.ckpt}"
    else:
        check(kind in POLICIES, "agent", f"{kind!r} needs ckpt=...; allowed without one: {', '.join(POLICIES)}" if kind
              else f"a trained agent's config (no agent.kind) needs ckpt=PATH; allowed without one: {', '.join(POLICIES)}")
        env = make_env(task)
        policy = OraclePolicy() if kind == "oracle" else RandomPolicy(cfg.seed)
        if kind == "scenemem":
            policy = scene_memory_policy(cfg, env)
        elif kind == "optimus":
            policy, memory = household_policy(cfg, env, out)
        name = kind
    out.mkdir(parents=True, exist_ok=True)
    results = []
    # Ballet / Room Ballet know their own length (they ignore task.max_steps); keyframe tasks count keyframes;
    # a gymnasium env may have no step limit (the bar then counts steps without a total).
    max_steps = (getattr(env, "max_episode_steps", None) or getattr(env.cfg, "max_steps", None)
                 or getattr(env.cfg, "max_keyframes", None))
    bar = tqdm(total=cfg.episodes * max_steps if max_steps else None, unit="step", desc="record", disable=cfg.quiet,
               file=sys.stderr)
    for ep in range(cfg.episodes):
        path = paths[ep]
        # The writer process finishes one episode's file while the next is played; a video reads it back.
        result = record_episode(env, policy, path, seed=cfg.seed + ep, meta={"task": env.cfg.name, "agent": name},
                                on_step=lambda: bar.update(1), wait=bool(cfg.video))
        if max_steps:
            bar.update(max_steps * (ep + 1) - bar.n)  # episodes that end early skip their remainder
        if cfg.video:
            from embodied.viewer.video import recording_to_video

            result["video"] = str(recording_to_video(path))
        results.append(result)
    sync()
    bar.close()
    if memory is not None:
        memory.close()
    for r in results:
        measures = [f"success={float(r['success']):.0f}"] if "success" in r else []
        measures += [f"spl={float(r['spl']):.3f}"] if "spl" in r else []
        print(" ".join([f"{r['path']}: steps={r['length']}", *measures, f"return={r['return']:.3f}"]
                       + ([f"video={r['video']}"] if "video" in r else [])))
    return results


def record_eval(cfg, report: dict) -> dict:
    """`embodied eval ... record=true`: record the first `cfg.record_episodes` evaluated episodes of
    each task (env i's first episode: seed + i; MemoryBench: its first pinned test seeds) with the
    evaluated policy into recordings/<task>/ beside the report, and add their paths to the report."""
    if not cfg.record:
        return report
    from embodied.config import ConfigError
    from embodied.eval.runner import eval_task_config, load_task_config, write_report

    policy_kind = report.get("policy")
    out = Path(report["path"]).parent / "recordings"
    for result in report["results"]:
        name = result["task"]
        task = load_task_config(name) if cfg.suite else OmegaConf.to_container(cfg.task, resolve=True)
        if name.startswith("memorybench/"):
            if policy_kind != "oracle":
                raise ConfigError("record: MemoryBench checkpoints are recorded with `embodied record`; "
                                  "allowed with eval record=true: agent=oracle")
            from embodied.tasks.memorybench import task_spec

            seeds = [int(s) for s in task_spec(name)["test_seeds"]][: cfg.record_episodes]
        else:
            seeds = [cfg.seed + i for i in range(cfg.record_episodes)]
        directory, memory, agent = out / name.replace("/", "_"), None, policy_kind
        if policy_kind == "household":  # each variant with the memory its evaluation read
            env, agent = make_env(task), result["variant"]
            policy, memory = household_replay(env, agent, report["memory_dir"], report["agent"]["cases"], cfg.seed)
            directory = out / agent / name.replace("/", "_")
        elif policy_kind == "checkpoint":
            policy, env = checkpoint_policy(cfg.ckpt, eval_task_config(task, cfg), deterministic=bool(cfg.deterministic))
        else:
            policy = OraclePolicy() if policy_kind == "oracle" else RandomPolicy(cfg.seed)
            env = make_env(eval_task_config(task, cfg))
        paths = []
        for i, seed in enumerate(seeds):
            path = directory / f"episode_{i:03d}.rrd"
            record_episode(env, policy, path, seed=seed, meta={"task": name, "agent": agent, "eval": True},
                           wait=False)
            paths.append(str(path))
        sync()
        env.close()
        if memory is not None:
            memory.close()
        result["recordings"] = paths
        print(f"{name}: {len(paths)} recordings in {directory}")
    return write_report({k: v for k, v in report.items() if k != "path"}, Path(report["path"]))
