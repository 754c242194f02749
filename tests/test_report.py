"""`embodied report`: the results page is rendered from the JSON files `embodied eval` writes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import embodied.train  # noqa: F401  (registers the config schemas)
from embodied.cli import main as cli_main
from embodied.config import compose, repo_root
from embodied.eval.report import render, report
from embodied.eval.runner import evaluate

TOY = ["task.name=toy/corridor", "task.max_steps=24", "memory=gru", "memory.hidden=16", "agent.hidden=16",
       "trainer.rollout_steps=16", "num_envs=4", "num_workers=0", "device=cpu", "quiet=true", "ckpt_every=1000"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A trained toy checkpoint and a random baseline, each evaluated into results/."""
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    # through the command line, as a user trains: the run keeps its overrides, the report its command
    subprocess.run([sys.executable, "-m", "embodied", "train", *TOY, f"run_dir={run}", "total_steps=192"], check=True,
                   capture_output=True)
    out = root / "results"
    evaluate(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", f"ckpt={run / 'latest.pt'}",
                              "episodes=12", "num_envs=4", "num_workers=0", "quiet=true", f"out={out / 'toy_gru.json'}"]))
    evaluate(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "agent=random", "episodes=10",
                              "num_workers=0", "quiet=true", f"out={out / 'toy_random.json'}"]))
    return out


def test_eval_files_carry_provenance_training_and_memory_cost(results):
    data = json.loads((results / "toy_gru.json").read_text())
    prov = data["provenance"]
    assert prov["hardware"]["cpus"] >= 1 and prov["hardware"]["cpu"]
    assert prov["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["commit"])
    training = data["training"]
    # the train command is rebuilt from the run's overrides; run_dir is the only key left out
    assert training["command"].startswith("embodied train ") and "memory=gru" in training["command"]
    assert "run_dir=" not in training["command"]
    assert training["provenance"]["command"].startswith("embodied train ")  # the start's own provenance
    assert training["provenance"]["hardware"] == prov["hardware"]
    assert [row["update"] for row in training["curve"]] == [1, 2, 3]  # 192 steps / (16 x 4) per update
    cost = data["results"][0]["memory"]
    assert cost["state_bytes"] == 16 * 4  # one env's GRU hidden row: 16 float32
    assert cost["read_calls"] > 0 and cost["read_batch"] == 4 and cost["read_s_per_env_step"] > 0
    assert "memory" not in json.loads((results / "toy_random.json").read_text())["results"][0]


def test_page_shows_each_file_row_with_its_interval_and_commands(results):
    text, images = render(results)
    rows = {json.loads(p.read_text())["agent"]: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert set(rows) == {"gru", "random"}
    for agent, data in rows.items():
        s = data["results"][0]["success"]
        line = next(x for x in text.splitlines() if x.startswith(f"| corridor | {agent} |"))
        assert f"{s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]" in line
        assert f"`{data['provenance']['command']}`" in line
    gru_line = next(x for x in text.splitlines() if x.startswith("| corridor | gru |"))
    assert rows["gru"]["training"]["command"] in gru_line
    assert "## Memory efficiency" in text and "frontier.png" in text and "curves_toy.png" in text
    assert set(images) == {"frontier.png", "curves_toy.png"}
    assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in images.values())


def test_published_rows_and_chance_come_from_the_task_tables(tmp_path):
    """A Ballet result is printed beside chance and the published anchor of tasks/ballet.yaml."""
    out = tmp_path / "results"
    evaluate(compose("eval", ["task=ballet/4_delay16", "agent=random", "episodes=4", "num_workers=0", "quiet=true",
                              f"out={out / 'ballet.json'}"]))
    text, _ = render(out, plots=False)
    row = next(x for x in text.splitlines() if x.startswith("| 4_delay16 | random |"))
    assert "| 0.25 |" in row  # chance: 1 / 4 dancers
    assert "| 4_delay16 | recurrent PPO, novel seeds (delay not stated) | 0.55 | pleines2022 |" in text
    assert "- pleines2022: Pleines et al." in text


def test_check_mode_tells_a_stale_page_and_writes_nothing(results, tmp_path):
    page = tmp_path / "results.md"
    assert report(results, page, check=True) == 1 and not page.exists()
    assert report(results, page) == 0 and (results / "frontier.png").is_file()
    assert report(results, page, check=True) == 0
    page.write_text(page.read_text().replace("corridor", "corridor (edited)"))
    assert report(results, page, check=True) == 1


def test_bad_result_files_end_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"not": "a report"}')
    args = ["report", "--results", str(tmp_path), "--out", str(tmp_path / "r.md")]
    for results, message in ((tmp_path, f"{tmp_path / 'bad.json'}: not an `embodied eval` report (no `results` list)"),
                             (tmp_path / "missing", f"--results {tmp_path / 'missing'}: no such directory")):
        args[2] = str(results)
        with pytest.raises(SystemExit) as exit_info:
            cli_main(args)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == f"embodied report: error: {message}"
    assert not (tmp_path / "r.md").exists()


def test_the_committed_results_page_is_what_its_files_render():
    assert report(repo_root() / "docs" / "results", repo_root() / "docs" / "results.md", check=True) == 0


