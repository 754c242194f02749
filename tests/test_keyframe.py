"""The RVT-style keyframe policy (embodied.agents.keyframe) and its training through the one imitation
trainer (trainer=bc: the agent's imitation hooks, MemoryBench's demo source)."""
import json

import numpy as np
import pytest
import torch

from embodied.agents.keyframe import (KeyframeAgent, KeyframeAgentConfig, Workspace, bins_to_quat, collate,
                                      decode_translation, heatmap_targets, prepare_sequences, quat_to_bins,
                                      shift_sequence)
from embodied.train.bc import BCConfig, BehaviourCloning
from keyframe_synthetic import WORKSPACE, synthetic_demos

BOUNDS = ((-0.3, -0.5, 0.6), (0.7, 0.5, 1.6))  # RLBench's SCENE_BOUNDS, a non-cube offset box


@pytest.mark.parametrize("grid", [16, 32, 48])
def test_heatmap_decoding_inverts_the_projection(grid):
    ws = Workspace(BOUNDS, grid)
    rng = np.random.default_rng(0)
    points = ws.lo + rng.uniform(0.01, 0.99, size=(64, 3)) * (ws.hi - ws.lo)
    logits = torch.as_tensor(np.log(heatmap_targets(points, ws, sigma=0.6) + 1e-12))
    centres = decode_translation(logits, ws, refine=False).numpy()
    assert np.all(np.abs(centres - points) <= ws.voxel / 2 + 1e-5)  # the voxel of the point
    decoded = decode_translation(logits, ws).numpy()
    assert np.all(np.abs(decoded - points) <= ws.voxel / 2 + 1e-5)
    assert np.abs(decoded - points).mean() < 0.5 * np.abs(centres - points).mean()  # refinement helps
    # decoding uses all three views: breaking one view moves the answer
    broken = logits.clone()
    broken[:, 1] = broken[:, 1].flip(-1)
    assert not np.allclose(decode_translation(broken, ws).numpy(), decoded)


def test_render_puts_points_at_their_pixels_nearest_wins():
    ws = Workspace(BOUNDS, 32)
    low = np.array([[0.2, 0.0, 0.7]])
    high = np.array([[0.2, 0.0, 1.2]])  # above `low`: the top view must show it
    views = ws.render(np.concatenate([low, high]), np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8))
    r, c = np.floor(ws.pixels(high)[0, 0]).astype(int)
    assert views[0, 4].sum() == 1 and views[0, 4, r, c] == 1
    assert views[0, 1, r, c] == 1.0 and views[0, 0, r, c] == 0.0  # green (the higher point)
    assert np.isclose(views[0, 3, r, c], ws.normalize(high)[0, 2])
    assert views[1, 4].sum() == 2  # the front view sees both (different heights)
    outside = ws.render(np.array([[5.0, 0, 1]]), np.array([[1, 1, 1]], dtype=np.uint8))
    assert outside[:, 4].sum() == 0


def test_rotation_bins_round_trip():
    from scipy.spatial.transform import Rotation

    q = Rotation.random(50, random_state=0).as_quat()
    back = bins_to_quat(quat_to_bins(q, 72), 72)
    angle = (Rotation.from_quat(q).inv() * Rotation.from_quat(back)).magnitude()
    assert np.degrees(angle).max() < 5.0


def test_shift_augmentation_moves_views_and_targets_together():
    agent = KeyframeAgent(KeyframeAgentConfig(grid_size=32), WORKSPACE, "none")
    seq = prepare_sequences(synthetic_demos(1), agent)[0]
    moved = shift_sequence(seq, 2, -1, agent.workspace.voxel)
    again = prepare_sequences([_translated(synthetic_demos(1)[0], agent.workspace.voxel * np.array([2, -1, 0]))], agent)[0]
    np.testing.assert_allclose(moved.position, again.position, atol=1e-6)
    # interior pixels agree (the roll wraps at the border, a re-render does not; float rounding
    # moves a few points sitting on voxel boundaries)
    a = moved.views[:, :, :5, 3:-3, 3:-3].astype(np.float32)
    b = again.views[:, :, :5, 3:-3, 3:-3].astype(np.float32)
    assert np.mean(np.abs(a - b) > 1e-2) < 0.01
    assert np.mean(np.abs(a - seq.views[:, :, :5, 3:-3, 3:-3].astype(np.float32)) > 1e-2) > 0.01  # it did move


def _translated(ep, offset):
    ep = dict(ep)
    obs = dict(ep["obs"])
    for k in obs:
        if k.endswith("_pcd"):
            obs[k] = obs[k] + offset.astype(np.float32)
    ep["obs"] = obs
    action = ep["actions"].copy()
    action[:, :3] += offset
    ep["actions"] = action
    return ep


