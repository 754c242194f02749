"""Every command ends bad input with one stderr line `embodied <command>: error: ...` and exit 2;
Hydra composition errors name the key and what is allowed; --help works on every command."""
from pathlib import Path
import sys

import pytest

from embodied.cli import main
from embodied.config import ConfigError, compose


def fails(capsys, command, *argv):
    """Run `embodied <command> argv...` in-process; return its one error line (asserting there is one)."""
    with pytest.raises(SystemExit) as exit_:
        main([command, *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"embodied {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command,argv,expected", [
    ("train", ["num_envs=abc"], "num_envs: 'abc'; allowed: an integer"),
    ("eval", ["episodes=1.5"], "episodes: '1.5'; allowed: an integer"),
    ("play", ["task.heigth=64"], "task.heigth: unknown key; closest: task.height"),
    ("record", ["episodes=abc"], "episodes: 'abc'; allowed: an integer"),
    ("demos", ["n=abc"], "n: 'abc'; allowed: an integer"),
    ("bench", ["nonsense"], "invalid choice: 'nonsense'"),
    ("scenes", ["generate", "--n", "0", "--out", "unused"], "--n: 0; allowed: >= 1"),
    ("scenes", ["generate"], "required: --out"),
    ("episodes", ["check", "missing.json.gz"], "missing.json.gz: no such episode file"),
    ("episodes", ["export", "--out", "x.json"], "--out: x.json; allowed: a .json.gz file"),
    ("episodes", ["check", "x.json.gz", "--agent-radius", "5"], "--agent-radius: 5.0; allowed: 0.05..1.0"),
    ("view", ["x.rrd", "--port", "abc"], "--port: invalid int value: 'abc'"),
    ("video", ["missing.rrd"], "missing.rrd"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, tmp_path, monkeypatch, command, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert expected in fails(capsys, command, *argv)


def test_train_composition_errors_name_the_key_and_what_is_allowed(capsys):
    line = fails(capsys, "train", "task.heigth=64")
    assert "task.heigth: unknown key; closest: task.height; allowed: " in line and "+task" not in line
    line = fails(capsys, "train", "task=nav/pointnavv")
    assert "task=nav/pointnavv: no such task config; allowed: nav/pointnav, " in line  # closest first
    allowed = line.split("allowed: ")[1].split(", ")
    assert {"nav/objectnav", "memorybench/put_block_back", "fastmap/cpu/heldout_test_objs"} <= set(allowed)
    assert fails(capsys, "train", "trainer=ppoo").endswith("allowed: ppo, bc")  # no *_schema entries
    assert fails(capsys, "train", "task.height=64.5").endswith("task.height: '64.5'; allowed: an integer")
    assert fails(capsys, "train", "memory.hidden=abc").endswith("memory.hidden: 'abc'; allowed: an integer")
    assert fails(capsys, "train", "quiet=maybe").endswith("quiet: 'maybe'; allowed: true, false")
    assert "unrecognized arguments: --nonsense" in fails(capsys, "train", "--nonsense")
    # a -m sweep: every value is checked before the first job starts
    assert "memory=lsstm: no such memory config; allowed: lstm" in fails(capsys, "train", "-m", "memory=gru,lsstm")


def test_values_of_the_right_type_still_compose():
    from embodied.config import compose

    cfg = compose("play", ["task.hfov=90", "task.height=32", "quiet=true", "task.n_rooms=3",
                           "task.success_distance=0.5"])
    assert cfg.task.hfov == 90 and cfg.task.height == 32 and cfg.quiet is True and cfg.task.n_rooms == 3
    with pytest.raises(ConfigError, match=r"task.n_rooms: '2.5'; allowed: an integer or null"):
        compose("play", ["task.n_rooms=2.5"])


def test_hydra_apps_give_one_line_without_the_cli(capsys, monkeypatch):
    """`python -m embodied.train` / torchrun and `python -m embodied.eval` enter Hydra directly."""
    import os

    import embodied.eval
    import embodied.train

    monkeypatch.setattr(sys, "argv", ["embodied.train", "task.heigth=64"])
    with pytest.raises(SystemExit) as exit_:
        embodied.train.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("embodied train: error: task.heigth: unknown key")
    assert "HYDRA_FULL_ERROR" not in os.environ
    # bad input inside the job: one line, not Hydra's extra "Error executing job" line
    monkeypatch.setattr(sys, "argv", ["embodied.eval", "record=true", "task.name=toy/corridor", "agent=oracle"])
    with pytest.raises(SystemExit) as exit_:
        embodied.eval.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == ["embodied eval: error: record: true needs the `embodied eval` command "
                                             "(the viewer records)"]


def test_debug_switch_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("EMBODIED_DEBUG", "1")
    with pytest.raises(ConfigError, match="task.heigth"):
        main(["play", "task.heigth=64"])
    monkeypatch.setenv("EMBODIED_DEBUG", "0")  # monkeypatch restores it after --debug sets it
    with pytest.raises(ConfigError, match="n: 'abc'"):
        main(["--debug", "demos", "n=abc"])


def test_interrupt_is_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import embodied.cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(embodied.cli, "cmd_scenes", interrupted)
    try:
        main(["scenes"])
    except BaseException as e:  # not pytest.raises: an escaping KeyboardInterrupt would end the test session
        ended = e
    assert isinstance(ended, SystemExit) and ended.code == 130
    assert capsys.readouterr().err == "embodied scenes: interrupted\n"

    def bug(argv):
        raise RuntimeError("a bug")

    monkeypatch.setattr(embodied.cli, "cmd_scenes", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["scenes"])


@pytest.mark.parametrize("command", ["train", "eval", "play", "record", "demos", "bench", "scenes", "episodes", "view",
                                     "video"])
def test_help_on_every_command(capsys, command):
    try:
        main([command, "--help"])
    except SystemExit as e:  # argparse commands exit 0 after their help
        assert e.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: embodied {command}")
    if command in ("train", "eval", "play", "record"):
        assert "_schema" not in out and "\n  task        default nav/pointnav; options: " in out
    if command == "train":
        groups = [line.split()[0] for line in out.split("config groups")[1].split("keys (")[0].splitlines()[1:] if line]
        assert groups == ["task", "memory", "trainer", "agent", "logger", "launcher", "experiment"]
        assert "\n  total_steps=1000000" in out


def test_demos_never_replace_an_existing_file(capsys, tmp_path, monkeypatch):
    # Refused before any env is built: the earlier file keeps its bytes.
    out = tmp_path / "demos.npz"
    out.write_bytes(b"earlier demos")
    line = fails(capsys, "demos", "task=memorybench/put_block_back", "n=1", f"out={out}")
    assert f"{out} exists" in line and "overwrite=true" in line
    assert out.read_bytes() == b"earlier demos"


@pytest.mark.parametrize("command,argv,expected", [
    ("play", ["out=/dev/null/x", "video=false"], "/dev/null/x: Not a directory"),
    ("scenes", ["generate", "--n", "1", "--out", "/proc/embodied-test"], "/proc/embodied-test"),
    ("play", ["fps=0"], "fps: 0; allowed: >= 1"),
    ("bench", ["memory", "--device", "tpu"], "invalid choice: 'tpu'"),
    ("bench", ["soak", "--only", "fastmapp"], "--only fastmapp: no such task family; allowed: ballet, fastmap"),
])
def test_unusable_paths_and_values_are_one_line(capsys, tmp_path, monkeypatch, command, argv, expected):
    # An OSError naming a path the user gave (a file where a folder must go) is bad input, not a bug.
    monkeypatch.chdir(tmp_path)
    assert expected in fails(capsys, command, *argv)


@pytest.mark.parametrize("argv,name", [
    (["task=nav/pointnav", "trainer=bc", "num_workers=0"], "demos.npz"),
    (["task=memorybench/put_block_back", "agent=keyframe", "memory=membank"], "demos.npz"),
])
def test_a_bad_demo_file_stops_train_before_it_starts(capsys, tmp_path, argv, name):
    # One line before the start lines and the env workers; the run directory is never created.
    demos = tmp_path / name
    demos.write_bytes(b"\x89garbage" * 64)
    line = fails(capsys, "train", *argv, f"trainer.demos={demos}", f"run_dir={tmp_path / 'run'}")
    assert str(demos) in line
    assert not (tmp_path / "run").exists()


def test_a_key_an_experiment_sets_for_another_memory_names_the_experiment_file():
    """`+experiment=ballet_hcam memory=lstm`: the HCAM sizes the experiment sets are not LSTM keys."""
    with pytest.raises(ConfigError) as info:
        compose("train", ["+experiment=ballet_hcam", "memory=lstm"])
    assert str(info.value) == ("memory.dim: unknown key (set in configs/experiment/ballet_hcam.yaml); "
                               "allowed: memory.hidden, memory.layers, memory.lifelong, memory.name")


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "experiment").glob("*.yaml")))
def test_every_experiment_recipe_composes_into_a_valid_run(name):
    """A recipe that names a moved task, a renamed key or a memory option of another memory fails here,
    not half an hour into a training run on a cluster."""
    cfg = compose("train", [f"+experiment={name}"])
    assert cfg.task.name and cfg.memory.name and cfg.trainer.name


@pytest.mark.parametrize("argv,expected", [
    (["task=nav/goat", "agent=scenemem", "confidence=2"], "confidence: 2.0; allowed: (0, 1)"),
    (["task=nav/goat", "agent=scenemem", "seed=-5"], "seed: -5; allowed: 0 <= seed"),
    (["task=household/tier1", "agent=optimus", "confidence=0"], "confidence: 0.0; allowed: (0, 1)"),
    (["task=household/tier1", "agent=optimus", "split=bogus"], "split: 'bogus'; allowed: train, val, test, null"),
])
def test_eval_keys_are_checked_for_the_goat_and_household_protocols_too(capsys, tmp_path, monkeypatch, argv, expected):
    # nav/goat and household run their own protocols: the shared keys still fail at start, in one line,
    # not as a traceback from the statistics once every episode has run.
    monkeypatch.chdir(tmp_path)
    assert expected in fails(capsys, "eval", *argv, "episodes=1", "quiet=true")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [["task=nav/pointnav", "agent=oracle"], ["task=household/tier1", "agent=optimus"]])
