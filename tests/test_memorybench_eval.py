"""`embodied eval suite=memorybench` (embodied.eval.memorybench) on a synthetic env."""
import pytest
import torch

from embodied.agents.keyframe import KeyframeAgent, KeyframeAgentConfig
from embodied.eval.memorybench import format_memorybench_table, run_task
from keyframe_synthetic import WORKSPACE, SyntheticMemoryEnv

TASK = {"name": "memorybench/reopen_drawer"}


def test_oracle_succeeds_and_runs_repeat_deterministically():
    r = run_task(TASK, "oracle", seeds=list(range(6)), runs=2, quiet=True, env=SyntheticMemoryEnv())
    assert r["runs"] == [1.0, 1.0] and r["success_std"] == 0.0
    assert len(r["per_episode"]) == 12 and {e["variation"] for e in r["per_episode"]} == {0, 1, 2}


def test_untrained_policy_fails_and_the_table_shows_published_rows():
    torch.manual_seed(0)
    agent = KeyframeAgent(KeyframeAgentConfig(grid_size=16, channels=[8, 16]), WORKSPACE, "membank", {"mem_dim": 8})
    r = run_task(TASK, agent, seeds=[0, 1, 2], runs=1, quiet=True, env=SyntheticMemoryEnv())
    assert r["success_mean"] < 1.0
    r["method"] = "keyframe+membank"
    spec = {"reopen_drawer": {"reference": {"Random": {"success": 33, "source": "chance"},
                                            "SAM2Act+": {"success": 84.0, "source": "paper table 3"}}}}
    table = format_memorybench_table([r], spec)
    assert "reopen_drawer" in table and "84.0" in table and "33.0" in table and "paper table 3" in table
    assert f"{100 * r['success_mean']:.1f} ± 0.0 (keyframe+membank)" in table


def test_suite_with_missing_checkpoint_fails_in_one_line(tmp_path):
    import embodied.eval  # noqa: F401  (registers the schema)
    from embodied.config import compose
    from embodied.config import ConfigError
    from embodied.eval.runner import evaluate

    cfg = compose("eval", ["suite=memorybench", f"ckpt={tmp_path}/TASK/latest.pt", "quiet=true"])
    with pytest.raises(ConfigError, match="ckpt"):
        evaluate(cfg)
