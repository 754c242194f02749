"""B navigation agents, each on its own NavigableGrid, moved and measured as torch tensors.

`GridBatch` holds per-env copies of the grids (padded to the largest) and of each env's goal
distance field, on any device. Its motion is NavAgent's (the segment sampled at quarter cells, the
agent advanced to the last free sample, the rest of the move slid along the obstacle's tangent,
else along the axes) and its lookup is DistanceField.at's (the 3x3 neighbours reachable from the
position, a point goal within two cells in straight line), written over [B] float64 tensors with
the same arithmetic in the same order. Results equal the per-env classes' except where torch's
cos/sin/hypot differ from Python's math in the last bit (tests compare positions to 1e-9); where a
last bit decides a discrete outcome (a full step's sample count) the caller passes values computed
with Python's math.
"""
from __future__ import annotations

import math

import torch

from embodied.sim.agent import SAMPLE_CELLS
from embodied.sim.navgrid import DistanceField, NavigableGrid

_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Angle in (-pi, pi], as NavAgent's `_wrap`."""
    a = torch.fmod(a + math.pi, 2 * math.pi)
    a = torch.where(a <= 0, a + 2 * math.pi, a)
    return a - math.pi


class GridBatch:
    """Per-env navigable grids and goal fields: [B, H, W] tensors padded with blocked cells."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu"):
        self.n = num_envs
        self.device = torch.device(device)
        self.h = self.w = 0
        f64 = dict(dtype=torch.float64, device=self.device)
        self.origin = torch.zeros(num_envs, 2, **f64)
        self.cell = torch.ones(num_envs, **f64)
        self.inv_cell = torch.ones(num_envs, **f64)  # 1 / cell: points map to cells as NavigableGrid maps them
        self.shape = torch.zeros(num_envs, 2, dtype=torch.long, device=self.device)  # (ny, nx)
        self.goal_point = torch.zeros(num_envs, 2, **f64)
        self.has_point = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._alloc(1, 1)
        self._grids: list[NavigableGrid | None] = [None] * num_envs
        self._offsets = torch.tensor(_NEIGHBOURS, device=self.device).T[:, None, :]  # [2, 1, 9] (dr, dc)
        self._straight = (self._offsets[0] == 0) | (self._offsets[1] == 0)  # [1, 9]

    def _alloc(self, h: int, w: int) -> None:
        """(Re)allocate the padded tensors at [h, w], keeping what they hold."""
        old = {k: getattr(self, k, None) for k in ("navigable", "away", "floor", "field", "region")}
        d = self.device
        self.navigable = torch.zeros(self.n, h, w, dtype=torch.bool, device=d)
        self.away = torch.zeros(self.n, h, w, 2, dtype=torch.float64, device=d)
        self.floor = torch.zeros(self.n, h, w, dtype=torch.float64, device=d)
        self.field = torch.full((self.n, h, w), math.inf, dtype=torch.float64, device=d)
        self.region = torch.zeros(self.n, h, w, dtype=torch.bool, device=d)
        for k, v in old.items():
            if v is not None:
                getattr(self, k)[:, : self.h, : self.w] = v
        self.h, self.w = h, w

    def set_grid(self, i: int, grid: NavigableGrid) -> None:
        """Env i now walks on `grid` (copied once per scene change)."""
        if self._grids[i] is grid:
            return
        ny, nx = grid.shape
        if ny > self.h or nx > self.w:
            self._alloc(max(ny, self.h), max(nx, self.w))
        self.navigable[i] = False
        self.navigable[i, :ny, :nx] = torch.from_numpy(grid.navigable)
        self.away[i] = 0.0
        # NavAgent reads the float32 normals as Python floats: the same values in float64
        self.away[i, :ny, :nx] = torch.from_numpy(grid.away_from_obstacle).double()
        floor = torch.from_numpy(grid.floor_height).double()
        self.floor[i] = 0.0
        self.floor[i, :ny, :nx] = torch.where(torch.isfinite(floor), floor, 0.0)
        self.origin[i] = torch.tensor([float(grid.origin[0]), float(grid.origin[1])], dtype=torch.float64)
        self.cell[i] = grid.cell
        self.inv_cell[i] = 1.0 / grid.cell
        self.shape[i] = torch.tensor(grid.shape)
        self._grids[i] = grid

    def set_field(self, i: int, field: DistanceField) -> None:
        """Env i's goal is now `field` (on env i's grid)."""
        if field.grid is not self._grids[i]:
            raise ValueError("the distance field belongs to another grid than env i's; set_grid first")
        ny, nx = field.values.shape
        self.field[i] = math.inf
        self.field[i, :ny, :nx] = torch.from_numpy(field.values)
        self.region[i] = False
        if field.region is not None:
            self.region[i, :ny, :nx] = torch.from_numpy(field.region)
        if len(field.goal_points) > 1:  # point goals here come one at a time (pointnav)
            raise ValueError(f"a field to {len(field.goal_points)} goal points; GridBatch takes at most one")
        self.has_point[i] = len(field.goal_points) == 1
        if len(field.goal_points):
            self.goal_point[i] = torch.from_numpy(field.goal_points[0].astype("float64"))

    # -- cells -------------------------------------------------------------------------------------------
    def _rc(self, b, x, y):
        """(row, col) of points of envs b, unclamped, by NavigableGrid's rule (multiplying by 1/cell)."""
        c = torch.floor((x - self.origin[b, 0]) * self.inv_cell[b])
        r = torch.floor((y - self.origin[b, 1]) * self.inv_cell[b])
        return r.long(), c.long()

    def _inside(self, b, r, c) -> torch.Tensor:
        return (r >= 0) & (c >= 0) & (r < self.shape[b, 0]) & (c < self.shape[b, 1])

    def _cells(self, b, x, y):
        """(row, col, inside) of points of envs b, row and col clamped into the arrays."""
        r, c = self._rc(b, x, y)
        return r.clamp(0, self.h - 1), c.clamp(0, self.w - 1), self._inside(b, r, c)

    def _path_open(self, b, x, y) -> torch.Tensor:
        """[m, k] for points x, y [m, k] of envs b [m, 1] along a path: whether each point's cell is
        navigable and (after the first) the step from the point before passes no corner alone
        (NavAgent._advance's rule). A side cell is looked up clamped: where either end of a step is
        off the grid, that end is already not open."""
        r, c = self._rc(b, x, y)
        inside = self._inside(b, r, c)
        r, c = r.clamp(0, self.h - 1), c.clamp(0, self.w - 1)
        nav = self.navigable
        ok = inside & nav[b, r, c]
        r0, c0, r, c = r[:, :-1], c[:, :-1], r[:, 1:], c[:, 1:]
        ok[:, 1:] &= ~((r != r0) & (c != c0) & ~(nav[b, r0, c] | nav[b, r, c0]))
        return ok

    def floor_height(self, b, x, y) -> torch.Tensor:
        r, c, inside = self._cells(b, x, y)
        return torch.where(inside, self.floor[b, r, c], 0.0)

    # -- motion ------------------------------------------------------------------------------------------
    def advance(self, b, x, y, dx, dy, n: torch.Tensor | None = None):
        """NavAgent._advance over envs b: the farthest free quarter-cell sample along each move, no
        corner alone passed; returns (x, y, blocked). `n`: the sample counts, when the caller has them exact (see resolve_move)."""
        if n is None:
            n = torch.floor(torch.hypot(dx, dy) / (SAMPLE_CELLS * self.cell[b])).long() + 1
        k = int(n.max()) if len(n) else 1
        i = torch.arange(1, k + 1, device=self.device)
        t = i[None].double() / n[:, None].double()  # [m, k]
        px, py = x[:, None] + t * dx[:, None], y[:, None] + t * dy[:, None]
        valid = i[None] <= n[:, None]
        path = self._path_open(b[:, None], torch.cat([x[:, None], px], 1), torch.cat([y[:, None], py], 1))  # the start first
        bad = valid & ~path[:, 1:]
        blocked = bad.any(1)
        first = torch.where(blocked, bad.double().argmax(1), n)  # index of the first bad sample (or n: none)
        last = (first - 1).clamp(min=0)
        ex = torch.where(first > 0, px.gather(1, last[:, None]).squeeze(1), x)
        ey = torch.where(first > 0, py.gather(1, last[:, None]).squeeze(1), y)
        return ex, ey, blocked

    def move_forward(self, b, x, y, yaw, distance: float):
        """NavAgent's move_forward for envs b at headings yaw: (x, y, collided). A full step's length is a
        whole number of sample spacings (0.25 m: 20), so its sample count hangs on the last bit of cos,
        sin and hypot: they are Python's math here, as NavAgent's, for equal traces (a host round trip
        of the moving envs' headings)."""
        steps = [(distance * math.cos(v), distance * math.sin(v)) for v in yaw.tolist()]
        n = [int(math.hypot(u, v) / (SAMPLE_CELLS * cell)) + 1 for (u, v), cell in zip(steps, self.cell[b].tolist())]
        dxy = torch.tensor(steps, dtype=torch.float64, device=self.device).reshape(-1, 2)
        return self.resolve_move(b, x, y, dxy[:, 0], dxy[:, 1], torch.tensor(n, device=self.device))

    def resolve_move(self, b, x, y, dx, dy, n: torch.Tensor | None = None):
        """NavAgent.resolve_move over envs b: (x, y, collided) of each move with sliding; `n` as advance's."""
        ex, ey, blocked = self.advance(b, x, y, dx, dy, n)
        if not bool(blocked.any()):
            return ex, ey, blocked
        j = blocked.nonzero().squeeze(1)
        bj, xj, yj, dxj, dyj, exj, eyj = b[j], x[j], y[j], dx[j], dy[j], ex[j], ey[j]
        moved, total = torch.hypot(exj - xj, eyj - yj), torch.hypot(dxj, dyj)
        rem = (1.0 - moved / total).clamp(min=0.0)
        rx, ry = dxj * rem, dyj * rem
        r, c = self._cells(bj, exj, eyj)[:2]
        nx_, ny_ = self.away[bj, r, c, 0], self.away[bj, r, c, 1]
        into = rx * nx_ + ry * ny_
        tangent = (rx - into * nx_, ry - into * ny_)
        x_first = rx.abs() >= ry.abs()
        zero = torch.zeros_like(rx)
        axis1 = (torch.where(x_first, rx, zero), torch.where(x_first, zero, ry))
        axis2 = (torch.where(x_first, zero, rx), torch.where(x_first, ry, zero))
        # the candidates in NavAgent's order: the tangent (only when moving into the obstacle), then the axes
        cands = [(tangent, into < 0), (axis1, torch.ones_like(blocked[j])), (axis2, torch.ones_like(blocked[j]))]
        fx, fy = exj.clone(), eyj.clone()
        open_ = torch.ones_like(blocked[j])  # no candidate has moved the agent yet
        for (sx, sy), usable in cands:
            try_ = open_ & usable & ~(torch.hypot(sx, sy) < 1e-6)
            if not bool(try_.any()):
                continue
            k = try_.nonzero().squeeze(1)
            ax, ay, _ = self.advance(bj[k], exj[k], eyj[k], sx[k], sy[k])
            moved_k = (ax != exj[k]) | (ay != eyj[k])
            km = k[moved_k]
            fx[km], fy[km] = ax[moved_k], ay[moved_k]
            open_[km] = False
        ex, ey = ex.clone(), ey.clone()
        ex[j], ey[j] = fx, fy
        return ex, ey, blocked

    # -- geodesic distance -------------------------------------------------------------------------------
    def distance(self, x, y) -> torch.Tensor:
        """DistanceField.at of every env's field at its (x, y) [B]: the 3x3 neighbours in one gather."""
        b = torch.arange(self.n, device=self.device)
        r, c, inside = self._cells(b, x, y)
        here = inside & self.navigable[b, r, c]
        dr, dc = self._offsets
        rr, cc = r[:, None] + dr, c[:, None] + dc  # [B, 9]
        ok = (rr >= 0) & (rr < self.shape[:, :1]) & (cc >= 0) & (cc < self.shape[:, 1:])
        rr_, cc_ = rr.clamp(0, self.h - 1), cc.clamp(0, self.w - 1)
        bb = b[:, None]
        v = self.field[bb, rr_, cc_]
        # a diagonal neighbour counts only if both cells beside the diagonal are navigable (`c`: no offset)
        ok = ok & torch.isfinite(v) & self.navigable[bb, rr_, cc_] & \
            (self._straight | (self.navigable[bb, r[:, None], cc_] & self.navigable[bb, rr_, c[:, None]]))
        cx = self.origin[:, :1] + (cc.double() + 0.5) * self.cell[:, None]
        cy = self.origin[:, 1:] + (rr.double() + 0.5) * self.cell[:, None]
        best = torch.where(ok, v + torch.hypot(x[:, None] - cx, y[:, None] - cy), math.inf).amin(1)
        if bool(self.has_point.any()):
            gx, gy = self.goal_point[:, 0], self.goal_point[:, 1]
            d = torch.hypot(x - gx, y - gy)
            near = self.has_point & (d < 2.0 * self.cell) & (d < best)
            if bool(near.any()):
                k = near.nonzero().squeeze(1)
                clear = self.segment_clear(k, x[k], y[k], gx[k], gy[k])
                best[k[clear]] = d[k[clear]]
        best = torch.where(here & self.region[b, r, c], 0.0, best)
        return torch.where(here, best, math.inf)

    def segment_clear(self, b, ax, ay, bx, by) -> torch.Tensor:
        """NavigableGrid.segment_clear over envs b (numpy's linspace), passing no corner alone."""
        n = torch.floor(torch.hypot(bx - ax, by - ay) / (0.25 * self.cell[b])).long() + 2  # segment_clear's spacing
        k = int(n.max())
        i = torch.arange(k, device=self.device)
        t = i[None].double() * (1.0 / (n[:, None] - 1).double())
        t = torch.where(i[None] == n[:, None] - 1, 1.0, t)
        px, py = ax[:, None] + t * (bx - ax)[:, None], ay[:, None] + t * (by - ay)[:, None]
        return (self._path_open(b[:, None], px, py) | (i[None] >= n[:, None])).all(1)