def test_eval_out_that_is_a_directory_fails_before_the_episodes(capsys, tmp_path, argv):
    # It used to fail after the whole evaluation, naming OUT.tmp, and leave that temp file behind.
    line = fails(capsys, "eval", *argv, "episodes=1", "quiet=true", f"out={tmp_path}")
    assert f"out: {tmp_path} is a directory; allowed: a JSON file path" in line
    assert not list(tmp_path.iterdir()) and not tmp_path.with_name(tmp_path.name + ".tmp").exists()


BENCHES = {"sim": "embodied.envs.bench:bench_sim", "render": "embodied.envs.bench:bench_render_cli",
           "memory": "embodied.memory.bench:bench_memory", "scenemem": "embodied.eval.goat:bench_scene_memory",
           "memorybench": "embodied.tasks.memorybench.bench:bench_memorybench", "soak": "embodied.envs.soak:bench_soak",
           "record": "embodied.viewer.bench:bench_record_cli", "train": "embodied.train.bench:bench_train_cli"}


@pytest.mark.parametrize("what", sorted(BENCHES))
def test_bench_out_that_is_a_directory_fails_before_the_bench(capsys, tmp_path, monkeypatch, what):
    # It used to run the whole bench and then fail writing the JSON ("DIR: Is a directory").
    import importlib

    module, _, function = BENCHES[what].partition(":")

    def ran(*args, **kwargs):
        raise AssertionError(f"bench {what} started")

    monkeypatch.setattr(importlib.import_module(module), function, ran)
    line = fails(capsys, "bench", what, "--quick", "--out", str(tmp_path))
    assert f"--out: {tmp_path} is a directory; allowed: a JSON file path, e.g. {tmp_path / f'bench_{what}.json'}" in line
    assert not list(tmp_path.iterdir())