@pytest.mark.parametrize("memory", ["none", "membank"])
def test_tiny_bc_run_lowers_the_loss(memory):
    torch.manual_seed(0)
    agent = KeyframeAgent(KeyframeAgentConfig(grid_size=16, channels=[8, 16]), WORKSPACE, memory,
                          {"num_maskmem": 9, "mem_dim": 8, "ff_dim": 16, "layers": 1})
    seqs = prepare_sequences(synthetic_demos(8), agent)
    cfg = BCConfig(epochs=1, batch_episodes=4, lr=3e-3, optimizer="adamw", weight_decay=1e-4, lr_schedule="cosine",
                   warmup_steps=1).validate()
    bc = BehaviourCloning(agent, cfg, total_steps=12)
    losses = [bc.fit(seqs)["loss"] for _ in range(6)]
    assert losses[-1] < 0.8 * losses[0]
    assert bc.grad_steps == 12 and bc.schedule.get_last_lr()[0] == pytest.approx(3e-3 * 0.05)  # decayed to lr/20


def test_act_returns_a_valid_action_and_advances_memory():
    agent = KeyframeAgent(KeyframeAgentConfig(grid_size=16, channels=[8, 16]), WORKSPACE, "membank",
                          {"mem_dim": 8, "ff_dim": 16})
    ep = synthetic_demos(1)[0]
    state = agent.initial_state(1)
    for k in range(3):
        obs = {key: v[k] for key, v in ep["obs"].items()}
        action, state, extra = agent.act(obs, state, first=(k == 0))
        assert action.shape == (9,) and action.dtype == np.float32
        assert np.all(action[:3] >= np.array(WORKSPACE[0])) and np.all(action[:3] <= np.array(WORKSPACE[1]))
        assert np.isclose(np.linalg.norm(action[3:7]), 1.0, atol=1e-5)
        assert extra["heatmap"].shape == (3, 16, 16)
    assert state["slot_step"][0, :3].tolist() == [2, 1, 0]


def test_collate_pads_and_masks():
    agent = KeyframeAgent(KeyframeAgentConfig(grid_size=16, channels=[8, 16]), WORKSPACE, "none")
    seqs = prepare_sequences(synthetic_demos(2), agent)
    seqs[1] = type(seqs[1])(**{k: v[:2] for k, v in vars(seqs[1]).items()})
    b = collate(seqs, agent, torch.device("cpu"))
    assert b["mask"][:, 0].all() and b["mask"][:, 1].tolist() == [True, True, False, False]
    assert b["first"][:, 1].tolist() == [True, False, True, True]


def test_bad_options():
    with pytest.raises(ValueError, match="grid_size"):
        KeyframeAgentConfig(grid_size=30, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="memory"):
        KeyframeAgent(KeyframeAgentConfig(grid_size=16, channels=[8, 16]), WORKSPACE, "gru")
    with pytest.raises(ValueError, match="workspace"):
        Workspace(((0, 0, 0), (1, 1, 0)), 16)
    from embodied.config import ConfigError

    with pytest.raises(ConfigError, match="trainer.dart_copies"):
        BCConfig(dart_copies=-1).validate()
    with pytest.raises(ConfigError, match="trainer.dart_noise"):
        BCConfig(dart_copies=1, dart_noise=0.0).validate()
    with pytest.raises(ConfigError, match="trainer.lr_schedule"):
        BCConfig(lr_schedule="linear").validate()


def _demo_file(tmp_path, n):
    from keyframe_synthetic import moved_into

    from embodied.tasks.episodes import write_episodes
    from embodied.tasks.memorybench import WORKSPACE as MEMORYBENCH

    return write_episodes(tmp_path / "demos.npz", moved_into(synthetic_demos(n), MEMORYBENCH))


def _compose(run_dir, demos, *extra):
    import embodied.train  # noqa: F401  (registers the schemas)
    from embodied.config import compose

    return compose("train", ["task=memorybench/reopen_drawer", "task.width=32", "task.height=32", "agent=keyframe",
                             "agent.grid_size=16", "agent.channels=[8,16]", "memory=membank", "memory.mem_dim=8",
                             "memory.ff_dim=16", "memory.layers=1", f"trainer.demos={demos}", "trainer.batch_episodes=4",
                             "trainer.epochs=1", "trainer.dagger_steps=0", "trainer.optimizer=adamw",
                             "trainer.lr_schedule=cosine", "trainer.warmup_steps=1", "trainer.aug_shift=2",
                             "num_envs=1", "num_workers=0", "device=cpu", "quiet=true", f"run_dir={run_dir}", *extra])


