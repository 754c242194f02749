"""Fast-mapping diagnostics of a trained agent: where name binding fails, and other levels.

Training is `embodied train +experiment=fastmap_cpu` (configs/experiment/fastmap_cpu.yaml); these are
evaluations of its checkpoints (or of an untrained agent built from options).

`lookup`: for a DCEM agent walked through discovery by the expert, the share of the
text-keyed lookup's weight (at the first instruction step) on the rows written while the
instructed object was named (chance 1/N), and with `match_readout` how often the match map peaks
on the instructed object's cell.

`evaluate`: a checkpoint's agent on other levels (held-out objects, 5 and 8 objects, 10 distractor
phases) without retraining, with where the failures lie.

    python -m embodied.eval.fastmap_results evaluate --ckpt runs/.../latest.pt
    python -m embodied.eval.fastmap_results lookup --ckpt runs/.../latest.pt
    python -m embodied.eval.fastmap_results lookup --agent memory_text=pooled ... --memory-option key_by=text ...  # untrained
"""
from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
import yaml

from embodied.agents import build_agent
from embodied.eval.runner import print_result
from embodied.eval.stats import wilson_interval
from embodied.loading import build_agent_from_config, load_checkpoint, load_model_state
from embodied.tasks import make_env
from embodied.tasks.fastmap import decode_text

TRAIN_LEVEL = "fastmap/architecture_comparison/fast_map_three_objs"
TEST_LEVEL = "fastmap/new_obj_generalization/fast_map_heldout_test_objs"


def level_env(level: str) -> gym.Env:
    """A fast-mapping level on the symbolic tile map (the CPU recipe's observations)."""
    return make_env({"name": level, "scenes": "symbolic", "sensors": ["rgb"]})


@torch.no_grad()
def success_rate(agent, level: str, episodes: int, seed: int) -> float:
    """Greedy-policy success over `episodes` env episodes (seeds seed..)."""
    return outcomes(agent, level, episodes, seed)["success"]


def outcomes(agent, level: str, episodes: int, seed: int) -> dict:
    """Greedy-policy episodes (seeds seed..): success, and where the failures lie: `all_named` (every
    object lifted in discovery, so the memory could hold every name), success among those, and
    how the others ended: a wrong act (lift or put of the wrong object) or the instruction budget
    running out."""
    env = level_env(level)
    agent.eval()
    wins, named, wins_named, wrong, timeout = 0, 0, 0, 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        state = agent.initial_state(1, "cpu")
        first, prev = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.long)
        terminated = truncated = False
        while not (terminated or truncated):
            action, _, _, state = agent.act({k: torch.as_tensor(v)[None] for k, v in obs.items()}, state, first, prev,
                                            deterministic=True)
            obs, _, terminated, truncated, info = env.step(int(action))
            first, prev = torch.zeros(1, dtype=torch.bool), action
        success = bool(info["success"])
        all_named = int(info["named"]) == len(env.unwrapped.objects)
        wins += success
        named += all_named
        wins_named += success and all_named
        wrong += terminated and not success
        timeout += truncated and not success
    agent.train()
    n = max(episodes, 1)
    return {"success": wins / n, "all_named": named / n, "success_when_all_named": wins_named / max(named, 1),
            "wrong_act": wrong / n, "timeout": timeout / n, "chance": float(info["chance"]) if episodes else None}


