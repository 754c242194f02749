"""Agent: encoders + memory + heads; step-wise and sequence paths agree; gradients reach the CNN."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces

from embodied.agents import AUX_HEADS, Agent, AgentConfig, build_agent

H = W = 16
NUM_ACTIONS = 4
SMALL = dict(cnn_channels=[8, 16], image_dim=32, vector_dim=8, goal_embed=8, text_dim=8, hidden=32)
MEMORY_OPTIONS = {
    "none": dict(hidden=16),
    "gru": dict(hidden=16),
    "lstm": dict(hidden=16),
    "trxl": dict(dim=16, heads=2, layers=1, memory_length=4, ff_dim=32),
}
AGENT_YAML = Path(__file__).resolve().parents[1] / "configs" / "agent" / "default.yaml"


def nav_space(extra: dict | None = None) -> spaces.Dict:
    entries = {
        "rgb": spaces.Box(0, 255, (H, W, 3), np.uint8),
        "depth": spaces.Box(0.0, 10.0, (H, W, 1), np.float32),
        "semantic": spaces.Box(0, 9, (H, W), np.int32),
        "pose": spaces.Box(-np.inf, np.inf, (4,), np.float32),
        "pointgoal": spaces.Box(-np.inf, np.inf, (3,), np.float32),
    }
    entries.update(extra or {})
    return spaces.Dict(entries)


def sample_obs(space: spaces.Dict, lead: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    space.seed(seed)
    n = int(np.prod(lead))
    out = {}
    for key, sub in space.spaces.items():
        values = np.stack([sub.sample() for _ in range(n)])
        if key == "pose" or key == "pointgoal":
            values = np.random.default_rng(seed).normal(size=values.shape).astype(np.float32)
        out[key] = torch.as_tensor(values).reshape(lead + sub.shape)
    return out


def make_agent(memory: str = "gru", space: spaces.Dict | None = None, **options) -> Agent:
    torch.manual_seed(0)
    agent = build_agent(space or nav_space(), spaces.Discrete(NUM_ACTIONS), memory, MEMORY_OPTIONS[memory], **{**SMALL, **options})
    # Larger policy weights than the near-uniform PPO init, so log-prob comparisons are not trivially equal.
    torch.nn.init.normal_(agent.policy_head[-1].weight, std=1.0)
    return agent


def rollout_inputs(length: int, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0] = True
    first[3, 1] = True
    prev_action = torch.randint(0, NUM_ACTIONS, (length, batch), generator=g)
    return first, prev_action


def sequence_after_steps(agent: Agent, obs: dict, first: torch.Tensor, prev_action: torch.Tensor) -> dict:
    """Act step by step from a fresh state, then re-run the rollout as a sequence: the sequence's
    log-probs must equal the steps' (returned with its graph, for gradient checks)."""
    start = agent.initial_state(first.shape[1], "cpu")
    state, logps, actions = start, [], []
    with torch.no_grad():
        for t in range(first.shape[0]):
            action, log_prob, _, state = agent.act({k: v[t] for k, v in obs.items()}, state, first[t], prev_action[t])
            actions.append(action)
            logps.append(log_prob)
    out = agent.evaluate_sequence(obs, start, first, prev_action, torch.stack(actions))
    torch.testing.assert_close(out["log_prob"], torch.stack(logps), atol=1e-5, rtol=0)
    return {**out, "actions": torch.stack(actions), "start": start}


def test_act_shapes_and_state_types():
    agent = make_agent("gru")
    batch = 3
    obs = sample_obs(nav_space(), (batch,), seed=1)
    state = agent.initial_state(batch, "cpu")
    first = torch.ones(batch, dtype=torch.bool)
    action, log_prob, value, new_state = agent.act(obs, state, first, torch.zeros(batch, dtype=torch.long))
    assert action.shape == (batch,) and action.dtype == torch.long
    assert bool(((action >= 0) & (action < NUM_ACTIONS)).all())
    assert log_prob.shape == (batch,) and bool((log_prob <= 0).all())
    assert value.shape == (batch,)
    assert new_state.batch_size == torch.Size([batch])
    assert {k: v.shape for k, v in new_state.items()} == {k: v.shape for k, v in state.items()}


