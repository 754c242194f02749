"""Shipped checkpoints: small, weights-only files that load into the agents their recipes compose;
`ckpt=pretrained:NAME` names them; `embodied export` writes them; `embodied eval suite=pretrained`
evaluates them all into one table and the result files `embodied report` renders."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

import embodied.train  # noqa: F401  (registers the config schemas)
from embodied.agents import AgentConfig
from embodied.cli import main as cli_main
from embodied.config import InputError, compose
from embodied.eval.pretrained import MAX_BYTES, cast_weights, evaluation_figure, export, task_option
from embodied.eval.report import render, success_of
from embodied.eval.runner import evaluate
from embodied.loading import (CheckpointError, build_agent_from_config, env_spaces, load_checkpoint,
                              pretrained_dir, pretrained_names)

SHIPPED = pretrained_names()


def test_the_ballet_models_are_shipped():
    assert {"ballet_hcam", "ballet_lstm"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_small_weights_only_and_loads_strictly_into_its_recipes_agent(name):
    path = pretrained_dir() / f"{name}.pt"
    assert path.stat().st_size < MAX_BYTES
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    record = ckpt["pretrained"]
    assert not {"trainer", "rng", "optimizer"} & set(ckpt)  # nothing to resume from
    assert record["name"] == name and record.get("trained_on", record["task"]) == ckpt["config"]["task"]["name"]
    assert any(o == f"+experiment={record['experiment']}" for o in record["recipe"])
    assert record["command"].startswith("embodied train ") and record["commit"] and record["seed"] is not None
    assert record["training"]["counters"] and record["training"]["curve"] and record["final_metrics"]
    scales = ckpt.get("quantized") or {}
    assert all(ckpt["model"][k].dtype == torch.int8 for k in scales) and (bool(scales) == (record["dtype"] == "int8"))
    floats = {k: t for k, t in ckpt["model"].items() if t.is_floating_point()}
    stored = torch.float32 if record["dtype"] == "float32" else torch.float16
    assert (floats or scales) and all(t.dtype == stored for k, t in floats.items() if k not in record.get("float32_kept", []))
    ckpt = load_checkpoint(path)  # what every reader gets: float weights
    # the committed recipe composes the architecture the weights were trained with
    cfg = compose("train", record["recipe"])
    for node in ("memory", "agent"):
        recipe, stored = OmegaConf.to_container(cfg[node], resolve=True), ckpt["config"][node]
        assert {k: v for k, v in recipe.items() if k in stored} == stored, node
        # An agent option added after the file was written is at its default: the same agent.
        added = set(recipe) - set(stored)
        assert all(node == "agent" and recipe[k] == getattr(AgentConfig(), k) for k in added), (node, added)
    agent = build_agent_from_config(cfg, *env_spaces(cfg.task), torch.device("cpu"))
    agent.load_state_dict(ckpt["model"], strict=True)


def test_unknown_pretrained_name_is_one_line_naming_the_shipped_ones(capsys):
    with pytest.raises(CheckpointError, match="pretrained:ballet_hcam"):
        load_checkpoint("pretrained:nope")
    for command in (["eval", "ckpt=pretrained:nope"], ["record", "ckpt=pretrained:nope"]):
        with pytest.raises(SystemExit) as exc:
            cli_main(command)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "pretrained:nope" in err
        assert all(f"pretrained:{n}" in err for n in SHIPPED)


@pytest.fixture
def run_dir(tmp_path):
    """A training run as `embodied train +experiment=ballet_lstm` leaves it (checkpoint, overrides, start)."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    ckpt = load_checkpoint("pretrained:ballet_lstm")
    ckpt.pop("pretrained")
    ckpt["model"] = {k: v.float() for k, v in ckpt["model"].items()}
    ckpt["metrics"] = {"accuracy": 0.5}
    torch.save(ckpt, run / "latest.pt")
    (run / ".hydra" / "overrides.yaml").write_text("- +experiment=ballet_lstm\n- run_dir=runs/x\n- quiet=true\n")
    (run / ".hydra" / "provenance.json").write_text(json.dumps(
        {"command": "embodied train +experiment=ballet_lstm run_dir=runs/x quiet=true", "commit": "a" * 40,
         "dirty": False, "date": "2026-01-01T00:00:00+00:00"}))
    (run / "metrics.jsonl").write_text('{"update": 1, "accuracy": 0.5}\n')
    return run