def test_rows_of_one_memory_by_two_recipes_are_told_apart_with_their_words(tmp_path):
    """Two SAT rows of one task get their recipes as labels; success per question type and the
    memory's per-episode choice are tabled; chance falls back to the episodes' own `chance`."""
    episodes = [{"success": float(i % 2), "chance": 0.1, "question_type": "recent" if i < 6 else "early",
                 "memory/strategy": "fifo" if i < 5 else "lifo"} for i in range(10)]
    for recipe in ("room_ballet_multi_ama", "room_ballet_multi_fifo"):
        result = {"task": "room_ballet/multi", "policy": "checkpoint", "episodes": 10, "per_episode": episodes,
                  "success": {"mean": 0.5, "ci_low": 0.24, "ci_high": 0.76, "n": 10},
                  "by": {"question_type": {"early": {"mean": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n": 4},
                                           "recent": {"mean": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 6}},
                         "memory/strategy": {"fifo": {"mean": 0.4, "ci_low": 0.1, "ci_high": 0.8, "n": 5}}}}
        report_file = {"agent": "sat", "results": [result], "provenance": {"command": "embodied eval x"},
                       "training": {"command": f"embodied train +experiment={recipe}"}}
        (tmp_path / f"{recipe}.json").write_text(json.dumps(report_file))
    text, _ = render(tmp_path, plots=False)
    assert "| multi | sat (room_ballet_multi_ama) | 10 | 0.50 [0.24, 0.76] | 0.10 |" in text
    assert "| multi | sat (room_ballet_multi_fifo) | 10 |" in text
    assert "| multi | sat (room_ballet_multi_ama) | question_type=recent | 0.50 [0.20, 0.80] | fifo 5, lifo 1 |" in text
    assert "| multi | sat (room_ballet_multi_ama) | question_type=early | 0.50 [0.10, 0.90] | lifo 4 |" in text


def test_rows_of_one_recipe_evaluated_two_ways_are_told_apart_by_file(tmp_path):
    """One checkpoint (one recipe) evaluated at two budgets: the recipe would label both rows alike,
    so each names its result file."""
    for name in ("goat_pointer", "goat_pointer_budget150"):
        result = {"task": "nav/goat", "method": "scenemem learned chooser (kept)", "episodes": 4,
                  "success": {"mean": 0.5, "ci_low": 0.15, "ci_high": 0.85, "n": 4}}
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "results": [result], "provenance": {"command": "embodied eval x"},
            "training": {"command": "embodied train +experiment=goat_pointer"}}))
    text, _ = render(tmp_path, plots=False)
    assert "| goat | scenemem learned chooser (kept) (goat_pointer) | 4 |" in text
    assert "| goat | scenemem learned chooser (kept) (goat_pointer_budget150) | 4 |" in text


def test_a_bar_in_a_published_note_stays_inside_its_cell(tmp_path):
    import shutil

    shutil.copy(repo_root() / "docs" / "results" / "fastmap_heldout_test_objs_dcem_seed0.json", tmp_path)
    text, _ = render(tmp_path, plots=False)
    row = next(line for line in text.splitlines() if "| published |" in line)
    assert "grows with \\|G\\|" in row and row.count(" | ") == 3  # four cells, the note's bars escaped


def test_provenance_counts_code_changes_as_dirty_but_not_earlier_results(tmp_path, monkeypatch):
    """A result written after a sibling result in the same tree is still clean; a code change is not."""
    import subprocess

    import embodied.config as config

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(config, "repo_root", lambda: tmp_path)
    assert config.provenance("cmd")["dirty"] is False
    (tmp_path / "docs" / "results" / "a.json").write_text('{"new": 1}')
    assert config.provenance("cmd")["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert config.provenance("cmd")["dirty"] is True


def test_success_by_learning_epoch_is_plotted_per_tier(tmp_path):
    """The household's self-evolution (success after each epoch, per variant and tier) gets a plot on
    the page; a file measured after one epoch only gets none."""
    from embodied.cli import main

    results = tmp_path / "results"
    for name, epochs in (("two", 2), ("one", 1)):
        main(["eval", "task=household/tier1", "agent=optimus", "agent.variants=[full,reactive]", f"agent.epochs={epochs}",
              "agent.tasks_per_epoch=5", "episodes=3", f"out={results / f'hh_{name}.json'}", "quiet=true"])
    page = tmp_path / "results.md"
    assert report(results, page) == 0
    text = page.read_text()
    assert "(results/evolution_hh_two.png)" in text and "evolution_hh_one" not in text
    assert (results / "evolution_hh_two.png").stat().st_size > 1000 and not (results / "evolution_hh_one.png").exists()


def test_cost_points_are_one_per_file_and_agent_with_success_averaged_over_its_tasks():
    from embodied.eval.report import cost_points

    def row(file, agent, task, success, state, read=None):
        cost = {"state_bytes": state} if read is None else {"state_bytes": state, "read_s_per_env_step": read}
        return {"file": file, "agent": agent, "task": task, "family": task.split("/")[0],
                "success": {"mean": success}, "memory_cost": cost}

    rows = [row("hh.json", "full", "household/tier1", 1.0, 100, 2e-5), row("hh.json", "full", "household/tier2", 0.5, 100, 4e-5),
            row("hh.json", "no_pool", "household/tier1", 0.2, 10), row("b.json", "hcam", "ballet/4_delay16", 0.9, 80, 1e-3),
            {**row("b.json", "none", "ballet/4_delay16", 0.3, 0), "memory_cost": {}}]
    points = {(p["family"], p["agent"]): p for p in cost_points(rows)}
    assert set(points) == {("household", "full"), ("household", "no_pool"), ("ballet", "hcam")}
    full = points[("household", "full")]
    assert full["success"] == 0.75 and full["state_bytes"] == 100 and full["read_s_per_env_step"] == pytest.approx(3e-5)
    assert full["task"] == "household: 2 tasks, mean" and points[("ballet", "hcam")]["task"] == "4_delay16"
    assert points[("household", "no_pool")]["read_s_per_env_step"] is None
