"""Config plumbing shared by every command: the error type, value checks and the config root.

Schemas themselves live with the layer they configure (e.g. `embodied.tasks.config.TaskConfig`);
this module only knows how to find `configs/`, how to compose them and how to fail in one line:
`one_line_errors` ends a command on any InputError with `embodied <command>: error: ...` (exit 2),
`composition_error` turns Hydra's composition errors into such a line, `compose` composes a config with
key=value overrides (as every command and `embodied bench train` do), `run_hydra_app` runs train/eval
with both. `register_schemas` stores the structured schemas a config names, explicitly (not as a side
effect of importing a package); both entry points call it. This is the lowest layer: it imports no
other part of embodied.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path


class InputError(ValueError):
    """Bad user input (a config value, a file, a checkpoint, a recording): the message is one line
    naming the input and what is wrong. `embodied <command>` prints it as its one error line (exit 2)."""


class ConfigError(InputError):
    """A bad config key or value; the message is one line naming the key and what is allowed."""


# Keys that moved (a config written for an older schema): the unknown-key error says where they went.
MOVED_KEYS = {"task.options": "the keys of task.options are task keys now: task.options.vocab_size -> task.vocab_size",
              "task.image_size": "the image size is task.width and task.height"}


def check(condition: bool, key: str, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {allowed}")


def check_file_path(key: str, path: str | Path | None, allowed: str) -> None:
    """An output file the user named (`out=`, `--out`) that is an existing directory is one ConfigError
    line `<key>: PATH is a directory; allowed: ...`, checked at start: writing it would fail only once
    the work is done. None (no file asked for) passes."""
    if path and Path(path).is_dir():
        raise ConfigError(f"{key}: {path} is a directory; allowed: {allowed}")


def check_dir_path(key: str, path: str | Path | None, allowed: str) -> None:
    """An output directory the user named (`run_dir=`, `out=`, `--out`) that is an existing file (not a
    directory) is one ConfigError line `<key>: PATH is a file; allowed: ...`, instead of mkdir's
    "File exists". None passes."""
    if path and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{key}: {path} is a file; allowed: {allowed}")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The project's Hydra config root: `configs/` beside the package."""
    return repo_root() / "configs"


def config_dirs() -> list[Path]:
    """Where configs are searched, in order: the project's root, then the folders users add: each of
    $EMBODIED_CONFIGS (os.pathsep-separated) and the folder of each module installed packages name in
    the `embodied.configs` entry point group. An added folder holds the same groups (task/, memory/,
    experiment/, ...); it adds options, the project's own files are found first."""
    import importlib.util

    extra: list[Path] = []
    for entry in filter(None, os.environ.get("EMBODIED_CONFIGS", "").split(os.pathsep)):
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"EMBODIED_CONFIGS: no config directory at {path}")
        extra.append(path)
    for ep in plugin_entry_points("configs"):
        try:
            spec = importlib.util.find_spec(ep.value)
        except (ImportError, ValueError) as e:
            raise PluginError(f"entry point embodied.configs:{ep.name} = {ep.value}: {e}") from None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise PluginError(f"entry point embodied.configs:{ep.name} = {ep.value}: not a package folder")
        extra.append(Path(locations[0]))
    return [config_dir(), *dict.fromkeys(p for p in extra if p != config_dir())]


def config_file(relative: str) -> Path | None:
    """The first `relative` path (e.g. task/nav/pointnav.yaml) under the config folders, or None."""
    return next((d / relative for d in config_dirs() if (d / relative).is_file()), None)


def agent_defaults(name: str) -> dict:
    """The options of configs/agent/NAME.yaml as written (interpolations unresolved: a file alone may
    point into the composed config): a scripted agent's defaults, kept in that one file (its protocol
    fills in and checks options against them), and whether an agent is scripted (`kind`)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(config_file(f"agent/{name}.yaml")), resolve=False)


def search_path_override() -> list[str]:
    """The Hydra override that adds the user's config folders to the search path ([] when none)."""
    extra = config_dirs()[1:]
    return [f"hydra.searchpath=[{','.join(repr('file://' + str(p)) for p in extra)}]"] if extra else []


class PluginError(InputError):
    """An installed package's entry point (embodied.tasks, embodied.memory, embodied.agents,
    embodied.configs) that cannot be loaded: names the entry point and the error."""