def test_episodes_check_out_that_is_a_directory_fails_before_the_check(capsys, tmp_path, monkeypatch):
    # It used to read and check every episode, print the summary, and then fail writing the report.
    import embodied.tasks.habitat_episodes as habitat_episodes

    def ran(*args, **kwargs):
        raise AssertionError("the check started")

    monkeypatch.setattr(habitat_episodes, "read_habitat_episodes", ran)
    out = tmp_path / "reports"
    out.mkdir()
    line = fails(capsys, "episodes", "check", str(tmp_path / "episodes.json.gz"), "--out", str(out))
    assert f"--out: {out} is a directory; allowed: a JSON file path" in line
    assert not capsys.readouterr().out and not list(out.iterdir())


@pytest.mark.parametrize("command,argv,expected", [
    ("play", ["task=ballet/4_delay16"], "task: ballet/4_delay16: embodied play runs the navigation tasks; allowed: nav/goat, "),
    ("play", ["task=household/tier1"], "task: household/tier1: embodied play runs the navigation tasks"),
    ("play", ["seed=-1"], "seed: -1; allowed: >= 0"),
    ("record", ["agent=oracle", "seed=-1"], "seed: -1; allowed: >= 0"),
])
def test_play_and_record_refuse_what_they_cannot_run_in_one_line(capsys, tmp_path, command, argv, expected):
    # These were tracebacks (a KeyError on info["scene"], numpy's seed error) after out was created.
    assert expected in fails(capsys, command, *argv, f"out={tmp_path / 'out'}", "quiet=true")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,agent", [
    (["task=nav/goat", "agent=scenemem"], "scenemem"),
    (["task=household/tier1", "agent=optimus"], "optimus"),
    (["agent=oracle"], "oracle"),
])
def test_train_with_an_agent_that_has_nothing_to_train_names_the_agent(capsys, tmp_path, argv, agent):
    # Was "build_agent() got multiple values for keyword argument 'memory'" or "unknown agent option 'kind'".
    line = fails(capsys, "train", *argv, f"run_dir={tmp_path / 'run'}", "total_steps=16", "quiet=true")
    assert f"agent: '{agent}' (agent.kind) has no weights to train" in line
    assert line.endswith("allowed: default, goat_pointer, keyframe")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command,argv,expected", [
    ("eval", ["task=nav/pointnav", "ckpt={d}"], "{d}: a directory; allowed: a checkpoint file (a run directory's latest.pt"),
    ("record", ["ckpt={d}"], "{d}: a directory; allowed: a checkpoint file"),
    ("eval", ["agent=oracle", "task.episodes_file={d}"], "{d}: a directory; allowed: a habitat-lab PointNav/ObjectNav episode file"),
    ("episodes", ["check", "{d}"], "{d}: a directory; allowed: a habitat-lab PointNav/ObjectNav episode file"),
    ("view", ["{d}"], "{d}: a directory; allowed: a recording file in it (episode_000.rrd, ...)"),
    ("video", ["{d}"], "{d}: a directory; allowed: a recording file in it"),
])
def test_a_directory_where_a_file_goes_is_named_as_one(capsys, tmp_path, monkeypatch, command, argv, expected):
    # A run directory for ckpt=, a recordings folder for view: it used to say "no such ... file".
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "given"
    d.mkdir()
    argv = [a.format(d=d) for a in argv]
    assert expected.format(d=d) in fails(capsys, command, *argv, *(["out=o.json", "episodes=1"] if command == "eval" else []))


