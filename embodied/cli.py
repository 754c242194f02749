"""`embodied <command> ...`: each command composes a Hydra config from `configs/` (key=value overrides)
or takes plain flags where it has nothing to configure.

  embodied scenes generate --n 5 --seed 0 --out DIR     procedural apartments (SceneSpec JSON + GLB)
  embodied play task=nav/objectnav agent=oracle          one episode -> MP4 + measures JSON
  embodied bench sim [--quick] [--out FILE]              env steps/s (JSON), peers when installed
  embodied bench render                                  renderer frames/s
  embodied bench train [--device cpu|cuda|auto] [--num-envs 64,256]
                                                         end-to-end PPO training steps/s (env + forward + update)
  embodied bench memory [--device cpu|cuda]              per-step read latency of every memory vs episode length
  embodied bench memorybench [--quick] [--verify]        MemoryBench demos/min, env keyframe steps/s
                                                         (--verify: expert on all pinned seeds)
  embodied demos task=memorybench/put_block_back split=train n=100 [out=FILE.h5] [image_size=128] [quiet=true] [noise=0.02]
                                                         scripted expert demonstrations (HDF5)
  embodied bench record                                  eval steps/s with and without rerun recording
  embodied record task=nav/pointnav agent=oracle episodes=3 out=DIR [ckpt=PATH] [video=true]
                                                         one rerun recording (.rrd) per episode
  embodied view FILE.rrd [--web] [--port N]              rerun viewer (native; --web: on 127.0.0.1)
  embodied video FILE.rrd [--out FILE.mp4]               MP4 of the camera views with text overlaid
  embodied train key=value ...                           training (Hydra app; -m for sweeps)
  embodied eval key=value ...                            evaluation table

`python -m embodied ...` is the same command.
"""
from __future__ import annotations

import argparse
import sys

from embodied.config import ConfigError
from embodied.world.spec import SceneFormatError

USAGE = __doc__


