"""Imitation with privileged labels: task labels -> demo shards -> batches -> aux heads and imitation
losses (embodied/agents/imitation.py), the memory state at a branch step, and held-out eval seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from embodied.agents import build_agent
from embodied.agents.imitation import CounterfactualQuestions
from embodied.config import InputError, compose
from embodied.loading import make_envs
from embodied.tasks import make_env
from embodied.tasks.ballet import DANCE_STEPS
from embodied.tasks.episodes import read_episodes, write_episodes
from embodied.train.bc import BCConfig, BehaviourCloning, collect_labelled, pad_batch

LEVEL = "ballet/2_delay16"


def _episodes(n: int, seed: int = 1 << 30) -> list[dict]:
    envs = make_envs(OmegaConf.create({"name": LEVEL}), 2, seed, 0)
    try:
        episodes, _ = collect_labelled(envs, None, torch.device("cpu"), 10**6, 1.0, np.random.default_rng(0),
                                       seed=seed, max_episodes=n, labels=True)
    finally:
        envs.close()
    return episodes


def _agent(memory: str = "lstm", **extra):
    env = make_env({"name": LEVEL})
    # HCAM attends to every chunk (top_k = num_chunks): the top-k choice is discontinuous, and its sequence and
    # step paths sum in different orders, so a near tie may pick different chunks (reads then differ by ~1e-2).
    options = dict(hidden=16) if memory == "lstm" else dict(dim=16, heads=2, layers=1, ff_dim=16, chunk_size=8,
                                                             num_chunks=9, top_k=9)
    torch.manual_seed(0)
    return build_agent(env.observation_space, env.action_space, memory=memory, memory_options=options, hidden=16,
                       text_dim=8, cnn_channels=[8], image_dim=16, **extra)


def test_ballet_labels_name_the_dancer_dancing_and_every_question_at_the_answer():
    env = make_env({"name": LEVEL})
    obs, _ = env.reset(seed=3)
    period = DANCE_STEPS + env.delay
    while True:
        labels = env.labels()
        dancer, phase = divmod(env._t, period)
        if env._t < env.show_steps and phase < DANCE_STEPS:
            assert (labels["dance"], labels["slot"]) == (env.dances[dancer], env.slots[dancer])
            assert (labels["counterfactual/action"] == -1).all()
        elif env._t < env.show_steps:
            assert labels["dance"] == labels["slot"] == -1
        else:  # the question actually asked is one of the alternatives, with the expert's answer
            asked = labels["counterfactual/obs/text"][:, 0] == obs["text"][0]
            assert asked.sum() == 1 and labels["counterfactual/action"][asked][0] == env.oracle_action()
            assert sorted(labels["counterfactual/action"] - 1) == sorted(env.slots)
        obs, _, terminated, truncated, _ = env.step(env.oracle_action())
        if terminated or truncated:
            break


def test_labels_survive_shards_and_pad_with_minus_one(tmp_path):
    episodes = _episodes(3)
    assert set(episodes[0]["labels"]) == {"dance", "slot", "counterfactual/obs/text", "counterfactual/action"}
    write_episodes(tmp_path / "d.npz", episodes)
    loaded = read_episodes(tmp_path / "d.npz")
    for a, b in zip(loaded, episodes):
        assert all(np.array_equal(a["labels"][k], b["labels"][k]) for k in b["labels"])
    short = {"obs": {k: v[:5] for k, v in loaded[0]["obs"].items()}, "actions": loaded[0]["actions"][:5],
             "labels": {k: v[:5] for k, v in loaded[0]["labels"].items()}}
    batch = pad_batch([loaded[1], short], torch.device("cpu"))
    assert batch["labels"]["counterfactual/action"].shape == (len(loaded[1]["actions"]), 2, 2)
    assert (batch["labels"]["dance"][5:, 1] == -1).all() and (batch["labels"]["counterfactual/action"][5:, 1] == -1).all()
    assert torch.equal(batch["labels"]["dance"][:5, 1], torch.as_tensor(loaded[0]["labels"]["dance"][:5]))


@pytest.mark.parametrize("memory", ["lstm", "hcam"])
def test_branch_state_is_the_state_before_that_step_and_changes_nothing_else(memory):
    agent = _agent(memory)
    batch = pad_batch(_episodes(3), torch.device("cpu"))
    args = (batch["obs"], agent.initial_state(3), batch["first"], batch["prev_actions"], batch["actions"])
    branch = torch.tensor([40, 0, -1])
    with torch.no_grad():
        plain = agent.evaluate_sequence(*args)
        out = agent.evaluate_sequence(*args, branch=branch)
        assert torch.allclose(plain["logits"], out["logits"], atol=1e-5)
        for row, t in enumerate(branch.tolist()):
            t = t if t >= 0 else batch["actions"].shape[0]
            state = agent.initial_state(1)
            if t:
                steps = agent.memory_inputs({k: v[:t, row:row + 1] for k, v in batch["obs"].items()},
                                            batch["first"][:t, row:row + 1], batch["prev_actions"][:t, row:row + 1])
                _, state = agent.memory.forward_sequence(steps, state)
            for key, value in state.items(True, True):
                assert torch.allclose(out["branch_state"][key][row], value[0], atol=1e-5), (row, key)


def test_counterfactual_loss_asks_every_dancer_from_the_state_before_the_answer():
    agent = _agent()
    episodes = _episodes(2)
    batch = pad_batch(episodes, torch.device("cpu"))
    loss_fn = CounterfactualQuestions()
    answer = batch["actions"].shape[0] - 1  # the expert answers at the first answer step, the last one
    assert loss_fn.branch(batch["labels"]).tolist() == [answer, answer]
    out = agent.evaluate_sequence(batch["obs"], agent.initial_state(2), batch["first"], batch["prev_actions"],
                                  batch["actions"], labels=batch["labels"], branch=loss_fn.branch(batch["labels"]))
    loss = loss_fn(agent, batch, out)["loss"]
    # By hand: run the show, then one answer step per dancer with that dancer's dance as the question.
    show = {k: v[:answer] for k, v in batch["obs"].items()}
    _, state = agent.memory.forward_sequence(agent.memory_inputs(show, batch["first"][:answer],
                                                                 batch["prev_actions"][:answer]), agent.initial_state(2))
    terms = []
    for row, episode in enumerate(episodes):
        for k in range(2):
            obs = {key: value[answer, row:row + 1].clone() for key, value in batch["obs"].items()}
            obs["text"][0] = torch.as_tensor(episode["labels"]["counterfactual/obs/text"][answer, k])
            logits, _, _ = agent.forward_step(obs, state[row:row + 1], batch["first"][answer, row:row + 1],
                                              batch["prev_actions"][answer, row:row + 1])
            terms.append(F.cross_entropy(logits, torch.as_tensor([episode["labels"]["counterfactual/action"][answer, k]])))
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)


def test_show_probes_learn_from_labelled_steps_only():
    agent = _agent(aux_heads=["ballet_show"])
    batch = pad_batch(_episodes(2), torch.device("cpu"))
    args = (batch["obs"], agent.initial_state(2), batch["first"], batch["prev_actions"], batch["actions"])
    with pytest.raises(ValueError, match="needs labels"):
        agent.evaluate_sequence(*args)
    loss = agent.evaluate_sequence(*args, labels=batch["labels"])["aux_losses"]["ballet_show/loss"]
    unlabelled = {**batch["labels"], "dance": torch.full_like(batch["labels"]["dance"], -1),
                  "slot": torch.full_like(batch["labels"]["slot"], -1)}
    assert float(loss) > 0
    assert float(agent.evaluate_sequence(*args, labels=unlabelled)["aux_losses"]["ballet_show/loss"]) == 0.0


def test_trainer_adds_the_selected_losses_and_rejects_unknown_ones():
    agent = _agent(aux_heads=["ballet_show"])
    batch = pad_batch(_episodes(2), torch.device("cpu"))
    cfg = BCConfig(labels=True, bc_coef=0.1, losses={"counterfactual": 1.0}).validate()
    loss, stats = BehaviourCloning(agent, cfg).loss(batch)
    expected = 0.1 * stats["bc_loss"] + stats["aux_loss"] + stats["counterfactual/loss"]
    assert abs(float(loss) - expected) < 1e-4 and stats["counterfactual/loss"] > 0
    with pytest.raises(InputError, match="trainer.losses.nope"):
        BCConfig(losses={"nope": 1.0}).validate()
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    with pytest.raises(InputError, match="trainer.labels"):
        BehaviourCloning(agent, cfg).loss(unlabelled)


def test_eval_seeds_stay_below_the_seeds_demonstrations_are_recorded_with():
    from embodied.eval.runner import EVAL_SEED_END, check_eval_keys
    from embodied.train.run import TRAIN_SEED_START, training_episode_seed

    assert EVAL_SEED_END == TRAIN_SEED_START
    assert all(TRAIN_SEED_START <= training_episode_seed(seed, 0, r, 1) < 2**31 for seed in range(5) for r in range(5))
    base = ["task=ballet/2_delay16", "agent=oracle", "num_envs=4"]
    check_eval_keys(compose("eval", [*base, f"seed={TRAIN_SEED_START - 4}"]))
    with pytest.raises(InputError, match="seed"):
        check_eval_keys(compose("eval", [*base, f"seed={TRAIN_SEED_START - 3}"]))


def _room_ballet(memory_options: dict, n: int = 4):
    envs = make_envs(OmegaConf.create({"name": "room_ballet/multi"}), 2, 1 << 30, 0)
    try:
        episodes, _ = collect_labelled(envs, None, torch.device("cpu"), 10**6, 1.0, np.random.default_rng(0),
                                       seed=1 << 30, max_episodes=n, labels=True)
    finally:
        envs.close()
    env = make_env({"name": "room_ballet/multi"})
    torch.manual_seed(0)
    agent = build_agent(env.observation_space, env.action_space, memory="sat", hidden=16, text_dim=8,
                        memory_options=dict(dim=16, heads=2, layers=1, ff_dim=16, capacity=24, num_places=5, chunk_size=8,
                                            top_k=3, **memory_options))
    return agent, pad_batch(episodes, torch.device("cpu"))


def test_without_step_losses_the_trainer_runs_the_memory_without_reads_to_the_same_loss():
    """bc_coef=0, aux_coef=0: memory_states_at (SAT's advance) instead of evaluate_sequence; the
    counterfactual loss and its gradients are the same."""
    agent, batch = _room_ballet(dict(strategy="mvfo"))
    losses = {}
    for bc_coef in (0.0, 1e-12):  # a tiny per-step weight takes the evaluate_sequence path
        cfg = BCConfig(labels=True, bc_coef=bc_coef, aux_coef=0.0, losses={"counterfactual": 1.0}).validate()
        agent.zero_grad()
        loss, stats = BehaviourCloning(agent, cfg).loss(batch)
        loss.backward()
        losses[bc_coef] = (float(stats["counterfactual/loss"]), {n: p.grad.clone() for n, p in agent.named_parameters()
                                                                 if p.grad is not None}, stats)
    (fast, fast_grads, fast_stats), (plain, plain_grads, plain_stats) = losses[0.0], losses[1e-12]
    assert "bc_loss" not in fast_stats and "bc_loss" in plain_stats
    assert abs(fast - plain) < 1e-5
    for name, grad in plain_grads.items():
        if name.startswith(("memory.", "encoder.", "policy_head.", "fuse.")) and grad.abs().sum() > 1e-6:
            assert name in fast_grads and torch.allclose(fast_grads[name], grad, atol=1e-4), name


def test_the_asked_question_rewards_the_memorys_own_decision():
    """room_ballet labels which alternative is the real question; with AMA its cross-entropy is the
    bandit's reward (Memory.outcome_loss), so the allocator gets gradients."""
    agent, batch = _room_ballet(dict(strategy="ama"))
    cfg = BCConfig(labels=True, bc_coef=0.0, aux_coef=0.0, losses={"counterfactual": 1.0}).validate()
    loss, stats = BehaviourCloning(agent, cfg).loss(batch)
    assert stats["counterfactual/memory_outcome"] > 0
    loss.backward()
    assert agent.memory.allocator.q[0].weight.grad.abs().sum() > 0
    no_asked = {**batch, "labels": {k: v for k, v in batch["labels"].items() if k != CounterfactualQuestions.ASKED}}
    _, stats = BehaviourCloning(agent, cfg).loss(no_asked)
    assert "counterfactual/memory_outcome" not in stats