def agent_for(ckpt: str | None, memory: str = "dcem", memory_options: dict | None = None,
              agent_options: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """A checkpoint's agent (built from its run config), or with `ckpt` None an untrained agent of
    `memory` with these options, for the symbolic tile map."""
    env = level_env(TRAIN_LEVEL)
    if ckpt is not None:
        checkpoint = load_checkpoint(ckpt)
        agent = build_agent_from_config(checkpoint["config"], env.observation_space, env.action_space, torch.device("cpu"))
        load_model_state(agent, checkpoint["model"], ckpt)
        return agent
    torch.manual_seed(seed)
    return build_agent(env.observation_space, env.action_space, memory, dict(memory_options or {}), **dict(agent_options or {}))


@torch.no_grad()
def lookup_share(ckpt: str | None, agent_options: dict | None = None, memory_options: dict | None = None,
                 episodes: int = 100, seed: int = 50_000, level: str = TRAIN_LEVEL) -> dict:
    """Walked through the episode by the expert, at the first instruction step: the share of the
    text-keyed lookup's weight on the rows written while the instructed object was named, and with
    agent option match_readout the share of episodes whose match map peaks on that object's cell
    (and of the later instruction steps, as the agent walks to it). `ckpt` None: the untrained agent."""
    agent = agent_for(ckpt, "dcem", memory_options, agent_options)
    agent.eval()
    mem, env = agent.memory, level_env(level)
    if "text" not in getattr(mem, "modalities", ()):
        raise ValueError("lookup: this memory has no text-keyed lookup (dcem with key_by=text or both)")
    matching = agent.film is not None and agent.film.query is not None
    shares, peaks, later = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        state = agent.initial_state(1, "cpu")
        first, prev = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.long)
        named_at: dict[int, str] = {}  # memory slot (= step, episodes are shorter than capacity) -> name
        t = 0
        while env.unwrapped.phase != "instruction":
            text = decode_text(obs["text"])
            if text.startswith("this is"):
                named_at[t] = text.split()[-1]
            _, _, _, state = agent.act({k: torch.as_tensor(v)[None] for k, v in obs.items()}, state, first, prev)
            action = env.unwrapped.oracle_action()
            obs, *_ = env.step(action)
            first, prev, t = torch.zeros(1, dtype=torch.bool), torch.tensor([action]), t + 1
        if t >= mem.capacity:
            raise ValueError(f"lookup: discovery took {t} steps, more than the memory's {mem.capacity} rows")
        e, done, k = env.unwrapped, False, 0
        while not done:  # the expert walks through the instruction phase
            step = agent.memory_inputs({k: torch.as_tensor(v)[None] for k, v in obs.items()}, first, prev)
            feature_map = step.pop("feature_map", None)
            read, state = mem(step, state)
            if k == 0:  # introspect's weights: the visual column's rows, then the language column's
                text_weights = agent.introspect(state)["weights"][0, mem.capacity:] * len(mem.modalities)
                target = decode_text(obs["text"]).split()[-1]
                total = sum(float(text_weights[s]) for s in named_at)
                hit = sum(float(text_weights[s]) for s, name in named_at.items() if name == target)
                shares.append(hit / total if total > 0 else 0.0)
            if matching and e.held != e.target:
                match = agent.film.match_map(read, feature_map)[0]
                peak = divmod(int(match.argmax()), match.shape[1]) == e.view_position(e.objects[e.target].cell)
                (peaks if k == 0 else later).append(peak)
            action = e.oracle_action()
            obs, _, terminated, truncated, _ = env.step(action)
            done, first, prev, k = terminated or truncated, torch.zeros(1, dtype=torch.bool), torch.tensor([action]), k + 1
    result = {"ckpt": ckpt, "episodes": episodes, "level": level, "share_on_instructed_name": float(np.mean(shares)),
              "chance": 1 / len(env.unwrapped.objects)}
    if matching:
        result["match_peaks_on_instructed_object"] = float(np.mean(peaks))
        result["match_peaks_later_instruction_steps"] = float(np.mean(later)) if later else None
    return result


EVAL_LEVELS = (TEST_LEVEL, "fastmap/num_generalization/fast_map_five_objs", "fastmap/num_generalization/fast_map_eight_objs",
               "fastmap/with_distractors/eval_fast_map_three_objs_ten_distractor")


@torch.no_grad()
def evaluate(ckpt: str, levels: tuple[str, ...] = EVAL_LEVELS, episodes: int = 200, seed: int = 30_000) -> dict:
    """A checkpoint's agent on other levels, without retraining: `outcomes` per level with a Wilson
    95% interval and chance. Seeds seed.. are below the seeds demonstrations are recorded with."""
    agent = agent_for(ckpt)
    rows = {}
    for level in levels:
        result = outcomes(agent, level, episodes, seed)
        lo, hi = wilson_interval(result["success"] * episodes, episodes)
        rows[level] = {**result, "ci95": [lo, hi]}
    return {"ckpt": ckpt, "episodes": episodes, "levels": rows}


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"option {pair!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("lookup", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--out", default=None, help="also write the result JSON here")
    lookup = sub.choices["lookup"]
    lookup.add_argument("--ckpt", default=None, help="an `embodied train` checkpoint (default: an untrained agent)")
    lookup.add_argument("--agent", nargs="*", default=[], help="untrained agent: options key=value (configs/agent/default.yaml)")
    lookup.add_argument("--memory-option", nargs="*", default=[], help="untrained agent: dcem options key=value")
    lookup.add_argument("--level", default=TRAIN_LEVEL)
    lookup.add_argument("--episodes", type=int, default=100)
    e = sub.choices["evaluate"]
    e.add_argument("--ckpt", required=True)
    e.add_argument("--levels", nargs="*", default=list(EVAL_LEVELS))
    e.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        result = evaluate(args.ckpt, tuple(args.levels), args.episodes)
    else:
        result = lookup_share(args.ckpt, _options(args.agent), _options(args.memory_option), args.episodes,
                              level=args.level)
    print_result(result, args.out)


if __name__ == "__main__":
    main()