def test_bc_trains_the_keyframe_agent_with_a_checkpoint_per_round_and_resumes_exactly(tmp_path):
    from embodied.loading import load_checkpoint
    from embodied.train.run import train

    demos = _demo_file(tmp_path, 6)
    a = train(_compose(tmp_path / "a", demos, "trainer.dagger_rounds=1"))
    assert a["status"] == "finished" and a["update"] == 2
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2] and all("trans_err_m" in r and "lr" in r for r in rows)
    assert (tmp_path / "a" / "ckpt-00000001.pt").exists()  # a checkpoint after every round (= epoch)
    b_dir = tmp_path / "b"
    train(_compose(b_dir, demos, "trainer.dagger_rounds=1"))
    # roll run b back to its round-1 checkpoint, as if it had been preempted there
    (b_dir / "ckpt-00000002.pt").unlink()
    (b_dir / "latest.pt").unlink()
    (b_dir / "latest.pt").write_bytes((b_dir / "ckpt-00000001.pt").read_bytes())
    b = train(_compose(b_dir, demos, "trainer.dagger_rounds=1"))
    assert b["update"] == 2
    ma, mb = load_checkpoint(tmp_path / "a" / "latest.pt")["model"], load_checkpoint(b_dir / "latest.pt")["model"]
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k])
    lines = (b_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the rolled-back round's line was replaced, not duplicated
    from embodied.eval.memorybench import load_keyframe_policy

    agent, config = load_keyframe_policy(tmp_path / "a" / "latest.pt", torch.device("cpu"))  # what eval loads
    assert config["trainer"]["name"] == "bc" and isinstance(agent, KeyframeAgent)


def test_keyframe_agent_on_another_family_or_with_ppo_is_one_line(tmp_path):
    from embodied.config import ConfigError
    from embodied.train.run import train

    demos = _demo_file(tmp_path, 2)
    with pytest.raises(ConfigError, match="task.name"):
        train(_compose(tmp_path / "x", demos, "task=ballet/4_delay16"))
    from embodied.config import compose

    with pytest.raises(ConfigError, match="allowed: trainer=bc"):
        train(compose("train", ["task=memorybench/reopen_drawer", "agent=keyframe", "trainer=ppo", "num_envs=1",
                                f"run_dir={tmp_path / 'y'}"]))
    with pytest.raises(ConfigError, match="trainer.dart_copies"):  # noisy copies need a task that records them
        train(compose("train", ["task=ballet/4_delay16", "trainer=bc", "trainer.dart_copies=1", "num_envs=1",
                                "num_workers=0", f"run_dir={tmp_path / 'z'}"]))
    assert not any((tmp_path / d).exists() for d in "xyz")


def _memorybench_ready() -> bool:
    try:
        from embodied.tasks.memorybench import WORKSPACE  # noqa: F401
        from embodied.tasks.memorybench.dataset import write_demos  # noqa: F401
        from embodied.tasks.registry import TASKS
    except ImportError:
        return False
    from embodied.config import config_dir

    return "memorybench/reopen_drawer" in TASKS and (config_dir() / "task/memorybench/reopen_drawer.yaml").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _memorybench_ready(), reason="the MemoryBench simulation is not installed")
def test_cli_train_end_to_end_on_memorybench(tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "embodied.train", "+experiment=memorybench_membank", "task=memorybench/reopen_drawer",
           "task.width=32", "task.height=32", "trainer.record_episodes=2", "trainer.dagger_rounds=0",
           "agent.grid_size=16", "agent.channels=[8,16]", "trainer.eval_episodes=1", "quiet=true", f"run_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "latest.pt").exists()
    assert "episode/success" in (tmp_path / "metrics.jsonl").read_text()
    from embodied.tasks.episodes import read_episodes

    clean = [e["episode"] for e in read_episodes(tmp_path / "data" / "reopen_drawer_train_2_32.npz")]
    dart = [e["episode"] for e in read_episodes(tmp_path / "data" / "reopen_drawer_train_2_32_dart0.02_0.npz")]
    assert [e["seed"] for e in dart] == [e["seed"] for e in clean] and all(e["noise"] > 0 for e in dart)
    (cache,) = (tmp_path / "data").glob("views-*.npz")
    with np.load(cache) as views:
        assert len(views["lens"]) == 4  # the clean demos and their DART copy are both trained on


def test_training_rollouts_use_validation_seeds_never_train_or_test():
    from embodied.tasks.memorybench import memorybench_spec, validation_seeds

    for short, spec in memorybench_spec()["tasks"].items():
        seeds = validation_seeds(spec, 8)
        assert len(set(seeds)) == 8, short
        assert not set(seeds) & (set(spec["train_seeds"]) | set(spec["test_seeds"])), short
