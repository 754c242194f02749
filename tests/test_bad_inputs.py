"""Bad input files and env misuse end in one-line errors naming the file or key (issue 20 §3):
scenes, demonstration files, recordings, checkpoints, non-finite observations, steps outside an
episode, and memory/agent options checked before any env worker starts."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from embodied.config import ConfigError, InputError
from embodied.tasks import TASKS, make_env
from embodied.tasks.registry import EpisodeOverError, ObservationError, TaskEnv, check_finite
from embodied.world import scenes_root
from embodied.world.spec import SceneFormatError

SMALL_NAV = {"name": "nav/pointnav", "width": 16, "height": 16, "sensors": ["rgb", "depth"]}


def one_line(err, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


def apartment() -> dict:
    return json.loads((scenes_root() / "apartments" / "apt_0000.json").read_text())


# --- scenes ------------------------------------------------------------------------------------------

def _first(kind):
    return lambda d: next(i for i, it in enumerate(d["items"]) if it["kind"] == kind)


def _set_item(kind, key, value):
    def edit(d):
        d["items"][_first(kind)(d)][key] = value
    return edit


@pytest.mark.parametrize("edit,key", [
    (_set_item("object", "category", "zorgle"), "category: unknown object category 'zorgle'"),
    (lambda d: d.update(wall_height="abc"), "wall_height: str"),
    (lambda d: d["rooms"][0].update(polygon="x"), "rooms[0].polygon"),
    (_set_item("furniture", "position", 5), "position: int 5"),  # was accepted silently
    (_set_item("furniture", "size", [1.0, 2.0]), "size"),
    (lambda d: d.update(wall_height=float("nan")), "wall_height"),
    (lambda d: d.update(rooms=[]), "rooms: empty"),
    (lambda d: d["items"][0].update(colour=[1, 0, 0]), "colour: unknown field"),
], ids=["category", "type", "polygon", "position", "length", "nan", "no-rooms", "unknown-field"])
def test_a_bad_scene_file_names_the_file_and_field(tmp_path, edit, key):
    d = apartment()
    edit(d)
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(d))
    with pytest.raises(SceneFormatError) as err:
        make_env({**SMALL_NAV, "scenes": str(path)})
    one_line(err, str(path), key)


def test_meshes_without_floor_or_triangles_name_the_file(tmp_path):
    import trimesh

    box = tmp_path / "box.ply"  # a closed box: its floor has a lid 1 m above it
    trimesh.creation.box((2.0, 2.0, 1.0)).export(box)
    empty = tmp_path / "empty.ply"
    empty.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                     "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n")
    garbage = tmp_path / "garbage.glb"
    garbage.write_bytes(b"not a mesh" * 20)
    for path, what in ((box, "no navigable floor"), (empty, "holds no triangles"), (garbage, "cannot read mesh")):
        with pytest.raises(SceneFormatError) as err:
            make_env({**SMALL_NAV, "scenes": str(path)})
        one_line(err, str(path), what)


def test_scene_errors_in_env_workers_come_back_as_the_same_one_line_error():
    """`embodied train` builds envs in worker processes: an episode a scene cannot host (object goals in
    a raw mesh) fails at the first reset there, and must reach the trainer as the play error does."""
    from embodied.envs import make_vector_env

    mesh = scenes_root() / "apartments" / "apt_0000.glb"
    cfg = {"name": "nav/objectnav", "scenes": str(mesh), "width": 16, "height": 16, "sensors": ["depth"]}
    with pytest.raises(SceneFormatError) as err:  # in this process (as `embodied play`)
        make_env(cfg, seed=0)
    played = one_line(err, str(mesh), "object goals need a SceneSpec scene")
    with pytest.raises(SceneFormatError) as err:  # in a worker (as `embodied train`), not an EnvError
        make_vector_env(cfg, num_envs=1, num_workers=1, pin_workers=False)
    assert str(err.value) == played


def test_train_checks_the_scene_before_starting_env_workers(tmp_path):
    from embodied.config import compose
    from embodied.train.run import train

    d = apartment()
    _set_item("object", "category", "zorgle")(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))

    def no_workers(*args):
        raise AssertionError("env workers started before the scene was checked")

    cfg = compose("train", ["task=nav/pointnav", f"task.scenes={path}", "task.width=16", "task.height=16",
                            "memory.hidden=16", "agent.hidden=16", "quiet=true", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SceneFormatError) as err:
        train(cfg, env_factory=no_workers)
    one_line(err, str(path), "zorgle")


# --- demonstration files -----------------------------------------------------------------------------

def _raw_episode_file(path, meta=None, **arrays):
    """An .npz written around the writer, to make files it never writes."""
    meta = {"format": "embodied-episodes", "version": 1, "quantised": {}} if meta is None else meta
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def test_bad_episode_files_name_the_file_in_one_line(tmp_path):
    from embodied.tasks.episodes import episode_files, read_episodes, write_episodes

    episodes = [{"obs": {"depth": np.random.rand(4, 8, 8, 1).astype(np.float32)}, "actions": np.arange(4)}] * 3
    good = write_episodes(tmp_path / "demos.npz", episodes)
    assert len(read_episodes(good)) == 3
    data = good.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    names = ("truncated", "garbage", "bare", "pickled", "crc", "foreign_zip", "foreign_npz", "version", "rows",
             "episode_rows", "first", "unknown", "old")
    path = {n: bad / f"{n}.npz" for n in names}
    path["truncated"].write_bytes(data[: len(data) // 2])
    path["garbage"].write_bytes(b"\x80\x04junk" * 64)  # starts like a pickle: numpy would offer to unpickle it
    np.save(path["bare"], np.zeros(3))
    (bad / "bare.npz.npy").rename(path["bare"])
    step = {"first": np.array([True, False, False, False]), "obs/x": np.zeros(4)}
    _raw_episode_file(path["pickled"], actions=np.array([object()] * 4), **step)
    corrupt = bytearray(data)
    corrupt[200:260] = b"x" * 60
    path["crc"].write_bytes(bytes(corrupt))
    with zipfile.ZipFile(path["foreign_zip"], "w") as z:
        z.writestr("README.txt", "not episodes")
    np.savez(path["foreign_npz"], actions=np.zeros(4), **step)  # a demo shard without the format's meta
    _raw_episode_file(path["version"], {"format": "embodied-episodes", "version": 2}, actions=np.zeros(4), **step)
    _raw_episode_file(path["rows"], actions=np.zeros(4), first=step["first"], **{"obs/x": np.zeros(3)})
    _raw_episode_file(path["episode_rows"], actions=np.zeros(4), **step, **{"episode/seed": np.arange(2)})
    _raw_episode_file(path["first"], actions=np.zeros(4), first=np.zeros(4, bool), **{"obs/x": np.zeros(4)})
    _raw_episode_file(path["unknown"], actions=np.zeros(4), **step, **{"extra": np.zeros(4)})
    path["old"].write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))  # what h5py writes first
    expected = {"truncated": "not a .npz archive", "garbage": "not a .npz archive", "bare": "not a .npz archive",
                "pickled": "holds pickled (object) arrays", "crc": "not a readable .npz episode file",
                "foreign_zip": "not an episode file (no meta array", "foreign_npz": "not an episode file (no meta",
                "version": "episode format version 2; supported: 1", "rows": "obs/x has 3 rows; expected 4",
                "episode_rows": "episode/seed has 2 rows; expected 1 (episodes", "first": "first[0] must be True",
                "unknown": "unknown array extra", "old": "an HDF5 demo file, a format no longer read"}
    for name, p in path.items():
        with pytest.raises(InputError) as err:
            read_episodes(p)
        message = one_line(err, str(p), expected[name])
        assert "allow_pickle" not in message
    one_line(err, "embodied demos task=memorybench/<task>", "out=FILE.npz")  # the old format: how to regenerate
    with pytest.raises(InputError) as err:  # cheap check before a trainer starts: not a zip, or the old format
        episode_files(path["old"])
    one_line(err, str(path["old"]), "HDF5")
    with pytest.raises(InputError) as err:  # a directory of files: names the bad one
        read_episodes(bad)
    one_line(err, str(bad / "bare.npz"))
    with pytest.raises(InputError) as err:
        read_episodes(tmp_path / "missing.npz")
    one_line(err, str(tmp_path / "missing.npz"), "no .npz episode files")


# --- recordings --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from embodied.viewer import stream

    path = tmp_path_factory.mktemp("rrd") / "good.rrd"
    s = stream.open_stream(path, "good", writer="inline")
    for t in range(5):
        s.log("text/log", stream.text_log, f"step {t}", time=(t, t))
    s.close()
    return path


def test_truncated_or_foreign_recordings_fail_in_video_and_view_web(tmp_path, recording, monkeypatch):
    from embodied.viewer import serve
    from embodied.viewer.rrd import Recording, RecordingError
    from embodied.viewer.video import recording_to_video

    assert Recording(recording).texts("text/log")[4] == "step 4"
    data = recording.read_bytes()
    cases = {"half.rrd": data[: len(data) // 2], "tail.rrd": data[:-16], "garbage.rrd": b"hello" * 64,
             "empty.rrd": b""}
    # view --web used to serve these silently: it must refuse them before starting a server
    monkeypatch.setattr(serve.WebViewer, "start", lambda self, *a, **k: pytest.fail(f"served {self.paths}"))
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        for read in (lambda p: recording_to_video(p, tmp_path / "out.mp4"),
                     lambda p: serve.view([p], web=True, port=0)):
            with pytest.raises(RecordingError) as err:
                read(path)
            one_line(err, str(path))
    assert not (tmp_path / "out.mp4").exists()


# --- checkpoints -------------------------------------------------------------------------------------

def test_a_checkpoint_of_random_bytes_is_named_without_weights_only_advice(tmp_path):
    from embodied.loading import CheckpointError, load_checkpoint

    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = one_line(err, f"{path}: not a checkpoint file (unreadable: ")
    assert "weights_only" not in message and len(message) < 300


# --- observations and episodes -----------------------------------------------------------------------

def test_check_finite_names_the_key_and_ignores_overflowing_sums():
    with pytest.raises(ObservationError, match=r"^nav/x: observation 'depth' holds NaN$"):
        check_finite("nav/x", {"rgb": np.zeros((2, 2, 3), np.uint8), "depth": np.array([[0.5, np.nan]], np.float32)})
    with pytest.raises(ObservationError, match="'pose' holds inf"):
        check_finite("nav/x", {"pose": np.array([0.0, -np.inf], np.float32)})
    with np.errstate(over="ignore"):  # finite values whose float32 sum overflows are no error
        check_finite("t", {"big": np.full((16, 16), 3e38, np.float32), "half": np.full(8, 6e4, np.float16),
                           "ids": np.array([1, 2])})


def test_a_nan_observation_from_step_or_reset_names_the_task_and_key():
    env = make_env(SMALL_NAV)
    obs, _ = env.reset(seed=0)
    bad = {**obs, "depth": np.full_like(obs["depth"], np.nan)}
    env._observe = lambda: bad
    with pytest.raises(ObservationError) as err:
        env.step(1)
    one_line(err, "nav/pointnav: observation 'depth' holds NaN")

    mb = make_env({"name": "memorybench/put_block_back", "cameras": [], "width": 16, "height": 16})
    try:
        mb.scene.proprio = lambda: np.full(8, np.inf, np.float32)
        with pytest.raises(ObservationError) as err:
            mb.reset(seed=0)
        one_line(err, "memorybench/put_block_back: observation 'proprio' holds inf")
    finally:
        mb.close()


def test_every_registered_task_goes_through_the_checked_base():
    assert TASKS and all(issubclass(cls, TaskEnv) for cls in TASKS.values())
    with pytest.raises(TypeError, match="TaskEnv"):
        from embodied.tasks.registry import register_task

        register_task("test/not_a_task_env")(type("Plain", (), {}))


FAMILIES = [{**SMALL_NAV, "max_steps": 3}, {"name": "ballet/2_delay16"}, {"name": "room_ballet/budget"},
            {"name": "fastmap/architecture_comparison/fast_map_three_objs", "scenes": "symbolic", "sensors": ["rgb"]},
            {"name": "memorybench/put_block_back", "cameras": [], "width": 16, "height": 16, "max_keyframes": 1}]


@pytest.mark.parametrize("cfg", FAMILIES, ids=[c["name"].split("/")[0] for c in FAMILIES])
def test_step_outside_an_episode_raises_one_line(cfg):
    env = make_env(cfg)
    try:
        with pytest.raises(EpisodeOverError) as err:
            env.step(env.action_space.sample())
        one_line(err, f"{cfg['name']}: step() before reset()")
        env.reset(seed=0)
        for _ in range(500):
            _, _, terminated, truncated, _ = env.step(env.oracle_action() if hasattr(env, "oracle_action")
                                                      else env.action_space.sample())
            if terminated or truncated:
                break
        assert terminated or truncated
        with pytest.raises(EpisodeOverError) as err:
            env.step(env.action_space.sample())
        one_line(err, f"{cfg['name']}: step() after the episode ended")
        env.reset(seed=1)
        env.step(env.oracle_action() if hasattr(env, "oracle_action") else env.action_space.sample())  # a new episode steps
    finally:
        env.close()


# --- memory and agent options ------------------------------------------------------------------------

@pytest.mark.parametrize("task", [["task.name=toy/corridor"], ["task=nav/pointnav", "task.width=16", "task.height=16"]],
                         ids=["toy", "nav"])
def test_bad_memory_options_fail_before_env_workers_start(tmp_path, task):
    from embodied.config import compose
    from embodied.train.run import train

    def no_workers(*args):
        raise AssertionError("env workers started before the memory options were checked")

    cfg = compose("train", [*task, "memory=gru", "memory.layers=0", "quiet=true", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError) as err:
        train(cfg, env_factory=no_workers)
    one_line(err, "layers=0")


@pytest.mark.parametrize("key, value, allowed", [("height", 64.5, "an integer"), ("width", "64", "an integer"),
                                                 ("n_rooms", 3.5, "an integer or null"), ("max_steps", True, "an integer"),
                                                 ("hfov", "wide", "a number"), ("sensors", "rgb", "a list")])
def test_task_config_values_of_the_wrong_type_are_one_line_errors(key, value, allowed):
    # A dict or a YAML read without its schema (eval suites, Python callers) arrives unchecked:
    # `task.height=64.5` reached gymnasium's Box with a float size before this check.
    from embodied.config import ConfigError
    from embodied.tasks import NavConfig

    with pytest.raises(ConfigError, match=rf"^task\.{key}: .*; allowed: {allowed}$"):
        NavConfig(**{key: value}).validate()
    cfg = NavConfig(hfov=90, success_distance=1).validate()  # ints where floats are declared are fine
    assert isinstance(cfg.hfov, float) and cfg.success_distance == 1.0
