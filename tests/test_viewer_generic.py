"""Generic recordings (Ballet, Room Ballet, fast-mapping, any Dict-observation env): read back with
rerun's own reader, the text channel and action names in words, memory introspection, MP4 export."""
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install -e '.[viewer]')")

from embodied.tasks import TaskConfig, make_env  # noqa: E402
from embodied.tasks.ballet import DANCE_NAMES  # noqa: E402
from embodied.viewer.recording import OraclePolicy, PolicyOutput, record_episode  # noqa: E402
from embodied.viewer.rrd import Recording  # noqa: E402


def legend_labels(rec, entity):
    context = next(v for v in rec[entity].components["AnnotationContext:context"] if v)  # the static row
    while isinstance(context[0], list):  # a batch of one
        context = context[0]
    return {c["class_id"]: c["class_description"]["info"]["label"] for c in context}


@pytest.fixture(scope="module")
def ballet_recording(tmp_path_factory):
    env = make_env({"name": "ballet/2_delay16"})
    path = tmp_path_factory.mktemp("ballet") / "episode.rrd"
    result = record_episode(env, OraclePolicy(), path, seed=4)
    return env, result, Recording(path)


def test_ballet_recording_holds_one_row_per_step(ballet_recording):
    env, result, rec = ballet_recording
    steps = result["length"]
    assert steps == env.show_steps + 1  # the oracle answers at the first question step
    for entity in ["cameras/semantic", "text/log", "measures"]:
        assert sorted(s for s in rec[entity].steps if s is not None) == list(range(steps + 1)), entity
    for entity in ["agent/action", "scalars/reward", "scalars/return"]:
        assert sorted(rec[entity].steps) == list(range(1, steps + 1)), entity
    assert not any(e.startswith("/world/") or e.startswith("/map/") for e in rec.entities)  # not a nav recording
    obs, _ = env.reset(seed=4)  # same seed: same first observation
    semantic = rec.images("cameras/semantic", "SegmentationImage")
    assert np.array_equal(semantic[0], obs["semantic"]) and semantic[0].shape == (11, 11)
    labels = legend_labels(rec, "cameras/semantic")
    assert [labels[i] for i in range(len(env.classes))] == list(env.classes) and labels[1] == "wall"
    measures = rec.series("measures")
    assert measures["success"][steps] == result["success"] == 1.0 and measures["success"][steps - 1] == 0.0
    assert rec.scalars("scalars/return")[steps] == pytest.approx(result["return"])


def test_ballet_text_and_actions_are_words(ballet_recording):
    env, result, rec = ballet_recording
    steps = result["length"]
    instruction = rec.texts("text/instruction")
    assert sorted(instruction) == [0, env.show_steps]  # logged when it changes
    assert instruction[0] == "watch"
    dance = DANCE_NAMES[env.instructed_dance]
    assert instruction[env.show_steps] == f"go to the dancer that did {dance}"
    log = rec.texts("text/log")
    assert "text: watch" in log[1] and dance in log[steps]
    actions = rec.texts("agent/action")
    slot = int(env.slots[env.target])
    assert actions[steps] == f"pick slot {slot} ({slot + 1})"
    assert all(actions[s] == "wait (0)" for s in range(1, steps))
    assert env.action_names[1 + slot] == f"pick slot {slot}" and len(env.action_names) == env.action_space.n


def test_ballet_video_has_one_frame_per_step(ballet_recording, tmp_path):
    import imageio.v2 as imageio

    from embodied.viewer.video import recording_frames, recording_to_video

    _, result, rec = ballet_recording
    frames = recording_frames(rec.path, height=44)
    path = recording_to_video(rec.path, tmp_path / "episode.mp4", height=44)
    video = imageio.mimread(path, memtest=False)
    assert len(video) == len(frames) == result["length"] + 1
    assert video[0].shape[:2] == tuple(d + d % 2 for d in frames[0].shape[:2])  # padded to even sizes
    # The 11x11 grid upscaled 4x, in the class palette: the wall ring is its class colour.
    from embodied.viewer.recording import class_colors

    assert np.array_equal(frames[0][0, 0], class_colors(2)[1]) and np.array_equal(frames[0][22, 22], [0, 0, 0])
    band0, band_last = frames[0][44:], frames[-1][44:]
    assert band0.std() > 0 and not np.array_equal(band0, band_last)


