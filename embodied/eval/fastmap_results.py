"""Fast-mapping by behaviour cloning, and two diagnostics of where name binding fails.

`train`: behaviour cloning on the symbolic CPU config with new scripted-expert episodes every epoch
(`collect_labelled` from a new seed each epoch; 1500 take ~12 s), so the agent cannot memorise
layouts, instruction-phase steps optionally up-weighted (they are ~20% of an expert episode and
the only steps where the name matters), then success on held-out objects in the env itself.

`probe`: is the second hop learnable at all? Supervised on instruction-phase steps only, memory
`none`, with `show_target` the instructed object's glyph drawn in an extra tile row above the map
(what a perfect memory read would supply). Held-out step accuracy with and without it separates
"cannot find the object it should look for" from "cannot recall which object that is".

`--target-look W` (train): an auxiliary probe on the memory read, weight W, predicts the instructed
object's tile (its glyph in its colour, what `probe --show-target` draws) at instruction-phase
steps. The label is privileged (the expert's knowledge of the target), as the Ballet probes are
(ballet_results.py); it trains recall directly instead of only through the policy's loss.

`lookup`: for a DCEM agent walked through discovery by the expert, the share of the
text-keyed lookup's weight (at the first instruction step) on the rows written while the
instructed object was named (chance 1/N), and with `match_readout` how often the match map peaks
on the instructed object's cell.

`evaluate`: a saved agent on other levels (held-out objects, 5 and 8 objects, 10 distractor
phases) without retraining.

    python -m embodied.eval.fastmap_results train --memory dcem --minutes 24 --instruction-weight 3 \\
        --agent cnn_patch=3 film_readout=64 'cnn_channels=[64]' --memory-option key_by=text --out r.json
    python -m embodied.eval.fastmap_results probe --show-target --rounds 60 --agent cnn_patch=3 film_readout=64 'cnn_channels=[64]'
    python -m embodied.eval.fastmap_results lookup --ckpt r.pt --agent ...
"""
from __future__ import annotations

import argparse
import functools
import time

import gymnasium as gym
import numpy as np
import torch
import yaml
from tqdm import tqdm

from embodied.agents import build_agent
from embodied.agents.aux_heads import register_aux_head
from embodied.eval.stats import wilson_interval
from embodied.eval.runner import print_result
from embodied.tasks import make_env
from embodied.tasks.fastmap import _glyph_mask, decode_text, instruction_steps
from embodied.envs import VectorEnv
from embodied.train.bc import BCConfig, BehaviourCloning, collect_labelled

TRAIN_LEVEL = "fastmap/architecture_comparison/fast_map_three_objs"
TEST_LEVEL = "fastmap/new_obj_generalization/fast_map_heldout_test_objs"
TARGET_LOOK = "target_look"  # privileged label stored with demos (never an agent input)


def target_tile(env: gym.Env) -> np.ndarray:
    """The instructed object's tile as the symbolic map draws it (glyph in its colour on black), [px, px, 3] uint8."""
    e = env.unwrapped
    px = e.options.cell_pixels
    tile = np.zeros((px, px, 3), np.uint8)
    if e.phase == "instruction":
        target = e.objects[e.target]
        tile[_glyph_mask(target.category, px)] = target.colour
    return tile


