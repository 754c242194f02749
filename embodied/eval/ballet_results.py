"""Ballet by behaviour cloning: train an agent on scripted-expert episodes and measure success.

Every Ballet episode of a level has the same length when the expert answers at once (show + 1
step), and what the agent sees does not depend on its actions until it answers (actions are ignored
during the show). So a batch of expert episodes is a dense [T, B] tensor, and success on held-out
seeds equals the agent's argmax action at the answer step being the expert's: an answer of 0
("wait") is counted as a failure, which only lowers the figure compared with the online env.

    python -m embodied.eval.ballet_results --level 4_delay16 --memory hcam --steps 300
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from embodied.agents import build_agent
from embodied.tasks import make_env

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
    obs_seq, act_seq = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        episode_obs, episode_actions = [], []
        while True:
            action = env.oracle_action()
            episode_obs.append(obs)
            episode_actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        obs_seq.append({k: np.stack([o[k] for o in episode_obs]) for k in episode_obs[0]})
        act_seq.append(np.asarray(episode_actions))
    obs = {k: torch.as_tensor(np.stack([o[k] for o in obs_seq], axis=1)) for k in obs_seq[0]}
    actions = torch.as_tensor(np.stack(act_seq, axis=1))
    first = torch.zeros(actions.shape, dtype=torch.bool)
    first[0] = True
    return {"obs": obs, "actions": actions, "first": first, "space": env.observation_space, "actions_space": env.action_space}


def _slice(data: dict, index: torch.Tensor) -> dict:
    return {"obs": {k: v[:, index] for k, v in data["obs"].items()}, "actions": data["actions"][:, index],
            "first": data["first"][:, index]}


def _prev(actions: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full_like(actions[:1], -1), actions[:-1]])


@torch.no_grad()
def answer_accuracy(agent, data: dict, batch: int = 100) -> float:
    agent.eval()
    correct = 0
    total = data["actions"].shape[1]
    for start in range(0, total, batch):
        part = _slice(data, torch.arange(start, min(total, start + batch)))
        out = agent.evaluate_sequence(part["obs"], agent.initial_state(part["actions"].shape[1]), part["first"],
                                      _prev(part["actions"]), part["actions"])
        correct += int((out["logits"][-1].argmax(-1) == part["actions"][-1]).sum())
    agent.train()
    return correct / total


def train_ballet_bc(level: str = "4_delay16", memory: str = "hcam", memory_options: dict | None = None,
                    train_episodes: int = 2000, test_episodes: int = 300, steps: int = 300, batch: int = 32,
                    lr: float = 1e-3, seed: int = 0, quiet: bool = False, eval_every: int = 50) -> dict[str, Any]:
    """Behaviour-clone the expert on `train_episodes` seeds; success on `test_episodes` unseen seeds."""
    torch.manual_seed(seed)
    options = dict(SMALL_MEMORY.get(memory, {}))
    options.update(memory_options or {})
    train = expert_episodes(level, range(seed * 1_000_000, seed * 1_000_000 + train_episodes))
    test = expert_episodes(level, range(10**9 + seed * 1_000_000, 10**9 + seed * 1_000_000 + test_episodes))
    length = train["actions"].shape[0]
    if memory == "hcam":
        options.setdefault("num_chunks", -(-length // options.get("chunk_size", 16)))
    agent = build_agent(train["space"], train["actions_space"], memory=memory, memory_options=options,
                        hidden=64, text_dim=32, cnn_channels=[16, 32], image_dim=64, semantic_embed=8)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    start = time.time()
    for step in tqdm(range(1, steps + 1), disable=quiet, desc=f"bc {memory} {level}"):
        part = _slice(train, torch.randint(0, train_episodes, (batch,), generator=generator))
        out = agent.evaluate_sequence(part["obs"], agent.initial_state(batch), part["first"], _prev(part["actions"]),
                                      part["actions"])
        # The answer step carries all the information; the show steps (always "wait") get a small weight.
        answer = -out["log_prob"][-1].mean()
        show = -out["log_prob"][:-1].mean()
        loss = answer + 0.1 * show
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "loss": float(answer.detach()), "test_success": answer_accuracy(agent, test),
                          "seconds": time.time() - start})
    return {"level": level, "memory": memory, "memory_options": options, "train_episodes": train_episodes,
            "test_episodes": test_episodes, "steps": steps, "batch": batch, "episode_length": length,
            "train_success": answer_accuracy(agent, _slice(train, torch.arange(min(300, train_episodes)))),
            "test_success": curve[-1]["test_success"], "chance": 1.0 / int(level.split("_")[0]),
            "seconds": time.time() - start, "curve": curve}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", default="4_delay16")
    parser.add_argument("--memory", default="hcam")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-episodes", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = train_ballet_bc(args.level, args.memory, None, args.train_episodes, 300, args.steps, args.batch, args.lr,
                             args.seed, args.quiet)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