@pytest.mark.parametrize("memory", sorted(MEMORY_OPTIONS))
def test_evaluate_sequence_matches_stepwise_act(memory):
    agent = make_agent(memory)
    length, batch = 6, 3
    obs = sample_obs(nav_space(), (length, batch), seed=2)
    first, prev_action = rollout_inputs(length, batch)
    start = agent.initial_state(batch, "cpu")
    state = start
    actions, log_probs, values = [], [], []
    torch.manual_seed(5)
    with torch.no_grad():
        for t in range(length):
            step_obs = {key: value[t] for key, value in obs.items()}
            action, log_prob, value, state = agent.act(step_obs, state, first[t], prev_action[t])
            actions.append(action)
            log_probs.append(log_prob)
            values.append(value)
    out = agent.evaluate_sequence(obs, start, first, prev_action, torch.stack(actions))
    assert out["log_prob"].shape == (length, batch)
    assert out["entropy"].shape == (length, batch)
    assert out["logits"].shape == (length, batch, NUM_ACTIONS)
    torch.testing.assert_close(out["log_prob"], torch.stack(log_probs), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["value"], torch.stack(values), atol=1e-5, rtol=0)
    assert float(out["log_prob"].detach().std()) > 1e-3  # the comparison is not between constants
    assert out["aux_losses"] == {}
    final = out["state"]
    for key in state.keys():
        torch.testing.assert_close(final.get(key).float(), state.get(key).float(), atol=1e-5, rtol=0)


def test_gradient_reaches_cnn_and_all_encoders():
    agent = make_agent("gru")
    length, batch = 5, 2
    obs = sample_obs(nav_space(), (length, batch), seed=3)
    first, prev_action = rollout_inputs(length, batch)
    actions = torch.randint(0, NUM_ACTIONS, (length, batch), generator=torch.Generator().manual_seed(1))
    out = agent.evaluate_sequence(obs, agent.initial_state(batch, "cpu"), first, prev_action, actions)
    (-out["log_prob"].mean() + out["value"].pow(2).mean()).backward()
    first_conv = agent.encoder.cnns[0].convs[0]
    assert first_conv.weight.grad is not None and float(first_conv.weight.grad.abs().sum()) > 0
    assert float(agent.encoder.semantic_embedding.weight.grad.abs().sum()) > 0
    for key in ("pose", "pointgoal"):
        assert float(agent.encoder.vectors[key].net[0].weight.grad.abs().sum()) > 0
    assert float(agent.prev_action_embedding.weight.grad.abs().sum()) > 0


def test_deterministic_act_is_argmax_of_logits():
    agent = make_agent("lstm")
    batch = 5
    obs = sample_obs(nav_space(), (batch,), seed=4)
    state = agent.initial_state(batch, "cpu")
    first = torch.ones(batch, dtype=torch.bool)
    prev_action = torch.zeros(batch, dtype=torch.long)
    logits, value, _ = agent.forward_step(obs, state, first, prev_action)
    action, log_prob, value_act, _ = agent.act(obs, state, first, prev_action, deterministic=True)
    assert torch.equal(action, logits.argmax(-1))
    torch.testing.assert_close(log_prob, torch.log_softmax(logits, -1).gather(1, action[:, None])[:, 0])
    torch.testing.assert_close(value_act, value)


def test_image_keys_of_one_resolution_share_a_cnn_and_others_get_their_own():
    agent = make_agent("none", space=nav_space({"rgb": spaces.Box(0, 255, (8, 12, 3), np.uint8)}))
    assert sorted(map(sorted, agent.encoder.image_groups)) == [["depth", "semantic"], ["rgb"]]
    obs = sample_obs(agent.observation_space, (2,), seed=0)
    action, *_ = agent.act(obs, agent.initial_state(2, "cpu"), torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
    assert action.shape == (2,)


def test_goal_text_and_place_keys_encode_and_reach_the_memory():
    extra = {
        "objectgoal": spaces.Box(0, 5, (1,), np.int64),
        "text": spaces.Box(0, 20, (6,), np.int64),
        "place": spaces.Discrete(7),
    }
    for pooling in ("mean", "gru"):
        agent = make_agent("gru", space=nav_space(extra), text_pooling=pooling)
        obs = sample_obs(agent.observation_space, (3,), seed=6)
        obs["text"][0] = 0  # an empty instruction is allowed
        step = agent._memory_input(obs, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), lead=(3,))
        assert step["feat"].shape == (3, 32)
        assert step["text"].shape == (3, 8) and step["place"].shape == (3,) and step["pose"].shape == (3, 4)
        assert torch.isfinite(step["feat"]).all()
    # Changing the goal changes the fused feature.
    changed = dict(obs)
    changed["objectgoal"] = (obs["objectgoal"] + 1) % 6
    a = agent._memory_input(obs, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), lead=(3,))
    b = agent._memory_input(changed, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), lead=(3,))
    assert not torch.allclose(a["feat"], b["feat"])