@pytest.mark.parametrize("command,argv,expected", [
    # a training-only agent config: was Hydra's "In 'agent/goat_pointer': Could not override 'trainer'. ..."
    ("eval", ["task=nav/goat", "agent=goat_pointer"], "agent=goat_pointer: configs/agent/goat_pointer.yaml selects the "
     "trainer group, which only `embodied train` has (eval and record take a trained agent as ckpt=PATH)"),
    ("play", ["agent=keyframe"], "agent=keyframe: configs/agent/keyframe.yaml selects the trainer group"),
    # was "agent: None needs ckpt=..."
    ("record", ["agent=default"], "agent: a trained agent's config (no agent.kind) needs ckpt=PATH; allowed without one: oracle"),
    # was "task: 'memorybench/nav/pointnav'; ..."
    ("demos", ["task=nav/pointnav", "n=1"], "task: 'nav/pointnav'; allowed: memorybench/"),
    # was "/etc/passwd: File exists" (from creating the folder)
    ("eval", ["task=household/tier1", "agent=optimus", "agent.memory={f}", "out=o.json"],
     "agent.memory: {f} is a file; allowed: a folder of <variant>.sqlite memory files, or null"),
    # was a failure after rendering, naming DIR.tmp and leaving it behind
    ("report", ["--results", "{d}", "--out", "{d}"], "--out: {d} is a directory; allowed: a markdown file path"),
    # was "run_dir: cannot write FILE/.lock (File exists)" and "FILE: File exists" (from creating the folder)
    ("train", ["run_dir={f}", "total_steps=16", "quiet=true"],
     "run_dir: {f} is a file; allowed: a directory path (new, or an earlier run's to resume)"),
    ("record", ["agent=oracle", "out={f}", "episodes=1", "quiet=true"], "out: {f} is a file; allowed: a directory path"),
    ("play", ["out={f}", "episodes=1", "quiet=true", "video=false"], "out: {f} is a file; allowed: a directory path"),
    ("scenes", ["generate", "--n", "1", "--out", "{f}", "--quiet"], "--out: {f} is a file; allowed: a directory path"),
    # was "--results FILE: no such directory"
    ("report", ["--results", "{f}", "--out", "{d}/r.md"], "--results: {f} is a file; allowed: a folder of result JSON files"),
])
def test_misleading_messages_name_what_is_wrong(capsys, tmp_path, monkeypatch, command, argv, expected):
    monkeypatch.chdir(tmp_path)
    f, d = tmp_path / "file", tmp_path / "dir"
    f.write_text("x")
    d.mkdir()
    line = fails(capsys, command, *[a.format(f=f, d=d) for a in argv])
    assert expected.format(f=f, d=d) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"] and not list(d.iterdir())


