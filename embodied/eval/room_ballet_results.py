"""Room Ballet with SAT by behaviour cloning (imitation of the scripted expert): what the memory keeps.

Two experiments (issue #6), both on the symbolic `tokens` observation, CPU-sized:
1. `budget`: memory budget 32 tokens < walk of 96 steps. SAT variants (temporal chunks or
   place-major read) x (fifo or mvfo write strategy); the question asks about any visited room.
2. `multi`: four question types, each answerable under exactly one write strategy (by
   construction, see embodied/tasks/room_ballet/). One SAT per fixed strategy and one with the
   Adaptive Memory Allocator (`strategy=ama`), all trained on the mixed task; per question type:
   accuracy of each, and the strategy AMA picks (greedy, eval mode).

As in embodied/eval/ballet_results.py, expert episodes are dense [T, B] tensors (every episode of a
level has the same length when the expert answers at once, and actions are ignored during the walk),
so test success = the agent's argmax action at the question step equals the expert's. To learn in
minutes the walk is run once and the question step is asked about everything the question could
name (every visited room and seen dance; every dancer), so each episode gives many labels.
Speed (the shared 2-core machine gave ~9 s per update when the 96-step walk ran through SAT step by
step): SAT here has one layer, whose stored tokens are the detached input projections of the step
features, so they do not depend on any read. The walk is therefore written without reading
(`walk_state`: SAT's own eviction rule, no gradient, as SAT stores them anyway) and only the question
step runs the SAT layer; `tests/test_room_ballet.py` checks the state equals `forward_sequence`'s.
The final figures are measured with the plain `forward_sequence` over the whole episode.
AMA: the steps carry the question type as `task` (the paper's one-hot task id); its bandit reward is
minus the cross-entropy of the episode's real question; loss += 0.1 * bandit MSE (the paper's).
`memory_oracle` is the fraction of test episodes whose answer a memory of that strategy still holds.

    python -m embodied.eval.room_ballet_results budget --variant pm_mvfo --time-limit 300
    python -m embodied.eval.room_ballet_results multi --variant ama --time-limit 300
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from tqdm import tqdm

from embodied.agents import build_agent
from embodied.memory.sat import eviction_slots
from embodied.eval.runner import print_result
from embodied.tasks import make_env
from embodied.tasks.room_ballet import BEST_STRATEGY, MULTI_TYPES, NUM_DANCES, QUESTION_TYPES, STRATEGIES, question_tokens

VARIANTS = {
    "budget": {
        "temporal_fifo": dict(place_major=False, strategy="fifo"),
        "temporal_mvfo": dict(place_major=False, strategy="mvfo"),
        "pm_fifo": dict(place_major=True, strategy="fifo"),
        "pm_mvfo": dict(place_major=True, strategy="mvfo"),
    },
    "multi": {s: dict(place_major=False, strategy=s) for s in STRATEGIES + ("ama",)},
}
SMALL_SAT = dict(dim=64, heads=2, layers=1, ff_dim=128, chunk_size=8, top_k=2)


def expert_episodes(level: str, seeds: range) -> dict[str, Any]:
    """Expert episodes of `room_ballet/<level>` as [T, B] tensors, with every askable question.

    queries [B, Q, 2] (question tokens, 0 = padding), query_answers [B, Q] (expert action),
    target [B] (index of the episode's real question in queries), task [B] (question type index),
    kept {strategy: [B] bool} (the answer survives a budget memory of that strategy).
    """
    env = make_env({"name": f"room_ballet/{level}"})
    obs_seq, act_seq, queries, answers, targets, tasks = [], [], [], [], [], []
    kept = {s: [] for s in STRATEGIES}
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
        pairs = _askable(env)
        queries.append([q for q, _ in pairs])
        answers.append([a for _, a in pairs])
        targets.append(tuple(int(x) for x in episode_obs[-1]["text"][1:3]))
        tasks.append(QUESTION_TYPES.index(env.task_type))
        for s in STRATEGIES:
            kept[s].append(env.answer_kept(s))
    width = max(len(q) for q in queries)
    query_tensor = torch.zeros(len(queries), width, 2, dtype=torch.long)
    answer_tensor = torch.zeros(len(queries), width, dtype=torch.long)
    target_index = torch.zeros(len(queries), dtype=torch.long)
    for b, (q, a, real) in enumerate(zip(queries, answers, targets)):
        query_tensor[b, : len(q)] = torch.tensor(q)
        answer_tensor[b, : len(a)] = torch.tensor(a)
        target_index[b] = q.index(real)
    obs = {k: torch.as_tensor(np.stack([o[k] for o in obs_seq], axis=1)) for k in obs_seq[0]}
    actions = torch.as_tensor(np.stack(act_seq, axis=1))
    first = torch.zeros(actions.shape, dtype=torch.bool)
    first[0] = True
    return {"obs": obs, "actions": actions, "first": first, "queries": query_tensor, "query_answers": answer_tensor,
            "target": target_index, "task": torch.as_tensor(tasks), "kept": {s: torch.as_tensor(v) for s, v in kept.items()},
            "space": env.observation_space, "action_space": env.action_space, "num_rooms": env.num_rooms,
            "memory_budget": env.memory_budget, "walk_steps": env.walk_steps}


def _askable(env) -> list[tuple[tuple[int, int], int]]:
    """(question tokens, expert answer) of every question the episode's type could ask."""
    if env.mode == "multi":
        return [(question_tokens("colour", int(c)), 1 + int(d)) for c, d in zip(env.segment_colour, env.segment_dance)]
    visited = [int(r) for r in np.unique(env.places)]
    if env.task_type == "room_dance":
        return [(question_tokens("room", r), 1 + int(env.room_dance[r])) for r in visited]
    return [(question_tokens("dance", int(env.room_dance[r])), 1 + NUM_DANCES + r) for r in visited]


def _slice(data: dict, index: torch.Tensor) -> dict:
    out = {"obs": {k: v[:, index] for k, v in data["obs"].items()}, "actions": data["actions"][:, index],
           "first": data["first"][:, index], "kept": {s: v[index] for s, v in data["kept"].items()}}
    out.update({k: data[k][index] for k in ("queries", "query_answers", "target", "task")})
    return out


def _prev(actions: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full_like(actions[:1], -1), actions[:-1]])