def test_previous_action_is_ignored_at_episode_start():
    agent = make_agent("gru")
    obs = sample_obs(nav_space(), (2,), seed=7)
    state = agent.initial_state(2, "cpu")
    start = torch.ones(2, dtype=torch.bool)
    logits_a, _, _ = agent.forward_step(obs, state, start, torch.tensor([0, 1]))
    logits_b, _, _ = agent.forward_step(obs, state, start, torch.tensor([3, 2]))
    torch.testing.assert_close(logits_a, logits_b)
    cont = torch.zeros(2, dtype=torch.bool)
    logits_c, _, _ = agent.forward_step(obs, state, cont, torch.tensor([0, 1]))
    logits_d, _, _ = agent.forward_step(obs, state, cont, torch.tensor([3, 2]))
    assert not torch.allclose(logits_c, logits_d)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown observation keys \\['lidar'\\]"):
        make_agent("gru", space=nav_space({"lidar": spaces.Box(0, 1, (5,), np.float32)}))
    agent = make_agent("gru", space=nav_space({"lidar": spaces.Box(0, 1, (5,), np.float32)}), ignore=["lidar"])
    assert "lidar" not in agent.encoder.input_keys
    with pytest.raises(ValueError, match="unknown agent option 'hiddn'"):
        build_agent(nav_space(), spaces.Discrete(3), "gru", {}, hiddn=3)
    with pytest.raises(ValueError, match="text_pooling='max'"):
        build_agent(nav_space(), spaces.Discrete(3), "gru", {}, text_pooling="max")
    with pytest.raises(ValueError, match="Discrete starting at 0 or a float Box"):
        build_agent(nav_space(), spaces.Box(-1, 1, (2, 2)), "gru", {})  # continuous actions are a vector
    with pytest.raises(ValueError, match="Discrete starting at 0 or a float Box"):
        build_agent(nav_space(), spaces.MultiDiscrete([2, 3]), "gru", {})
    with pytest.raises(ValueError, match="aux heads read discrete actions"):
        build_agent(nav_space(), spaces.Box(-1, 1, (2,)), "gru", {}, aux_heads=["reconstruction"])
    with pytest.raises(ValueError, match="'rgb'"):
        make_agent("gru", space=nav_space({"rgb": spaces.Box(0, 1, (H, W, 3), np.float32)}))
    with pytest.raises(ValueError, match="unknown memory"):
        build_agent(nav_space(), spaces.Discrete(3), "nope", {})
    agent = make_agent("gru")
    obs = sample_obs(nav_space(), (2,), seed=0)
    state = agent.initial_state(2, "cpu")
    first = torch.ones(2, dtype=torch.bool)
    no_action = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="missing key 'depth'"):
        agent.act({k: v for k, v in obs.items() if k != "depth"}, state, first, no_action)
    bad = dict(obs, semantic=obs["semantic"] + 20)
    with pytest.raises(ValueError, match="'semantic' has ids in"):
        agent.act(bad, state, first, no_action)
    with pytest.raises(ValueError, match="'rgb' has shape"):
        agent.act(dict(obs, rgb=obs["rgb"][:, :8]), state, first, no_action)


def test_aux_head_registry_and_reconstruction_loss():
    assert "reconstruction" in AUX_HEADS
    agent = make_agent("trxl", aux_heads=["reconstruction"])
    length, batch = 4, 2
    obs = sample_obs(nav_space(), (length, batch), seed=8)
    first, prev_action = rollout_inputs(length, batch)
    out = agent.evaluate_sequence(obs, agent.initial_state(batch, "cpu"), first, prev_action, prev_action)
    loss = out["aux_losses"]["reconstruction/loss"]
    assert loss.dim() == 0 and float(loss) > 0
    loss.backward()
    assert float(agent.memory.input_proj.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="unknown auxiliary head 'nope'"):
        make_agent("gru", aux_heads=["nope"])


def test_agent_yaml_keys_equal_config_fields():
    text = AGENT_YAML.read_text()
    values = yaml.safe_load(text)
    assert set(values) == {f.name for f in dataclasses.fields(AgentConfig)}
    assert AgentConfig(**values) == AgentConfig()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "#" in line, f"undocumented key in default.yaml: {line}"


