"""Vector envs over long runs and from scripts: the soak benchmark's report and verdicts, and the
README's snippet run as a script without an `if __name__ == "__main__":` guard."""
import functools
import json
import subprocess
import sys
import textwrap

import pytest

from embodied.envs import soak
from embodied.envs.vector import needs_main
from embodied.tasks import TaskConfig, make_env

LIGHT = {"room_ballet/budget": 1.0}


def test_soak_reports_steps_memory_and_verdicts(tmp_path):
    out = tmp_path / "soak.json"
    r = soak.bench_soak(out=out, steps=400, levels={**LIGHT, "nav/no_such_level": 1.0})
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    for name in LIGHT:
        level = r["levels"][name]
        assert level["steps"] == 400 and level["crash"] is None and level["restarts"] == 0, level
        assert level["num_workers"] >= 1 and level["steps_per_s"] > 0 and level["episodes"] >= 1
        assert len(level["rss_mb_samples"]) >= 2 and level["rss_warm_mb"] > 100  # parent + workers
        assert level["passed"] == (level["rss_growth_pct"] < soak.GROWTH_LIMIT_PCT)
    bad = r["levels"]["nav/no_such_level"]
    assert bad["crash"].startswith("FileNotFoundError") and bad["steps"] == 0 and not bad["passed"]
    assert not r["passed"]


def test_soak_fails_a_level_whose_memory_grows(monkeypatch):
    sizes = iter(range(1000, 10**6, 100))  # +10% per sample
    monkeypatch.setattr(soak, "resident_mb", lambda venv: float(next(sizes)))
    level = soak.soak_level("ballet/2_delay16", 64, num_envs=2, num_workers=1, samples=3)
    assert level["crash"] is None and level["rss_growth_pct"] > soak.GROWTH_LIMIT_PCT and not level["passed"]


def test_workers_skip_the_main_script_unless_the_env_fns_live_in_it(monkeypatch):
    cfg = TaskConfig(name="ballet/2_delay16")
    assert not needs_main([functools.partial(make_env, cfg)])

    def script_env():
        return make_env(cfg)

    script_env.__module__, script_env.__qualname__ = "__main__", "script_env"
    monkeypatch.setattr(sys.modules["__main__"], "script_env", script_env, raising=False)
    assert needs_main([script_env])
    assert needs_main([lambda: make_env(cfg)])  # not picklable: the start reports it, as before


README_SNIPPET = textwrap.dedent("""\
    from embodied.tasks import NavConfig, make_env
    from embodied.envs import make_vector_env
    env = make_env(NavConfig(name="nav/objectnav", width=64, height=64))
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.oracle_action())
    venv = make_vector_env(NavConfig(name="nav/pointnav"), num_envs=8, seed=0)  # worker processes, autoreset
""")


@pytest.mark.slow
def test_readme_snippet_runs_as_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "first_run.py"
    # The README's lines with symbolic Ballet in the workers (8 pointnav envs build their scenes for
    # ~30 s on 2 busy cores; what failed was the unguarded script, not the task), then proof that the
    # workers step and did not run the script again.
    lines = README_SNIPPET.replace('NavConfig(name="nav/pointnav")', '{"name": "ballet/2_delay16"}')
    assert lines != README_SNIPPET
    script.write_text("print('script top level', flush=True)\n" + lines + textwrap.dedent("""\
        obs, rew, term, trunc, infos = venv.step([1] * 8)
        print("stepped", len(venv.worker_pids()), "workers", len(rew), "envs", flush=True)
    """))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("script top level") == 1, r.stdout  # workers do not re-run the script
    assert "stepped" in r.stdout and "8 envs" in r.stdout, r.stdout
