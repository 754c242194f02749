"""Episode recordings: read back with rerun's own reader, memory introspection, MP4 export, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensordict import TensorDict

pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install -e '.[viewer]')")

from embodied.memory.base import Memory, check_introspection  # noqa: E402
from embodied.memory.config import MemoryConfig  # noqa: E402
from embodied.tasks import NavConfig, make_env  # noqa: E402
from embodied.viewer.recording import OraclePolicy, PolicyOutput, record_episode  # noqa: E402
from embodied.viewer.rrd import Recording  # noqa: E402

CAMERA = "world/agent/camera"


def small_env(**kw):
    base = dict(name="nav/pointnav", width=32, height=32, sensors=["rgb", "depth"], max_steps=40)
    base.update(kw)
    return make_env(NavConfig(**base))


@pytest.fixture(scope="module")
def oracle_recording(tmp_path_factory):
    env = small_env(max_steps=60)  # the oracle reaches seed 3's goal in 46 steps
    path = tmp_path_factory.mktemp("rec") / "episode.rrd"
    result = record_episode(env, OraclePolicy(), path, seed=3)
    return env, result, Recording(path)


def test_recording_holds_one_row_per_step(oracle_recording):
    env, result, rec = oracle_recording
    steps = result["length"]
    assert steps >= 3
    per_observation = ["world/agent", f"{CAMERA}/rgb", f"{CAMERA}/depth", f"{CAMERA}/semantic",
                       "map/explored", "measures", "text/log"]
    for entity in per_observation:
        rows = rec[entity]
        logged = sorted(s for s in rows.steps if s is not None)
        assert logged == list(range(steps + 1)), entity  # reset observation + one per action
    # Logged when they change (latest-at semantics): at step 0 and at every move.
    moved = [s for s in rec["world/trajectory"].steps]
    assert moved[0] == 0 and moved == sorted(set(moved)) and 2 <= len(moved) <= steps + 1
    assert rec["map/agent"].steps == moved
    strips = rec["world/trajectory"].at("LineStrips3D:strips")
    assert len(strips[moved[-1]][0]) == len(moved)  # the last strip holds the whole path
    assert rec.rows(CAMERA) >= 3  # static pinhole + class legend + the tilt at step 0
    for entity in ["agent/action", "scalars/reward", "scalars/return"]:
        assert sorted(rec[entity].steps) == list(range(1, steps + 1)), entity
    for entity in ["world/scene", "world/goals", "map/navigable", "episode/info"]:
        assert rec[entity].static and rec.rows(entity) == 1, entity
    mesh = rec["world/scene"].components["Mesh3D:vertex_positions"][0]
    assert len(mesh) == sum(len(p.vertices) for p in env.scene.geometry.parts)
    assert rec.rows("text/instruction") >= 1 and "go to the point" in rec.texts("text/instruction")[0]


def test_recording_contents_match_the_episode(oracle_recording):
    env, result, rec = oracle_recording
    steps = result["length"]
    obs, _ = env.reset(seed=3)  # same seed: same first observation
    rgb = rec.images(f"{CAMERA}/rgb")
    depth = rec.images(f"{CAMERA}/depth", "DepthImage")
    semantic = rec.images(f"{CAMERA}/semantic", "SegmentationImage")
    assert np.array_equal(rgb[0], obs["rgb"])
    assert np.allclose(depth[0], obs["depth"][..., 0])
    assert semantic[0].shape == (32, 32) and semantic[0].max() > 0
    rewards = rec.scalars("scalars/reward")
    assert rec.scalars("scalars/return")[steps] == pytest.approx(result["return"])
    assert sum(rewards.values()) == pytest.approx(result["return"])
    measures = rec.series("measures")
    assert measures["success"][steps] == result["success"] == 1.0
    assert measures["spl"][steps] == pytest.approx(result["spl"])
    assert rec.texts("agent/action")[steps].startswith("stop")  # the oracle ends with stop
    # The agent transform follows the episode: the last translation is where the agent stopped.
    last = rec["world/agent"].at("Transform3D:translation")[steps][0]
    assert np.allclose(last[:2], env_final_xy(env, steps), atol=1e-5)


def env_final_xy(env, steps):
    env.reset(seed=3)
    for _ in range(steps):
        env.step(env.oracle_action())
    return env.agent.pose[:2]


class ExactMatchMemory(Memory):
    """Stores each step's feature in slot t; reads with weight 1 on the slot holding exactly the
    current feature (uniform over nothing else: 0 when no slot matches)."""

    def __init__(self, input_dim, slots):
        super().__init__(input_dim, MemoryConfig(name="exact"))
        self.output_dim = input_dim
        self.slots = slots
        self._weights = None

    def initial_state(self, batch, device=None):
        return TensorDict({"keys": torch.zeros(batch, self.slots, self.input_dim), "step": torch.full((batch, self.slots), -1),
                           "count": torch.zeros(batch, dtype=torch.long)}, batch_size=[batch], device=device)

    def update(self, step, state):
        feat = step["feat"]
        keys, written = state["keys"], state["step"]
        match = ((keys - feat[:, None]).abs().sum(-1) == 0) & (written >= 0)
        weights = match.float() / match.float().sum(-1, keepdim=True).clamp(min=1)
        read = (weights[..., None] * keys).sum(1)
        rows = torch.arange(feat.shape[0])
        slot = state["count"] % self.slots
        keys, written = keys.clone(), written.clone()
        keys[rows, slot], written[rows, slot] = feat, state["count"]
        self._weights = weights
        return read, TensorDict({"keys": keys, "step": written, "count": state["count"] + 1}, batch_size=state.batch_size)

    def introspect(self, state):
        return {"weights": self._weights, "slot_step": state["step"]}


class ScriptedMemoryPolicy:
    """Oracle actions; features from a fixed script fed through a memory, introspected each step."""

    name = "scripted-memory"

    def __init__(self, memory, features):
        self.memory, self.features = memory, features

    def reset(self, env):
        self.state, self.t = self.memory.initial_state(1), 0

    def act(self, obs, env):
        feat = self.features[self.t % len(self.features)][None]
        _, self.state = self.memory({"feat": feat}, self.state)
        report = check_introspection(self.memory.introspect(self.state), batch=1)
        self.t += 1
        return PolicyOutput(int(env.oracle_action()), value=float(self.t),
                            memory={k: v[0].numpy() for k, v in report.items()})


def test_memory_weights_peak_on_the_matching_slot(tmp_path):
    rng = np.random.default_rng(0)
    patterns = torch.as_tensor(rng.normal(size=(6, 8)), dtype=torch.float32)
    script = [0, 1, 2, 3, 4, 5, 2, 4, 0]  # steps 6, 7, 8 repeat what steps 2, 4, 0 saw
    features = patterns[script]
    memory = ExactMatchMemory(8, slots=16)
    env = small_env(max_steps=len(script))
    result = record_episode(env, ScriptedMemoryPolicy(memory, features), tmp_path / "mem.rrd", seed=1)
    assert result["length"] >= 9  # truncated at max_steps unless the oracle stops earlier
    rec = Recording(tmp_path / "mem.rrd")
    weights = rec.bar_charts("memory/weights")
    slot_steps = rec.bar_charts("memory/slot_step")
    assert sorted(weights) == list(range(len(script)))  # logged at the step of the observation read
    for step, earlier in [(6, 2), (7, 4), (8, 0)]:
        peak = int(np.argmax(weights[step]))
        assert weights[step][peak] == pytest.approx(1.0)
        assert slot_steps[step][peak] == earlier
        assert rec.scalars("memory/peak_step")[step] == earlier
    assert all(weights[s].sum() == 0 for s in range(6))  # nothing seen before: no read weight
    assert rec.scalars("scalars/value")[0] == 1.0


def test_trxl_agent_introspection_is_recorded(tmp_path):
    from embodied.agents import build_agent
    from embodied.viewer.recording import AgentPolicy

    env = small_env(max_steps=6)
    torch.manual_seed(0)
    agent = build_agent(env.observation_space, env.action_space, memory="trxl",
                        memory_options={"memory_length": 4, "layers": 1, "heads": 2, "dim": 32, "ff_dim": 32},
                        cnn_channels=[8, 8], image_dim=32, hidden=32)
    result = record_episode(env, AgentPolicy(agent, deterministic=True), tmp_path / "trxl.rrd", seed=0)
    rec = Recording(tmp_path / "trxl.rrd")
    weights = rec.bar_charts("memory/weights")
    slot_steps = rec.bar_charts("memory/slot_step")
    assert len(weights) == result["length"]
    for step, w in weights.items():
        assert w.shape == (4,) and (w >= 0).all() and w.sum() <= 1 + 1e-5
        written = slot_steps[step]
        assert written[-1] == step  # the newest slot holds the step just read
        assert (w[written < 0] == 0).all()
    assert len(rec.scalars("scalars/value")) == result["length"]


def test_gru_reports_no_slots():
    from embodied.memory import build_memory

    memory = build_memory("gru", 8)
    state = memory.initial_state(2)
    _, state = memory({"feat": torch.zeros(2, 8)}, state)
    assert memory.introspect(state) == {}


def test_check_introspection_rejects_bad_reports():
    good = {"weights": torch.tensor([[0.5, 0.5]]), "slot_step": torch.tensor([[0, 1]])}
    assert check_introspection(good, batch=1) is not None
    with pytest.raises(ValueError, match="slot_step"):
        check_introspection({"weights": good["weights"]}, batch=1)
    with pytest.raises(ValueError, match="sum to <= 1"):
        check_introspection({**good, "weights": torch.tensor([[0.9, 0.9]])}, batch=1)
    with pytest.raises(ValueError, match="slot_place"):
        check_introspection({**good, "slot_place": torch.zeros(1, 3)}, batch=1)


def test_video_has_one_frame_per_step(oracle_recording, tmp_path):
    import imageio.v2 as imageio

    from embodied.viewer.video import recording_frames, recording_to_video

    _, result, rec = oracle_recording
    frames = recording_frames(rec.path, height=128)
    path = recording_to_video(rec.path, tmp_path / "episode.mp4", height=128)
    video = imageio.mimread(path, memtest=False)
    assert len(video) == len(frames) == result["length"] + 1
    assert video[0].shape[:2] == frames[0].shape[:2]
    assert frames[0].shape[1] == 3 * 128  # rgb | depth | semantic, 32 px upscaled 4x
    # The overlay band under the views changes as the text (step, reward) changes.
    band0, band1 = frames[0][128:], frames[1][128:]
    assert band0.std() > 0 and not np.array_equal(band0, band1)


def test_bad_inputs_fail_clearly(tmp_path):
    from embodied.viewer.recording import EpisodeRecorder
    from embodied.viewer.serve import WebViewer

    with pytest.raises(ValueError, match=".rrd"):
        EpisodeRecorder(tmp_path / "episode.mp4")
    with pytest.raises(ValueError, match="extra_sensors"):
        EpisodeRecorder(tmp_path / "e.rrd", extra_sensors=("lidar",))
    with pytest.raises(ValueError, match="no such recording"):
        Recording(tmp_path / "missing.rrd")
    with pytest.raises(ValueError, match="no such recording"):
        WebViewer(tmp_path / "missing.rrd")


@pytest.mark.slow
def test_cli_record_and_video(tmp_path):
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "record", "task=nav/objectnav", "agent=random",
                        "episodes=2", f"out={tmp_path}", "task.width=24", "task.height=24", "task.max_steps=8",
                        "video=true", "quiet=true"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_000.mp4", "episode_000.rrd",
                                                          "episode_001.mp4", "episode_001.rrd"]
    rec = Recording(tmp_path / "episode_001.rrd")
    assert 1 <= rec.rows("agent/action") == rec.rows("text/log") - 1 <= 8  # random: may stop early
    assert "find a" in rec.texts("text/instruction")[0]
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "video", str(tmp_path / "episode_000.rrd"),
                        "--out", str(tmp_path / "v.mp4")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (tmp_path / "v.mp4").stat().st_size > 1000, r.stderr
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "record", "agent=random", "episodes=0", f"out={tmp_path}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "episodes" in r.stderr


def test_bench_record_reports_costs(monkeypatch):
    from embodied.viewer import bench

    report = bench.bench_record(size=16, steps=20, repeats=1, scenes="procedural")
    configs = {r["config"]: r for r in report["runs"]}
    assert set(configs) == {"baseline", "record", "record+semantic", "record inline"}
    assert configs["baseline"]["relative"] == 1.0
    assert configs["record"]["kib_per_step"] > 0
    # Same recording whichever process writes it.
    assert configs["record"]["kib_per_step"] == pytest.approx(configs["record inline"]["kib_per_step"], rel=0.05)
    json.dumps(report)


def test_manipulation_recording_holds_cameras_points_and_keyframes(tmp_path):
    pytest.importorskip("pybullet")
    from embodied.viewer.video import recording_frames

    env = make_env({"name": "memorybench/put_block_back", "width": 32, "height": 32})
    result = record_episode(env, OraclePolicy(), tmp_path / "mb.rrd", seed=0)
    rec = Recording(tmp_path / "mb.rrd")
    steps = result["length"]
    assert result["success"] == 1.0 and 8 <= steps <= 25
    for camera in ("front", "left_shoulder", "right_shoulder", "wrist"):
        assert sorted(rec[f"cameras/{camera}/rgb"].steps) == list(range(steps + 1)), camera
    first_obs, _ = env.reset(seed=0)
    assert np.array_equal(rec.images("cameras/front/rgb")[0], first_obs["front_rgb"])
    # Predicted = the action's target; executed = where the gripper went: the expert reaches its targets.
    predicted = rec["world/keyframe/predicted"].at("Transform3D:translation")
    errors = rec.scalars("scalars/keyframe_error")
    assert sorted(predicted) == sorted(errors) == list(range(1, steps + 1))
    assert max(errors.values()) < 0.02
    gripper = rec["world/gripper"].at("Transform3D:translation")
    assert np.allclose(gripper[0][0], first_obs["proprio"][:3], atol=1e-6)
    from embodied.tasks.memorybench import WORKSPACE

    points = np.asarray(rec["world/points"].at("Points3D:positions")[steps])
    assert len(points) > 100 and np.all(points >= np.array(WORKSPACE[0]) - 1e-6) and np.all(points <= np.array(WORKSPACE[1]) + 1e-6)
    assert rec.texts("agent/action")[1].startswith("keyframe to")
    assert len(recording_frames(tmp_path / "mb.rrd", height=64)) == steps + 1


def _explored_rows(env, path, flush_every):
    from embodied.viewer.recording import EpisodeRecorder

    obs, info = env.reset(seed=5)
    policy = OraclePolicy()
    policy.reset(env)
    with EpisodeRecorder(path, extra_sensors=(), flush_every=flush_every) as recorder:
        recorder.start(env, obs, info)
        done = False
        while not done:
            action = policy.act(obs, env).action
            obs, reward, terminated, truncated, info = env.step(action)
            recorder.step(action, obs, reward, info)
            done = terminated or truncated
    rows = Recording(path)["map/explored"].at("Points2D:positions")
    return {step: np.asarray(v[0] if v and v[0] is not None else np.zeros((0, 2))).reshape(-1, 2)
            for step, v in rows.items()}


def test_explored_cells_are_new_per_step_and_independent_of_batching(tmp_path):
    env = small_env()
    per_step = _explored_rows(env, tmp_path / "a.rrd", flush_every=1)
    batched = _explored_rows(env, tmp_path / "b.rrd", flush_every=64)
    assert per_step.keys() == batched.keys() and len(per_step) >= 3
    for step in per_step:
        assert np.allclose(per_step[step], batched[step]), step
    every = np.concatenate(list(per_step.values()))
    assert len(per_step[0]) > 0  # the first view sees something
    assert len(np.unique(every.round(3), axis=0)) == len(every)  # no cell reported twice