def test_cnn_patch_gives_one_feature_position_per_tile():
    space = spaces.Dict({"rgb": spaces.Box(0, 255, (12, 12, 3), np.uint8)})
    agent = build_agent(space, spaces.Discrete(NUM_ACTIONS), "none", {}, **{**SMALL, "cnn_channels": [8], "cnn_patch": 4})
    cnn = agent.encoder.cnns[0]
    assert cnn.map_shape == (8, 3, 3)
    image = torch.zeros(1, 3, 12, 12)
    changed = image.clone()
    changed[0, :, 4:8, 8:12] = 1.0  # the tile in row 1, column 2
    _, before = cnn.features(image)
    _, after = cnn.features(changed)
    moved = (after - before).abs().sum(dim=1)[0] > 0
    assert moved.tolist() == [[False, False, False], [False, False, True], [False, False, False]]
    deeper = build_agent(space, spaces.Discrete(NUM_ACTIONS), "none", {}, **{**SMALL, "cnn_patch": 4})
    assert deeper.encoder.cnns[0].map_shape == (16, 3, 3)  # later convs keep the tile grid
    with pytest.raises(ValueError, match="cnn_patch=16 is larger than the 12x12 image"):
        build_agent(space, spaces.Discrete(NUM_ACTIONS), "none", {}, **{**SMALL, "cnn_patch": 16})


@pytest.mark.parametrize("memory", ["gru", "trxl"])
def test_film_readout_sequence_matches_steps_and_trains(memory):
    space = spaces.Dict({"rgb": spaces.Box(0, 255, (H, W, 3), np.uint8),
                         "pose": spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    agent = make_agent(memory, space=space, film_readout=12)
    # Non-zero FiLM weights, so the read actually modulates the map in this comparison.
    torch.nn.init.normal_(agent.film.film.weight, std=0.5)
    length, batch = 5, 2
    obs = sample_obs(space, (length, batch), seed=4)
    first, prev_action = rollout_inputs(length, batch)
    out = sequence_after_steps(agent, obs, first, prev_action)
    start, actions = out["start"], out["actions"]
    out["log_prob"].mean().backward()
    assert float(agent.film.film.weight.grad.abs().sum()) > 0  # the read conditions the readout
    assert float(agent.film.mix.weight.grad.abs().sum()) > 0
    # Without the readout the logits differ: the heads really use it.
    agent.film.out[0].weight.data.zero_()
    agent.film.out[0].bias.data.zero_()
    with torch.no_grad():
        zeroed = agent.evaluate_sequence(obs, start, first, prev_action, actions)
    assert not torch.allclose(zeroed["log_prob"], out["log_prob"].detach())
    with pytest.raises(ValueError, match="film_readout needs exactly one image resolution"):
        make_agent("gru", space=nav_space({"rgb": spaces.Box(0, 255, (8, 8, 3), np.uint8)}), film_readout=4)
    with pytest.raises(ValueError, match="film_readout=-1"):
        make_agent("gru", film_readout=-1)


def test_memory_text_pooled_gives_the_memory_the_mean_token_embedding():
    space = nav_space({"text": spaces.Box(0, 20, (6,), np.int64)})
    # "this is a <name>" with three different names, and no text at all.
    text = torch.tensor([[3, 4, 5, 10, 0, 0], [3, 4, 5, 11, 0, 0], [3, 4, 5, 12, 0, 0], [0, 0, 0, 0, 0, 0]])
    steps = {}
    for mode in ("encoded", "pooled"):
        agent = make_agent("gru", space=space, memory_text=mode)
        obs = sample_obs(space, (4,), seed=1)
        obs["text"] = text
        steps[mode] = agent._memory_input(obs, torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.long), lead=(4,))
        assert float(steps[mode]["text"][3].abs().sum()) == 0.0  # nothing said: an all-zero language column
    expected = agent.encoder.text.embedding(text[:3]).sum(1) / 4
    torch.testing.assert_close(steps["pooled"]["text"][:3], expected)
    assert not torch.allclose(steps["encoded"]["text"][:3], expected)
    torch.testing.assert_close(steps["pooled"]["feat"], steps["encoded"]["feat"])  # only the memory's column changes
    with pytest.raises(ValueError, match="memory_text='raw'"):
        make_agent("gru", memory_text="raw")


def _tile_agent(memory: str, memory_options: dict, **options) -> Agent:
    space = spaces.Dict({"rgb": spaces.Box(0, 255, (12, 12, 3), np.uint8), "text": spaces.Box(0, 20, (6,), np.int64)})
    torch.manual_seed(0)
    return build_agent(space, spaces.Discrete(NUM_ACTIONS), memory, memory_options,
                       **{**SMALL, "cnn_channels": [8], "cnn_patch": 3, **options})


def test_memory_visual_centre_stores_the_feature_map_centre():
    agent = _tile_agent("dcem", dict(hidden=16, key_dim=8, capacity=8), memory_visual="centre", film_readout=4)
    assert agent.memory.visual_dim == 8  # the CNN's channels, not image_dim
    obs = sample_obs(agent.observation_space, (3,), seed=2)
    step = agent._memory_input(obs, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), lead=(3,))
    fmap = step["feature_map"]
    assert fmap.shape[1:] == (8, 4, 4)
    torch.testing.assert_close(step["visual"], fmap[:, :, 2, 2])
    embedding = _tile_agent("dcem", dict(hidden=16, key_dim=8, capacity=8))
    assert embedding.memory.visual_dim == SMALL["image_dim"]
    with pytest.raises(ValueError, match="memory_visual='middle'"):
        make_agent("gru", memory_visual="middle")
    with pytest.raises(ValueError, match="memory_visual=centre needs exactly one image resolution"):
        make_agent("gru", space=nav_space({"rgb": spaces.Box(0, 255, (8, 8, 3), np.uint8)}), memory_visual="centre")


