"""SAT: write strategies evict the right token, place-major grouping, AMA bandit, sequence = steps."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from embodied.memory import build_memory, memory_config
from embodied.memory.base import check_introspection
from embodied.memory.sat import STRATEGIES, AdaptiveMemoryAllocator, GroupAttention, SATConfig

D = 8
SMALL = dict(dim=8, heads=2, layers=2, ff_dim=16, capacity=4, chunk_size=2, top_k=2, num_places=6,
             context_dim=5)


def make(seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_memory("sat", D, **{**SMALL, **options})


def run(memory, places: list[list[int]], seed: int = 0, first=None):
    places = torch.tensor(places).t()  # [T, B]
    length, batch = places.shape
    g = torch.Generator().manual_seed(seed)
    if first is None:
        first = torch.zeros(length, batch, dtype=torch.bool)
        first[0] = True
    steps = {"feat": torch.randn(length, batch, D, generator=g), "first": first, "place": places,
             "text": torch.randn(length, batch, 5, generator=g)}
    return steps, *memory.forward_sequence(steps, memory.initial_state(batch))


# Places of 6 steps into a 4-token memory; what each strategy keeps (stored step indices):
#   step 4 (place 2) evicts: fifo step 0; lifo the newest stored, 3; mvfo the oldest of place 0
#   (3 stored tokens), 1; lvfo the oldest of place 1 (1 stored token), 0. Step 5 (place 2 again):
#   mvfo evicts place 0's oldest (2 stored) = 2; lvfo place 2's only token (1 stored) = 4.
CRAFTED = [1, 0, 0, 0, 2, 2]
KEPT = {"fifo": [2, 3, 4, 5], "lifo": [0, 1, 2, 5], "mvfo": [0, 3, 4, 5], "lvfo": [1, 2, 3, 5]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_evicts_the_right_token(strategy):
    memory = make(strategy=strategy)
    _, _, state = run(memory, [CRAFTED])
    kept = sorted(state.get("step")[0].tolist())
    assert kept == KEPT[strategy]
    places = dict(zip(state.get("step")[0].tolist(), state.get("place")[0].tolist()))
    assert all(places[s] == CRAFTED[s] for s in kept)


def reference_kept(strategy: str, places: list[int], capacity: int) -> list[int]:
    """Plain-Python model of the strategies (place counts = stored tokens; ties: lowest place id)."""
    stored: list[int] = []
    for step, place in enumerate(places):
        visits = {p: sum(places[s] == p for s in stored) for p in set(places)}
        if len(stored) == capacity:
            if strategy == "fifo":
                victim = min(stored)
            elif strategy == "lifo":
                victim = max(stored)
            else:
                present = sorted({places[s] for s in stored})
                pick = max if strategy == "mvfo" else min
                best = pick(visits[p] for p in present)
                target = next(p for p in present if visits[p] == best)
                victim = min(s for s in stored if places[s] == target)
            stored.remove(victim)
        stored.append(step)
    return sorted(stored)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_match_a_reference_on_random_walks(strategy):
    g = torch.Generator().manual_seed(11)
    walks = torch.randint(0, 6, (3, 30), generator=g).tolist()
    memory = make(strategy=strategy, capacity=7)
    _, _, state = run(memory, walks)
    for row, walk in enumerate(walks):
        assert sorted(state.get("step")[row].tolist()) == reference_kept(strategy, walk, 7)


def test_place_major_read_picks_places_then_attends_inside():
    torch.manual_seed(0)
    dim, slots = 8, 10
    attention = GroupAttention(dim, 2)
    with torch.no_grad():
        attention.summary_query.weight.copy_(torch.eye(dim))
        attention.summary_key.weight.copy_(torch.eye(dim))
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(1, slots, dim, generator=g)
    group = torch.tensor([[0, 0, 3, 3, 3, 1, 1, 4, 4, 4]])
    valid = torch.ones(1, slots, dtype=torch.bool)
    query = 4 * tokens[0, 2:5].mean(0, keepdim=True)  # matches place 3's mean
    _, slot_weights, group_weights = attention(query, tokens, group, valid, n_groups=6, top_k=1)
    assert group_weights[0].argmax() == 3 and (group_weights[0] > 0).sum() == 1
    assert (slot_weights[0, group[0] != 3] == 0).all()
    assert torch.isclose(slot_weights[0, group[0] == 3].sum(), torch.tensor(1.0))
    # Places 2 and 5 are empty: never selected even when k covers every group.
    _, _, group_weights = attention(query, tokens, group, valid, n_groups=6, top_k=6)
    assert group_weights[0, 2] == 0 and group_weights[0, 5] == 0


def test_place_major_memory_groups_by_place_and_embeds_places():
    memory = make(place_major=True, capacity=6, top_k=1, layers=1)
    _, _, state = run(memory, [[0, 0, 1, 1, 2, 2]])
    report = check_introspection(memory.introspect(state), 1)
    selected_places = report["slot_place"][report["weights"] > 0].unique()
    assert selected_places.numel() == 1  # top-1 place: one layer, top-1 place: all read weight inside one place
    # The place embedding changes what is read; without it a relabelled walk reads the same.
    plain = make(place_major=False, place_embedding=False, capacity=6, chunk_size=6)
    _, a, _ = run(plain, [[0, 0, 1, 1, 2, 2]])
    _, b, _ = run(plain, [[3, 3, 4, 4, 5, 5]])
    assert torch.allclose(a, b, atol=1e-6)
    embedded = make(place_major=False, place_embedding=True, capacity=6, chunk_size=6)
    _, a, _ = run(embedded, [[0, 0, 1, 1, 2, 2]])
    _, b, _ = run(embedded, [[3, 3, 4, 4, 5, 5]])
    assert not torch.allclose(a, b, atol=1e-4)


def test_bandit_converges_to_the_better_arm_per_context():
    torch.manual_seed(0)
    bandit = AdaptiveMemoryAllocator(context_dim=2, arms=2, hidden=16, epsilon_start=1.0, epsilon_end=0.2,
                                     epsilon_episodes=2000)
    optimizer = torch.optim.Adam(bandit.parameters(), lr=1e-2)
    contexts = torch.eye(2)
    best = torch.tensor([1, 0])  # context 0 pays on arm 1, context 1 on arm 0
    for _ in range(300):
        which = torch.randint(0, 2, (32,))
        arm = bandit.choose(contexts[which])
        reward = (arm == best[which]).float() - 0.5 + 0.3 * torch.randn(32)
        loss = bandit.loss(contexts[which], arm, reward)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bandit.eval()
    assert bandit.choose(contexts).tolist() == best.tolist()
    assert bandit.epsilon() < 1.0


@pytest.mark.parametrize("options", [dict(strategy="mvfo"), dict(strategy="ama", place_major=True)])
def test_forward_sequence_equals_stepping_with_resets(options):
    memory = make(**options)
    memory.eval()  # AMA is greedy in eval mode
    g = torch.Generator().manual_seed(3)
    walks = torch.randint(0, 6, (3, 15), generator=g).tolist()
    first = torch.zeros(15, 3, dtype=torch.bool)
    first[0] = True
    first[7, 1] = True
    steps, reads, final = run(memory, walks, first=first)
    state = memory.initial_state(3)
    for t in range(15):
        read, state = memory({k: v[t] for k, v in steps.items()}, state)
        assert torch.allclose(read, reads[t], atol=1e-6)
    for key in final.keys():
        assert torch.equal(final.get(key), state.get(key)), key


def test_ama_picks_one_strategy_per_episode_and_trains():
    memory = make(strategy="ama", epsilon_start=1.0, epsilon_end=1.0)
    memory.train()
    first = torch.zeros(12, 8, dtype=torch.bool)
    first[0] = True
    steps, _, state = run(memory, torch.randint(0, 6, (8, 12)).tolist(), first=first)
    assert state.get("arm").unique().numel() > 1  # random arms per row at epsilon 1
    assert int(memory.allocator.choices) == 8  # epsilon decays per episode (8 rows x 1 episode), not per step
    loss = memory.ama_loss(state, torch.ones(8))
    loss.backward()
    assert memory.allocator.q[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ama"):
        make(strategy="fifo").ama_loss(state, torch.ones(8))


def test_bad_inputs_and_yaml():
    values = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "memory" / "sat.yaml").read_text())
    assert values.pop("defaults") == ["sat_schema", "_self_"]
    assert set(values) <= {f.name for f in dataclasses.fields(SATConfig)}
    memory_config("sat", **values)
    with pytest.raises(ValueError, match="strategy"):
        memory_config("sat", strategy="random")
    memory = make()
    with pytest.raises(ValueError, match="place"):
        memory({"feat": torch.zeros(2, D), "place": torch.tensor([0, 9])}, memory.initial_state(2))
    with pytest.raises(ValueError, match="place"):
        memory({"feat": torch.zeros(2, D)}, memory.initial_state(2))
    # A pose maps to a grid-cell place.
    read, state = memory({"feat": torch.zeros(2, D), "pose": torch.tensor([[0.5, 0.5, 0, 0], [9.0, 3.0, 0, 0]])},
                         memory.initial_state(2))
    assert state.get("place")[:, 0].ge(0).all() and read.shape == (2, 8)


@pytest.mark.parametrize("options", [dict(strategy="fifo"), dict(strategy="mvfo", place_major=True),
                                     dict(strategy="ama", epsilon_start=0.5), dict(strategy="lvfo", layers=2)])
def test_advance_equals_the_state_forward_sequence_leaves(options):
    """advance (no reads; one layer: tokens gathered once) = forward_sequence's final state, with rows
    reset mid-sequence and a non-fresh input state; AMA draws the same exploration."""
    memory = make(**{"layers": 1, **options})
    g = torch.Generator().manual_seed(2)
    length, batch = 30, 4
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0, :2] = True  # rows 2 and 3 go on from the state below
    first[11, 1] = first[20, 3] = True
    steps = {"feat": torch.randn(length, batch, D, generator=g), "first": first,
             "place": torch.randint(0, 6, (length, batch), generator=g), "text": torch.randn(length, batch, 5, generator=g)}
    _, start = memory.forward_sequence({k: v[:6] for k, v in steps.items()}, memory.initial_state(batch))
    torch.manual_seed(3)
    _, expected = memory.forward_sequence(steps, start)
    torch.manual_seed(3)
    got = memory.advance(steps, start)
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        if key == "memory":
            assert torch.allclose(got.get(key), expected.get(key), atol=1e-6)
        else:
            assert torch.equal(got.get(key), expected.get(key)), key


def test_outcome_loss_trains_the_bandit_only_with_ama():
    memory = make(strategy="ama", layers=1)
    _, _, state = run(memory, torch.randint(0, 6, (8, 12)).tolist())
    loss = memory.outcome_loss(state, torch.ones(8))
    assert torch.allclose(loss, 0.1 * memory.ama_loss(state, torch.ones(8)))
    loss.backward()
    assert memory.allocator.q[0].weight.grad.abs().sum() > 0
    assert memory.episode_facts(state)["strategy"] == [STRATEGIES[a] for a in state.get("arm").tolist()]
    fixed = make(strategy="mvfo")
    assert fixed.outcome_loss(state, torch.ones(8)) is None and fixed.episode_facts(state) == {}