def _fail(msg: str, code: int = 2) -> None:
    print(f"embodied: error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def compose(config_name: str, overrides: list[str]):
    """Compose a config from the config root; any composition error becomes one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    from embodied.config import config_dir

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{bad[0]}: overrides are key=value")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=overrides)
    except (OmegaConfBaseException, Exception) as e:  # hydra wraps errors in several types
        if isinstance(e, ConfigError):
            raise
        msg = " ".join(str(e).split())
        raise ConfigError(msg) from None


def cmd_scenes(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="embodied scenes")
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
    from pathlib import Path

    from embodied.world import write_scenes

    paths = write_scenes(a.n, a.seed, Path(a.out), n_rooms=rooms, quiet=a.quiet, object_split=a.object_split)
    print(f"wrote {len(paths)} files to {a.out}")


def cmd_play(argv: list[str]) -> None:
    cfg = compose("play", argv)
    from embodied.viewer.play import play

    play(cfg)


def cmd_bench(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="embodied bench")
    p.add_argument("what", choices=["sim", "render", "train", "record", "memory", "memorybench"])
    p.add_argument("--out", default=None, help="JSON output file (default: bench_<what>.json)")
    p.add_argument("--quick", action="store_true", help="short run (a few seconds per configuration)")
    p.add_argument("--no-peers", action="store_true", help="sim: skip MiniWorld / Memory Maze even if installed")
    p.add_argument("--device", default="cpu", help="train, memory: cpu, cuda or (train) auto")
    p.add_argument("--num-envs", default="256", help="train on cuda: envs per configuration, comma-separated")
    p.add_argument("--workers", type=int, default=None, help="train on cuda: env worker processes (default: cores - 1)")
    p.add_argument("--verify", action="store_true", help="memorybench: also run the expert on all pinned seeds")
    a = p.parse_args(argv)
    out = a.out or f"bench_{a.what}.json"
    if a.what == "sim":
        from embodied.envs.bench import bench_sim

        bench_sim(out=out, quick=a.quick, peers=not a.no_peers)
    elif a.what == "render":
        from embodied.envs.bench import bench_render_cli

        bench_render_cli(out=out, quick=a.quick)
    elif a.what == "memory":
        import json

        from embodied.memory.bench import bench_memory

        devices = None if a.device == "cpu" and not a.quick else [a.device]
        r = bench_memory(lengths=[256, 1024] if a.quick else None, devices=devices, repeats=2 if a.quick else 5)
        with open(out, "w") as f:
            json.dump(r, f, indent=1)
        print(f"wrote {out}")
    elif a.what == "memorybench":
        from embodied.tasks.memorybench.bench import bench_memorybench

        bench_memorybench(out=out, quick=a.quick, verify=a.verify)
    elif a.what == "record":
        from embodied.viewer.bench import bench_record_cli

        bench_record_cli(out=out, quick=a.quick)
    else:
        from embodied.train.bench import bench_train_cli

        try:
            cuda_envs = tuple(int(x) for x in a.num_envs.split(","))
        except ValueError:
            raise SystemExit(f"embodied bench: --num-envs {a.num_envs!r}: expected comma-separated ints, e.g. 64,256")
        bench_train_cli(out=out, quick=a.quick, device=a.device, cuda_envs=cuda_envs, cuda_workers=a.workers)


def cmd_record(argv: list[str]) -> None:
    cfg = compose("record", argv)
    from embodied.train.checkpoint import CheckpointError
    from embodied.viewer.record import record

    try:
        record(cfg)
    except (ValueError, CheckpointError) as e:  # bad checkpoint / task values: one line, no traceback
        _fail(str(e))


def cmd_view(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="embodied view")
    p.add_argument("files", nargs="+", help="recordings (.rrd)")
    p.add_argument("--web", action="store_true", help="serve the web viewer and print its URL")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=9090, help="--web: HTTP port of the web viewer")
    p.add_argument("--grpc-port", type=int, default=9876, help="--web: port of the gRPC data server")
    a = p.parse_args(argv)
    from embodied.viewer.serve import view

    try:
        view(a.files, web=a.web, host=a.host, port=a.port, grpc_port=a.grpc_port)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))


def cmd_video(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="embodied video")
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
              "noise": float, "noise_seed": int}


def cmd_demos(argv: list[str]) -> None:
    """`embodied demos task=... split=train|test n=N [out=FILE.h5] [image_size=128] [quiet=true]
    [noise=0.02 noise_seed=0]` (noise: DART-style perturbed execution, see dataset.record_demo)."""
    args: dict = {"split": "train", "n": None, "out": None, "image_size": 128, "quiet": False,
                  "noise": 0.0, "noise_seed": 0}
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"{item}: arguments are key=value; keys: {', '.join(DEMOS_KEYS)}")
        key, value = item.split("=", 1)
        if key not in DEMOS_KEYS:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(DEMOS_KEYS)}")
        kind = DEMOS_KEYS[key]
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
    if "task" not in args:
        raise ConfigError("task: missing; e.g. task=memorybench/put_block_back")
    from embodied.tasks.memorybench.dataset import write_demos

    task = args["task"] if args["task"].startswith("memorybench/") else f"memorybench/{args['task']}"
    out = args["out"] or f"data/{task.replace('/', '_')}_{args['split']}.h5"
    try:
        path = write_demos(task, args["split"], args["n"], out, image_size=args["image_size"],
                           progress=not args["quiet"], noise=args["noise"], noise_seed=args["noise_seed"])
    except ValueError as e:
        _fail(str(e))
    print(f"wrote {path}")


def cmd_hydra_app(module: str, argv: list[str]) -> None:
    import importlib

    sys.argv = [f"embodied {module.split('.')[-1]}", *argv]
    importlib.import_module(module).main()


def cmd_eval(argv: list[str]) -> None:
    from embodied.eval import main as eval_main
    from embodied.viewer.record import record_eval

    sys.argv = ["embodied eval", *argv]
    eval_main(after=record_eval)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    commands = {
        "scenes": cmd_scenes,
        "play": cmd_play,
        "bench": cmd_bench,
        "record": cmd_record,
        "view": cmd_view,
        "video": cmd_video,
        "demos": cmd_demos,
        "train": lambda r: cmd_hydra_app("embodied.train", r),
        "eval": cmd_eval,
    }
    if cmd not in commands:
        _fail(f"unknown command {cmd!r}; allowed: {', '.join(commands)}")
    try:
        commands[cmd](rest)
    except (ConfigError, SceneFormatError) as e:
        _fail(str(e))


if __name__ == "__main__":
    main()
