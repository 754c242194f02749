"""One schema per task family (embodied/tasks/config.py), per memory (its options dataclass); the YAMLs of
configs/task and configs/memory compose with them through their defaults lists and hold only what differs."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from embodied.config import ConfigError, compose, group_options, schema_fields
from embodied.memory import MEMORIES
from embodied.tasks import TASKS, TaskConfig, make_env
from embodied.tasks.config import (BalletConfig, BodyConfig, CameraConfig, FastMapConfig, GoatConfig, HouseholdConfig,
                                   ImageConfig, NavConfig, RenderConfig, RoomBalletConfig, schema_of, task_schemas)
from embodied.tasks.fastmap import LEVELS, level_max_steps
from embodied.tasks.external import GymConfig
from embodied.tasks.memorybench import MemoryBenchConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASK_YAMLS = group_options("task")
SCHEMAS = {"nav": NavConfig, "ballet": BalletConfig, "room_ballet": RoomBalletConfig, "fastmap": FastMapConfig,
           "memorybench": MemoryBenchConfig, "household": HouseholdConfig, "goat": GoatConfig, "gym": GymConfig}
SYMBOLIC = ("ballet", "room_ballet", "fastmap", "household")  # cheap to reset (fastmap: in symbolic mode)


def defaults_of(cls) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


def test_every_registered_task_has_its_family_schema():
    assert task_schemas() == SCHEMAS
    for name, cls in TASKS.items():
        # A family is named by its schema; its tasks' names start with it, except nav/goat (a nav task
        # with a schema of its own).
        family = cls.config_class.family
        assert cls.config_class is SCHEMAS[family], name
        assert name.split("/")[0] == family or (name, family) == ("nav/goat", "goat"), name


def test_shared_keys_are_declared_once_in_the_bases_and_every_key_is_documented():
    # The image size is width/height in every family (MemoryBench too), declared in ImageConfig.
    for schema in SCHEMAS.values():  # a gym env's images are its own
        assert issubclass(schema, ImageConfig) is (schema is not GymConfig)
        assert "image_size" not in defaults_of(schema)
    assert issubclass(NavConfig, RenderConfig) and issubclass(NavConfig, BodyConfig)
    assert issubclass(RoomBalletConfig, CameraConfig) and issubclass(RoomBalletConfig, BodyConfig)
    assert issubclass(HouseholdConfig, RenderConfig) and issubclass(HouseholdConfig, BodyConfig)  # its apartment world
    assert issubclass(FastMapConfig, RenderConfig) and not issubclass(FastMapConfig, BodyConfig)
    assert set(defaults_of(BalletConfig)) == {"name", "width", "height", "rgb"}  # only what ballet reads
    shared = {"width", "height", "hfov", "camera_height", "sensors", "max_depth", "tilt_angle", "agent_radius",
              "agent_height"}
    bases = (ImageConfig, CameraConfig, RenderConfig, BodyConfig)
    for schema in SCHEMAS.values():
        docs: dict = {}
        for cls in reversed(schema.__mro__):
            if dataclasses.is_dataclass(cls):
                path = inspect.getsourcefile(cls).split("/embodied/")[-1]
                docs.update({k: v for k, v in schema_fields(path, cls.__name__).items() if v[1] or k not in docs})
        for key in defaults_of(schema):
            assert docs.get(key, ("", ""))[1], f"{schema.__name__}.{key} has no docstring"
            if key in shared:  # declared by a base (a family may only change its default)
                assert any(key in {f.name for f in dataclasses.fields(b)} for b in bases if issubclass(schema, b))


@pytest.mark.parametrize("option", TASK_YAMLS)
def test_task_yaml_holds_only_what_differs_from_its_schema(option):
    raw = yaml.safe_load((CONFIGS / "task" / f"{option}.yaml").read_text())
    schema = schema_of(raw["name"])
    assert raw.pop("defaults") == [f"/task/{schema.family}_schema@_here_", "_self_"]
    defaults = defaults_of(schema)
    for key, value in raw.items():
        assert key in defaults, f"{option}.yaml: {key} is not a {schema.family} key"
        assert key == "name" or value != defaults[key], f"{option}.yaml: {key}: {value!r} copies the schema default"
    if schema is FastMapConfig and "max_steps" in raw:  # a level's budgets live in Python (LEVELS)
        assert raw["max_steps"] != level_max_steps(LEVELS[raw["name"].removeprefix("fastmap/")])
    if "/cpu/" not in f"/{option}" and schema is not GymConfig:  # gym/*: names are gymnasium env ids
        assert raw["name"] == option  # configs/task/fastmap/cpu/* pick a level and scenes=symbolic


@pytest.fixture(scope="module")
def composed():
    """Every task YAML composed with its defaults list, in one composition (0.5 s each on its own, on a
    busy 2-core machine): configs/play.yaml takes each as an extra copy of the task group."""
    cfg = compose("play", [f"+task@every.t{i}={option}" for i, option in enumerate(TASK_YAMLS)])
    return {option: cfg.every[f"t{i}"] for i, option in enumerate(TASK_YAMLS)}


def test_every_task_yaml_composes_typed_and_builds_its_env(composed):
    from omegaconf import OmegaConf

    assert len(composed) >= 50
    for option in ("nav/multigoal", "fastmap/cpu/heldout_test_objs"):  # as `embodied train task=<option>` has it
        assert compose("train", [f"task={option}"]).task == composed[option]
    for option, node in composed.items():
        schema = schema_of(node.name)
        assert OmegaConf.get_type(node) is schema, option
        env = make_env(node)
        try:
            assert type(env.cfg) is schema and env.task_name == node.name
            family = schema.family
            if family in SYMBOLIC and (family != "fastmap" or node.scenes == "symbolic"):
                obs, _ = env.reset(seed=0)
                assert env.observation_space.contains(obs), option
        finally:
            env.close()


def test_fastmap_max_steps_comes_from_the_level_unless_overridden(composed):
    node = composed["fastmap/with_distractors/eval_fast_map_three_objs_ten_distractor"]
    env = make_env(node)
    assert env.max_episode_steps == level_max_steps(env.level) == 3 * 20 + 10 * 20 + 30
    short = make_env(compose("train", ["task=fastmap/cpu/fast_map_three_objs", "task.max_steps=5",
                                       "task.vocab_size=150"]).task)
    short.reset(seed=0)
    assert short.max_episode_steps == 5 and len(short.names_pool) == 150
    for _ in range(5):
        *_, truncated, _ = short.step(short.oracle_action())
    assert truncated


@pytest.mark.parametrize("option, key", [("ballet/4_delay16", "n_rooms"), ("room_ballet/budget", "sensors"),
                                         ("fastmap/cpu/fast_map_three_objs", "goal_pool"),
                                         ("memorybench/put_block_back", "hfov"), ("nav/pointnav", "vocab_size")])
def test_a_key_foreign_to_the_family_is_one_line_naming_it_and_the_family_keys(composed, option, key):
    family = option.split("/")[0]
    allowed = ", ".join(f"task.{k}" for k in sorted(defaults_of(SCHEMAS[family])))
    with pytest.raises(ConfigError) as err:
        compose("train", [f"task={option}", f"task.{key}=3"])
    assert str(err.value) == f"task.{key}: unknown key; allowed: {allowed}"
    with pytest.raises(ConfigError) as err:  # a dict (eval suites, Python): the same, from the schema
        make_env({"name": composed[option].name, key: 3})
    assert str(err.value).startswith(f"task.{key}: not a key of {family} tasks; allowed: ") and "\n" not in str(err.value)


def test_values_are_checked_by_the_schema_that_owns_the_key(capsys, composed):
    from omegaconf import OmegaConf

    from embodied.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "task=ballet/4_delay16", "task.width=64.5"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and lines == ["embodied train: error: task.width: '64.5'; allowed: an integer"]
    for command in ("record", "eval"):
        with pytest.raises(ConfigError, match=r"^task.rgb: 'maybe'; allowed: true, false$"):
            compose(command, ["task=ballet/4_delay16", "task.rgb=maybe"])
    with pytest.raises(ConfigError, match=r"^task.apartments: '1.5'; allowed: an integer or null$"):
        compose("play", ["task=room_ballet/budget", "task.apartments=1.5"])
    with pytest.raises(ConfigError, match=r"^task.world: 'maze'; allowed: grid, apartment$"):
        make_env(compose("train", ["task=room_ballet/budget", "task.world=maze"]).task)
    for option, keys, match in [
            ("ballet/4_delay16", {"width": 8}, r"^task.width: 8 out of range; allowed: 16..1024$"),
            ("room_ballet/budget", {"rgb": True}, r"^task.rgb: true needs task.world=apartment$"),
            ("fastmap/cpu/fast_map_three_objs", {"vocab_size": 10}, r"^task.vocab_size: 10; allowed: 100..400$"),
            ("fastmap/cpu/fast_map_three_objs", {"sensors": ["rgb", "depth"]}, r"^task.sensors: .*symbolic: \[rgb\]$"),
            ("memorybench/put_block_back", {"height": 64}, r"^task.height: 64; allowed: 128 \(= task.width\)"),
            ("nav/objectnav", {"goal_pool": 4}, r"^task.goal_pool: 4 for nav/objectnav; allowed: 0")]:
        with pytest.raises(ConfigError, match=match):
            make_env({**OmegaConf.to_container(composed[option]), **keys})


def test_the_old_spellings_say_where_the_key_went():
    with pytest.raises(ConfigError, match=r"^task.options: unknown key \(.*task.options.vocab_size -> task.vocab_size\)"):
        compose("train", ["task=fastmap/cpu/fast_map_three_objs", "task.options.vocab_size=200"])
    # `+` adds the key past Hydra; the schema refuses it when the env is built (at start).
    node = compose("train", ["task=room_ballet/budget", "+task.options.world=apartment"]).task
    with pytest.raises(ConfigError, match=r"^task.options: not a key of room_ballet tasks \(the keys of task.options"):
        make_env(node)
    with pytest.raises(ConfigError, match=r"^task.image_size: .*\(the image size is task.width and task.height\)"):
        make_env({"name": "memorybench/put_block_back", "image_size": 64})
    with pytest.raises(ConfigError, match=r"^task.image_size: unknown key \(the image size is task.width"):
        compose("eval", ["task=memorybench/put_block_back", "task.image_size=64"])


def test_the_flattened_keys_reach_the_env():
    rb = make_env(compose("train", ["task=room_ballet/budget", "task.world=apartment", "task.rgb=false",
                                    "task.apartments=2"]).task)
    assert (rb.world, rb.rgb, rb.apartments) == ("apartment", False, 2)
    ballet = make_env(compose("play", ["task=ballet/2_delay16", "task.rgb=true", "task.width=32", "task.height=24"]).task)
    assert ballet.observation_space["rgb"].shape == (24, 32, 3)
    assert TaskConfig.from_any(TaskConfig(name="ballet/2_delay16")) == BalletConfig(name="ballet/2_delay16")


MEMORY_YAMLS = sorted((CONFIGS / "memory").glob("*.yaml"))


@pytest.fixture(scope="module")
def memories():
    """Every memory YAML composed in one composition (as `composed`), with its first int key set to 7."""
    from embodied.config import register_schemas

    register_schemas("train")  # the memory schemas are train's
    tweak = {p.stem: next(k for k, v in defaults_of(MEMORIES[p.stem.split("_")[0]].config_class).items()
                          if type(v) is int) for p in MEMORY_YAMLS}
    overrides = [f"+memory@every.{p.stem}={p.stem}" for p in MEMORY_YAMLS]
    plain = compose("play", overrides).every
    tweaked = compose("play", overrides + [f"every.{k}.{v}=7" for k, v in tweak.items()]).every  # no `+` needed
    return plain, tweaked, tweak


@pytest.mark.parametrize("path", MEMORY_YAMLS, ids=lambda p: p.stem)
def test_memory_yaml_holds_only_name_and_what_differs_and_composes(memories, path):
    plain, tweaked, tweak = memories
    raw = yaml.safe_load(path.read_text())
    parent = raw.pop("defaults")
    node = plain[path.stem]
    config_class = MEMORIES[node.name].config_class
    assert parent == ([f"{path.stem}_schema", "_self_"] if "name" in raw else [node.name, "_self_"])
    defaults = defaults_of(config_class)
    for key, value in raw.items():
        assert key == "name" or value != defaults[key], f"{path.name}: {key}: {value!r} copies the dataclass default"
    assert dict(node) == {**defaults, **raw, "name": node.name}
    assert tweaked[path.stem][tweak[path.stem]] == 7
    assert compose("train", [f"memory={path.stem}"]).memory == node if path.stem == "gru" else True


def test_suite_tasks_get_their_schema_defaults_so_a_checkpoint_keeps_its_observation_layout():
    # Suites read configs/task/<name>.yaml without Hydra: the schema fills in what the YAML leaves out, and
    # a checkpoint's image size then replaces it (OBS_LAYOUT_KEYS are copied only where the task has them).
    from omegaconf import OmegaConf

    from embodied.eval.runner import eval_task_config, load_task_config

    task = load_task_config("nav/objectnav")
    assert task == dataclasses.asdict(NavConfig(name="nav/objectnav", sensors=["rgb", "depth", "semantic"],
                                                success_distance=1.0))
    evaluated = eval_task_config(task, OmegaConf.create({"split": "val"}), {"task": {"width": 32, "height": 24}})
    assert (evaluated["width"], evaluated["height"], evaluated["scenes"]) == (32, 24, "val")
    assert load_task_config("fastmap/cpu/fast_map_three_objs")["scenes"] == "symbolic"
