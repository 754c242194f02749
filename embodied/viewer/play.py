"""`embodied play`: run scripted-agent episodes and write what the agent saw (MP4) plus measures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied.config import check
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


def play(cfg) -> dict:
    kind = cfg.agent.get("kind", None)
    check(kind in POLICIES, "agent", f"{kind!r} cannot play; allowed: {', '.join(POLICIES)}")
    check(cfg.episodes >= 1, "episodes", f"{cfg.episodes}; allowed: >= 1")
    env = make_env(cfg.task)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    results = []
    for ep in range(cfg.episodes):
        obs, info = env.reset(seed=cfg.seed + ep)
        frames = [_frame(env, cfg.video_size)] if cfg.video else []
        done = False
        bar = tqdm(total=env.cfg.max_steps, desc=f"episode {ep}", disable=cfg.quiet, leave=False)
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
            record["video"] = str(write_video(frames, out / f"episode_{ep:03d}.mp4", fps=cfg.fps))
        results.append(record)
        if not cfg.quiet:
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    summary = {"task": cfg.task.name, "agent": kind, "episodes": results,
               "mean": {k: float(np.mean([r[k] for r in results])) for k in ("success", "spl", "soft_spl", "steps")}}
    (out / "measures.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'measures.json'}" + (f" and {len(results)} MP4(s)" if cfg.video else ""))
    return summary
