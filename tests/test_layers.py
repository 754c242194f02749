"""Strict layers (DESIGN.md): every import in embodied/ goes downward, and the layers form no cycle.

Each import statement (module level and inside functions) is parsed with `ast`; a file's layer is its
top-level package or module under embodied/, and so is an imported module's."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "embodied"

# Bottom to top. `loading` builds agents, envs and devices from configs and checkpoints: above the
# agents and envs it builds, below train, eval and viewer, which all load.
LAYERS = ["config", "world", "render", "sim", "tasks", "envs", "memory", "agents", "loading", "train", "eval",
          "viewer", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}



def layer_of_file(path: Path) -> str | None:
    """`__init__.py` of embodied holds no code; `__main__.py` is the command line (it runs cli.main)."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return {"__main__.py": "cli", "__init__.py": None}.get(parts[0], parts[0].removesuffix(".py"))
    return parts[0]


def layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "embodied" or len(parts) == 1:
        return None
    return parts[1]


def imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file (its dotted name: `module`, else from its path
    under embodied/); `from embodied import x` names embodied.x."""
    tree = ast.parse(path.read_text(), str(path))
    package = module or ".".join(("embodied", *path.relative_to(PACKAGE).with_suffix("").parts))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package
                anchor = package.split(".")[:-node.level]
                base = ".".join(anchor + ([base] if base else []))
            if base == "embodied":
                out += [(node.lineno, f"embodied.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def layer_edges() -> list[tuple[str, str, str, int, str]]:
    """(source layer, target layer, file, line, module) of every import between two layers."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer_of_file(path)
        for line, module in imports(path):
            target = layer_of_module(module)
            if source is None or target is None or target == source:
                continue
            edges.append((source, target, str(path.relative_to(PACKAGE)), line, module))
    return edges


def test_every_file_and_import_has_a_known_layer():
    unknown = sorted({e[0] for e in layer_edges()} | {e[1] for e in layer_edges()} - set(LAYERS))
    unknown = [u for u in unknown if u not in RANK]
    assert not unknown, f"modules of embodied/ outside the layer order {LAYERS}: {unknown}"