def _steps(agent, obs: dict, first: torch.Tensor, prev_action: torch.Tensor, task: torch.Tensor) -> dict:
    """The memory's [T, B] steps: the agent's (feat, first, text, place) plus the question type as `task`."""
    steps = agent._memory_input(obs, first, prev_action, lead=tuple(first.shape))
    steps["task"] = (task - len(QUESTION_TYPES) + len(MULTI_TYPES)).clamp(min=0)[None].expand(first.shape)
    return steps


@torch.no_grad()
def walk_state(memory, steps: dict) -> TensorDict:
    """The state a 1-layer SAT holds after `steps` [T, B] from fresh rows (first step at t = 0),
    written without reading: equal to `memory.forward_sequence(steps, fresh)[1]`."""
    if memory.n_layers != 1:
        raise ValueError(f"walk_state needs a 1-layer SAT (stored tokens must not depend on reads), got layers={memory.n_layers}")
    length, batch = steps["feat"].shape[:2]
    device = steps["feat"].device
    state = memory.initial_state(batch, device)
    tokens = memory.input_proj(steps["feat"])  # [T, B, D]
    valid, slot_step, slot_place = state.get("valid"), state.get("step"), state.get("place")
    visits, arm, context = state.get("visits"), state.get("arm"), state.get("context")
    stored = torch.zeros(batch, memory.capacity, dtype=torch.long, device=device)  # which step each slot holds
    for t in range(length):
        step = {k: v[t] for k, v in steps.items()}
        place = memory.place_of(step).to(device)
        if t == 0 and memory.allocator is not None:
            context = memory._context(step, batch, device)
            arm = memory.allocator.choose(context)
        visits = visits.scatter_add(1, place[:, None], torch.ones_like(place[:, None]))
        target = eviction_slots(valid, slot_step, slot_place, memory.cfg.num_places).gather(1, arm[:, None]).squeeze(1)
        write = F.one_hot(target, memory.capacity).bool()
        valid = valid | write
        slot_step = torch.where(write, t, slot_step)
        slot_place = torch.where(write, place[:, None], slot_place)
        stored = torch.where(write, t, stored)
    held = tokens.gather(0, stored.t()[:, :, None].expand(-1, -1, tokens.shape[-1])).transpose(0, 1)  # [B, S, D]
    held = torch.where(valid[..., None], held, 0.0)
    return TensorDict({"memory": held[:, None], "valid": valid, "step": slot_step, "place": slot_place, "visits": visits,
                       "episode_step": torch.full((batch,), length, dtype=torch.long, device=device), "arm": arm,
                       "context": context}, batch_size=[batch], device=device)