@pytest.mark.parametrize("memory", ["dcem", "gru"])
def test_match_readout_compares_the_read_with_every_position(memory):
    options = dict(hidden=16, key_dim=8, capacity=8, key_by="text", read_retrieved=True) if memory == "dcem" else dict(hidden=16)
    agent = _tile_agent(memory, options, memory_visual="centre", film_readout=4, match_readout=True)
    film = agent.film
    read = torch.randn(5, agent.memory.output_dim)
    fmap = torch.rand(5, 8, 4, 4)
    if memory == "dcem":
        # The query starts as the retrieved visual column (the read's last channels): a feature map
        # position holding exactly that vector matches with cosine 1.
        fmap[torch.arange(5), :, torch.arange(5) % 4, 1] = read[:, -8:].abs()
        read[:, -8:] = read[:, -8:].abs()
        match = film.match_map(read, fmap)
        assert torch.allclose(match[torch.arange(5), torch.arange(5) % 4, 1], torch.ones(5), atol=1e-5)
        assert (match.flatten(1).argmax(1) == (torch.arange(5) % 4) * 4 + 1).all()
    else:
        assert film.query.weight.abs().sum() > 0  # learned from the read
    # Stepping equals the sequence path, and the match trains.
    obs = sample_obs(agent.observation_space, (4, 2), seed=5)
    first, prev_action = rollout_inputs(4, 2)
    sequence_after_steps(agent, obs, first, prev_action)["log_prob"].mean().backward()
    assert float(film.query.weight.grad.abs().sum()) > 0 and float(film.match_scale.grad.abs()) > 0
    with pytest.raises(ValueError, match="match_readout=true needs film_readout"):
        make_agent("gru", match_readout=True)
    if memory == "dcem":
        with pytest.raises(ValueError, match="retrieved visual column has size 32, the feature map 8 channels"):
            _tile_agent("dcem", options, film_readout=4, match_readout=True)  # the whole-view embedding is stored


def test_action_prior_sets_the_initial_policy_and_bad_priors_are_one_line():
    def policy(**options):  # build_agent's own init (make_agent widens the policy weights)
        return build_agent(nav_space(), spaces.Discrete(NUM_ACTIONS), "gru", MEMORY_OPTIONS["gru"], **{**SMALL, **options})

    prior = [0.01, 0.69, 0.15, 0.15]
    agent = policy(action_prior=prior)
    obs = sample_obs(nav_space(), (64,), seed=3)
    first, prev = torch.ones(64, dtype=torch.bool), torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        probs = agent.forward_step(obs, agent.initial_state(64), first, prev)[0].softmax(-1)
    assert torch.allclose(probs, torch.tensor(prior).expand(64, -1), atol=0.01)  # whatever it sees
    uniform = policy()
    with torch.no_grad():
        flat = uniform.forward_step(obs, uniform.initial_state(64), first, prev)[0].softmax(-1)
    assert torch.allclose(flat, torch.full((64, NUM_ACTIONS), 1 / NUM_ACTIONS), atol=0.01)
    with pytest.raises(ValueError, match="action_prior has 3 probabilities; this action space has 4 actions"):
        policy(action_prior=[0.2, 0.3, 0.5])
    for bad in ([0.5, 0.6, -0.1, 0.0], [0.25, 0.25, 0.25, 0.2], "stop"):
        with pytest.raises(ValueError, match="action_prior=.*must be empty or positive probabilities summing to 1"):
            policy(action_prior=bad)