@functools.lru_cache(maxsize=None)
def plugin_entry_points(kind: str) -> tuple:
    """Entry points of group `embodied.<kind>` declared by installed packages (importlib.metadata;
    read once per process: one scan of this project's venv took 10-14 ms, and config_file and
    group_options ask for it on every lookup)."""
    from importlib.metadata import entry_points

    return tuple(sorted(entry_points(group=f"embodied.{kind}"), key=lambda ep: ep.name))


def load_plugins(kind: str) -> None:
    """Import each module named in entry point group `embodied.<kind>`; importing it registers its
    tasks (register_task), memories (register_memory), .... Each layer calls this once its own
    registry is filled, so the CLI and every worker process (which imports the layer to unpickle its
    envs) see the same names. A plugin that fails to import is an error naming it, not skipped."""
    for ep in plugin_entry_points(kind):
        try:
            ep.load()
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of a third-party module is reported as its own
            raise PluginError(f"entry point embodied.{kind}:{ep.name} = {ep.value}: {type(e).__name__}: {e}") from e


def data_dir(name: str) -> Path:
    """Shipped data folders at the repo root (`scenes`, `tasks`)."""
    return repo_root() / name


def provenance(command: str | None = None) -> dict:
    """Where a result comes from, written into every result JSON: the command, the commit (with
    `dirty` when the working tree had changes outside docs/results/), the machine and the library versions."""
    import datetime
    import platform
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo_root()), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    hardware = {"cpu": cpu, "cpus": cpus, "gpu": None, "python": platform.python_version()}
    torch = sys.modules.get("torch")  # only when the result's code imported it: no 1.5 s import for a report
    if torch is not None:
        hardware["torch"] = torch.__version__
        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name()
    # Result files written by earlier commands in the same tree are outputs, not code: not dirt.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs/results")
    if command is None:  # `embodied <cmd>` rewrites argv[0] to "embodied <cmd>"; a script path is not kept
        import shlex

        head = sys.argv[0] if sys.argv[0].startswith("embodied ") else "embodied"
        command = " ".join([head, shlex.join(sys.argv[1:])]).strip()
    return {"command": command,
            "commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "hardware": hardware, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def registrar(table: dict, kind: str, name: str, attribute: str | None = None):
    """Decorator storing its object in `table` under `name` (every registry: tasks, measures, vector envs,
    aux heads, imitation losses); `attribute` also stamps the name on the object."""
    def deco(obj):
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = obj
        if attribute:
            setattr(obj, attribute, name)
        return obj

    return deco


def debug() -> bool:
    """EMBODIED_DEBUG=1 (or `embodied --debug <command>`): bad input re-raises with its traceback."""
    return os.environ.get("EMBODIED_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def one_line_errors(command: str):
    """Bad input (any InputError, or an OSError naming a path) ends `embodied <command>` with one
    stderr line and exit 2, Ctrl-C with one line and exit 130; other exceptions are bugs and keep their traceback. debug() re-raises all."""
    try:
        yield
    except InputError as exc:
        if debug():
            raise
        print(f"embodied {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        # A path the user gave that cannot be created, read or written (a file where a folder is
        # expected, no permission, a full disk): one line naming it. OSErrors without a path keep
        # their traceback.
        if debug() or not exc.filename:
            raise
        print(f"embodied {command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug():
            raise
        print(f"embodied {command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def group_options(group: str) -> list[str]:
    """Options of a config group: the .yaml files under <config folder>/<group>/ of every config folder,
    recursively (`nav/pointnav`)."""
    found = {str(p.relative_to(d / group).with_suffix("")) for d in config_dirs() if (d / group).is_dir()
             for p in (d / group).rglob("*.yaml")}
    return sorted(found)


def _closest_first(word: str, allowed: list[str]) -> list[str]:
    close = difflib.get_close_matches(word, allowed, n=3, cutoff=0.6)
    return close + [a for a in allowed if a not in close]


def _override_value(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        k, sep, v = o.partition("=")
        if sep and k.lstrip("+~").split("@")[0] == key:
            return v
    return None


def composition_error(exc: BaseException, overrides: list[str]) -> ConfigError | None:
    """One ConfigError line for a Hydra/OmegaConf composition error (None: not one): the key and what is
    allowed instead of Hydra's multi-line block and its "+key to append" advice."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, MissingConfigException):
        missing = exc.missing_cfg_file or ""
        group, option = missing.rpartition("/")[0], missing.rpartition("/")[2]
        for o in overrides:  # the override that chose it: `task=nav/pointnavv` is group task, option nav/pointnavv
            k, _, v = o.partition("=")
            k = k.lstrip("+~").split("@")[0]
            if missing == f"{k}/{v}":
                group, option = k, v
                break
        allowed = group_options(group) or sorted(x for x in exc.options or [] if not x.endswith("_schema"))
        if not allowed:
            return ConfigError(f"{missing}: no such config under {config_dir()}")
        allowed = _closest_first(option, allowed)
        return ConfigError(f"{group}={option}: no such {group} config; allowed: {', '.join(allowed)}")
    if isinstance(exc, OverrideParseException):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for o in overrides:
            try:
                parser.parse_overrides([o])
            except OverrideParseException as e:
                first = str(e).splitlines()[0]
                return ConfigError(f"{o}: not a valid override ({first}); overrides are key=value")
        return ConfigError(" ".join(str(exc).split()))
    # Hydra raises some composition errors inside an `except` (the OmegaConf error is the context, not the cause)
    cause = exc if isinstance(exc, OmegaConfBaseException) else (exc.__cause__ or exc.__context__)
    source = re.match(r"In '([^']+)'", str(exc))  # a config file (e.g. an experiment) set the key, not an override
    where = f" (set in configs/{source.group(1)}.yaml)" if source and isinstance(exc, HydraException) else ""
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = cause.full_key
        value = _override_value(overrides, key)
        if isinstance(cause, ValidationError):
            msg = cause.msg.splitlines()[0] if cause.msg else str(cause)
            kind = re.search(r"converted to (\w+)|not a valid (\w+)|Cannot convert '\w+' to (\w+)", msg)
            kind = next((k for k in kind.groups() if k), "") if kind else ""
            allowed = {"Integer": "an integer", "int": "an integer", "Float": "a number", "float": "a number",
                       "Boolean": "true, false", "bool": "true, false", "String": "a string",
                       "string": "a string"}.get(kind, msg)
            if "is not Optional" in msg:
                allowed = "a value (not null)"
            elif getattr(cause.child_node, "_is_optional", lambda: False)():
                allowed += " or null"
            enum = re.search(r"expected one of \[(.*)\]", msg)
            if enum:
                allowed = enum.group(1)
            return ConfigError(f"{key}: {value!r}; allowed: {allowed}")
        if isinstance(cause, (ConfigKeyError, AttributeError)) or "not in struct" in str(cause):
            parent = cause.parent_node
            prefix = key.rpartition(".")[0]
            keys = [str(k) for k in parent.keys() if prefix or k != "hydra"] if hasattr(parent, "keys") else []
            name = key.rpartition(".")[2]
            full = [f"{prefix}.{k}" if prefix else k for k in keys]
            moved = next((why for old, why in MOVED_KEYS.items() if key == old or key.startswith(old + ".")), None)
            if moved:
                return ConfigError(f"{key}: unknown key ({moved}); allowed: {', '.join(sorted(full))}")
            close = [f"{prefix}.{k}" if prefix else k for k in difflib.get_close_matches(name, keys, n=3, cutoff=0.6)]
            if close:
                return ConfigError(f"{key}: unknown key{where}; closest: {', '.join(close)}; "
                                   f"allowed: {', '.join(sorted(full))}")
            return ConfigError(f"{key}: unknown key{where}; allowed: {', '.join(sorted(full)) or 'none'}")
    # e.g. `embodied eval agent=goat_pointer`: a training-only option, whose defaults list selects trainer=bc
    override = re.match(r"In '(\w+)/([\w/]+)': Could not override '(\w+)'", str(exc))
    if override:
        group, option, other = override.groups()
        return ConfigError(f"{group}={option}: configs/{group}/{option}.yaml selects the {other} group, which only "
                           "`embodied train` has" + (" (eval and record take a trained agent as ckpt=PATH)" if group == "agent" else ""))
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        text = str(exc).split("\nConfig search path:")[0]
        text = re.sub(r"To append to your (config|default list) use \S+", "", text)
        if isinstance(cause, OmegaConfBaseException) and cause.msg:
            text += f" ({cause.msg.splitlines()[0]})"
        return ConfigError(" ".join(text.split()))
    return None


# The structured schemas of each composed config (its YAMLs name them in their defaults lists: train_schema,
# trainer/ppo_schema, task/nav_schema, memory/gru_schema, ...), as the import path of the function that
# stores them in Hydra's ConfigStore: they are defined by the layers they configure, above this one,
# which therefore is not imported here. play and record compose only the task group's schemas.
SCHEMAS = {"train": "embodied.train.config:register_configs", "eval": "embodied.eval.runner:register_configs",
           "play": "embodied.tasks.config:register_configs", "record": "embodied.tasks.config:register_configs"}
_registered: set[str] = set()


def register_schemas(config_name: str | None = None) -> None:
    """Store the structured schemas of configs/<config_name>.yaml (all composed configs when None) with
    Hydra; every entry point that composes (compose(), run_hydra_app) calls it first. Idempotent."""
    import importlib

    for name in [config_name] if config_name is not None else list(SCHEMAS):
        if name in SCHEMAS and name not in _registered:
            module, _, function = SCHEMAS[name].partition(":")
            getattr(importlib.import_module(module), function)()
            _registered.add(name)


def compose(config_name: str, overrides: list[str]):
    """Compose configs/<config_name>.yaml with key=value overrides; any composition error, and a value of
    the wrong type for its key, becomes one ConfigError line naming the key and what is allowed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas(config_name)
    bad = [o for o in overrides if not o.partition("=")[0].lstrip("+~") or ("=" not in o and not o.startswith("~"))]
    if bad:
        raise ConfigError(f"{bad[0]}: overrides are key=value")

    def run(chosen: list[str]):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                return hydra_compose(config_name=config_name, overrides=chosen)
        except Exception as e:
            error = composition_error(e, chosen)
            if error is None:  # not a composition error: a bug
                raise
            raise error from e

    overrides = [*overrides, *search_path_override()]
    cfg = run(overrides)
    _check_value_types(cfg, overrides, run)
    return cfg


def _check_value_types(cfg, overrides: list[str], run) -> None:
    """Hydra checks types only under a structured schema; the agent group and play's and record's own
    keys have none, so `agent.hidden=1.5` would reach the agent. Each such key=value must have the type
    of its default (composed without the value overrides)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    selects = [o.input_line for o in parsed if o.is_hydra_override()
               or any((d / o.key_or_group).is_dir() for d in config_dirs())]
    values = [o for o in parsed if o.input_line not in selects and not o.is_delete() and not o.is_sweep_override()]
    checked = []
    for o in values:
        key, value = o.key_or_group, o.value()
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else cfg
        structured = parent is not None and OmegaConf.get_type(parent) not in (dict, None)
        if structured or isinstance(value, (list, dict)) or (isinstance(value, str) and "${" in value):
            continue  # OmegaConf checked it; containers and interpolations are not checked here
        checked.append((o, key, value))
    if not checked:
        return
    base = None
    for o, key, value in checked:
        base = run(selects) if base is None else base
        try:
            default = OmegaConf.select(base, key)
        except Exception:  # an interpolation that resolves only with the overrides
            continue
        kind = next((t for t in (bool, int, float) if type(default) is t), None)
        if kind is None or value is None:
            continue
        ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool)}[kind]
        if not ok:
            allowed = {bool: "true, false", int: "an integer", float: "a number"}[kind]
            raw = o.input_line.partition("=")[2]
            raise ConfigError(f"{key}: {raw!r}; allowed: {allowed}")


def schema_fields(path: str, cls_name: str) -> dict[str, tuple[str, str]]:
    """{field: (annotation, first sentence of its docstring)} of a dataclass in embodied/<path>, read from
    the source without importing it (help and type checks stay fast: schemas import torch)."""
    import ast

    source = (Path(__file__).parent / path).read_text()
    cls = next((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls_name), None)
    out: dict[str, tuple[str, str]] = {}
    body = cls.body if cls else []
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            text = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
            if isinstance(text, str):
                doc = re.split(r"(?<!e\.g)(?<!i\.e)\.\s", " ".join(text.split()), maxsplit=1)[0]
                doc = doc.rstrip(".")
            out[node.target.id] = (ast.unparse(node.annotation), doc)
    return out



def run_hydra_app(command: str, config_name: str, task_function) -> None:
    """Run a Hydra app over configs/<config_name>.yaml (reads sys.argv) with one-line errors: Hydra's own
    handler would print composition errors as blocks and exit 1, so HYDRA_FULL_ERROR makes it re-raise
    and composition_error turns them into a ConfigError; bad input inside a job ends it with one line
    (it must not escape the job: Hydra adds an "Error executing job" line)."""
    import hydra

    register_schemas(config_name)

    def job(cfg):
        with one_line_errors(command):
            return task_function(cfg)

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with one_line_errors(command):
            sys.argv = [*sys.argv, *search_path_override()]
            try:
                hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(job)()
            except Exception as exc:
                error = composition_error(exc, [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
                if error is None:
                    raise
                raise error from exc
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