def bc_losses(agent, part: dict, max_queries: int | None = None, generator: torch.Generator | None = None
              ) -> dict[str, torch.Tensor]:
    """Walk once (written without reading); ask the question step every askable question, or the
    real one and `max_queries - 1` random others per episode."""
    obs, actions, first = part["obs"], part["actions"], part["first"]
    walk = {k: v[:-1] for k, v in obs.items()}
    with torch.no_grad():  # SAT stores detached tokens: the walk gets no gradient either way
        state = walk_state(agent.memory, _steps(agent, walk, first[:-1], _prev(actions)[:-1], part["task"]))
    valid = part["queries"][..., 0] > 0
    if max_queries is not None:
        score = torch.rand(valid.shape, generator=generator).to(valid.device)
        score[torch.arange(valid.shape[0]), part["target"]] = -1.0  # the real question is always asked
        score = torch.where(valid, score, 2.0)
        valid &= score.argsort(-1).argsort(-1) < max_queries
    rows, cols = valid.nonzero(as_tuple=True)
    ask = {k: v[-1][rows] for k, v in obs.items()}
    ask["text"] = ask["text"].clone()
    ask["text"][:, 1:3] = part["queries"][rows, cols]
    step = _steps(agent, {k: v[None] for k, v in ask.items()}, first[-1][rows][None], actions[-2][rows][None],
                  part["task"][rows])
    step = {k: v[-1] for k, v in step.items()}
    read, final = agent.memory(step, state[rows])
    ce = F.cross_entropy(agent.policy_head(read), part["query_answers"][rows, cols], reduction="none")
    is_target = cols == part["target"][rows]
    out = {"answer": ce.mean()}
    if agent.memory.allocator is not None:
        out["bandit"] = agent.memory.ama_loss(final[is_target], -ce[is_target].detach())
    return out


@torch.no_grad()
def evaluate(agent, data: dict, batch: int = 100, exact: bool = True) -> dict[str, Any]:
    """Success on the real questions, per question type; AMA's greedy strategy per type.
    `exact`: run the whole episode through `forward_sequence`, else the walk through `walk_state`."""
    agent.eval()
    total = data["actions"].shape[1]
    correct = torch.zeros(total, dtype=torch.bool)
    arms = torch.full((total,), -1, dtype=torch.long)
    for start in range(0, total, batch):
        index = torch.arange(start, min(total, start + batch))
        part = _slice(data, index)
        steps = _steps(agent, part["obs"], part["first"], _prev(part["actions"]), part["task"])
        if exact:
            reads, state = agent.memory.forward_sequence(steps, agent.initial_state(len(index), part["actions"].device))
            read = reads[-1]
        else:
            state = walk_state(agent.memory, {k: v[:-1] for k, v in steps.items()})
            read, state = agent.memory({k: v[-1] for k, v in steps.items()}, state)
        correct[index] = (agent.policy_head(read).argmax(-1) == part["actions"][-1]).cpu()
        arms[index] = state.get("arm").cpu()
    agent.train()
    out: dict[str, Any] = {"success": float(correct.float().mean()), "by_type": {}}
    for type_index in data["task"].unique().tolist():
        rows = data["task"] == type_index
        entry = {"success": float(correct[rows].float().mean()), "episodes": int(rows.sum())}
        if agent.memory.allocator is not None:
            counts = torch.bincount(arms[rows], minlength=len(STRATEGIES))
            entry["ama_arms"] = {s: int(c) for s, c in zip(STRATEGIES, counts.tolist())}
        out["by_type"][QUESTION_TYPES[type_index]] = entry
    return out