def test_export_writes_fp16_with_the_recipe_and_refuses_to_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "shipped"
    path = export(str(run_dir / "latest.pt"), "mine", out=out)
    ckpt = torch.load(path, weights_only=True)
    record = ckpt["pretrained"]
    assert record["recipe"] == ["+experiment=ballet_lstm"] and record["commit"] == "a" * 40
    assert record["final_metrics"] == {"accuracy": 0.5} and record["training"]["curve"] == [{"update": 1, "accuracy": 0.5}]
    assert all(t.dtype == torch.float16 for t in ckpt["model"].values() if t.is_floating_point())
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exc:  # the command: one line, the file untouched
        cli_main(["export", f"ckpt={run_dir / 'latest.pt'}", "name=mine", f"out={out}", "dtype=float32"])
    assert exc.value.code == 2 and "force=true" in capsys.readouterr().err and path.read_bytes() == before
    cli_main(["export", f"ckpt={run_dir / 'latest.pt'}", "name=mine", f"out={out}", "dtype=float32", "force=true"])
    replaced = torch.load(path, weights_only=True)
    assert all(t.dtype == torch.float32 for t in replaced["model"].values() if t.is_floating_point())
    assert replaced["pretrained"]["dtype"] == "float32"


def test_int8_export_keeps_each_weight_within_half_a_step_and_loads_as_floats(run_dir, tmp_path):
    path = export(str(run_dir / "latest.pt"), "small", dtype="int8", out=tmp_path / "shipped")
    raw = torch.load(path, weights_only=True)
    source = torch.load(run_dir / "latest.pt", weights_only=True)["model"]
    assert raw["quantized"] and all(raw["model"][k].dtype == torch.int8 for k in raw["quantized"])
    fp16 = export(str(run_dir / "latest.pt"), "half", out=tmp_path / "shipped")
    assert path.stat().st_size < 0.6 * fp16.stat().st_size
    loaded = load_checkpoint(path)["model"]
    assert "quantized" not in load_checkpoint(path)
    for key, scale in raw["quantized"].items():
        err = (loaded[key] - source[key]).abs().reshape(len(scale), -1).amax(dim=1)
        assert loaded[key].dtype == torch.float32 and bool((err <= scale / 2 + 1e-7).all()), key
    cfg = compose("train", ["+experiment=ballet_lstm"])
    agent = build_agent_from_config(cfg, *env_spaces(cfg.task), torch.device("cpu"))
    agent.load_state_dict(loaded, strict=True)


def test_a_tensor_past_the_fp16_range_stays_float32_instead_of_becoming_inf():
    weights = {"w": torch.randn(64, 32), "count": torch.tensor([1.0e6]), "b": torch.randn(4), "steps": torch.tensor(3)}
    for dtype in ("float16", "int8"):
        model, scales, kept = cast_weights(weights, dtype)
        assert kept == ["count"] and model["count"].dtype == torch.float32 and model["count"].item() == 1.0e6
        assert model["b"].dtype == torch.float16 and model["steps"].dtype == torch.int64
        assert model["w"].dtype == (torch.int8 if dtype == "int8" else torch.float16) and bool(scales) == (dtype == "int8")


def test_the_figure_of_a_held_out_level_names_the_task_it_was_evaluated_with(tmp_path):
    result = {"task": "fastmap/new_obj_generalization/fast_map_heldout_test_objs", "success": {"mean": 0.9, "n": 10}}
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"results": [result], "provenance": {
        "command": "embodied eval task=fastmap/cpu/heldout_test_objs ckpt=runs/x/latest.pt episodes=10"}}))
    figure = evaluation_figure(path, {}, "fastmap/architecture_comparison/fast_map_three_objs")
    assert figure["task"] == result["task"] and task_option({"task": "x", "evaluation": figure}) == "fastmap/cpu/heldout_test_objs"
    with pytest.raises(InputError, match="no result for ballet/4_delay16"):  # another family is not this model's figure
        evaluation_figure(path, {}, "ballet/4_delay16")


