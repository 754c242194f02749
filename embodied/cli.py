"""`embodied <command> ...`: each command composes a Hydra config from `configs/` (key=value overrides)
or takes plain flags where it has nothing to configure.

  embodied scenes generate --n 5 --seed 0 --out DIR     procedural apartments (SceneSpec JSON + GLB)
  embodied episodes export --task nav/pointnav --scenes test --seeds 0 100 --out FILE.json.gz
                                                         our nav episodes as a habitat-lab episode file
  embodied episodes check FILE.json.gz [--scenes MESH] [--out REPORT.json]
                                                         a habitat-lab PointNav/ObjectNav file against our scenes:
                                                         the episodes not navigable here, with reasons (exit 1 if any)
  embodied play task=nav/objectnav agent=oracle          one episode -> MP4 + measures JSON
  embodied bench sim [--quick] [--out FILE]              env steps/s (JSON), peers when installed
  embodied bench render                                  renderer frames/s
  embodied bench train [--device cpu|cuda|auto] [--num-envs 64,256]
                                                         end-to-end PPO training steps/s (env + forward + update)
  embodied bench memory [--device cpu|cuda]              per-step read latency of every memory vs episode length
  embodied bench memorybench [--quick] [--verify]        MemoryBench demos/min, env keyframe steps/s
                                                         (--verify: expert on all pinned seeds)
  embodied bench scenemem [--quick]                      3D-Mem scene memory update ms/step, snapshots, bytes (6-room apartments)
  embodied bench hybrid [--quick]                        Optimus-1 experience pool: retrieval ms at 10,000 entries, load, add
  embodied demos task=memorybench/put_block_back split=train n=100 [out=FILE.npz] [image_size=128] [quiet=true] [noise=0.02]
                                                         scripted expert demonstrations (.npz episode file)
  embodied bench record                                  eval steps/s with and without rerun recording
  embodied bench soak [--steps N] [--quick]              random actions over every task family in worker
                                                         processes: crashes, RSS growth after warm-up (JSON;
                                                         exit 1 when a family fails)
  embodied record task=nav/pointnav agent=oracle episodes=3 out=DIR [ckpt=PATH] [video=true]
                                                         one rerun recording (.rrd) per episode
  embodied view FILE.rrd|pretrained:NAME [--web] [--port N]
                                                         rerun viewer (native; --web: on 127.0.0.1, HTTP port N
                                                         (default 9090), gRPC N+1, 0 = free ports; Ctrl-C/SIGTERM stop it)
  embodied video FILE.rrd [--out FILE.mp4]               MP4 of the camera views with text overlaid
  embodied train key=value ...                           training (Hydra app; -m for sweeps)
  embodied eval key=value ...                            evaluation table (out=docs/results/NAME.json for the results page)
  embodied report [--check]                              docs/results.md from docs/results/*.json: tables beside the
                                                         published rows, learning curves, memory-efficiency frontier
  embodied eval suite=pretrained [episodes=N] [out=DIR]  every shipped checkpoint on its task: one table beside the
                                                         published rows, one result JSON per model (runs/pretrained/)
  embodied export ckpt=RUN/latest.pt name=NAME [eval=RESULT.json] [force=true]
                                                         a shipped checkpoint (fp16 weights + recipe and figures) in
                                                         embodied/pretrained/; ckpt=pretrained:NAME names it anywhere

`python -m embodied ...` is the same command. `embodied <command> --help` describes a command (for
train, eval, play and record: its config groups and keys).

Bad input (an unknown key or option, a wrong type, an unreadable file) ends every command with one line
`embodied <command>: error: ...` and exit code 2; Ctrl-C ends it with one line and exit code 130. For
the traceback behind such a line, set EMBODIED_DEBUG=1 or put --debug first: `embodied --debug train ...`.
Any other exception is a bug and always shows its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embodied.config import (ConfigError, InputError, check, check_dir_path, check_file_path, compose, config_dir,
                             group_options, one_line_errors, schema_fields)

USAGE = __doc__


def _fail(msg: str) -> None:
    """Bad input found here: main() prints it as the command's one error line (exit 2)."""
    raise InputError(msg)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one InputError line (argparse itself prints the usage block too)."""

    def error(self, message: str):
        raise InputError(message)


# Hydra commands: configs/<command>.yaml, and the schema dataclass of its top-level keys where it has one.
HYDRA_COMMANDS = {"train": ("train/config.py", "TrainConfig"), "eval": ("eval/runner.py", "EvalConfig"),
                  "play": None, "record": None}


def _yaml_comments(name: str):
    """Header comment, defaults entries {group: (option, comment)} and keys {key: (value, comment)} of
    configs/<name>.yaml, read as text (the comments are the documentation of play and record)."""
    import re

    header, groups, keys = [], {}, {}
    in_defaults, at_top = False, True
    for line in (config_dir() / f"{name}.yaml").read_text().splitlines():
        if at_top and line.startswith("#"):
            header.append(line.lstrip("# ").rstrip())
            continue
        at_top = False
        body, _, comment = line.partition(" #")
        m = re.match(r"^\s+-\s+(override\s+)?([\w/]+)\s*:\s*(\S+)", body)
        if in_defaults and m:
            if not m.group(1):
                groups[m.group(2)] = (m.group(3), comment.strip())
            continue
        m = re.match(r"^(\w+)\s*:\s*(.*?)\s*$", body)
        if m:
            in_defaults = m.group(1) == "defaults"
            if m.group(1) not in ("defaults", "hydra"):
                keys[m.group(1)] = (m.group(2), comment.strip())
    return header, groups, keys


def _options_summary(group: str) -> str:
    """The options of a group in a few words: all names for small folders, else folder/* (count)."""
    options = group_options(group)
    folders: dict[str, list[str]] = {}
    for o in options:
        folders.setdefault(o.split("/")[0] if "/" in o else "", []).append(o)
    parts = []
    for folder, names in folders.items():
        parts += names if not folder or len(names) <= 3 else [f"{folder}/* ({len(names)})"]
    return ", ".join(parts)


def command_help(command: str) -> str:
    """`embodied <command> --help` for the Hydra commands: usage, config groups and keys, one line each."""
    header, groups, keys = _yaml_comments(command)
    schema = HYDRA_COMMANDS[command]
    docs = schema_fields(*schema) if schema else {}
    train_docs = schema_fields("train/config.py", "TrainConfig")
    if command == "train":
        groups.setdefault("experiment", ("null", "presets over several keys, chosen with +experiment=NAME"))
    lines = [f"usage: embodied {command} [group=option ...] [key=value ...]" +
             (" [-m key=a,b ...] [--cfg job]" if command in ("train", "eval") else ""), ""]
    lines += [h for h in header if h] + [""]
    lines.append("config groups (group=option; options are the .yaml files under configs/<group>/):")
    for group, (default, comment) in groups.items():
        if group.endswith("_schema") or group.startswith("hydra"):
            continue
        doc = docs.get(group, ("", ""))[1] or comment or train_docs.get(group, ("", ""))[1]
        line = f"  {group:<11} default {default}; options: {_options_summary(group)}"
        lines.append(f"{line}. {doc}" if doc else line)
    lines += ["", "keys (key=value; default from the config):"]
    for key, (value, comment) in keys.items():
        doc = docs.get(key, ("", ""))[1] or comment
        lines.append(f"  {key + '=' + value:<24} {doc}".rstrip())
    lines += ["", "Keys inside a group: group.key=value (e.g. task.width=128). Errors are one line;",
              "EMBODIED_DEBUG=1 (or `embodied --debug ...`) shows the traceback."]
    return "\n".join(lines)


def _check_hydra_args(command: str, argv: list[str]) -> None:
    """Check a Hydra command's arguments before it starts, as one-line errors: flags through Hydra's own
    parser, overrides composed (each value of a -m sweep at least once)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog = f"embodied {command}"

    def error(message: str):
        raise InputError(message)

    parser.error = error
    a = parser.parse_args(argv)
    if sum(bool(x) for x in (a.run, a.multirun, a.cfg, a.info, a.shell_completion)) > 1:
        raise InputError("only one of --run, --multirun, --cfg, --info and --shell-completion can be given")
    if a.hydra_help or a.shell_completion or a.config_path or a.config_name or a.config_dir or a.experimental_rerun:
        return  # Hydra's own answers, or another config than configs/<command>.yaml
    for overrides in _sweep_points(a.overrides, a.multirun):
        compose(command, overrides)


def _sweep_points(overrides: list[str], multirun: bool, limit: int = 32) -> list[list[str]]:
    """Override lists covering every value of every sweep at least once (not their product)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    choices = []
    for o in overrides:
        try:
            parsed = parser.parse_overrides([o])[0]
        except Exception:  # compose reports it
            return [overrides]
        try:
            choices.append([f"{parsed.get_key_element()}={v}" for v in parsed.sweep_string_iterator()]
                           if parsed.is_sweep_override() else [o])
        except Exception:  # interval and glob sweeps list no values here: Hydra checks each job
            return []
    first = [c[0] for c in choices]
    points = [first] + [first[:i] + [v] + first[i + 1:] for i, c in enumerate(choices) for v in c[1:]]
    return points[:limit]


def cmd_scenes(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied scenes")
    sub = p.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="write procedural apartments (SceneSpec JSON + GLB)")
    g.add_argument("--n", type=int, default=5, help="number of apartments")
    g.add_argument("--seed", type=int, default=0, help="seed of the first apartment (seeds seed..seed+n-1)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--rooms", type=int, nargs="+", default=None, metavar="N",
                   help="rooms per apartment: N, or a range LO HI (2-8); default: random 2-8")
    g.add_argument("--object-split", default="all", choices=["all", "train", "novel_exemplar", "held_out_category"],
                   help="which object categories/exemplars to place (see embodied.world.library)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.n < 1:
        _fail(f"--n: {a.n}; allowed: >= 1")
    rooms = None
    if a.rooms is not None:
        if len(a.rooms) > 2 or not all(2 <= r <= 8 for r in a.rooms) or a.rooms != sorted(a.rooms):
            _fail(f"--rooms: {' '.join(map(str, a.rooms))}; allowed: N or LO HI with 2 <= LO <= HI <= 8")
        rooms = a.rooms[0] if len(a.rooms) == 1 else tuple(a.rooms)
    check_dir_path("--out", a.out, "a directory path (new, or an earlier one: apartments of the same seeds are rewritten)")
    from embodied.world import write_scenes

    paths = write_scenes(a.n, a.seed, Path(a.out), n_rooms=rooms, quiet=a.quiet, object_split=a.object_split)
    print(f"wrote {len(paths)} files to {a.out}")


def cmd_episodes(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied episodes", description="habitat-lab PointNav/ObjectNav episode files "
                       "(.json.gz) against our scenes (docs/nav.md, Habitat episode datasets)")
    sub = p.add_subparsers(dest="action", required=True)
    e = sub.add_parser("export", help="write the episodes our nav task draws for some seeds as a habitat file")
    e.add_argument("--task", default="nav/pointnav", choices=["nav/pointnav", "nav/objectnav"], help="the task")
    e.add_argument("--scenes", default="test", help="task.scenes: train, val, test, or a SceneSpec JSON file")
    e.add_argument("--seeds", type=int, nargs=2, default=[0, 100], metavar=("FIRST", "N"),
                   help="episode seeds FIRST..FIRST+N-1 (default 0 100); reset(seed=s) with the file replays seed s")
    e.add_argument("--out", required=True, help="output file (.json.gz)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("check", help="read a habitat file against our scenes; report the episodes not navigable "
                       "here (exit 1 when there are any)")
    c.add_argument("file", help="a habitat-lab PointNav or ObjectNav episode file (.json.gz)")
    c.add_argument("--scenes", default="train", help="task.scenes: a scene file of your own whose stem scene_id "
                   "names (pinned apartments are found by name anyway)")
    c.add_argument("--agent-radius", type=float, default=0.18, help="agent radius of our grid, metres")
    c.add_argument("--agent-height", type=float, default=1.5, help="agent height of our grid, metres")
    c.add_argument("--out", default=None, help="also write the per-episode report as JSON here")
    a = p.parse_args(argv)
    from embodied.tasks.config import NavConfig

    if a.action == "export":
        if a.seeds[1] < 1 or a.seeds[0] < 0:
            _fail(f"--seeds: {a.seeds[0]} {a.seeds[1]}; allowed: FIRST >= 0 and N >= 1")
        if not a.out.endswith(".json.gz"):
            _fail(f"--out: {a.out}; allowed: a .json.gz file (habitat-lab reads gzip JSON)")
        from embodied.tasks.habitat_episodes import export_episodes

        cfg = NavConfig(name=a.task, scenes=a.scenes).validate()
        path = export_episodes(cfg, range(a.seeds[0], a.seeds[0] + a.seeds[1]), a.out, quiet=a.quiet)
        print(f"wrote {a.seeds[1]} {a.task} episodes to {path}")
        return
    import json

    from embodied.tasks.habitat_episodes import check_episodes, read_habitat_episodes, summary
    from embodied.tasks.scenes import SceneSource

    if not 0.05 <= a.agent_radius <= 1.0:
        _fail(f"--agent-radius: {a.agent_radius}; allowed: 0.05..1.0")
    if not 0.2 <= a.agent_height <= 5.0:
        _fail(f"--agent-height: {a.agent_height}; allowed: 0.2..5.0")
    check_file_path("--out", a.out, f"a JSON file path, e.g. {Path(a.out or '.') / 'check.json'}")
    data = read_habitat_episodes(a.file)
    scenes = SceneSource(a.scenes, None, a.agent_radius, a.agent_height, cache_size=64)
    checks = check_episodes(data, scenes)
    s = summary(checks)
    for ch in checks:
        if not ch.navigable:
            print(f"episode {ch.episode.episode_id} ({ch.episode.scene_id}): {'; '.join(ch.problems)}")
    print(f"{a.file}: {data.kind}, {s['episodes']} episodes: {s['navigable']} navigable here, "
          f"{s['not_navigable']} not" + (f" ({', '.join(f'{k} {v}' for k, v in s['problems'].items())})"
                                         if s["problems"] else ""))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"file": str(a.file), "kind": data.kind, "summary": s,
                                           "episodes": [ch.as_dict() for ch in checks]}, indent=1))
    raise SystemExit(1 if s["not_navigable"] else 0)


def _help_requested(argv: list[str]) -> bool:
    return "-h" in argv or "--help" in argv


def cmd_play(argv: list[str]) -> None:
    if _help_requested(argv):
        print(command_help("play"))
        return
    cfg = compose("play", _select_by_name(argv))
    from embodied.viewer.play import play

    play(cfg)


def cmd_bench(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied bench")
    p.add_argument("what", choices=["sim", "render", "train", "record", "memory", "scenemem", "hybrid", "memorybench",
                                    "soak"])
    p.add_argument("--out", default=None, help="JSON output file (default: bench_<what>.json)")
    p.add_argument("--quick", action="store_true", help="short run (a few seconds per configuration)")
    p.add_argument("--no-peers", action="store_true", help="sim: skip MiniWorld / Memory Maze even if installed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="train, memory: cpu, cuda or (train) auto")
    p.add_argument("--num-envs", default="256", help="train on cuda: envs per configuration, comma-separated")
    p.add_argument("--workers", type=int, default=None, help="train on cuda: env worker processes (default: cores - 1)")
    p.add_argument("--verify", action="store_true", help="memorybench: also run the expert on all pinned seeds")
    p.add_argument("--steps", type=int, default=100_000, help="soak: random-action env steps over all task families")
    p.add_argument("--only", default=None, metavar="FAMILIES",
                   help="soak: comma-separated task families (nav, ballet, room_ballet, fastmap, memorybench); "
                        "each still runs its share of --steps. sim: `batched`, the batched simulator's rows "
                        "(CPU, and CUDA where present) beside 8 envs in 2 workers")
    a = p.parse_args(argv)
    out = a.out or f"bench_{a.what}.json"
    # every bench writes its JSON once all its configurations ran: a directory fails now, not then
    check_file_path("--out", out, f"a JSON file path, e.g. {Path(out) / f'bench_{a.what}.json'}")

    def check_cuda() -> None:
        import torch

        if a.device == "cuda" and not torch.cuda.is_available():
            _fail("--device cuda: no CUDA device is available here; allowed: cpu, auto")
    if a.what == "sim":
        from embodied.envs.bench import bench_sim

        if a.only not in (None, "batched"):
            _fail(f"--only {a.only}: for sim, allowed: batched")
        bench_sim(out=out, quick=a.quick, peers=not a.no_peers, batched=a.only == "batched")
    elif a.what == "render":
        from embodied.envs.bench import bench_render_cli

        bench_render_cli(out=out, quick=a.quick)
    elif a.what == "memory":
        import json

        from embodied.memory.bench import bench_memory

        import torch

        check_cuda()
        device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        devices = None if device == "cpu" and not a.quick else [device]
        r = bench_memory(lengths=[256, 1024] if a.quick else None, devices=devices, repeats=2 if a.quick else 5)
        with open(out, "w") as f:
            json.dump(r, f, indent=1)
        print(f"wrote {out}")
    elif a.what == "scenemem":
        from embodied.eval.goat import bench_scene_memory

        bench_scene_memory(out=out, quick=a.quick)
    elif a.what == "hybrid":
        from embodied.memory.hybrid.bench import bench_hybrid

        bench_hybrid(out=out, quick=a.quick)
    elif a.what == "memorybench":
        from embodied.tasks.memorybench.bench import bench_memorybench

        bench_memorybench(out=out, quick=a.quick, verify=a.verify)
    elif a.what == "soak":
        from embodied.envs.soak import bench_soak

        if a.steps < 1:
            _fail(f"--steps: {a.steps}; allowed: >= 1")
        from embodied.envs.soak import LEVELS

        levels = LEVELS
        if a.only:
            families = a.only.split(",")
            bad = [f for f in families if not any(name.split("/")[0] == f for name in LEVELS)]
            if bad:
                _fail(f"--only {bad[0]}: no such task family; allowed: "
                      f"{', '.join(sorted({n.split('/')[0] for n in LEVELS}))}")
            levels = {n: share for n, share in LEVELS.items() if n.split("/")[0] in families}
        if not bench_soak(out=out, steps=a.steps, quick=a.quick, levels=levels)["passed"]:
            raise SystemExit(1)
    elif a.what == "record":
        from embodied.viewer.bench import bench_record_cli

        bench_record_cli(out=out, quick=a.quick)
    else:
        from embodied.train.bench import bench_train_cli

        try:
            cuda_envs = tuple(int(x) for x in a.num_envs.split(","))
        except ValueError:
            _fail(f"--num-envs {a.num_envs!r}: expected comma-separated ints, e.g. 64,256")
        check_cuda()
        bench_train_cli(out=out, quick=a.quick, device=a.device, cuda_envs=cuda_envs, cuda_workers=a.workers)


def cmd_record(argv: list[str]) -> None:
    if _help_requested(argv):
        print(command_help("record"))
        return
    cfg = compose("record", _select_by_name(_pretrained_task(argv)))
    from embodied.loading import CheckpointError
    from embodied.viewer.record import record

    try:
        record(cfg)
    except (ValueError, CheckpointError) as e:  # bad checkpoint / task values: one line, no traceback
        _fail(str(e))


def cmd_view(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied view")
    p.add_argument("files", nargs="+", help="recordings (.rrd), or pretrained:NAME: one episode of that shipped "
                   "checkpoint's agent on its task, recorded first")
    p.add_argument("--web", action="store_true", help="serve the web viewer and print its URL")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None,
                   help="--web: HTTP port (default 9090, a free one if that is busy); the gRPC data server "
                        "listens on the next port; 0 picks free ports")
    p.add_argument("--grpc-port", type=int, default=None, help="--web: port of the gRPC data server (default: --port + 1)")
    a = p.parse_args(argv)
    import tempfile

    from embodied.loading import PRETRAINED
    from embodied.viewer.serve import view

    def recorded(ckpt: str, out: str) -> str:  # one episode of a shipped agent (`embodied record` keeps them)
        from embodied.viewer.record import record

        return record(compose("record", _pretrained_task([f"ckpt={ckpt}", f"out={out}"])))[0]["path"]

    with tempfile.TemporaryDirectory(prefix="embodied-view-") as tmp:
        files = [recorded(f, f"{tmp}/{i}") if f.startswith(PRETRAINED) else f for i, f in enumerate(a.files)]
        try:
            view(files, web=a.web, host=a.host, port=a.port, grpc_port=a.grpc_port)
        except (ValueError, RuntimeError) as e:
            _fail(str(e))


def cmd_video(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied video")
    p.add_argument("file", help="recording (.rrd)")
    p.add_argument("--out", default=None, help="MP4 path (default: FILE with .mp4)")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--height", type=int, default=256, help="camera views are upscaled to about this height")
    a = p.parse_args(argv)
    from embodied.viewer.video import recording_to_video

    try:
        print(f"wrote {recording_to_video(a.file, a.out, fps=a.fps, height=a.height)}")
    except ValueError as e:
        _fail(str(e))


DEMOS_KEYS = {"task": str, "split": str, "n": int, "out": str, "image_size": int, "quiet": bool,
              "noise": float, "noise_seed": int, "overwrite": bool}


def _key_values(argv: list[str], keys: dict, args: dict) -> dict:
    """key=value arguments of a command without a Hydra config, typed by `keys`, over `args`."""
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"{item}: arguments are key=value; keys: {', '.join(keys)}")
        key, value = item.split("=", 1)
        if key not in keys:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(keys)}")
        kind = keys[key]
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{key}: {value!r}; allowed: true, false")
            args[key] = value.lower() == "true"
        elif kind in (int, float):
            try:
                args[key] = kind(value)
            except ValueError:
                raise ConfigError(f"{key}: {value!r}; allowed: {'an integer' if kind is int else 'a number'}") from None
        else:
            args[key] = value
    return args


def cmd_demos(argv: list[str]) -> None:
    """`embodied demos task=... split=train|test n=N [out=FILE.npz] [image_size=128] [quiet=true]
    [noise=0.02 noise_seed=0] [overwrite=false]` (noise: DART-style perturbed execution, see
    dataset.record_demo; an existing out file is replaced only with overwrite=true)."""
    if _help_requested(argv):
        print(f"usage: embodied demos {' '.join(f'{k}=...' for k in DEMOS_KEYS)}\n\n"
              f"{' '.join(cmd_demos.__doc__.split())}\n\nkeys: task (required; memorybench/NAME), "
              "split (train | test; default train), n (episodes; default: the split's pinned seeds), "
              "out (an .npz episode file; default data/<task>_<split>.npz), image_size (128), quiet (false), "
              "noise (0.0), noise_seed (0), "
              "overwrite (false: an existing out file is an error)")
        return
    args = _key_values(argv, DEMOS_KEYS, {"split": "train", "n": None, "out": None, "image_size": 128, "quiet": False,
                                          "noise": 0.0, "noise_seed": 0, "overwrite": False})
    if "task" not in args:
        raise ConfigError("task: missing; e.g. task=memorybench/put_block_back")
    from embodied.tasks.memorybench.dataset import write_demos

    task = args["task"] if "/" in args["task"] else f"memorybench/{args['task']}"  # put_block_back: a MemoryBench task
    out = args["out"] or f"data/{task.replace('/', '_')}_{args['split']}.npz"
    if Path(out).exists() and not args["overwrite"]:
        raise ConfigError(f"out: {out} exists (an earlier run's); pass another out=FILE.npz, or overwrite=true to replace it")
    if Path(out).suffix != ".npz":
        raise ConfigError(f"out: {out}; allowed: a .npz file (demonstrations are episode files, embodied.tasks.episodes)")
    try:
        path = write_demos(task, args["split"], args["n"], out, image_size=args["image_size"],
                           progress=not args["quiet"], noise=args["noise"], noise_seed=args["noise_seed"])
    except ValueError as e:
        _fail(str(e))
    print(f"wrote {path}")


EXPORT_KEYS = {"ckpt": str, "name": str, "eval": str, "episodes": int, "dtype": str, "force": bool, "out": str}


def cmd_export(argv: list[str]) -> None:
    """`embodied export ckpt=RUN/latest.pt name=NAME [eval=RESULT.json] [episodes=100] [dtype=float16]
    [force=false] [out=DIR]`: a shipped checkpoint (weights only, fp16 or int8) from a training run of an
    `+experiment=` recipe, with its recipe, training run and figures; `ckpt=pretrained:NAME` names it."""
    if _help_requested(argv):
        print(f"usage: embodied export {' '.join(f'{k}=...' for k in EXPORT_KEYS)}\n\n"
              f"{' '.join(cmd_export.__doc__.split())}\n\nkeys: ckpt (required; a checkpoint of `embodied train "
              "+experiment=NAME`, its run directory beside it), name (required; lower-case letters, digits, _), "
              "eval (the `embodied eval` result JSON of this checkpoint: its figure is shipped with it), "
              "episodes (100: episodes of `embodied eval suite=pretrained`), dtype (float16 | float32 | int8: "
              "weight matrices as int8 with a scale per row, for a model over 5 MB in fp16), "
              "force (false: an existing shipped file is an error), out (default embodied/pretrained/)")
        return
    args = _key_values(argv, EXPORT_KEYS, {"eval": None, "episodes": 100, "dtype": "float16", "force": False, "out": None})
    for key in ("ckpt", "name"):
        if key not in args:
            raise ConfigError(f"{key}: missing; e.g. embodied export ckpt=runs/ballet/hcam/latest.pt name=ballet_hcam")
    from embodied.eval.pretrained import export

    sys.argv = ["embodied export", *argv]  # the provenance of the export names this command
    export(args["ckpt"], args["name"], args["eval"], args["episodes"], args["dtype"], args["force"], args["out"])


def _pretrained_task(argv: list[str]) -> list[str]:
    """`ckpt=pretrained:NAME` without task= or suite=: the task the shipped checkpoint is published on
    (a held-out level for fast-mapping, else the task it was trained on)."""
    from embodied.eval.pretrained import task_option
    from embodied.loading import PRETRAINED, pretrained_record

    ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt=")), "")
    if not ckpt.startswith(PRETRAINED) or any(a.lstrip("+").startswith(("task=", "suite=")) for a in argv):
        return argv
    return [f"task={task_option(pretrained_record(ckpt))}", *argv]


def _suite_task(argv: list[str]) -> list[str]:
    """`suite=S` with `task.<key>=...` overrides but no `task=`: the task group is S's first task, so the
    overrides are checked against (and shared by) the suite's family, e.g. `suite=household
    task.world=apartment`. A suite unknown here is left to the eval's own one-line error."""
    suite = next((a.split("=", 1)[1] for a in argv if a.startswith("suite=")), "")
    if not suite or any(a.lstrip("+~").split("=")[0] == "task" for a in argv) or \
            not any(a.lstrip("+~").startswith("task.") for a in argv):
        return argv
    from omegaconf import OmegaConf

    from embodied.config import data_dir

    path = data_dir("tasks") / "suites.yaml"
    suites = OmegaConf.load(path) if path.exists() else {}
    tasks = list(suites.get(suite) or [])
    return [f"task={tasks[0]}", *argv] if tasks else argv


def _select_by_name(argv: list[str]) -> list[str]:
    """`task.name=X` without `task=` chooses X's config: configs/task/X.yaml where one exists, else the
    schema of X's family (`task=<family>_schema`): a gym:<id> env, or a task an installed package
    registers without a YAML. `memory.name=X` without `memory=` likewise (configs/memory/X.yaml, else
    `memory=X_schema`)."""
    from embodied.config import config_file

    def given(group: str) -> bool:
        return any(a.lstrip("+~").split("=")[0] == group for a in argv)

    chosen = []
    task = next((a.split("=", 1)[1] for a in argv if a.startswith("task.name=")), None)
    if task and not given("task"):
        from embodied.tasks import task_class

        if config_file(f"task/{task}.yaml"):
            chosen.append(f"task={task}")
        elif getattr(task_class(task), "config_class", None) is not None:
            chosen.append(f"task={task_class(task).config_class.family}_schema")
        # else: a whole vectorised env (embodied.envs.VECTOR_ENVS) on the default task's keys, or an
        # unknown name, which the task's schema check names in one line
    memory = next((a.split("=", 1)[1] for a in argv if a.startswith("memory.name=")), None)
    if memory and not given("memory") and not config_file(f"memory/{memory}.yaml"):
        from embodied.memory import MEMORIES

        check(memory in MEMORIES, "memory.name", f"{memory!r}; allowed: {', '.join(sorted(MEMORIES))}")
        chosen.append(f"memory={memory}_schema")
    elif memory and not given("memory"):
        chosen.append(f"memory={memory}")
    return [*chosen, *argv]


def cmd_report(argv: list[str]) -> None:
    p = ArgumentParser(prog="embodied report", description="render docs/results.md (tables beside the published rows, "
                       "learning curves, memory-efficiency frontier) from the result JSON files of `embodied eval`")
    p.add_argument("--results", default=None, help="folder of result JSON files (default: docs/results)")
    p.add_argument("--out", default=None, help="markdown page to write (default: docs/results.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the page is not what the files render")
    a = p.parse_args(argv)
    # else it fails after rendering, leaving OUT.tmp behind
    check_file_path("--out", a.out, f"a markdown file path, e.g. {Path(a.out or '.') / 'results.md'}")
    from embodied.eval.report import report

    raise SystemExit(report(a.results, a.out, check=a.check))


def cmd_train(argv: list[str]) -> None:
    if _help_requested(argv):
        print(command_help("train"))
        return
    from embodied.train import main as train_main

    argv = _select_by_name(argv)
    _check_hydra_args("train", argv)
    sys.argv = ["embodied train", *argv]
    train_main()


def cmd_eval(argv: list[str]) -> None:
    if _help_requested(argv):
        print(command_help("eval"))
        return
    from embodied.eval import main as eval_main
    from embodied.viewer.record import record_eval

    argv = _select_by_name(_suite_task(_pretrained_task(argv)))
    _check_hydra_args("eval", argv)
    sys.argv = ["embodied eval", *argv]
    eval_main(after=record_eval)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--debug":  # tracebacks behind one-line errors, here and in worker processes
        os.environ["EMBODIED_DEBUG"] = "1"
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    commands = {
        "scenes": cmd_scenes,
        "episodes": cmd_episodes,
        "play": cmd_play,
        "bench": cmd_bench,
        "record": cmd_record,
        "view": cmd_view,
        "video": cmd_video,
        "demos": cmd_demos,
        "train": cmd_train,
        "eval": cmd_eval,
        "report": cmd_report,
        "export": cmd_export,
    }
    if cmd not in commands:
        print(f"embodied: error: unknown command {cmd!r}; allowed: {', '.join(commands)}", file=sys.stderr)
        raise SystemExit(2)
    with one_line_errors(cmd):  # every InputError of every command, raised here or in any layer below
        commands[cmd](rest)


if __name__ == "__main__":
    main()
