"""A synthetic MemoryBench-like dataset, episodes as embodied.tasks.episodes reads MemoryBench demos,
for testing the keyframe policy without the simulator.

Task "remember the pad": 3 pads on a table; at keyframe 0 one pad (the variation) is red and the
policy reaches it; then the pads all turn grey, it presses a button at a per-episode position and
goes home; the last keyframe returns to the pad that was red. Without memory the last keyframe is a
1-in-3 guess; the timestep tells the phase but not the pad."""
from __future__ import annotations

import numpy as np

WORKSPACE = ((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))
PADS = np.array([[-0.25, 0.2, 0.1], [0.0, 0.2, 0.1], [0.25, 0.2, 0.1]])
HOME = np.array([0.0, -0.2, 0.6])
CAMERAS = ("front", "left_shoulder", "right_shoulder", "wrist")
SIDE = 16  # points per camera = SIDE * SIDE
DOWN = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)  # xyzw: 180 degrees about x (gripper down)


def _blob(centre, rng, n=12, r=0.03):
    return centre + rng.uniform(-r, r, size=(n, 3))


def _scene(variation: int, phase: int, button: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(-0.45, 0.45, 12)
    table = np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    pts = [np.c_[table, np.full(len(table), 0.02)]]
    col = [np.full((len(table), 3), 120)]
    for i, p in enumerate(PADS):
        pts.append(_blob(p, rng))
        red = phase == 0 and i == variation
        col.append(np.tile([220, 30, 30] if red else [90, 90, 90], (12, 1)))
    pts.append(_blob(button, rng))
    col.append(np.tile([30, 30, 220], (12, 1)))
    pts, col = np.concatenate(pts), np.concatenate(col)
    n = SIDE * SIDE
    idx = np.arange(n) % len(pts)
    return pts[idx].astype(np.float32), col[idx].astype(np.uint8)


def synthetic_episode(seed: int, image_size: int = SIDE) -> dict:
    rng = np.random.default_rng(seed)
    variation = seed % 3
    button = np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.4, -0.1), 0.08])
    targets = [PADS[variation], button, HOME, PADS[variation]]
    K = len(targets)
    obs = {f"{c}_{k}": [] for c in CAMERAS for k in ("rgb", "depth", "pcd")}
    proprio, action = [], []
    ee = HOME.copy()
    for k in range(K):
        pts, col = _scene(variation, min(k, 1), button, rng)
        for c in CAMERAS:
            obs[f"{c}_rgb"].append(col.reshape(SIDE, SIDE, 3))
            obs[f"{c}_pcd"].append(pts.reshape(SIDE, SIDE, 3))
            obs[f"{c}_depth"].append(np.linalg.norm(pts, axis=-1).reshape(SIDE, SIDE).astype(np.float32))
        proprio.append(np.r_[ee, DOWN, 1.0].astype(np.float32))
        action.append(np.r_[targets[k], DOWN, float(k % 2 == 0), 0.0].astype(np.float32))
        ee = targets[k]
    timestep = np.arange(K, dtype=np.float32) / 25.0
    obs = {k: np.stack(v) for k, v in obs.items()}
    obs["proprio"] = np.stack(proprio)
    obs["timestep"] = timestep[:, None]
    return {"obs": obs, "actions": np.stack(action), "steps": {"keyframe_index": np.arange(K)},
            "episode": {"seed": seed, "variation": variation, "success": True,
                        "instruction": "reach the red pad, press the button, go home, reach the pad again"}}


def synthetic_demos(n: int, start_seed: int = 0) -> list[dict]:
    return [synthetic_episode(s) for s in range(start_seed, start_seed + n)]


class SyntheticMemoryEnv:
    """The synthetic task as an env with the MemoryBench env's interface: an action counts when its
    target is within `tolerance` of the expert's; a wrong keyframe ends the episode unsuccessfully."""

    def __init__(self, tolerance: float = 0.06):
        self.tolerance = tolerance
        self.episode = None
        self.k = 0

    def _obs(self) -> dict:
        k = min(self.k, len(self.episode["actions"]) - 1)
        return {key: v[k] for key, v in self.episode["obs"].items()}

    def reset(self, seed=None, options=None):
        self.episode = synthetic_episode(int(seed))
        self.k = 0
        facts = self.episode["episode"]
        return self._obs(), {"variation": facts["variation"], "instruction": facts["instruction"]}

    def oracle_action(self):
        return self.episode["actions"][self.k].copy()

    def step(self, action):
        target = self.episode["actions"][self.k]
        ok = bool(np.linalg.norm(np.asarray(action[:3]) - target[:3]) < self.tolerance)
        self.k += 1
        success = ok and self.k == len(self.episode["actions"])
        terminated = (not ok) or success
        info = {"success": success, "variation": self.episode["episode"]["variation"], "keyframe": self.k,
                "ik_failure": False}
        return self._obs(), float(success), terminated, self.k >= 25, info

    def close(self):
        pass


def moved_into(episodes: list[dict], workspace) -> list[dict]:
    """The episodes translated so that the synthetic workspace's centre sits at `workspace`'s (e.g.
    MemoryBench's, for training through the real task's agent): point clouds, targets and proprio."""
    offset = ((np.asarray(workspace[0]) + np.asarray(workspace[1])) / 2
              - (np.asarray(WORKSPACE[0]) + np.asarray(WORKSPACE[1])) / 2).astype(np.float32)
    out = []
    for ep in episodes:
        obs = {k: (v + offset if k.endswith("_pcd") else v) for k, v in ep["obs"].items()}
        obs["proprio"] = obs["proprio"].copy()
        obs["proprio"][:, :3] += offset
        actions = ep["actions"].copy()
        actions[:, :3] += offset
        out.append({**ep, "obs": obs, "actions": actions})
    return out