def test_imports_only_go_downward():
    upward = [f"embodied/{f}:{line}: {src} imports {module} ({dst} is above {src})"
              for src, dst, f, line, module in layer_edges() if RANK[dst] > RANK[src]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_cycle_between_layers():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for src, dst, f, line, module in layer_edges():
        graph.setdefault(src, set()).add(dst)
        where.setdefault((src, dst), f"embodied/{f}:{line} imports {module}")

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    for layer in LAYERS:
        cycle = cycle_from(layer)
        assert cycle is None, (f"cycle between layers {' -> '.join(cycle)}: "
                               + "; ".join(where[(a, b)] for a, b in zip(cycle, cycle[1:])))


def test_eval_and_viewer_never_import_a_trainer():
    offending = [f"embodied/{f}:{line}: imports {module}" for src, dst, f, line, module in layer_edges()
                 if src in ("eval", "viewer") and dst == "train"]
    assert not offending, "eval/viewer import embodied.train (load through embodied.loading):\n" + "\n".join(offending)


def test_eval_holds_no_training_loop():
    """Training is `embodied train` with a recipe: no optimizer is built in eval/ or viewer/."""
    offending = [f"embodied/{path.relative_to(PACKAGE)}:{node.lineno}" for path in sorted(PACKAGE.rglob("*.py"))
                 if layer_of_file(path) in ("eval", "viewer")
                 for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
                 and node.attr in ("backward", "Adam", "AdamW", "SGD")]
    assert not offending, "training code in eval/ or viewer/: " + ", ".join(offending)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The parser finds imports inside functions and resolves relative ones, so the tests above can fail."""
    fake = tmp_path / "bench.py"
    fake.write_text("import torch\n\ndef f():\n    from embodied.cli import compose\n    from ..eval import runner\n"
                    "    from . import ppo\n    from embodied import viewer\n")
    found = imports(fake, "embodied.train.bench")
    assert found == [(1, "torch"), (4, "embodied.cli"), (5, "embodied.eval"), (6, "embodied.train"),
                     (7, "embodied.viewer")]
    assert [layer_of_module(m) for _, m in found] == [None, "cli", "eval", "train", "viewer"]


# --- registration is explicit, selection goes through registries ----------------------------------

def _run_python(code: str) -> str:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_importing_train_or_eval_registers_no_schema_and_compose_registers_what_it_needs():
    out = _run_python(
        "from hydra.core.config_store import ConfigStore\n"
        "import embodied.train, embodied.eval\n"
        "repo = ConfigStore.instance().repo\n"
        "print('train_schema.yaml' in repo, 'eval_schema.yaml' in repo)\n"
        "from embodied.config import compose, register_schemas\n"
        "cfg = compose('eval', ['task.name=toy/corridor', 'episodes=3'])\n"
        "register_schemas(); register_schemas('eval')  # idempotent\n"
        "print(type(cfg.episodes).__name__, sorted(k for k in repo['trainer'] if k.endswith('_schema.yaml')))\n")
    lines = out.splitlines()
    assert lines[-2] == "False False"  # before: importing the packages stored both schemas
    assert lines[-1] == "int ['bc_schema.yaml', 'ppo_schema.yaml']"  # one imitation trainer (bc), one RL (ppo)


def test_compose_in_a_fresh_process_checks_keys_against_the_schema():
    """compose('train') registers the train schemas itself: an unknown key fails at composition."""
    out = _run_python(
        "from embodied.config import ConfigError, compose\n"
        "try:\n    compose('train', ['task.name=toy/corridor', 'total_stepz=5'])\n"
        "except ConfigError as e:\n    print('error', e)\n")
    assert out.startswith("error total_stepz: unknown key") and "total_steps" in out


def test_trainers_are_chosen_through_the_registry(tmp_path):
    from omegaconf import OmegaConf

    from embodied.config import compose
    from embodied.train.config import TRAINERS, register_trainer
    from embodied.train.run import finished_message, train

    assert list(TRAINERS)[:2] == ["ppo", "bc"]
    calls = []

    @dataclass
    class NoopConfig:
        name: str = "noop"

        def validate(self, num_envs: int):
            return self

    @register_trainer("noop", NoopConfig, finished=lambda cfg, ckpt: "done already")
    def run_noop(cfg, env_factory=None):
        calls.append((cfg.trainer.name, env_factory))
        return {"status": "finished"}

    try:
        cfg = OmegaConf.create(OmegaConf.to_container(compose("train", ["task.name=toy/corridor", f"run_dir={tmp_path}"])))
        cfg.trainer = {"name": "noop"}  # a trainer the train config has no schema for
        factory = object()
        assert train(cfg, env_factory=factory) == {"status": "finished"}
        assert calls == [("noop", factory)]
        assert finished_message(cfg, {"counters": {}}) == "done already"
    finally:
        TRAINERS.pop("noop", None)


def test_train_run_names_no_task_or_trainer():
    """No `trainer.name == ...` dispatch and no task-name prefixes in embodied/train/run.py."""
    tree = ast.parse((PACKAGE / "train" / "run.py").read_text())
    compares = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare) and "trainer.name" in ast.unparse(n)]
    prefixes = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and n.value.rstrip("/") in ("toy", "nav", "memorybench", "fastmap", "ballet", "room_ballet")]
    assert not compares and not prefixes, (compares, prefixes)


def test_vector_envs_are_selected_by_task_name_through_their_registry():
    from embodied.envs import VECTOR_ENVS, register_vector_env
    from embodied.envs.toy import CorridorVectorEnv
    from embodied.loading import env_spaces, make_envs

    assert isinstance(make_envs({"name": "toy/corridor", "length": 4}, 2, 0, 0), CorridorVectorEnv)

    @register_vector_env("toy/short_line")
    def short_line(task_cfg, num_envs, seed, num_workers):
        return CorridorVectorEnv(num_envs, seed=seed, length=3, max_steps=5)

    try:
        envs = make_envs({"name": "toy/short_line"}, 3, 0, None)
        assert (envs.num_envs, envs.length, envs.max_steps) == (3, 3, 5)
        obs_space, action_space = env_spaces({"name": "toy/short_line"})
        assert list(obs_space.spaces) == ["pointgoal"] and action_space.n == 6
    finally:
        VECTOR_ENVS.pop("toy/short_line")