class TargetWrapper(gym.Wrapper):
    """Diagnostics only. `show`: one extra tile row above the symbolic map whose first tile shows the
    instructed object (`target_tile`) during the instruction phase. `label`: an extra observation
    TARGET_LOOK, that tile flat in [0, 1] (all zero before the instruction phase), which agents list
    in `ignore`: a training label, never an input."""

    def __init__(self, env: gym.Env, show: bool, label: bool):
        super().__init__(env)
        self.show, self.label = show, label
        self.px = px = env.unwrapped.options.cell_pixels
        spaces = dict(env.observation_space.spaces)
        if show:
            h, w, c = spaces["rgb"].shape
            spaces["rgb"] = gym.spaces.Box(0, 255, (h + px, w, c), np.uint8)
        if label:
            spaces[TARGET_LOOK] = gym.spaces.Box(0.0, 1.0, (px * px * 3,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def _observe(self, obs: dict) -> dict:
        tile = target_tile(self.env)
        obs = dict(obs)
        if self.show:
            rgb = np.zeros((obs["rgb"].shape[0] + self.px,) + obs["rgb"].shape[1:], np.uint8)
            rgb[self.px:] = obs["rgb"]
            rgb[:self.px, :self.px] = tile
            obs["rgb"] = rgb
        if self.label:
            obs[TARGET_LOOK] = tile.reshape(-1).astype(np.float32) / 255.0
        return obs

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info


def level_env(level: str, show_target: bool = False, target_look: bool = False) -> gym.Env:
    env = make_env({"name": level, "scenes": "symbolic", "sensors": ["rgb"]})
    return TargetWrapper(env, show_target, target_look) if show_target or target_look else env


def expert_episodes(level: str, n: int, seed: int, show_target: bool = False, target_look: bool = False) -> list[dict]:
    """`n` scripted-expert episodes in the BC trainer's episode format (`collect_labelled` with
    the oracle only; the env is reset with `seed`, later episodes continue its random stream)."""
    env_fn = functools.partial(level_env, level, show_target, target_look)
    envs = VectorEnv([env_fn], num_workers=0)
    try:
        max_steps = int(envs.call("cfg")[0].max_steps)  # a bound on the steps n episodes can take
        episodes, _ = collect_labelled(envs, None, torch.device("cpu"), n * max_steps, 1.0,
                                       np.random.default_rng(seed), seed, max_episodes=n)
    finally:
        envs.close()
    return episodes


@register_aux_head("fastmap_target_look")
class TargetLookProbe(torch.nn.Module):
    """Predict TARGET_LOOK from the memory read at instruction-phase steps (MSE; other steps and
    padding, whose label is all zero, are left out)."""

    def __init__(self, feat_dim: int, read_dim: int, num_actions: int, observation_space=None):
        super().__init__()
        space = None if observation_space is None else observation_space.spaces.get(TARGET_LOOK)
        if space is None:
            raise ValueError(f"auxiliary head fastmap_target_look needs a {TARGET_LOOK!r} entry in the observation space")
        self.decoder = torch.nn.Sequential(torch.nn.Linear(read_dim, 128), torch.nn.ReLU(),
                                           torch.nn.Linear(128, int(np.prod(space.shape))))

    def forward(self, context: dict) -> dict[str, torch.Tensor]:
        label = torch.as_tensor(context["obs"][TARGET_LOOK], device=context["read"].device).float()
        present = (label.abs().sum(-1) > 0).float()
        error = ((self.decoder(context["read"]) - label) ** 2).mean(-1)
        return {"loss": (error * present).sum() / present.sum().clamp(min=1.0)}


@torch.no_grad()
def success_rate(agent, level: str, episodes: int, seed: int, show_target: bool = False) -> float:
    """Greedy-policy success over `episodes` env episodes (seeds seed..)."""
    return outcomes(agent, level, episodes, seed, show_target)["success"]


def outcomes(agent, level: str, episodes: int, seed: int, show_target: bool = False) -> dict:
    """Greedy-policy episodes (seeds seed..): success, and where the failures lie: `all_named` (every
    object lifted in discovery, so the memory could hold every name), success among those, and
    how the others ended: a wrong act (lift or put of the wrong object) or the instruction budget
    running out."""
    env = level_env(level, show_target)
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


def _agent(level: str, memory: str, memory_options: dict, agent_options: dict, show_target: bool = False, seed: int = 0,
           target_look: bool = False):
    env = level_env(level, show_target, target_look)
    if target_look:
        agent_options = dict(agent_options, ignore=[*agent_options.get("ignore", []), TARGET_LOOK],
                             aux_heads=[*agent_options.get("aux_heads", []), "fastmap_target_look"])
    torch.manual_seed(seed)
    return build_agent(env.observation_space, env.action_space, memory, memory_options, **agent_options)


def train(memory: str = "dcem", memory_options: dict | None = None, agent_options: dict | None = None,
          episodes_per_epoch: int = 1500, minutes: float = 10.0, lr: float = 1e-3, batch: int = 8,
          instruction_weight: float = 1.0, eval_episodes: int = 30, test_episodes: int = 200, seed: int = 0,
          show_target: bool = False, quiet: bool = False, save: str | None = None, target_look: float = 0.0,
          freeze: list[str] | None = None) -> dict:
    memory_options, agent_options = dict(memory_options or {}), dict(agent_options or {})
    agent = _agent(TRAIN_LEVEL, memory, memory_options, agent_options, show_target, seed, target_look > 0)
    bc = BehaviourCloning(agent, BCConfig(lr=lr, batch_episodes=batch, epochs=1, aux_coef=target_look if target_look > 0 else 1.0,
                                          upweight="fastmap/instruction", upweight_factor=instruction_weight,
                                          freeze=list(freeze or [])).validate(), seed=seed)
    start, curve, epoch = time.time(), [], 0
    bar = tqdm(desc=f"fastmap bc {memory}", unit="epoch", disable=quiet)
    while time.time() - start < minutes * 60:
        # Train seeds from 1e6 on, fresh every epoch; evaluation seeds (1e4..) never overlap them.
        data = expert_episodes(TRAIN_LEVEL, episodes_per_epoch, 1_000_000 + epoch * episodes_per_epoch, show_target,
                               target_look > 0)
        stats = bc.fit(data, epochs=1)
        epoch += 1
        point = {"epoch": epoch, "grad_steps": bc.grad_steps, "seconds": round(time.time() - start, 1),
                 "bc_loss": stats["bc_loss"], "accuracy": stats["accuracy"], "aux_loss": stats["aux_loss"],
                 "train_level_success": success_rate(agent, TRAIN_LEVEL, eval_episodes, 10_000, show_target)}
        curve.append(point)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['bc_loss']:.3f}", success=f"{point['train_level_success']:.2f}")
    bar.close()
    test_outcomes = outcomes(agent, TEST_LEVEL, test_episodes, 20_000, show_target)
    test = test_outcomes["success"]
    if save:
        torch.save(agent.state_dict(), save)
    lo, hi = wilson_interval(test * test_episodes, test_episodes)
    return {"memory": memory, "memory_options": memory_options, "agent_options": agent_options,
            "instruction_weight": instruction_weight, "target_look": target_look, "frozen": bc.frozen, "lr": lr,
            "episodes_per_epoch": episodes_per_epoch,
            "show_target": show_target, "grad_steps": bc.grad_steps, "seconds": round(time.time() - start, 1),
            "test_level": TEST_LEVEL, "test_success": test, "test_ci95": [lo, hi], "test_episodes": test_episodes,
            "test_outcomes": test_outcomes,
            "chance": 1 / 3, "curve": curve}


def _instruction_data(n: int, seed: int, show_target: bool) -> tuple[dict, torch.Tensor]:
    obs: dict[str, list] = {}
    actions = []
    for e in expert_episodes(TRAIN_LEVEL, n, seed, show_target):
        keep = instruction_steps(e["obs"])
        for k, v in e["obs"].items():
            obs.setdefault(k, []).append(v[keep])
        actions.append(e["actions"][keep])
    return {k: torch.as_tensor(np.concatenate(v)) for k, v in obs.items()}, torch.as_tensor(np.concatenate(actions))


def probe(show_target: bool, agent_options: dict | None = None, rounds: int = 20, episodes_per_round: int = 500,
          epochs: int = 3, lr: float = 1e-3, seed: int = 0, quiet: bool = False) -> dict:
    agent = _agent(TRAIN_LEVEL, "none", {}, dict(agent_options or {}), show_target, seed)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    test_obs, test_actions = _instruction_data(500, 900_000, show_target)

    def logits(obs: dict) -> torch.Tensor:
        n = obs["text"].shape[0]
        ones, zeros = torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.long)
        out = agent.evaluate_sequence({k: v[None] for k, v in obs.items()}, agent.initial_state(n, "cpu"), ones, zeros, zeros)
        return out["logits"][0]

    curve, steps = [], 0
    for r in tqdm(range(rounds), desc="fastmap probe", disable=quiet):
        obs, actions = _instruction_data(episodes_per_round, r * episodes_per_round, show_target)
        for _ in range(epochs):
            order = torch.randperm(len(actions))
            for a in range(0, len(order), 128):
                idx = order[a:a + 128]
                loss = torch.nn.functional.cross_entropy(logits({k: v[idx] for k, v in obs.items()}), actions[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
        with torch.no_grad():
            accuracy = float((logits(test_obs).argmax(-1) == test_actions).float().mean())
        curve.append({"round": r + 1, "grad_steps": steps, "heldout_step_accuracy": accuracy})
    return {"show_target": show_target, "agent_options": dict(agent_options or {}), "test_steps": int(len(test_actions)),
            "heldout_step_accuracy": curve[-1]["heldout_step_accuracy"], "curve": curve}


def _load(agent: torch.nn.Module, ckpt: str) -> None:
    """`train --save` weights or an `embodied train` checkpoint's model; a target-look probe is a
    training-only head and is left out."""
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "model" in weights and "format" in weights:  # an `embodied train` checkpoint
        from embodied.loading import check_checkpoint

        weights = check_checkpoint(weights, ckpt)["model"]
    agent.load_state_dict({k: v for k, v in weights.items() if not k.startswith("aux_heads.fastmap_target_look.")})


@torch.no_grad()
def lookup_share(ckpt: str | None, agent_options: dict | None = None, memory_options: dict | None = None,
                 episodes: int = 100, seed: int = 50_000, level: str = TRAIN_LEVEL) -> dict:
    """Walked through the episode by the expert, at the first instruction step: the share of the
    text-keyed lookup's weight on the rows written while the instructed object was named, and with
    agent option match_readout the share of episodes whose match map peaks on that object's cell
    (and of the later instruction steps, as the agent walks to it). `ckpt` None: the untrained agent."""
    agent = _agent(level, "dcem", dict(memory_options or {}), dict(agent_options or {}))
    if ckpt is not None:
        _load(agent, ckpt)
    agent.eval()
    mem, env = agent.memory, level_env(level)
    if "text" not in mem.modalities:
        raise ValueError("lookup: this dcem has no text-keyed lookup (key_by=visual)")
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
            step = agent._memory_input({k: torch.as_tensor(v)[None] for k, v in obs.items()}, first, prev, lead=(1,))
            feature_map = step.pop("feature_map", None)
            read, state = mem(step, state)
            if k == 0:
                text_weights = mem._last_weights[0, mem.capacity:] * len(mem.modalities)
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
def evaluate(ckpt: str, memory: str, memory_options: dict | None = None, agent_options: dict | None = None,
             levels: tuple[str, ...] = EVAL_LEVELS, episodes: int = 200, seed: int = 30_000) -> dict:
    """A `train --save` agent on other levels, without retraining: `outcomes` per level with a
    Wilson 95% interval and chance."""
    agent = _agent(TRAIN_LEVEL, memory, dict(memory_options or {}), dict(agent_options or {}))
    _load(agent, ckpt)
    rows = {}
    for level in levels:
        result = outcomes(agent, level, episodes, seed)
        lo, hi = wilson_interval(result["success"] * episodes, episodes)
        rows[level] = {**result, "ci95": [lo, hi]}
    return {"ckpt": ckpt, "memory": memory, "episodes": episodes, "levels": rows}


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"option {pair!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    from embodied.train.run import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # big CPU activations are not paged in anew every minibatch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "probe", "lookup", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--agent", nargs="*", default=[], help="agent options key=value (configs/agent/default.yaml)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--quiet", action="store_true")
        p.add_argument("--out", default=None, help="also write the result JSON here")
        if name in ("train", "lookup", "evaluate"):
            p.add_argument("--memory-option", nargs="*", default=[], help="memory options key=value")
        if name in ("train", "probe"):
            p.add_argument("--show-target", action="store_true", help="draw the instructed object above the map")
            p.add_argument("--lr", type=float, default=1e-3)
    t = sub.choices["train"]
    t.add_argument("--memory", default="dcem")
    t.add_argument("--minutes", type=float, default=10.0)
    t.add_argument("--episodes-per-epoch", type=int, default=1500)
    t.add_argument("--instruction-weight", type=float, default=1.0)
    t.add_argument("--eval-episodes", type=int, default=30)
    t.add_argument("--test-episodes", type=int, default=200)
    t.add_argument("--save", default=None, help="write the trained agent's state_dict here")
    t.add_argument("--target-look", type=float, default=0.0, help="weight of the privileged target-look probe (0: off)")
    t.add_argument("--freeze", nargs="*", default=[], help="parameter name prefixes not to train")
    sub.choices["probe"].add_argument("--rounds", type=int, default=20)
    sub.choices["probe"].add_argument("--episodes-per-round", type=int, default=500)
    sub.choices["lookup"].add_argument("--ckpt", default=None, help="trained weights (default: the untrained agent)")
    sub.choices["lookup"].add_argument("--level", default=TRAIN_LEVEL)
    sub.choices["lookup"].add_argument("--episodes", type=int, default=100)
    e = sub.choices["evaluate"]
    e.add_argument("--ckpt", required=True)
    e.add_argument("--memory", default="dcem")
    e.add_argument("--levels", nargs="*", default=list(EVAL_LEVELS))
    e.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "train":
        result = train(args.memory, _options(args.memory_option), _options(args.agent), args.episodes_per_epoch,
                       args.minutes, args.lr, 8, args.instruction_weight, args.eval_episodes, args.test_episodes,
                       args.seed, args.show_target, args.quiet, args.save, args.target_look, args.freeze)
    elif args.command == "probe":
        result = probe(args.show_target, _options(args.agent), args.rounds, args.episodes_per_round, 3, args.lr,
                       args.seed, args.quiet)
    elif args.command == "evaluate":
        result = evaluate(args.ckpt, args.memory, _options(args.memory_option), _options(args.agent), tuple(args.levels),
                          args.episodes)
    else:
        result = lookup_share(args.ckpt, _options(args.agent), _options(args.memory_option), args.episodes,
                              level=args.level)
    print_result(result, args.out)


if __name__ == "__main__":
    main()