def test_fastmap_text_log_names_the_lifted_object(tmp_path):
    task = {"name": "fastmap/architecture_comparison/fast_map_three_objs", "scenes": "symbolic", "sensors": ["rgb"],
            "max_steps": 90}
    env = make_env(task)
    result = record_episode(env, OraclePolicy(), tmp_path / "fm.rrd", seed=0)
    # Replay the same episode: which object the oracle holds after each lift.
    env.reset(seed=0)
    named = {}
    for t in range(1, result["length"] + 1):
        action = env.oracle_action()
        env.step(action)
        if env.action_names[action] == "lift" and env.phase == "discovery" and env.held >= 0:
            named[t] = env.objects[env.held].name
    assert len(set(named.values())) == 3  # every object was lifted and named
    rec = Recording(tmp_path / "fm.rrd")
    log, instruction, actions = rec.texts("text/log"), rec.texts("text/instruction"), rec.texts("agent/action")
    holding = rec.series("obs/holding")["holding"]
    for t, name in named.items():
        assert actions[t] == "lift (6)" and f"text: this is a {name}" in log[t]
        assert instruction[t] == f"this is a {name}" and holding[t] == 1.0
    assert instruction[0] == "(no text)"  # nothing held, nothing said
    target = env.objects[env.target].name
    assert instruction[max(instruction)] == f"lift the {target}"
    assert len(rec.images("cameras/rgb")) == result["length"] + 1


def test_room_ballet_grid_records(tmp_path):
    env = make_env({"name": "room_ballet/budget_grid"})
    result = record_episode(env, OraclePolicy(), tmp_path / "rb.rrd", seed=2)
    rec = Recording(tmp_path / "rb.rrd")
    steps = result["length"]
    assert steps == env.walk_steps + 1 and result["success"] == 1.0
    semantic = rec.images("cameras/semantic", "SegmentationImage")
    assert sorted(semantic) == list(range(steps + 1)) and semantic[0].shape == (9, 9)
    labels = legend_labels(rec, "cameras/semantic")
    assert labels[1] == "room 0 wall" and labels[len(env.classes) - 1].endswith("dancer")
    places = rec.series("obs/place")["place"]
    assert [places[t] for t in range(env.walk_steps)] == env.places.tolist()
    kind, value = env.question
    asked = f"in which room was dance {DANCE_NAMES[value]}?" if kind == "dance" else f"which dance was in room {value}?"
    assert rec.texts("text/instruction")[env.walk_steps] == f"{env.task_type}: {asked}"
    assert rec.texts("text/instruction")[0] == f"{env.task_type}: watch"  # grid mode: the walk is seen, not told
    assert rec.texts("agent/action")[steps] == f"{env.action_names[env.answer]} ({env.answer})"
    assert env.action_names[env.answer].startswith("answer ")


