"""BatchedNavEnv: B navigation envs of one process stepped as tensors (`task.batched=true`).

A `gymnasium.vector.VectorEnv` with VectorEnv's same-step autoreset and infos (measures in
`infos`, finished episodes in `infos["final_info"]`, see envs.vector), for nav/pointnav,
nav/objectnav and nav/multigoal. Per step, for every env at once: the action, the agent's motion
with sliding collisions (sim.batched.GridBatch), the geodesic distance to the goal, reward,
measures, truncation, and one render call over the batch (render.batch: Embree on the CPU, Warp
on CUDA). Observations are torch tensors on the simulator's device, so a policy on that device
reads them without a copy; rewards, flags and infos are numpy, as gymnasium's are.

Episodes come from one task env object per env, used only to draw them (`NavEnv.next_episode`):
the same seeds give the same episodes and, step for step, the same measures as the per-env envs
(tests/test_batched.py compares traces). Drawing an episode (a Dijkstra, a few ms) stays on the
host and happens only at resets; the per-step work is tensor code.
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from embodied.config import ConfigError
from embodied.envs.vector import vector_infos
from embodied.render.batch import make_batch_renderer
from embodied.sim import ACTIONS, NavAgent, ShortestPathFollower
from embodied.sim.agent import _wrap
from embodied.sim.batched import GridBatch, wrap_angle
from embodied.tasks.nav import MEASURE_NAMES as NAV_MEASURES, PointNav
from embodied.tasks.registry import task_class

STOP, FORWARD, LEFT, RIGHT, UP, DOWN = range(len(ACTIONS))


def sim_device(name: str) -> torch.device:
    """task.sim_device -> a torch device (auto: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"task.sim_device: {name} requested but no CUDA device is available; allowed: cpu, auto")
    return device


class BatchedNavEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, cfg, num_envs: int):
        self.cfg = cfg = cfg.validate()
        cls = task_class(cfg.name)
        self.sources = [cls(cfg) for _ in range(num_envs)]  # episode drawing only
        self.num_envs = num_envs
        self.device = sim_device(cfg.sim_device)
        self.single_observation_space = self.sources[0].observation_space
        self.single_action_space = self.sources[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        backend = cfg.renderer if cfg.renderer != "auto" else ("warp" if self.device.type == "cuda" else "embree")
        try:
            self.renderer = make_batch_renderer(backend, self.device, width=cfg.width, height=cfg.height,
                                                hfov_deg=cfg.hfov, mount_height=cfg.camera_height,
                                                max_depth=cfg.max_depth, nthreads=self.sources[0].scenes.render_threads)
        except ImportError as e:  # warp not installed
            raise ConfigError(f"task.renderer: {backend}: {e}") from None
        self.grids = GridBatch(num_envs, self.device)
        self.point_goals = isinstance(self.sources[0], PointNav)
        n, d = num_envs, self.device
        f64 = dict(dtype=torch.float64, device=d)
        self.max_goals = cfg.num_goals if cfg.name == "nav/multigoal" else 1
        # agent and episode state [B]
        self.x, self.y, self.z, self.yaw, self.tilt = (torch.zeros(n, **f64) for _ in range(5))
        self.start = torch.zeros(n, 4, **f64)
        self.dist = torch.zeros(n, **f64)  # geodesic distance to the current goal
        self.leg_start, self.leg_path = torch.zeros(n, **f64), torch.zeros(n, **f64)
        self.tolerance = torch.zeros(n, **f64)
        self.goal_xy = torch.zeros(n, 2, **f64)
        self.category = torch.zeros(n, dtype=torch.long, device=d)
        self.goals_reached = torch.zeros(n, dtype=torch.long, device=d)
        self.num_goals = torch.ones(n, dtype=torch.long, device=d)
        self.goal_spl = torch.zeros(n, self.max_goals, **f64)
        self.goal_soft_spl = torch.zeros(n, self.max_goals, **f64)
        self.collisions, self.steps = torch.zeros(n, **f64), torch.zeros(n, dtype=torch.long, device=d)
        self.scene_slot = torch.zeros(n, dtype=torch.long, device=d)
        self.returns, self.lengths = np.zeros(n), np.zeros(n, np.int64)
        self.goals: list[list] = [[] for _ in range(n)]
        self.scene_keys = np.empty(n, dtype=object)
        c = cfg
        self.turn_rad = math.radians(c.turn_angle)
        self.tilt_step = math.radians(c.tilt_angle)
        self.max_tilt = math.radians(2 * c.tilt_angle)  # NavEnv's agent: max_tilt = 2 * tilt_angle
        self._followers: list[ShortestPathFollower | None] = [None] * n  # oracle_action's, per goal field

    # -- episodes ------------------------------------------------------------------------------------------
    def _begin(self, i: int, seed: int | None) -> None:
        """Env i starts the episode its source draws (NavEnv._reset's state, as tensors)."""
        scene, start, yaw, goals, *_ = self.sources[i].next_episode(seed)
        self.goals[i] = goals
        self.scene_keys[i] = scene.key
        self.grids.set_grid(i, scene.grid)
        self.scene_slot[i] = self.renderer.add_scene(scene.key, scene.geometry,
                                                     scene.renderer if self.renderer.backend == "embree" else None)
        if len(self.renderer.keys) > self.num_envs + self.cfg.scene_cache:  # procedural: a new scene per episode
            slots = self.renderer.retain(k for k in self.scene_keys if k is not None)
            self.scene_slot = torch.tensor([slots.get(k, 0) for k in self.scene_keys], device=self.device)
        x, y = float(start[0]), float(start[1])
        wrapped = _wrap(float(yaw))  # as NavAgent.reset
        z = scene.grid.floor_height_at((x, y))
        self.x[i], self.y[i], self.z[i], self.yaw[i], self.tilt[i] = x, y, z, wrapped, 0.0
        self.start[i] = torch.tensor([x, y, z, wrapped], dtype=torch.float64)
        self.num_goals[i] = len(goals)
        self.goals_reached[i] = 0
        self.goal_spl[i] = 0.0
        self.goal_soft_spl[i] = 0.0
        self.collisions[i], self.steps[i] = 0.0, 0
        self.returns[i], self.lengths[i] = 0.0, 0
        self._set_goal(i, 0)

    def _set_goal(self, i: int, k: int) -> None:
        goal = self.goals[i][k]
        self.grids.set_field(i, goal.field)
        self.tolerance[i] = goal.tolerance
        self.category[i] = goal.category
        if goal.point is not None:
            self.goal_xy[i] = torch.from_numpy(np.asarray(goal.point, np.float64)[:2])
        self.dist[i] = float(goal.field.at((float(self.x[i]), float(self.y[i]))))
        self.leg_start[i], self.leg_path[i] = self.dist[i], 0.0  # NavEnv._begin_leg

    # -- gymnasium API -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"reset(seed=...) got {len(seed)} seeds for {self.num_envs} envs")
            seeds = list(seed)
        for i, s in enumerate(seeds):
            self._begin(i, s)
        return self._observe(), vector_infos([self._reset_info(i) for i in range(self.num_envs)], [None] * self.num_envs)

    def step(self, actions):
        a = torch.as_tensor(np.asarray(actions), device=self.device).long().reshape(-1)
        if a.shape != (self.num_envs,) or bool(((a < 0) | (a >= len(ACTIONS))).any()):
            raise ValueError(f"actions must be {self.num_envs} ints in 0..{len(ACTIONS) - 1} ({', '.join(ACTIONS)}), "
                             f"got {np.asarray(actions).tolist()}")
        c, n = self.cfg, self.num_envs
        reward = torch.full((n,), c.slack_reward, dtype=torch.float64, device=self.device)
        d_before = self.dist.clone()
        collided = torch.zeros(n, dtype=torch.bool, device=self.device)

        # stop: reaches the goal under way within its tolerance, else ends the episode
        stop = a == STOP
        reached = stop & (self.dist <= self.tolerance)
        terminated = stop & ~reached
        if bool(reached.any()):
            g = self.goals_reached.clamp(max=self.max_goals - 1)
            eff = self._efficiency(self.leg_start, self.leg_path)
            rows = reached.nonzero().squeeze(1)
            self.goal_spl[rows, g[rows]] = eff[rows]
            self.goal_soft_spl[rows, g[rows]] = (self._soft_progress() * eff)[rows]
            self.goals_reached += reached.long()
            reward = reward + reached.double() * c.success_reward
            done_all = reached & (self.goals_reached == self.num_goals)
            terminated = terminated | done_all
            for i in (reached & ~done_all).nonzero().squeeze(1).tolist():  # multigoal: the next goal
                self._set_goal(i, int(self.goals_reached[i]))
                d_before[i] = self.dist[i]

        # moves
        fwd = a == FORWARD
        if bool(fwd.any()):
            b = fwd.nonzero().squeeze(1)
            x, y = self.x[b], self.y[b]
            nx, ny, hit = self.grids.move_forward(b, x, y, self.yaw[b], c.forward_step)
            ddx, ddy = nx - x, ny - y
            self.leg_path[b] += torch.sqrt(ddx * ddx + ddy * ddy)
            self.x[b], self.y[b] = nx, ny
            self.z[b] = self.grids.floor_height(b, nx, ny)
            collided[b] = hit
        turn = (a == LEFT).double() - (a == RIGHT).double()
        self.yaw = torch.where(turn != 0, wrap_angle(self.yaw + turn * self.turn_rad), self.yaw)
        self.tilt = torch.where(a == UP, torch.clamp(self.tilt + self.tilt_step, max=self.max_tilt), self.tilt)
        self.tilt = torch.where(a == DOWN, torch.clamp(self.tilt - self.tilt_step, min=-self.max_tilt), self.tilt)
        if bool(fwd.any()):
            self.dist = self.grids.distance(self.x, self.y)
        # As measures.progress: no reward where either distance is off the field (inf).
        step_progress = torch.where(torch.isfinite(d_before) & torch.isfinite(self.dist), d_before - self.dist, 0.0)
        reward = torch.where(terminated, reward, reward + step_progress)

        self.collisions += collided.double()
        self.steps += 1
        truncated = ~terminated & (self.steps >= c.max_steps)
        # one copy to the host: the measures, the reward and the flags
        host = torch.cat([self._measures(), reward[:, None], terminated[:, None].double(),
                          truncated[:, None].double()], 1).cpu().numpy()
        values, reward_np = host[:, :-3], host[:, -3]
        term_np, trunc_np = host[:, -2] > 0, host[:, -1] > 0
        self.returns += reward_np
        self.lengths += 1
        infos = self._infos(values)
        finals: list[dict | None] = [None] * n
        for i in np.flatnonzero(term_np | trunc_np):
            finals[i] = {**infos[i], "return": float(self.returns[i]), "length": int(self.lengths[i])}
            self._begin(int(i), None)
            infos[i] = self._reset_info(int(i))
        return self._observe(), reward_np.astype(np.float32), term_np, trunc_np, vector_infos(infos, finals)

    # -- measures --------------------------------------------------------------------------------------------
    @staticmethod
    def _efficiency(d0: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
        """measures.efficiency over envs."""
        m = torch.maximum(d0, path)
        return torch.where(m < 1e-9, 1.0, d0 / torch.where(m < 1e-9, 1.0, m))

    def _soft_progress(self) -> torch.Tensor:
        """measures.soft_progress over envs."""
        d0 = self.leg_start
        safe = torch.where(d0 > 0, d0, 1.0)
        return torch.where(d0 > 0, (1.0 - self.dist / safe).clamp(min=0.0), 1.0)

    def _measures(self) -> torch.Tensor:
        """[B, 7] the measures of MEASURE_NAMES after a step (each Measure.update_metric)."""
        ng = self.num_goals.double()
        done = self.goals_reached
        k = torch.arange(self.max_goals, device=self.device)
        soft = (self.goal_soft_spl * (k[None] < done[:, None])).sum(1)
        soft = soft + torch.where(done < self.num_goals, self._soft_progress() * self._efficiency(self.leg_start, self.leg_path), 0.0)
        return torch.stack([self.dist, (done >= self.num_goals).double(), self.goal_spl.sum(1) / ng, soft / ng,
                            self.collisions, self.steps.double(), done.double() / ng], 1)

    def _infos(self, values: np.ndarray) -> list[dict]:
        """Each env's info: its scene and the measures of MEASURE_NAMES (values [B, 7])."""
        return [{"scene": self.scene_keys[i], **dict(zip(NAV_MEASURES, row))} for i, row in enumerate(values.tolist())]

    def _reset_info(self, i: int) -> dict:
        """Env i's info at its reset (Measure.reset_metric: the distance, zeros for the rest)."""
        return {"scene": self.scene_keys[i], **dict.fromkeys(NAV_MEASURES, 0.0), NAV_MEASURES[0]: float(self.dist[i])}

    # -- observations ---------------------------------------------------------------------------------------
    def _observe(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        obs: dict[str, torch.Tensor] = {}
        if c.sensors:
            poses = torch.stack([self.x, self.y, self.z, self.yaw], 1)
            images = self.renderer.render(self.scene_slot, poses, self.tilt * (180.0 / math.pi), tuple(c.sensors))
            for k in c.sensors:
                v = images[k]
                obs[k] = v[..., None] if k == "depth" else v
        x0, y0, z0, yaw0 = self.start.unbind(1)
        cs, sn = torch.cos(-yaw0), torch.sin(-yaw0)
        dx, dy = self.x - x0, self.y - y0
        dyaw = torch.remainder(self.yaw - yaw0 + math.pi, 2 * math.pi) - math.pi
        obs["pose"] = torch.stack([cs * dx - sn * dy, sn * dx + cs * dy, self.z - z0, dyaw], 1).float()
        if self.point_goals:
            gx, gy = self.goal_xy[:, 0] - self.x, self.goal_xy[:, 1] - self.y
            phi = torch.atan2(gy, gx) - self.yaw
            obs["pointgoal"] = torch.stack([torch.hypot(gx, gy), torch.cos(phi), torch.sin(phi)], 1).float()
        else:
            obs["objectgoal"] = self.category[:, None].clone()
        return obs

    # -- what callers ask of the envs ------------------------------------------------------------------------
    def call(self, name: str, *args, **kwargs) -> list:
        """prebuild_scenes (each source's scenes) and oracle_action (the shortest-path expert's next action
        from each env's current state)."""
        if name == "prebuild_scenes":
            return [s.prebuild_scenes() for s in self.sources]
        if name == "oracle_action":
            return [self._oracle(i) for i in range(self.num_envs)]
        raise AttributeError(f"BatchedNavEnv.call: {name!r} is not available; allowed: prebuild_scenes, oracle_action")

    def _oracle(self, i: int) -> int:
        """NavEnv.oracle_action from env i's state: the follower on an agent placed where env i's is."""
        goal = self.goals[i][min(int(self.goals_reached[i]), len(self.goals[i]) - 1)]
        follower = self._followers[i]
        if follower is None or follower.field is not goal.field:
            follower = self._followers[i] = ShortestPathFollower(goal.field.grid, goal.field,
                                                                 success_distance=goal.tolerance)
        c = self.cfg
        agent = NavAgent(goal.field.grid, forward_step=c.forward_step, turn_angle=c.turn_angle,
                         tilt_angle=c.tilt_angle, max_tilt=2 * c.tilt_angle, camera_height=c.camera_height)
        agent.reset((float(self.x[i]), float(self.y[i])), float(self.yaw[i]), float(self.tilt[i]))
        return ACTIONS.index(follower.next_action(agent))

    def close(self, **kwargs) -> None:
        for s in self.sources:
            s.close()