def memory_oracle(data: dict) -> dict[str, Any]:
    """Fraction of episodes whose answer survives each strategy, overall and per question type."""
    out = {"all": {s: float(v.float().mean()) for s, v in data["kept"].items()}}
    for type_index in data["task"].unique().tolist():
        rows = data["task"] == type_index
        out[QUESTION_TYPES[type_index]] = {s: float(v[rows].float().mean()) for s, v in data["kept"].items()}
    return out


def train_room_ballet_bc(experiment: str = "budget", variant: str = "pm_mvfo", train_episodes: int = 3000,
                         test_episodes: int = 400, steps: int = 2000, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                         time_limit: float | None = None, eval_every: int = 100, quiet: bool = False,
                         device: str = "cpu", max_queries: int | None = None) -> dict[str, Any]:
    """Behaviour-clone SAT `variant` on `room_ballet/<experiment>`; success on unseen seeds.
    `max_queries`: questions asked per episode per update (None: every askable one)."""
    if experiment not in VARIANTS or variant not in VARIANTS[experiment]:
        raise ValueError(f"experiment/variant {experiment}/{variant}; allowed: "
                         + "; ".join(f"{e}: {', '.join(v)}" for e, v in VARIANTS.items()))
    device = torch.device(device)
    torch.manual_seed(seed)
    base = seed * 1_000_000
    train = expert_episodes(experiment, range(base, base + train_episodes))
    test = expert_episodes(experiment, range(10**9 + base, 10**9 + base + test_episodes))
    options = dict(SMALL_SAT, capacity=train["memory_budget"], num_places=train["num_rooms"], **VARIANTS[experiment][variant])
    if experiment == "multi":
        options["top_k"] = -(-options["capacity"] // options["chunk_size"])  # read everything kept: only the write differs
    if options["strategy"] == "ama":
        # Explore over the first half of training, then mostly exploit (the paper decays 1.0 -> 0.2).
        options.update(num_tasks=len(MULTI_TYPES), epsilon_episodes=max(1, steps * batch // 2), epsilon_end=0.1)
    agent = build_agent(train["space"], train["action_space"], memory="sat", memory_options=options,
                        hidden=64, text_dim=32, cnn_channels=[16, 32], image_dim=64, semantic_embed=8).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    curve, start, done = [], time.time(), 0
    for step in tqdm(range(1, steps + 1), disable=quiet, desc=f"bc sat {experiment}/{variant}"):
        part = _slice(train, torch.randint(0, train_episodes, (batch,), generator=generator))
        losses = bc_losses(agent, part, max_queries, generator)
        loss = losses["answer"] + 0.1 * losses.get("bandit", 0.0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
        optimizer.step()
        done = step
        out_of_time = time_limit is not None and time.time() - start > time_limit
        if step % eval_every == 0 or step == steps or out_of_time:
            result = evaluate(agent, test, exact=False)
            curve.append({"step": step, "answer_loss": float(losses["answer"].detach()), "test_success": result["success"],
                          "seconds": round(time.time() - start, 1)})
            if not quiet:
                print(json.dumps(curve[-1]), flush=True)
        if out_of_time:
            break
    final = evaluate(agent, test)
    return {"experiment": experiment, "variant": variant, "training": "behaviour cloning (scripted expert)",
            "memory_options": options, "walk_steps": train["walk_steps"], "memory_budget": train["memory_budget"],
            "train_episodes": train_episodes, "test_episodes": test_episodes, "steps": done, "batch": batch, "lr": lr,
            "max_queries": max_queries,
            "seed": seed, "test_success": final["success"], "by_type": final["by_type"],
            "memory_oracle": memory_oracle(test), "best_strategy": BEST_STRATEGY if experiment == "multi" else None,
            "seconds": round(time.time() - start, 1), "curve": curve}


def main(argv: list[str] | None = None) -> None:
    from embodied.train.run import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # big CPU activations are not paged in anew every minibatch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(VARIANTS))
    parser.add_argument("--variant", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-episodes", type=int, default=3000)
    parser.add_argument("--test-episodes", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-queries", type=int, default=None, help="questions per episode per update (default: all)")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    result = train_room_ballet_bc(args.experiment, args.variant, args.train_episodes, args.test_episodes, args.steps,
                                  args.batch, args.lr, args.seed, args.time_limit, args.eval_every, args.quiet, args.device,
                                  args.max_queries)
    print_result(result, args.out)


if __name__ == "__main__":
    main()
