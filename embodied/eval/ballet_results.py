"""Ballet by behaviour cloning: train an agent on scripted-expert episodes and measure success.

Every Ballet episode of a level has the same length when the expert answers at once (show + 1
step), and what the agent sees does not depend on its actions until it answers (actions are ignored
during the show). So a batch of expert episodes is a dense [T, B] tensor, and success on held-out
seeds equals the agent's argmax action at the answer step being the expert's: an answer of 0
("wait") is counted as a failure, which only lowers the figure compared with the online env.

Training signal (why the plain answer-step loss did not learn in a few hundred steps: one label per
~130-step episode, and a dance is only identifiable from 16 frames together): the show is run once
and the answer step is asked about every dancer; auxiliary probes on the memory read predict the
dance and slot of the dancer dancing at each show step.

    python -m embodied.eval.ballet_results --level 4_delay16 --memory hcam --lr 2e-3 --time-limit 900
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from embodied.agents import build_agent
from embodied.eval.runner import print_result
from embodied.tasks import make_env
from embodied.tasks.ballet import DANCE_STEPS, DANCES, SLOTS

SMALL_MEMORY = {
    "hcam": dict(dim=64, heads=2, layers=2, ff_dim=128, chunk_size=16, top_k=4),
    "trxl": dict(dim=64, heads=2, layers=2, ff_dim=128, memory_length=64),
    "lstm": dict(hidden=128),
    "gru": dict(hidden=128),
    "none": dict(hidden=64),
}


def expert_episodes(level: str, seeds: range) -> dict[str, torch.Tensor]:
    """Stacked expert episodes: obs {key: [T, B, ...]}, actions [T, B], first [T, B]."""
    env = make_env({"name": f"ballet/{level}"})
    obs_seq, act_seq, dance_seq, slot_seq, dancer_dances, dancer_slots = [], [], [], [], [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        episode_obs, episode_actions, step_dance, step_slot = [], [], [], []
        period = DANCE_STEPS + env.delay
        while True:
            action = env.oracle_action()
            dancer, phase = divmod(env._t, period)
            dancing = env._t < env.show_steps and phase < DANCE_STEPS
            step_dance.append(int(env.dances[dancer]) if dancing else -1)
            step_slot.append(int(env.slots[dancer]) if dancing else -1)
            episode_obs.append(obs)
            episode_actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        obs_seq.append({k: np.stack([o[k] for o in episode_obs]) for k in episode_obs[0]})
        act_seq.append(np.asarray(episode_actions))
        dance_seq.append(np.asarray(step_dance))
        slot_seq.append(np.asarray(step_slot))
        dancer_dances.append(np.asarray(env.dances))
        dancer_slots.append(np.asarray(env.slots))
    obs = {k: torch.as_tensor(np.stack([o[k] for o in obs_seq], axis=1)) for k in obs_seq[0]}
    actions = torch.as_tensor(np.stack(act_seq, axis=1))
    first = torch.zeros(actions.shape, dtype=torch.bool)
    first[0] = True
    return {"obs": obs, "actions": actions, "first": first, "space": env.observation_space, "actions_space": env.action_space,
            # Labels for the auxiliary losses: the dance / slot of the dancer dancing at each step (-1: none),
            # and every dancer's dance and slot (to ask about each of them at the answer step).
            "step_dance": torch.as_tensor(np.stack(dance_seq, axis=1)), "step_slot": torch.as_tensor(np.stack(slot_seq, axis=1)),
            "dancer_dances": torch.as_tensor(np.stack(dancer_dances)), "dancer_slots": torch.as_tensor(np.stack(dancer_slots))}


def _to_device(data: dict, device: torch.device) -> dict:
    return {k: ({kk: vv.to(device) for kk, vv in v.items()} if k == "obs" else v.to(device) if isinstance(v, Tensor) else v)
            for k, v in data.items()}


def _slice(data: dict, index: torch.Tensor) -> dict:
    return {"obs": {k: v[:, index] for k, v in data["obs"].items()}, "actions": data["actions"][:, index],
            "first": data["first"][:, index], "step_dance": data["step_dance"][:, index],
            "step_slot": data["step_slot"][:, index], "dancer_dances": data["dancer_dances"][index],
            "dancer_slots": data["dancer_slots"][index]}


def _prev(actions: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full_like(actions[:1], -1), actions[:-1]])


@torch.no_grad()
def answer_accuracy(agent, data: dict, batch: int = 100) -> float:
    agent.eval()
    correct = 0
    total = data["actions"].shape[1]
    device = data["actions"].device
    for start in range(0, total, batch):
        part = _slice(data, torch.arange(start, min(total, start + batch), device=device))
        out = agent.evaluate_sequence(part["obs"], agent.initial_state(part["actions"].shape[1], device), part["first"],
                                      _prev(part["actions"]), part["actions"])
        correct += int((out["logits"][-1].argmax(-1) == part["actions"][-1]).sum())
    agent.train()
    return correct / total


class ShowProbes(nn.Module):
    """Auxiliary heads on the memory read during the show: the current dancer's dance and slot.

    The answer alone is one label per 130-step episode; these per-step labels teach the core to
    integrate a dance over its 16 steps (a single frame does not identify it), which the answer needs.
    """

    def __init__(self, read_dim: int):
        super().__init__()
        self.dance = nn.Linear(read_dim, len(DANCES))
        self.slot = nn.Linear(read_dim, len(SLOTS))

    def forward(self, reads: Tensor, step_dance: Tensor, step_slot: Tensor) -> Tensor:
        dancing = step_dance >= 0
        if not bool(dancing.any()):
            return reads.sum() * 0.0
        picked = reads[dancing]
        return (F.cross_entropy(self.dance(picked), step_dance[dancing])
                + F.cross_entropy(self.slot(picked), step_slot[dancing]))


def bc_losses(agent, probes: ShowProbes | None, part: dict) -> dict[str, Tensor]:
    """Imitation losses on a batch of expert episodes.

    The show is run once; the answer step is then asked about every dancer (the observation only
    differs in the instruction token), so each episode gives N answer labels instead of one.
    """
    obs, actions, first = part["obs"], part["actions"], part["first"]
    batch, device = actions.shape[1], actions.device
    show_obs = {k: v[:-1] for k, v in obs.items()}
    steps = agent._memory_input(show_obs, first[:-1], _prev(actions)[:-1], lead=tuple(first[:-1].shape))
    reads, state = agent.memory.forward_sequence(steps, agent.initial_state(batch, device))
    show = F.cross_entropy(agent.policy_head(reads).flatten(0, 1), actions[:-1].flatten())
    dancers = part["dancer_dances"].shape[1]
    rows = torch.arange(batch, device=device).repeat_interleave(dancers)
    answer_obs = {k: v[-1][rows] for k, v in obs.items()}
    answer_obs["text"] = (2 + part["dancer_dances"].reshape(-1, 1)).to(answer_obs["text"].dtype)
    logits, _, _ = agent.forward_step(answer_obs, state[rows], first[-1][rows], actions[-2][rows])
    answer = F.cross_entropy(logits, 1 + part["dancer_slots"].reshape(-1))
    out = {"answer": answer, "show": show}
    if probes is not None:
        out["probe"] = probes(reads, part["step_dance"][:-1], part["step_slot"][:-1])
    return out


def train_ballet_bc(level: str = "4_delay16", memory: str = "hcam", memory_options: dict | None = None,
                    train_episodes: int = 2000, test_episodes: int = 300, steps: int = 300, batch: int = 32,
                    lr: float = 1e-3, seed: int = 0, quiet: bool = False, eval_every: int = 50,
                    probe_weight: float = 1.0, time_limit: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Behaviour-clone the expert on `train_episodes` seeds; success on `test_episodes` unseen seeds.

    Loss = answer (every dancer asked) + 0.1 * show ("wait") + probe_weight * show probes.
    `time_limit` (seconds) stops training early; the result records the steps actually done.
    `device`: where the agent and the (fully resident) episode tensors live.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    options = dict(SMALL_MEMORY.get(memory, {}))
    options.update(memory_options or {})
    train = _to_device(expert_episodes(level, range(seed * 1_000_000, seed * 1_000_000 + train_episodes)), device)
    test = _to_device(expert_episodes(level, range(10**9 + seed * 1_000_000, 10**9 + seed * 1_000_000 + test_episodes)),
                      device)
    length = train["actions"].shape[0]
    if memory == "hcam":
        options.setdefault("num_chunks", -(-length // options.get("chunk_size", 16)))
    agent = build_agent(train["space"], train["actions_space"], memory=memory, memory_options=options,
                        hidden=64, text_dim=32, cnn_channels=[16, 32], image_dim=64, semantic_embed=8)
    agent.to(device)
    probes = ShowProbes(agent.memory.output_dim).to(device) if probe_weight > 0 else None
    params = list(agent.parameters()) + (list(probes.parameters()) if probes is not None else [])
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    start = time.time()
    done = 0
    for step in tqdm(range(1, steps + 1), disable=quiet, desc=f"bc {memory} {level}"):
        part = _slice(train, torch.randint(0, train_episodes, (batch,), generator=generator).to(device))
        losses = bc_losses(agent, probes, part)
        loss = losses["answer"] + 0.1 * losses["show"] + probe_weight * losses.get("probe", 0.0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        done = step
        out_of_time = time_limit is not None and time.time() - start > time_limit
        if step % eval_every == 0 or step == steps or out_of_time:
            curve.append({"step": step, "answer_loss": float(losses["answer"].detach()),
                          "probe_loss": float(losses["probe"].detach()) if "probe" in losses else None,
                          "test_success": answer_accuracy(agent, test), "seconds": time.time() - start})
            if not quiet:
                print(json.dumps(curve[-1]), flush=True)
        if out_of_time:
            break
    return {"level": level, "memory": memory, "memory_options": options, "train_episodes": train_episodes,
            "test_episodes": test_episodes, "steps": done, "batch": batch, "lr": lr, "probe_weight": probe_weight,
            "episode_length": length, "device": str(device),
            "train_success": answer_accuracy(agent, _slice(train, torch.arange(min(300, train_episodes), device=device))),
            "test_success": curve[-1]["test_success"], "chance": 1.0 / int(level.split("_")[0]),
            "seconds": time.time() - start, "curve": curve}


def main(argv: list[str] | None = None) -> None:
    from embodied.train.run import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # big CPU activations are not paged in anew every minibatch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", default="4_delay16")
    parser.add_argument("--memory", default="hcam")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-episodes", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-weight", type=float, default=1.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    result = train_ballet_bc(args.level, args.memory, None, args.train_episodes, 300, args.steps, args.batch, args.lr,
                             args.seed, args.quiet, args.eval_every, args.probe_weight, args.time_limit, args.device)
    print_result(result, args.out)


if __name__ == "__main__":
    main()
