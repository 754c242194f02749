"""The gymnasium env of a MemoryBench task: one step = one keyframe action.

Observation (before the keyframe's action): `{cam}_rgb` uint8 [H,W,3], `{cam}_depth` float32 [H,W]
(z-depth, metres), `{cam}_pcd` float32 [H,W,3] (world frame) per camera, `proprio` float32 [8]
(ee xyz, ee quaternion xyzw, gripper open 1 / closed 0) and `timestep` float32 [1] (keyframe
index / 25). Action float32 [9]: target xyz (world, clipped to WORKSPACE as RLBench clips to its
scene bounds), quaternion xyzw, gripper_open (0/1), ignore_collisions (0/1).
Reward 1 on success; the episode ends on success, on an unreachable target (`ik_failure`, reward
0), on a strict-mode violation (`violation`, reward 0) or after 25 keyframes.

Success is checked as in SAM2Act's RLBench (read in its vendored rlbench/action_modes/
arm_action_modes.py, action_mode.py, gripper_action_modes.py and task_environment.py): after every
physics step of the arm's motion (the arm stops at the first step at which it holds), and once more
after the gripper action, whose result is the reward. Tasks whose original `step()` polls their
conditions (put_block_back, rearrange_block) are also polled on the gripper's steps; strict mode
checks on every physics step. See memorybench/tasks.py for the conditions of both modes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from embodied.config import ConfigError, check
from embodied.tasks.config import ImageConfig
from embodied.tasks.memorybench.scene import CAMERAS, WORKSPACE, Scene
from embodied.tasks.memorybench.tasks import TASK_CLASSES
from embodied.tasks.registry import TaskEnv

MAX_KEYFRAMES = 25


@dataclass
class MemoryBenchConfig(ImageConfig):
    """memorybench/<task>: square camera images of `width` = `height` pixels, the cameras, the keyframe cap."""

    family = "memorybench"
    name: str = "memorybench/put_block_back"
    """memorybench/reopen_drawer, memorybench/put_block_back or memorybench/rearrange_block."""
    width: int = 128
    """Camera image side, pixels (square images: equal to height; RLBench: 128)."""
    height: int = 128
    """Camera image side, pixels (equal to width)."""
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    """Cameras to render, a subset of front, left_shoulder, right_shoulder, wrist ([] renders nothing)."""
    max_keyframes: int = MAX_KEYFRAMES
    """Keyframe actions before the episode is truncated (RLBench eval: 25)."""
    strict: bool = False
    """false: the original's success conditions (and loopholes); true: the final step counts only
    after the button press and only the remembered drawer / patch may be touched, else the episode
    fails at once (per task in memorybench/tasks.py and docs/memorybench.md, "Success checks")."""

    def validate(self) -> "MemoryBenchConfig":
        super().validate()
        check(self.width <= 512, "task.width", f"{self.width} out of range; allowed: 16..512")
        check(self.width == self.height, "task.height", f"{self.height}; allowed: {self.width} (= task.width): "
              "MemoryBench images are square")
        bad = [c for c in self.cameras if c not in CAMERAS]
        check(not bad, "task.cameras", f"unknown camera(s) {bad}; allowed: {', '.join(CAMERAS)}")
        check(1 <= self.max_keyframes <= 1000, "task.max_keyframes", f"{self.max_keyframes}; allowed: 1..1000")
        return self


class MemoryBenchEnv(TaskEnv):
    """Shared episode loop; the registered subclass sets `task_name` (e.g. put_block_back)."""

    metadata = {"render_modes": []}
    config_class = MemoryBenchConfig
    short_name = ""

    def __init__(self, cfg=None) -> None:
        if cfg is None:
            cfg = {"name": f"memorybench/{self.short_name}"}
        self.cfg = MemoryBenchConfig.from_any(cfg)
        if self.short_name and self.cfg.name != f"memorybench/{self.short_name}":
            raise ConfigError(f"task.name: {self.cfg.name!r} given to the {self.short_name} env")
        self.task_cls = TASK_CLASSES[self.cfg.name.split("/", 1)[1]]
        self.scene = Scene()
        self.task = self.task_cls(self.scene)
        n = self.cfg.width  # = height
        obs = {}
        for cam in self.cfg.cameras:
            obs[f"{cam}_rgb"] = spaces.Box(0, 255, (n, n, 3), np.uint8)
            obs[f"{cam}_depth"] = spaces.Box(0.0, np.inf, (n, n), np.float32)
            obs[f"{cam}_pcd"] = spaces.Box(-np.inf, np.inf, (n, n, 3), np.float32)
        obs["proprio"] = spaces.Box(-np.inf, np.inf, (8,), np.float32)
        obs["timestep"] = spaces.Box(0.0, np.inf, (1,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(np.array([*WORKSPACE[0], -1, -1, -1, -1, 0, 0], np.float32),
                                       np.array([*WORKSPACE[1], 1, 1, 1, 1, 1, 1], np.float32))
        self.instruction = self.task_cls.instruction
        self.variation = 0
        self.episode_seed = 0
        self.keyframe = 0
        self.keyframe_start_steps: list[int] = []
        self.violations: list = []
        self.violation = ""

    @property
    def variation_count(self) -> int:
        return self.task_cls.variations

    # --- episode ---------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        self.episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        variation = (options or {}).get("variation", self.episode_seed % self.variation_count)
        if not (isinstance(variation, (int, np.integer)) and 0 <= variation < self.variation_count):
            raise ValueError(f"options['variation']: {variation!r}; allowed: 0..{self.variation_count - 1}")
        self.variation = int(variation)
        rng = np.random.default_rng(self.episode_seed)
        self.scene.reset_world()
        self.task.build(self.scene, self.variation, rng)
        self.scene.step(60)  # let the objects settle before the conditions record initial states
        if self.cfg.strict:
            self.conditions, self.violations = self.task.make_strict_conditions()
        else:
            self.conditions, self.violations = self.task.make_conditions(), []
        self.violation = ""
        self._met = False
        polled = self.cfg.strict or self.task.poll_every_step
        # polled on every physics step (the original's task.step(); strict: all of ours), the result
        # kept for the arm's stop check; otherwise the arm's motion checks on its own steps only
        self.scene.step_callbacks = [self._check] if polled else []
        self._stop_when = (lambda: self._met) if polled else self._check
        self.keyframe = 0
        self.keyframe_start_steps = []
        self.success = False
        self.ik_failure = False
        return self._observation(), self._info()

    def _check(self) -> bool:
        """One success check (RLBench's `task.success()`): polls the success set (so triggers latch)
        and strict mode's violations; True when the task is solved now."""
        for v in self.violations:
            if not self.violation and v.met():
                self.violation = v.name
        self._met = self.conditions.met() and not self.violation
        return self._met

    def _step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (9,) or not np.all(np.isfinite(a)):
            finite = bool(np.all(np.isfinite(a)))
            raise ValueError(f"action: shape {a.shape}, finite={finite}; expected 9 finite floats")
        quat = a[3:7]
        if np.linalg.norm(quat) < 1e-6:
            raise ValueError(f"action[3:7]: quaternion {quat.tolist()} has zero norm")
        pos = np.clip(a[:3], WORKSPACE[0], WORKSPACE[1])
        self.keyframe_start_steps.append(self.scene.physics_steps)
        reached = self.scene.execute(pos, quat, float(a[7] > 0.5), stop_when=self._stop_when)
        self.keyframe += 1
        self.ik_failure = not reached
        self.success = (not self.ik_failure) and self._check()  # TaskEnvironment.step's success()
        terminated = self.success or self.ik_failure or bool(self.violation)
        truncated = not terminated and self.keyframe >= self.cfg.max_keyframes
        return self._observation(), float(self.success), terminated, truncated, self._info()

    def oracle_action(self) -> np.ndarray:
        """The scripted expert's next keyframe for the current state (it assumes the expert's own
        earlier keyframes were executed); raises once the script is exhausted."""
        a = self.task.keyframe(self.keyframe)
        if a is None:
            raise RuntimeError(f"the expert has no keyframe {self.keyframe} for {self.cfg.name}")
        return a

    def close(self) -> None:
        self.scene.close()

    # --- observation -----------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        obs = {}
        for cam in self.cfg.cameras:
            r = self.scene.render(cam, self.cfg.width)
            obs[f"{cam}_rgb"], obs[f"{cam}_depth"], obs[f"{cam}_pcd"] = r["rgb"], r["depth"], r["pcd"]
        obs["proprio"] = self.scene.proprio()
        obs["timestep"] = np.array([self.keyframe / MAX_KEYFRAMES], np.float32)
        return obs

    def _info(self) -> dict:
        return {"success": float(self.success), "variation": self.variation, "keyframe": self.keyframe,
                "ik_failure": self.ik_failure, "instruction": self.instruction, "seed": self.episode_seed,
                "strict": self.cfg.strict, "violation": self.violation}
