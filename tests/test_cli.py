"""The command line: scene generation, play, config errors in one line."""
import json
import subprocess
import sys

import pytest


def embodied(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "embodied.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_scenes_generate(tmp_path):
    r = embodied("scenes", "generate", "--n", "2", "--seed", "5", "--out", str(tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apt_0005.glb", "apt_0005.json", "apt_0006.glb", "apt_0006.json"]
    assert json.loads((tmp_path / "apt_0005.json").read_text())["seed"] == 5


def test_play_oracle_writes_video_and_measures(tmp_path):
    r = embodied("play", "task=nav/objectnav", "agent=oracle", f"out={tmp_path}", "task.width=32",
                 "task.height=32", "video_size=64", "quiet=true")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "measures.json").read_text())
    assert m["task"] == "nav/objectnav" and m["agent"] == "oracle"
    assert m["episodes"][0]["success"] == 1.0
    video = tmp_path / "episode_000.mp4"
    assert video.stat().st_size > 1000
    import imageio.v2 as imageio

    frames = imageio.mimread(video, memtest=False)
    assert len(frames) == m["episodes"][0]["steps"] + 1 and frames[0].shape[:2] == (64, 64)


@pytest.mark.parametrize("override,key", [
    ("task.colour=3", "colour"),
    ("task.width=4", "task.width"),
    ("task=nav/teleport", "teleport"),
    ("agent=telepathic", "telepathic"),
])
def test_bad_config_fails_in_one_line(override, key, tmp_path):
    r = embodied("play", override, f"out={tmp_path}")
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1, r.stderr
    assert key in lines[0]


def test_python_dash_m_embodied_is_the_command_and_bad_bench_flags_fail_clearly():
    r = subprocess.run([sys.executable, "-m", "embodied", "bench", "train", "--device", "cuda", "--num-envs", "64,x"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "embodied bench: error: --num-envs '64,x': expected comma-separated ints, e.g. 64,256"]
