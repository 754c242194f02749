"""`embodied play`: run scripted-agent episodes and write what the agent saw (MP4) plus measures.

Files of an earlier run in `out` (measures.json, episode_XXX.mp4) are never replaced silently: the
run stops at start with one line naming the file, unless overwrite=true."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied.config import ConfigError, check, check_dir_path, group_options
from embodied.render import Camera
from embodied.tasks import make_env
from embodied.viewer.video import write_video

POLICIES = ("oracle", "random")


def _frame(env, size: int) -> np.ndarray:
    if size <= 0:
        return env.render()
    c = env.cfg
    cam = Camera(width=size, height=size, hfov_deg=c.hfov, mount_height=c.camera_height, tilt_deg=env.agent.tilt_deg)
    return env.scene.renderer.render(env.agent.pose[None].astype(np.float32), [cam], outputs=("rgb",))["rgb"][0, 0]


def refuse_overwrite(paths, overwrite: bool) -> None:
    """A ConfigError naming the first of `paths` that exists, unless `overwrite` (`play` and `record`
    keep an earlier run's episodes unless told otherwise)."""
    if overwrite:
        return
    existing = next((p for p in paths if p.exists()), None)
    if existing is not None:
        raise ConfigError(f"out: {existing} exists (an earlier run's); pass another out=DIR, "
                          "or overwrite=true to replace it")


def play(cfg) -> dict:
    kind = cfg.agent.get("kind", None)
    check(kind in POLICIES, "agent", f"{kind!r} cannot play; allowed: {', '.join(POLICIES)}")
    # It drives a navigation env's agent and scene (env.agent, env.scene); `embodied record` plays every task.
    name = str(cfg.task.name)
    nav = [o for o in group_options("task") if o.startswith("nav/")]
    check(name.startswith("nav/"), "task", f"{name}: embodied play runs the navigation tasks; allowed: "
          f"{', '.join(nav)} (`embodied record` plays every task)")
    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    check(cfg.seed >= 0, "seed", f"{cfg.seed}; allowed: >= 0")
    check(cfg.fps >= 1, "fps", f"{cfg.fps}; allowed: >= 1")
    check(cfg.video_size >= 0, "video_size", f"{cfg.video_size}; allowed: >= 0 (0 = observation size)")
    check_dir_path("out", cfg.out, "a directory path (new, or an earlier one: its episodes are kept unless overwrite=true)")
    out = Path(cfg.out)
    videos = [out / f"episode_{ep:03d}.mp4" for ep in range(cfg.episodes)] if cfg.video else []
    refuse_overwrite([out / "measures.json", *videos], bool(cfg.get("overwrite", False)))
    env = make_env(cfg.task)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    results = []
    for ep in range(cfg.episodes):
        obs, info = env.reset(seed=cfg.seed + ep)
        frames = [_frame(env, cfg.video_size)] if cfg.video else []
        done = False
        bar = tqdm(total=getattr(env, "max_episode_steps", None) or env.cfg.max_steps, desc=f"episode {ep}", disable=cfg.quiet, leave=False)
        while not done:
            action = env.oracle_action() if kind == "oracle" else int(rng.integers(env.action_space.n))
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if cfg.video:
                frames.append(_frame(env, cfg.video_size))
            bar.update(1)
        bar.close()
        measures = {k: v for k, v in info.items() if isinstance(v, (int, float))}
        record = {"episode": ep, "seed": cfg.seed + ep, "scene": info["scene"], **measures}
        if cfg.video:
            record["video"] = str(write_video(frames, videos[ep], fps=cfg.fps))
        results.append(record)
        if not cfg.quiet:
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    summary = {"task": cfg.task.name, "agent": kind, "episodes": results,
               "mean": {k: float(np.mean([r[k] for r in results])) for k in ("success", "spl", "soft_spl", "steps")}}
    (out / "measures.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'measures.json'}" + (f" and {len(results)} MP4(s)" if cfg.video else ""))
    return summary