@pytest.mark.parametrize("command", ["eval", "record"])
def test_a_checkpoint_of_another_task_family_is_named_as_such(capsys, tmp_path, command):
    # It was one 480-character line of missing/unexpected weight names.
    line = fails(capsys, command, "ckpt=pretrained:ballet_hcam", "task=nav/pointnav", "episodes=1", "quiet=true",
                 f"out={tmp_path / 'out'}")
    assert line == (f"embodied {command}: error: ckpt: pretrained:ballet_hcam was trained on ballet/4_delay16, another "
                    "task family than task=nav/pointnav; allowed: a ballet/ task (e.g. task=ballet/4_delay16)")
    assert not list(tmp_path.iterdir())


def test_eval_split_does_not_silently_replace_a_scene_file(capsys):
    line = fails(capsys, "eval", "task=nav/pointnav", "agent=oracle", "task.scenes=/nonexistent/scene.json", "episodes=1")
    assert "split: test would replace task.scenes=/nonexistent/scene.json; allowed: split=null" in line


def test_a_keyframe_checkpoint_on_another_task_family_is_one_line(capsys):
    line = fails(capsys, "eval", "ckpt=pretrained:put_block_back_membank", "task=nav/pointnav", "episodes=1")
    assert "ckpt: " in line and "holds a KeyframeAgent trained on memorybench/put_block_back" in line
    assert "allowed: task=memorybench/put_block_back" in line
