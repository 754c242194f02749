"""NavAgent: a kinematic cylinder moving on a NavigableGrid with discrete or velocity actions.

Collision is against the grid's `navigable` mask (cells where the centre may be, already eroded
by the agent radius), so a position is valid iff its cell is navigable. Every move checks its
whole segment at quarter-cell spacing, so no wall can be tunnelled; a blocked move advances to the
contact point and slides the rest of the way along the obstacle (habitat-sim style), and reports
`collided=True`.
"""
from __future__ import annotations

import math

import numpy as np

from embodied.sim.navgrid import NavigableGrid

ACTIONS = ("stop", "move_forward", "turn_left", "turn_right", "look_up", "look_down")
SAMPLE_CELLS = 0.25  # a move is checked at this fraction of a cell (GridBatch samples the same points)


def _wrap(angle: float) -> float:
    """Angle in (-pi, pi]."""
    a = math.fmod(angle + math.pi, 2 * math.pi)
    if a <= 0:
        a += 2 * math.pi
    return a - math.pi


class NavAgent:
    """A cylinder (the grid's agent_radius and agent_height) with pose (x, y, z, yaw) and camera tilt.

    Yaw (radians) is about +z, counter-clockwise from +x (turn_left increases it); tilt (radians,
    `tilt_deg` in degrees) is positive looking up, clamped to +-max_tilt. z is the floor height
    under the agent. `distance_travelled` sums the metres actually moved
    since the last `reset` (for SPL).
    """

    def __init__(self, grid: NavigableGrid, forward_step: float = 0.25, turn_angle: float = 30.0,
                 tilt_angle: float = 30.0, max_tilt: float = 60.0, camera_height: float = 1.25,
                 radius: float | None = None, height: float | None = None):
        """Angles in degrees. radius/height default to the grid's agent size and must equal it
        when given (the grid is eroded for exactly that cylinder)."""
        if not isinstance(grid, NavigableGrid):
            raise ValueError(f"grid must be a NavigableGrid, got {type(grid).__name__}")
        for name, v in (("forward_step", forward_step), ("turn_angle", turn_angle),
                        ("tilt_angle", tilt_angle), ("camera_height", camera_height)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (isinstance(max_tilt, (int, float)) and 0 <= max_tilt <= 90):
            raise ValueError(f"max_tilt must be in [0, 90] degrees, got {max_tilt!r}")
        for name, v, want in (("radius", radius, grid.agent_radius), ("height", height, grid.agent_height)):
            if v is not None and abs(float(v) - want) > 1e-9:
                raise ValueError(f"{name}={v!r} differs from the grid's agent_{name}={want}; build the grid for this agent")
        self.grid = grid
        self.radius = grid.agent_radius
        self.height = grid.agent_height
        self.forward_step = float(forward_step)
        self.turn_rad = math.radians(turn_angle)
        self.tilt_step_rad = math.radians(tilt_angle)
        self.max_tilt_rad = math.radians(max_tilt)
        self.camera_height = float(camera_height)
        self._sample_spacing = SAMPLE_CELLS * grid.cell
        # Plain Python views of the grid for the per-step hot path.
        self._nav = grid.navigable
        self._ox, self._oy = float(grid.origin[0]), float(grid.origin[1])
        self._inv_cell = 1.0 / grid.cell
        self._ny, self._nx = grid.shape
        self.x = self.y = self.yaw = self.tilt = 0.0
        self.z = 0.0
        self.distance_travelled = 0.0
        self._placed = False

    # ------------------------------------------------------------------ pose
    def reset(self, position, yaw: float = 0.0, tilt: float = 0.0) -> None:
        """Place the agent at position (x, y[, z ignored]) facing yaw (radians)."""
        p = np.asarray(position, np.float64).reshape(-1)
        if p.size < 2 or not np.all(np.isfinite(p)) or not math.isfinite(yaw) or not math.isfinite(tilt):
            raise ValueError(f"position must be finite (x, y), yaw and tilt finite; got {position!r}, {yaw!r}, {tilt!r}")
        if not self._free(float(p[0]), float(p[1])):
            raise ValueError(f"position ({p[0]:.3f}, {p[1]:.3f}) is not navigable")
        self.x, self.y = float(p[0]), float(p[1])
        self.z = self.grid.floor_height_at((self.x, self.y))
        self.yaw = _wrap(float(yaw))
        self.tilt = max(-self.max_tilt_rad, min(self.max_tilt_rad, float(tilt)))
        self.distance_travelled = 0.0
        self._placed = True

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    @property
    def pose(self) -> np.ndarray:
        """[4] (x, y, z, yaw), the memory layer's pose convention."""
        return np.array([self.x, self.y, self.z, self.yaw])

    @property
    def tilt_deg(self) -> float:
        return math.degrees(self.tilt)

    @property
    def camera_position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z + self.camera_height])

    # ------------------------------------------------------------------ actions
    def step(self, action) -> bool:
        """Apply one discrete action (name or index into ACTIONS); returns whether it collided."""
        if isinstance(action, str):
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}; allowed: {ACTIONS} or their indices 0..{len(ACTIONS) - 1}")
            name = action
        elif isinstance(action, (int, np.integer)) and not isinstance(action, bool) and 0 <= action < len(ACTIONS):
            name = ACTIONS[int(action)]
        else:
            raise ValueError(f"invalid action {action!r}; allowed: {ACTIONS} or their indices 0..{len(ACTIONS) - 1}")
        self._require_placed()
        if name == "move_forward":
            return self._move(self.forward_step * math.cos(self.yaw), self.forward_step * math.sin(self.yaw))
        if name == "turn_left":
            self.yaw = _wrap(self.yaw + self.turn_rad)
        elif name == "turn_right":
            self.yaw = _wrap(self.yaw - self.turn_rad)
        elif name == "look_up":
            self.tilt = min(self.max_tilt_rad, self.tilt + self.tilt_step_rad)
        elif name == "look_down":
            self.tilt = max(-self.max_tilt_rad, self.tilt - self.tilt_step_rad)
        return False

    def step_velocity(self, v_forward: float, v_yaw: float, dt: float) -> bool:
        """Move at v_forward m/s along the heading while turning at v_yaw rad/s for dt seconds
        (heading taken at mid-interval); returns whether the move collided."""
        if not (math.isfinite(v_forward) and math.isfinite(v_yaw) and math.isfinite(dt) and dt >= 0):
            raise ValueError(f"v_forward, v_yaw must be finite and dt >= 0; got {v_forward!r}, {v_yaw!r}, {dt!r}")
        self._require_placed()
        heading = self.yaw + 0.5 * v_yaw * dt
        self.yaw = _wrap(self.yaw + v_yaw * dt)
        dist = v_forward * dt
        if dist == 0.0:
            return False
        return self._move(dist * math.cos(heading), dist * math.sin(heading))

    # ------------------------------------------------------------------ collision
    def _require_placed(self) -> None:
        if not self._placed:
            raise RuntimeError("call NavAgent.reset(position, yaw) before stepping")

    def _cell(self, x: float, y: float) -> tuple[int, int]:
        return math.floor((y - self._oy) * self._inv_cell), math.floor((x - self._ox) * self._inv_cell)

    def _open(self, r: int, c: int) -> bool:
        return 0 <= r < self._ny and 0 <= c < self._nx and bool(self._nav[r, c])

    def _free(self, x: float, y: float) -> bool:
        return self._open(*self._cell(x, y))

    def _advance(self, x: float, y: float, dx: float, dy: float) -> tuple[float, float, bool]:
        """Farthest sample along (x, y) -> (x+dx, y+dy) reachable without leaving navigable
        cells; returns (x, y, blocked). Two samples in diagonal cells pass only if a cell beside
        that corner is navigable: a corner alone is no passage, so every cell the agent reaches is
        edge-connected to its start and the distance field (no corner cutting) reaches it too."""
        n = int(math.hypot(dx, dy) / self._sample_spacing) + 1
        last_x, last_y = x, y
        lr, lc = self._cell(x, y)
        ox, oy, inv = self._ox, self._oy, self._inv_cell
        for i in range(1, n + 1):
            t = i / n
            px, py = x + t * dx, y + t * dy
            r, c = math.floor((py - oy) * inv), math.floor((px - ox) * inv)  # _cell, inlined: the hot path
            if not self._open(r, c) or (r != lr and c != lc and not (self._open(lr, c) or self._open(r, lc))):
                return last_x, last_y, True
            last_x, last_y, lr, lc = px, py, r, c
        return last_x, last_y, False

    def resolve_move(self, x: float, y: float, dx: float, dy: float) -> tuple[float, float, bool]:
        """Where a move (dx, dy) from (x, y) ends with sliding, and whether it collided.
        Pure: does not change the agent (the oracle uses it to look ahead)."""
        ex, ey, blocked = self._advance(x, y, dx, dy)
        if not blocked:
            return ex, ey, False
        moved = math.hypot(ex - x, ey - y)
        total = math.hypot(dx, dy)
        rem = max(0.0, 1.0 - moved / total)
        rx, ry = dx * rem, dy * rem
        # Slide: project the rest of the motion onto the obstacle's tangent (normal from the
        # clearance gradient), else onto the axes, larger component first.
        candidates = []
        r, c = math.floor((ey - self._oy) * self._inv_cell), math.floor((ex - self._ox) * self._inv_cell)
        nx_, ny_ = (float(v) for v in self.grid.away_from_obstacle[r, c])
        into = rx * nx_ + ry * ny_
        if into < 0:
            candidates.append((rx - into * nx_, ry - into * ny_))
        if abs(rx) >= abs(ry):
            candidates += [(rx, 0.0), (0.0, ry)]
        else:
            candidates += [(0.0, ry), (rx, 0.0)]
        for sx, sy in candidates:
            if math.hypot(sx, sy) < 1e-6:
                continue
            fx, fy, _ = self._advance(ex, ey, sx, sy)
            if (fx, fy) != (ex, ey):
                return fx, fy, True
        return ex, ey, True

    def _move(self, dx: float, dy: float) -> bool:
        x, y, collided = self.resolve_move(self.x, self.y, dx, dy)
        self.distance_travelled += math.hypot(x - self.x, y - self.y)
        self.x, self.y = x, y
        self.z = self.grid.floor_height_at((x, y))
        return collided
