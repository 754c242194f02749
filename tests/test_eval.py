"""Evaluation: confidence intervals, the results table and JSON, baselines, suites."""
from __future__ import annotations

import json

import numpy as np
import pytest

import embodied.eval  # noqa: F401
from embodied.config import compose
from embodied.config import ConfigError
from embodied.eval import evaluate
from embodied.eval.stats import bootstrap_interval, summarize, wilson_interval


@pytest.mark.parametrize("successes,n", [(0, 10), (3, 10), (10, 10), (37, 100), (1, 1)])
def test_wilson_interval_contains_mean_and_stays_in_unit_interval(successes, n):
    lo, hi = wilson_interval(successes, n)
    assert 0.0 <= lo <= successes / n <= hi <= 1.0
    assert hi - lo > 0


def test_intervals_narrow_with_more_episodes():
    rng = np.random.default_rng(0)
    widths_w, widths_b = [], []
    for n in (20, 200, 2000):
        x = rng.random(n) < 0.4
        lo, hi = wilson_interval(int(x.sum()), n)
        widths_w.append(hi - lo)
        spl = rng.random(n)
        blo, bhi = bootstrap_interval(spl, samples=2000)
        assert blo <= spl.mean() <= bhi
        widths_b.append(bhi - blo)
    assert widths_w[0] > widths_w[1] > widths_w[2]
    assert widths_b[0] > widths_b[1] > widths_b[2]


def test_wilson_coverage_is_close_to_nominal():
    rng = np.random.default_rng(1)
    p, n, trials = 0.3, 50, 2000
    hits = sum(lo <= p <= hi for lo, hi in (wilson_interval(int((rng.random(n) < p).sum()), n) for _ in range(trials)))
    assert 0.92 <= hits / trials <= 0.98


def test_summarize_and_bad_input():
    s = summarize([1, 0, 1, 1], binary=True)
    assert s["mean"] == 0.75 and s["n"] == 4 and s["ci_low"] < 0.75 < s["ci_high"]
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        summarize([])


def test_eval_writes_table_and_json_for_baselines(tmp_path, capsys):
    out = tmp_path / "oracle.json"
    report = evaluate(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "agent=oracle",
                                       "episodes=30", "num_envs=4", "num_workers=0", "quiet=true", f"out={out}"]))
    printed = capsys.readouterr().out
    assert "toy/corridor" in printed and "oracle" in printed and "95% CI" in printed
    data = json.loads(out.read_text())
    result = data["results"][0]
    assert result["episodes"] == 30 and len(result["per_episode"]) == 30
    assert result["success"]["mean"] == 1.0 and result["spl"]["mean"] == pytest.approx(1.0)
    assert report["results"][0]["success"] == result["success"]
    rnd = evaluate(compose("eval", ["task.name=toy/corridor", "task.max_steps=24", "agent=random", "episodes=30",
                                    "num_workers=0", "quiet=true", f"out={tmp_path / 'r.json'}"]))["results"][0]
    assert rnd["success"]["mean"] < 0.5


def test_eval_config_errors():
    with pytest.raises(ConfigError, match="^ckpt:"):
        evaluate(compose("eval", ["task.name=toy/corridor"]))
    with pytest.raises(ConfigError, match="^episodes:"):
        evaluate(compose("eval", ["task.name=toy/corridor", "agent=random", "episodes=0"]))
    with pytest.raises(ConfigError, match="^suite:"):
        evaluate(compose("eval", ["agent=random", "suite=no_such_suite"]))


def test_fastmap_levels_are_printed_beside_chance_and_the_published_claims(tmp_path, capsys):
    report = evaluate(compose("eval", ["task=fastmap/cpu/fast_map_five_objs", "agent=random", "episodes=4",
                                       "num_workers=0", "quiet=true", f"out={tmp_path / 'f.json'}"]))
    printed = capsys.readouterr().out
    result = report["results"][0]
    assert (result["role"], result["chance"]) == ("test", 0.2)
    assert result["train_levels"] == ["num_generalization/fast_map_three_objs"]
    assert result["published"]["source"] == "hill2021" and "Grounded Language" in result["published"]["source_text"]
    row = next(line for line in printed.splitlines() if line.startswith("num_generalization/fast_map_five_objs"))
    assert f"{result['success']['mean']:.3f}" in row and "0.200" in row and "[hill2021, Fig. 2" in row
    assert "trained on: num_generalization/fast_map_three_objs" in printed
    assert "[hill2021] Hill et al." in printed
    plain = evaluate(compose("eval", ["task.name=toy/corridor", "agent=random", "episodes=2", "num_workers=0",
                                      "quiet=true", f"out={tmp_path / 'r.json'}"]))
    assert "fast-mapping level" not in plain["table"] and "chance" not in plain["results"][0]


def test_success_is_split_by_the_words_a_task_declares_only(tmp_path):
    """Room Ballet declares question_type; the apartment's `scene` word is kept per episode but splits nothing."""
    cfg = compose("eval", ["task=room_ballet/budget", "task.world=apartment", "task.rgb=false", "task.apartments=2",
                           "agent=oracle", "episodes=6", "num_envs=2", "num_workers=0", "quiet=true",
                           f"out={tmp_path / 'rb.json'}"])
    result = evaluate(cfg)["results"][0]
    episodes = result["per_episode"]
    assert all(isinstance(e["scene"], str) and isinstance(e["question_type"], str) for e in episodes)
    assert set(result["by"]) == {"question_type"}
    kinds = {e["question_type"] for e in episodes}
    assert set(result["by"]["question_type"]) == kinds
    assert sum(v["n"] for v in result["by"]["question_type"].values()) == 6
    assert all(v["mean"] == 1.0 for v in result["by"]["question_type"].values())  # the expert answers right