def test_export_needs_a_recipe(run_dir, tmp_path):
    (run_dir / ".hydra" / "overrides.yaml").write_text("- memory=lstm\n")
    with pytest.raises(InputError, match=r"\+experiment="):
        export(str(run_dir / "latest.pt"), "mine", out=tmp_path / "shipped")
    assert not (tmp_path / "shipped" / "mine.pt").exists()


def test_suite_pretrained_prints_one_table_and_writes_what_report_renders(tmp_path, capsys):
    out = tmp_path / "bench"
    report = evaluate(compose("eval", ["suite=pretrained", "episodes=4", "num_envs=4", "num_workers=0", "device=cpu",
                                       "quiet=true", f"out={out}"]))
    table = capsys.readouterr().out
    assert table.count("success [95% CI]") == 1  # one table, not one per model
    for name in SHIPPED:
        assert name in table and (out / f"{name}.json").is_file()
        data = json.loads((out / f"{name}.json").read_text())
        assert data["ckpt"] == f"pretrained:{name}" and success_of(data["results"][0])["n"] == 4  # MemoryBench: 1 run
        training = data.get("training") or data["results"][0]["training"]  # MemoryBench: per task
        assert training["command"].startswith("embodied train +experiment=")  # from the shipped record
        strict = out / f"{name}_strict.json"  # MemoryBench: also with the strict success checks
        memorybench = data["results"][0]["task"].startswith("memorybench/")
        assert strict.is_file() == memorybench and (f"{name} strict" in table) == memorybench
        if memorybench:
            data = json.loads(strict.read_text())
            assert data["config"]["task"]["strict"] is True and data["results"][0]["method"].endswith(", strict")
            assert all("violation" in e for e in data["results"][0]["per_episode"])
    assert "0.25" in table and "pleines2022" in table  # chance and the published row with its source
    assert {r["agent"] for r in report["results"]} >= {"hcam", "lstm"}
    page, _ = render(out, plots=False)
    assert "## ballet" in page and "`embodied train +experiment=ballet_hcam" in page and "| 4_delay16 | hcam | 4 |" in page


def test_suite_pretrained_refuses_a_ckpt():
    with pytest.raises(InputError, match="ckpt"):
        evaluate(compose("eval", ["suite=pretrained", "ckpt=runs/x.pt"]))


def test_eval_and_record_take_a_shipped_name_and_its_task(tmp_path, capsys):
    cli_main(["eval", "ckpt=pretrained:ballet_lstm", "episodes=2", "num_envs=2", "num_workers=0", "quiet=true",
              "device=cpu", f"out={tmp_path / 'e.json'}"])
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["results"][0]["task"] == "ballet/4_delay16" and "task=ballet/4_delay16" in data["provenance"]["command"]
    cli_main(["record", "ckpt=pretrained:ballet_lstm", f"out={tmp_path / 'rec'}", "quiet=true"])
    assert (tmp_path / "rec" / "episode_000.rrd").stat().st_size > 0


def test_a_shipped_keyframe_policy_records_its_episode(tmp_path, capsys):
    """agent=keyframe is not the recurrent Agent: record drives it keyframe by keyframe, memory reset
    at the first one (one of the shipped MemoryBench models: each episode is seconds of physics)."""
    name = next(n for n in SHIPPED if load_checkpoint(f"pretrained:{n}")["pretrained"]["task"].startswith("memorybench/"))
    cli_main(["record", f"ckpt=pretrained:{name}", f"out={tmp_path / 'rec'}", "episodes=1", "quiet=true"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / "rec" / "episode_000.rrd").stat().st_size > 0 and "steps=" in line and "steps=0 " not in line


def test_export_help_and_missing_keys(capsys):
    cli_main(["export", "--help"])
    assert "force" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", "name=x"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == (
        "embodied export: error: ckpt: missing; e.g. embodied export ckpt=runs/ballet/hcam/latest.pt name=ballet_hcam")
