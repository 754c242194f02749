"""embodied/eval/fastmap_results.py (evaluation only), the fast-mapping labels and target-look head
used by imitation, instruction weighting, and the recipes end to end at toy sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied.envs import VectorEnv
from embodied.eval import fastmap_results as fr
from embodied.tasks.fastmap import _glyph_mask, decode_text, instruction_steps
from embodied.train.bc import BCConfig, BehaviourCloning, collect_labelled, pad_batch

SMALL = {"cnn_channels": [8], "cnn_patch": 3, "image_dim": 16, "text_dim": 8, "hidden": 16, "film_readout": 8}


def expert_episodes(n: int, seed: int, labels: bool = False) -> list[dict]:
    envs = VectorEnv([lambda: fr.level_env(fr.TRAIN_LEVEL)], num_workers=0)
    try:
        return collect_labelled(envs, None, torch.device("cpu"), 10**5, 1.0, np.random.default_rng(seed), seed,
                                max_episodes=n, labels=labels)[0]
    finally:
        envs.close()


def test_target_look_label_is_the_instructed_objects_tile_in_the_instruction_phase_only():
    env = fr.level_env(fr.TRAIN_LEVEL)
    obs, _ = env.reset(seed=3)
    seen_instruction = done = False
    while not done:
        look = env.unwrapped.labels()["target_look"].reshape(3, 3, 3)
        if env.unwrapped.phase == "instruction":
            seen_instruction = True
            target = env.unwrapped.objects[env.unwrapped.target]
            mask = _glyph_mask(target.category, 3)
            np.testing.assert_allclose(look[mask], np.broadcast_to(np.asarray(target.colour) / 255.0, look[mask].shape))
            assert not look[~mask].any() and decode_text(obs["text"]).endswith(target.name)
        else:
            assert not look.any()
        obs, _, te, tr, _ = env.step(env.unwrapped.oracle_action())
        done = te or tr
    assert seen_instruction


def test_target_look_head_reads_labels_of_instruction_steps_only():
    episode = expert_episodes(1, seed=4, labels=True)[0]
    look = episode["labels"]["target_look"]
    instr = instruction_steps(episode["obs"])
    assert (look[~instr] == 0).all() and (look[instr].sum(-1) > 0).all()
    assert (look[instr] == look[instr][0]).all()  # one target per episode
    agent = fr.agent_for(None, "gru", {"hidden": 16}, {**SMALL, "aux_heads": ["fastmap_target_look"]})
    head = agent.aux_heads["fastmap_target_look"]
    read = torch.randn(len(look), 16)
    labels = {"target_look": torch.as_tensor(look)}
    loss = head({"labels": labels, "read": read})["loss"]
    changed = read.clone()
    changed[~torch.as_tensor(instr)] += 100.0  # reads at non-instruction steps do not matter
    torch.testing.assert_close(head({"labels": labels, "read": changed})["loss"], loss)
    with pytest.raises(ValueError, match="needs the label 'target_look'"):
        head({"labels": {}, "read": read})


def test_upweight_scales_the_instruction_steps_in_the_loss():
    episodes = expert_episodes(3, seed=0)
    instr = instruction_steps(episodes[0]["obs"])
    words = [decode_text(t).split()[0] if decode_text(t) else "" for t in episodes[0]["obs"]["text"]]
    assert instr.tolist() == [w in ("lift", "put") for w in words] and 0 < int(instr.sum()) < len(words)
    agent = fr.agent_for(None, "gru", {"hidden": 16}, SMALL)
    batch = pad_batch(episodes, torch.device("cpu"))
    out = agent.evaluate_sequence(batch["obs"], agent.initial_state(3, "cpu"), batch["first"], batch["prev_actions"],
                                  batch["actions"])
    ce = -out["log_prob"].detach()
    mask = batch["mask"]
    is_i = instruction_steps(batch["obs"]) & mask
    other = mask & ~is_i
    for w in (1.0, 4.0):
        cfg = BCConfig(upweight="fastmap/instruction", upweight_factor=w).validate()
        loss, stats = BehaviourCloning(agent, cfg).loss(batch)
        expected = (ce[other].sum() + w * ce[is_i].sum()) / (other.sum() + w * is_i.sum())
        assert stats["bc_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_frozen_parameters_do_not_train_and_the_rest_do():
    options = {"capacity": 64, "hidden": 16, "key_dim": 8, "key_by": "text"}
    agent = fr.agent_for(None, "dcem", options, SMALL)
    initial = {k: v.clone() for k, v in agent.state_dict().items()}
    bc = BehaviourCloning(agent, BCConfig(epochs=1, freeze=["encoder.text.embedding", "memory.key_proj.text"]).validate())
    assert bc.frozen == ["encoder.text.embedding.weight", "memory.key_proj.text.weight"]
    bc.fit(expert_episodes(6, seed=1))
    trained = agent.state_dict()
    for name in bc.frozen:
        assert torch.equal(trained[name], initial[name]), name
    assert not torch.equal(trained["encoder.text.out.0.weight"], initial["encoder.text.out.0.weight"])
    with pytest.raises(ValueError, match="trainer.freeze: 'encoder.txt' matches no parameter"):
        BehaviourCloning(agent, BCConfig(freeze=["encoder.txt"]).validate())


def test_recipe_with_the_target_look_head_then_lookup_and_evaluate_its_checkpoint(tmp_path):
    """`embodied train +experiment=fastmap_cpu` with the privileged target-look head at toy size (the
    head's loss is part of training), then the two diagnostics on its checkpoint."""
    import embodied.train  # noqa: F401 - registers the structured schemas
    from embodied.config import compose
    from embodied.train.run import train

    run = tmp_path / "run"
    cfg = compose("train", ["+experiment=fastmap_cpu", f"run_dir={run}", "trainer.record_episodes=6",
                            "trainer.dagger_rounds=0", "trainer.eval_episodes=0", "num_envs=2", "quiet=true",
                            "agent.cnn_channels=[8]", "agent.film_readout=8", "memory.capacity=64",
                            "trainer.labels=true", "agent.aux_heads=[fastmap_target_look]"])
    result = train(cfg)
    assert result["status"] == "finished" and result["metrics"]["aux_loss"] > 0
    ckpt = str(run / "latest.pt")
    share = fr.lookup_share(ckpt, episodes=2)
    assert 0.0 <= share["share_on_instructed_name"] <= 1.0 and share["chance"] == pytest.approx(1 / 3)
    evaluated = fr.evaluate(ckpt, levels=(fr.TEST_LEVEL, "fastmap/num_generalization/fast_map_five_objs"), episodes=2)
    five = evaluated["levels"]["fastmap/num_generalization/fast_map_five_objs"]
    assert five["chance"] == pytest.approx(1 / 5) and five["ci95"][0] <= five["success"] <= five["ci95"][1]
    assert five["success"] + five["wrong_act"] + five["timeout"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no text-keyed lookup"):
        fr.lookup_share(None, SMALL, {"capacity": 64, "hidden": 16, "key_dim": 8, "key_by": "visual"}, episodes=1)


def test_untrained_match_readout_finds_the_held_out_object_named_in_discovery():
    """The recall path end to end, before any training: the name's text key finds the rows written
    while that object was held, their visual column (the map's centre, where the held object is
    drawn as on the floor) is appended to the read, and its cosine match with the current map peaks
    on that object's cell, for held-out objects the agent has never been trained on. On later
    instruction steps only if the lookup skips the rows of the instruction itself."""
    agent_options = {**SMALL, "cnn_channels": [64], "text_dim": 64, "memory_text": "pooled", "memory_visual": "centre",
                     "match_readout": True}
    memory_options = {"capacity": 64, "hidden": 16, "key_dim": 64, "key_by": "text", "temperature": 50.0,
                      "read_retrieved": True, "skip_repeated_text": True}
    result = fr.lookup_share(None, agent_options, memory_options, episodes=12, level=fr.TEST_LEVEL)
    assert result["share_on_instructed_name"] > 0.9
    assert result["match_peaks_on_instructed_object"] >= 0.8  # chance: one cell of 81
    assert result["match_peaks_later_instruction_steps"] >= 0.8
    repeated = fr.lookup_share(None, agent_options, {**memory_options, "skip_repeated_text": False}, episodes=6,
                               level=fr.TEST_LEVEL)
    assert repeated["match_peaks_later_instruction_steps"] < 0.3  # "lift the dax" finds itself
    # Storing the whole-view embedding instead, nothing is there to match: no match channel at all.
    plain = fr.lookup_share(None, {**SMALL, "memory_text": "pooled"}, {**memory_options, "read_retrieved": False}, episodes=2)
    assert "match_peaks_on_instructed_object" not in plain


def test_gpu_experiment_config_composes_and_builds_its_agent():
    """configs/experiment/fastmap_gpu.yaml (not run here: no GPU): it composes against the schema,
    selects the full-size rendered level, and its memory and agent options build and act."""
    import embodied.train  # registers the structured schemas
    from embodied.config import compose
    from embodied.tasks import make_env
    from embodied.loading import build_agent_from_config

    cfg = compose("train", ["+experiment=fastmap_gpu"])
    assert (cfg.device, cfg.trainer.name, cfg.memory.name) == ("cuda", "bc", "dcem")
    assert (cfg.task.scenes, cfg.task.width, cfg.task.height) == ("room", 96, 72)
    env = make_env(cfg.task)
    obs, _ = env.reset(seed=0)
    agent = build_agent_from_config(cfg, env.observation_space, env.action_space, torch.device("cpu"))
    assert agent.memory.top_k > 1 and agent.memory.capacity == 512
    action, *_ = agent.act({k: torch.as_tensor(v)[None] for k, v in obs.items()}, agent.initial_state(1, "cpu"),
                           torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    assert env.action_space.contains(int(action))


@pytest.mark.slow
def test_cpu_experiment_config_trains_with_its_match_query_and_name_embeddings_frozen(tmp_path):
    """configs/experiment/fastmap_cpu.yaml through the main CLI at toy size: DCEM's recalled look is
    the match query, kept at its initialisation (the identity on the read's recalled part) with the
    name embeddings, while the rest trains; a baseline memory composes with its own freeze list."""
    import embodied.train  # registers the structured schemas
    from embodied.config import compose
    from embodied.loading import load_checkpoint
    from embodied.train.run import train

    toy = ["trainer.record_episodes=16", "trainer.dagger_rounds=1", "trainer.dagger_steps=300",
           "trainer.eval_episodes=2", "num_envs=4", "quiet=true", "agent.cnn_channels=[8]", "agent.film_readout=8"]
    cfg = compose("train", ["+experiment=fastmap_cpu", f"run_dir={tmp_path / 'dcem'}", *toy])
    assert (cfg.memory.name, cfg.trainer.name, cfg.task.scenes) == ("dcem", "bc", "symbolic")
    assert train(cfg)["status"] == "finished"
    first, second = (load_checkpoint(tmp_path / "dcem" / f"ckpt-{u:08d}.pt")["model"] for u in (1, 2))
    query = second["film.query.weight"]
    channels = query.shape[0]
    torch.testing.assert_close(query[:, -channels:], torch.eye(channels))
    assert not query[:, :-channels].any()
    for name in ("film.query.weight", "film.match_scale", "encoder.text.embedding.weight", "memory.key_proj.text.weight",
                 "memory.log_temperature"):
        assert torch.equal(first[name], second[name]), name
    for name in ("film.film.weight", "memory.value_proj.weight", "memory.controller.weight_ih"):
        assert not torch.equal(first[name], second[name]), name

    lstm = compose("train", ["+experiment=fastmap_cpu", "memory=lstm", "trainer.freeze=[encoder.text.embedding]"])
    assert (lstm.memory.name, list(lstm.trainer.freeze), lstm.agent.match_readout) == ("lstm", ["encoder.text.embedding"], True)

    # Evaluated with a larger buffer than trained with (the rows hold no weights), and a bad option.
    from embodied.config import ConfigError
    from embodied.eval import evaluate
    from embodied.eval.runner import with_memory_options

    ckpt = tmp_path / "dcem" / "latest.pt"
    report = evaluate(compose("eval", ["task=fastmap/cpu/ten_distractor", f"ckpt={ckpt}", "episodes=2", "num_workers=0",
                                       "quiet=true", "+memory_options.capacity=512", f"out={tmp_path / 'e.json'}"]))
    assert report["results"][0]["episodes"] == 2
    assert report["config"]["memory_options"] == {"capacity": 512}
    merged = with_memory_options(load_checkpoint(ckpt)["config"], {"capacity": 512})
    assert merged["memory"]["capacity"] == 512 and merged["memory"]["key_by"] == "text"
    with pytest.raises(ConfigError, match=r"^memory_options.capasity: .*allowed: .*capacity"):
        evaluate(compose("eval", ["task=fastmap/cpu/ten_distractor", f"ckpt={ckpt}", "episodes=1", "num_workers=0",
                                  "quiet=true", "+memory_options.capasity=512"]))