class ToyEnv(gym.Env):
    """A Dict-observation env without the viewer protocol: rgb, depth, tokens, a vector."""

    def __init__(self):
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (6, 8, 3), np.uint8), "depth": spaces.Box(0.0, 5.0, (6, 8, 1), np.float32),
            "text": spaces.Box(0, 9, (2,), np.int64), "vec": spaces.Box(-1.0, 1.0, (3,), np.float32)})
        self.action_space = spaces.Discrete(3)

    def _obs(self):
        t = self.t
        return {"rgb": np.full((6, 8, 3), 10 * t, np.uint8), "depth": np.full((6, 8, 1), 0.5 * t, np.float32),
                "text": np.array([t // 2, 0]), "vec": np.array([t, -t, 0.5], np.float32)}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {"success": 0.0}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), self.t >= 5, False, {"success": float(self.t >= 5)}


def test_fallback_words_images_and_vectors(tmp_path):
    env = ToyEnv()
    result = record_episode(env, lambda obs, env: env.t % 3, tmp_path / "toy.rrd", seed=0)
    rec = Recording(tmp_path / "toy.rrd")
    assert result["length"] == 5
    assert rec.texts("agent/action")[2] == "action 1 (1)"  # no action_names: "action i"
    assert rec.texts("text/instruction") == {0: "text ids 0 0", 2: "text ids 1 0", 4: "text ids 2 0"}
    assert np.allclose(rec.images("cameras/depth", "DepthImage")[4], 2.0)
    assert rec.images("cameras/rgb")[3][0, 0].tolist() == [30, 30, 30]
    vec = rec.series("obs/vec")
    assert sorted(vec) == ["vec[0]", "vec[1]", "vec[2]"] and vec["vec[1]"][5] == -5.0
    assert rec.scalars("scalars/return")[5] == pytest.approx(result["return"])


class ScriptedMemoryPolicy:
    """Action 0; a memory report whose read weight peaks on slot (t * 3) % 7, written at step 10 + slot."""

    name = "scripted-memory"

    def reset(self, env):
        self.t = 0

    def act(self, obs, env):
        peak = (self.t * 3) % 7
        weights = np.full(7, 0.02, np.float32)
        weights[peak] = 0.88
        self.t += 1
        return PolicyOutput(0, value=0.5 * self.t, memory={"weights": weights, "slot_step": np.arange(10, 17)})


def test_memory_hook_weights_peak_on_the_given_slot(tmp_path):
    result = record_episode(ToyEnv(), ScriptedMemoryPolicy(), tmp_path / "mem.rrd", seed=0)
    rec = Recording(tmp_path / "mem.rrd")
    weights = rec.bar_charts("memory/weights")
    assert sorted(weights) == list(range(result["length"]))  # at the step of the observation read
    for step, w in weights.items():
        assert int(np.argmax(w)) == (step * 3) % 7
        assert rec.scalars("memory/peak_slot")[step] == (step * 3) % 7
        assert rec.scalars("memory/peak_step")[step] == 10 + (step * 3) % 7
    assert rec.scalars("scalars/value")[2] == 1.5


@pytest.mark.slow
def test_cli_record_and_video_of_a_ballet_task(tmp_path):
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "record", "task=ballet/2_delay16", "agent=random",
                        "episodes=1", f"out={tmp_path}", "video=true", "quiet=true"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_000.mp4", "episode_000.rrd"]
    rec = Recording(tmp_path / "episode_000.rrd")
    assert rec.texts("text/instruction")[0] == "watch"
    assert all(a.startswith(("wait", "pick slot")) for a in rec.texts("agent/action").values())
    r = subprocess.run([sys.executable, "-m", "embodied.cli", "video", str(tmp_path / "episode_000.rrd"),
                        "--out", str(tmp_path / "v.mp4")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (tmp_path / "v.mp4").stat().st_size > 1000, r.stderr


def test_eval_record_true_records_the_evaluated_episodes(tmp_path):
    from embodied.config import compose
    from embodied.eval.runner import evaluate
    from embodied.viewer.record import record_eval

    out = tmp_path / "eval.json"
    cfg = compose("eval", ["task=ballet/2_delay16", "agent=oracle", "episodes=3", "num_envs=3", "num_workers=0",
                           "quiet=true", "seed=11", "record=true", "record_episodes=2", f"out={out}"])
    report = record_eval(cfg, evaluate(cfg))
    paths = report["results"][0]["recordings"]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["episode_000.rrd", "episode_001.rrd"]
    assert json.loads(out.read_text())["results"][0]["recordings"] == paths
    for i, path in enumerate(paths):
        # Recording i is eval env i's first episode: same seed, same instructed dance, same length.
        env = make_env(TaskConfig(name="ballet/2_delay16"))
        env.reset(seed=11 + i)
        steps = 0
        done = False
        while not done:
            _, _, te, tr, _ = env.step(env.oracle_action())
            steps += 1
            done = te or tr
        rec = Recording(path)
        assert max(s for s in rec["agent/action"].steps if s is not None) == steps
        assert DANCE_NAMES[env.instructed_dance] in " ".join(rec.texts("text/instruction").values())
