"""DCEM (embodied/memory/dcem.py): dual-column writes, top-k reads keyed on either column, resets,
sequence equivalence, introspection, intrinsic reward; agent wiring and reconstruction heads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied.memory import build_memory
from embodied.memory.base import check_introspection

D, DV, DT = 16, 12, 8


def make(**kw):
    torch.manual_seed(0)
    options = dict(capacity=6, key_dim=16, top_k=3, heads=2, hidden=20, visual_dim=DV, text_dim=DT)
    options.update(kw)
    return build_memory("dcem", D, **options)


def step(b, first=False, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return {"feat": torch.randn(b, D, generator=g), "visual": torch.randn(b, DV, generator=g),
            "text": torch.randn(b, DT, generator=g), "first": torch.full((b,), first)}


def test_writes_both_columns_each_step():
    mem = make()
    state = mem.initial_state(2)
    for t in range(8):  # wraps the ring buffer of 6
        s = step(2, first=(t == 0), seed=t)
        _, state = mem(s, state)
        slot = t % 6
        torch.testing.assert_close(state["visual"][:, slot], s["visual"])
        torch.testing.assert_close(state["text"][:, slot], s["text"])
        assert bool(state["valid"][:, slot].all())
        assert state["slot_step"][:, slot].tolist() == [t, t]
    assert int(state["valid"].sum()) == 2 * 6


@pytest.mark.parametrize("modality", ["visual", "text"])
def test_topk_read_returns_the_stored_slot_for_an_exact_key(modality):
    mem = make(key_by="both")
    state = mem.initial_state(1)
    stored = [step(1, first=(t == 0), seed=100 + t) for t in range(6)]
    for s in stored:
        _, state = mem(s, state)
    for j in range(6):
        # Only one column matches: the other one is fresh noise.
        query = {"visual": torch.randn(1, DV), "text": torch.randn(1, DT)}
        query[modality] = stored[j][modality]
        found = mem.lookup(state, query, h=state["h"])
        index, weights = found[modality]
        assert index.shape == (1, 3)  # k > 1 rows come back
        assert int(index[0, 0]) == j and float(weights[0, 0].detach()) == float(weights[0].max().detach())
    # The read itself puts most of that lookup's weight on the slot (introspection, column offset).
    q = step(1, seed=999)
    q[modality] = stored[4][modality]
    _, after = mem(q, state)
    weights = mem.introspect(after)["weights"][0]
    column = 0 if modality == "visual" else 1
    assert int(weights[column * 6: (column + 1) * 6].argmax()) == 4


def test_resets_at_episode_start_unless_lifelong():
    for lifelong in (False, True):
        mem = make(lifelong=lifelong)
        state = mem.initial_state(2)
        for t in range(3):
            _, state = mem(step(2, first=(t == 0), seed=t), state)
        s = step(2, seed=7)
        s["first"] = torch.tensor([True, False])
        _, state = mem(s, state)
        written = state["valid"].sum(-1).tolist()
        assert written == ([1, 4] if not lifelong else [4, 4])
        # The reset row forgets its earlier slots and writes slot 0 at its own step 0 again.
        row0 = [0, -1, -1, -1, -1, -1] if not lifelong else [0, 1, 2, 3, -1, -1]
        assert state["slot_step"].tolist() == [row0, [0, 1, 2, 3, -1, -1]]
        assert state["step"].tolist() == ([1, 4] if not lifelong else [4, 4])


def test_forward_sequence_equals_stepping():
    mem = make()
    T, B = 9, 3
    steps = {k: torch.stack([step(B, seed=10 + t)[k] for t in range(T)]) for k in ("feat", "visual", "text")}
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    first[5, 1] = True
    steps["first"] = first
    reads, final = mem.forward_sequence(steps, mem.initial_state(B))
    state = mem.initial_state(B)
    for t in range(T):
        read, state = mem({k: v[t] for k, v in steps.items()}, state)
        torch.testing.assert_close(reads[t], read)
    for key in final.keys():
        torch.testing.assert_close(final[key], state[key])


def test_introspection_contract():
    mem = make()
    state = mem.initial_state(2)
    for t in range(4):
        _, state = mem(step(2, first=(t == 0), seed=t), state)
        report = check_introspection(mem.introspect(state), batch=2)
        assert report["weights"].shape == (2, 12)
        assert report["slot_modality"][0].tolist() == [0] * 6 + [1] * 6
        valid = report["slot_step"] >= 0
        assert int(valid.sum()) == 2 * 2 * (t + 1)
        assert float(report["weights"][~valid].abs().sum()) == 0.0
        if t > 0:  # something was read: each row's weights sum to 1
            torch.testing.assert_close(report["weights"].sum(-1), torch.ones(2))


def test_gradients_reach_queries_values_and_controller():
    mem = make()
    T, B = 5, 2
    steps = {k: torch.stack([step(B, seed=t)[k] for t in range(T)]).requires_grad_(True) for k in ("feat", "visual", "text")}
    steps["first"] = torch.zeros(T, B, dtype=torch.bool)
    reads, _ = mem.forward_sequence(steps, mem.initial_state(B))
    reads.sum().backward()
    for name in ("key_proj.visual.weight", "key_proj.text.weight", "value_proj.weight", "controller.weight_ih"):
        grad = dict(mem.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_intrinsic_reward_pays_for_new_names_only():
    mem = make()
    state = mem.initial_state(1)
    s = step(1, first=True, seed=1)
    assert float(mem.intrinsic_reward(s, state)) == pytest.approx(1.0)  # empty memory: all new
    _, state = mem(s, state)
    assert float(mem.intrinsic_reward(s, state)) == pytest.approx(0.0, abs=1e-5)  # seen this text
    novel = step(1, seed=2)
    assert float(mem.intrinsic_reward(novel, state)) > 0.2


def test_bad_options_fail():
    with pytest.raises(ValueError, match="key_by"):
        make(key_by="smell")
    with pytest.raises(ValueError, match="heads"):
        make(heads=3)
    with pytest.raises(ValueError, match="temperature=0"):
        make(temperature=0)


def test_temperature_sets_how_sharp_the_topk_weights_start():
    stored = [step(1, first=(t == 0), seed=300 + t) for t in range(6)]
    peaks = []
    for temperature in (1.0, 10.0, 100.0):
        mem = make(temperature=temperature)
        state = mem.initial_state(1)
        for s in stored:
            _, state = mem(s, state)
        _, weights = mem.lookup(state, {"visual": stored[2]["visual"], "text": torch.randn(1, DT)})["visual"]
        peaks.append(float(weights.max()))
    assert peaks[0] < peaks[1] < peaks[2] and peaks[2] > 0.99
    mem = make()
    with pytest.raises(ValueError, match="visual"):
        mem({"feat": torch.randn(1, D), "visual": torch.randn(1, DV + 1), "text": torch.randn(1, DT)}, mem.initial_state(1))


def _fastmap_env():
    from embodied.tasks import make_env

    return make_env({"name": "fastmap/architecture_comparison/fast_map_three_objs", "scenes": "symbolic",
                     "sensors": ["rgb"], "max_steps": 90, "success_reward": 1.0, "slack_reward": 0.0})


def test_agent_passes_visual_and_text_columns_and_trains_with_reconstruction():
    from embodied.agents import build_agent

    env = _fastmap_env()
    obs, _ = env.reset(seed=0)
    while not obs["text"].any():  # a step with text ("this is a ...")
        obs, *_ = env.step(env.oracle_action())
    torch.manual_seed(0)
    agent = build_agent(env.observation_space, env.action_space, memory="dcem",
                        memory_options={"capacity": 16, "key_dim": 16, "hidden": 32},
                        hidden=32, image_dim=24, text_dim=12, cnn_channels=[8],
                        aux_heads=["image_reconstruction", "text_reconstruction"])
    assert agent.memory.visual_dim == 24 and agent.memory.text_dim == 12
    T, B = 6, 2
    seq = {k: torch.as_tensor(np.stack([np.stack([v] * B)] * T)) for k, v in obs.items()}
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    out = agent.evaluate_sequence(seq, agent.initial_state(B), first, torch.zeros(T, B, dtype=torch.long),
                                  torch.zeros(T, B, dtype=torch.long))
    assert set(out["aux_losses"]) == {"image_reconstruction/loss", "text_reconstruction/loss"}
    loss = -out["log_prob"].mean() + sum(out["aux_losses"].values())
    loss.backward()
    assert float(agent.encoder.text.embedding.weight.grad.abs().sum()) > 0
    # The stored text column is the text encoder's embedding of the observation.
    state = agent.initial_state(1)
    _, _, _, state = agent.act({k: torch.as_tensor(v[None]) for k, v in obs.items()}, state,
                               torch.tensor([True]), torch.tensor([0]))
    with torch.no_grad():
        enc = agent.encoder({k: torch.as_tensor(v[None]) for k, v in obs.items()})
    torch.testing.assert_close(state["text"][0, 0], enc["text"][0])
    torch.testing.assert_close(state["visual"][0, 0], enc["visual"][0])


def test_other_memories_get_their_options_unchanged():
    from embodied.agents import build_agent

    env = _fastmap_env()
    agent = build_agent(env.observation_space, env.action_space, memory="gru", memory_options={"hidden": 24}, hidden=32)
    assert agent.memory.config.hidden == 24 and not hasattr(agent.memory.config, "visual_dim")


def test_reconstruction_heads_need_their_observation():
    from gymnasium import spaces

    from embodied.agents import build_agent

    space = spaces.Dict({"pose": spaces.Box(-1, 1, (4,), np.float32)})
    with pytest.raises(ValueError, match="rgb"):
        build_agent(space, spaces.Discrete(3), memory="none", aux_heads=["image_reconstruction"])
    with pytest.raises(ValueError, match="text"):
        build_agent(space, spaces.Discrete(3), memory="none", aux_heads=["text_reconstruction"])


@pytest.mark.parametrize("variant", ["warm", "lifelong", "ties", "state_query", "no_text", "key_by_text", "read_retrieved", "skip_repeated_text"])
def test_parallel_forward_sequence_equals_stepping_from_any_state(variant):
    options = {"lifelong": variant == "lifelong", "state_query": variant == "state_query",
               "read_retrieved": variant == "read_retrieved"}
    if variant == "no_text":
        options["text_dim"] = 0
    if variant == "key_by_text":
        options["key_by"] = "text"
    if variant == "skip_repeated_text":
        options.update(key_by="text", skip_repeated_text=True)
    mem = make(**options)
    T, B = 11, 3
    state = mem.initial_state(B)
    for t in range(4):  # a warm state: ring position and step counter not at 0
        _, state = mem(step(B, first=(t == 0), seed=50 + t), state)
    steps = {k: torch.stack([step(B, seed=10 + t)[k] for t in range(T)]) for k in ("feat", "visual", "text")}
    if variant in ("ties", "skip_repeated_text"):  # repeated observations: identical rows and scores
        steps["visual"][3:8] = steps["visual"][2]
        steps["text"][:] = steps["text"][0]
    if variant == "no_text":
        del steps["text"]
    first = torch.zeros(T, B, dtype=torch.bool)
    first[2, 0] = True
    first[7, 2] = True
    steps["first"] = first
    reads, final = mem.forward_sequence(steps, state)
    stepped = state
    for t in range(T):
        read, stepped = mem({k: v[t] for k, v in steps.items()}, stepped)
        torch.testing.assert_close(reads[t], read)
    for key in final.keys():
        torch.testing.assert_close(final[key], stepped[key])


@pytest.mark.parametrize("key_by", ["text", "both"])
def test_read_retrieved_appends_the_visual_column_recalled_by_the_language_key(key_by):
    mem = make(key_by=key_by, read_retrieved=True, temperature=1000.0)
    assert mem.output_dim == 20 + DV and mem.retrieved_visual_dim == DV
    state = mem.initial_state(1)
    stored = [step(1, first=(t == 0), seed=200 + t) for t in range(5)]
    for s in stored:
        _, state = mem(s, state)
    for j in range(5):
        # The language column of row j, with a visual column that matches nothing stored.
        query = {"feat": torch.randn(1, D), "visual": torch.randn(1, DV), "text": stored[j]["text"],
                 "first": torch.zeros(1, dtype=torch.bool)}
        read, _ = mem(query, state)
        torch.testing.assert_close(read[0, -DV:], stored[j]["visual"][0], atol=1e-4, rtol=0)
    empty = {"feat": torch.randn(1, D), "visual": torch.randn(1, DV), "text": torch.randn(1, DT), "first": torch.ones(1, dtype=torch.bool)}
    read, _ = mem(empty, mem.initial_state(1))
    assert float(read[0, -DV:].abs().sum()) == 0.0  # nothing stored, nothing recalled
    assert make(key_by=key_by).output_dim == 20  # off by default


def test_skip_repeated_text_recalls_other_moments_not_the_same_sentence():
    rows = [step(1, first=(t == 0), seed=300 + t) for t in range(4)]
    for r in rows[2:]:
        r["text"] = rows[1]["text"].clone()  # the same sentence read on three steps
    for skip in (False, True):
        mem = make(key_by="text", read_retrieved=True, temperature=1000.0, skip_repeated_text=skip)
        state = mem.initial_state(1)
        for r in rows:
            _, state = mem(r, state)
        query = {**step(1, seed=400), "text": rows[1]["text"].clone(), "first": torch.zeros(1, dtype=torch.bool)}
        index, weights = mem.lookup(state, {k: query[k] for k in ("visual", "text")})["text"]
        present = {int(i) for i, w in zip(index[0], weights[0]) if float(w) > 0}
        assert present == ({0} if skip else {1, 2, 3})  # top_k=3: without the skip, only the repeats
        read, _ = mem(query, state)
        if skip:  # the only other moment: row 0's look comes back
            torch.testing.assert_close(read[0, -DV:], rows[0]["visual"][0], atol=1e-4, rtol=0)


def test_yaml_keys_are_dataclass_fields():
    import dataclasses
    from pathlib import Path

    import yaml

    from embodied.memory import MEMORIES

    values = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "memory" / "dcem.yaml").read_text())
    assert values.pop("defaults") == ["dcem_schema", "_self_"]
    assert set(values) <= {f.name for f in dataclasses.fields(MEMORIES["dcem"].config_class)}
    assert build_memory("dcem", D, **values).output_dim == MEMORIES["dcem"].config_class().hidden


def test_text_keyed_lookup_skips_steps_without_text():
    mem = make(key_by="text")
    state = mem.initial_state(1)
    named = step(1, first=True, seed=1)
    _, state = mem(named, state)
    for t in range(4):  # steps where nothing was written: all-zero language embedding
        silent = step(1, seed=20 + t)
        silent["text"] = torch.zeros(1, DT)
        _, state = mem(silent, state)
    index, weights = mem.lookup(state, {"visual": torch.randn(1, DV), "text": torch.randn(1, DT)})["text"]
    assert int(index[0, 0]) == 0 and float(weights[0, 0]) == pytest.approx(1.0)  # the only row with text
    _, weights = mem.lookup(state, {"visual": torch.randn(1, DV), "text": torch.zeros(1, DT)})["text"]
    assert float(weights.sum()) == 0.0  # nothing said now: no text-keyed read


def test_text_encoder_embeds_no_text_as_zero():
    from embodied.agents.encoders import TextEncoder

    enc = TextEncoder(vocab=10, dim=6, pooling="mean")
    out = enc(torch.tensor([[0, 0, 0], [3, 4, 0]]))
    assert float(out[0].abs().sum()) == 0.0 and out.shape == (2, 6)


def test_rare_pooling_weighs_a_name_over_the_words_every_sentence_shares():
    """memory_text=rare: inverse document frequencies counted in training mode only; after texts
    in which "the" is everywhere and each name rare, "lift the dax" is nearer "this is a dax" than
    "go to the bed", whatever the random embeddings (plain mean pooling is a coin flip here)."""
    from embodied.agents.encoders import TextEncoder

    THE, LIFT, THIS, IS, A, GO, TO, BED = range(1, 9)
    names = list(range(20, 60))

    def sentence(*ids):
        return torch.tensor([[*ids, *[0] * (6 - len(ids))]])

    nearer = 0
    for seed in range(10):
        torch.manual_seed(seed)
        enc = TextEncoder(vocab=64, dim=16, pooling="mean", rarity=True)
        enc.train()
        for name in names:  # discovery and instruction texts of many episodes
            enc.rare_pool(torch.cat([sentence(THIS, IS, A, name)] * 3 + [sentence(LIFT, THE, name)] * 5))
        assert float(enc.texts_seen) == 8 * len(names)
        assert float(enc.token_texts[THE]) == 5 * len(names) and float(enc.token_texts[names[0]]) == 8
        enc.eval()
        before = enc.token_texts.clone()
        dax = names[0]
        query, named, distractor = (enc.rare_pool(sentence(*s)) for s in
                                    ((LIFT, THE, dax), (THIS, IS, A, dax), (GO, TO, THE, BED)))
        assert torch.equal(enc.token_texts, before)  # eval mode leaves the counts alone
        cos = torch.nn.functional.cosine_similarity
        nearer += bool(cos(query, named) > cos(query, distractor) + 0.2)
        assert float(enc.rare_pool(sentence()).abs().sum()) == 0.0
    assert nearer == 10
