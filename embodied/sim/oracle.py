"""ShortestPathFollower: the expert that walks a NavAgent to a goal with the discrete actions.

It descends the goal's geodesic distance field. For every heading the agent can reach by turning
(multiples of its turn angle), it simulates one forward step (sliding included) and scores where
it lands by the field; it then turns toward the best heading or steps forward. Each forward step
strictly lowers the geodesic distance and turning does not move the agent, so it cannot
oscillate. If no heading makes progress (a discretisation dead end in a tight spot), it aims at
the first visible waypoint of the string-pulled shortest path instead.
"""
from __future__ import annotations

import math


from embodied.sim.agent import NavAgent, _wrap
from embodied.sim.navgrid import NavigableGrid


class ShortestPathFollower:
    """`next_action(agent)` -> one of ACTIONS' names leading to `goal`.

    goal: a point [2], points [k, 2], a bool goal-cell mask or a DistanceField (see
    NavigableGrid.distance_field).
    The follower returns "stop" once the geodesic distance to the goal is <= success_distance
    (and when the goal is unreachable).
    """

    def __init__(self, grid: NavigableGrid, goal, success_distance: float = 0.2,
                 min_progress: float = 0.01, keep_heading_tolerance: float = 0.005):
        if not (math.isfinite(success_distance) and success_distance >= 0):
            raise ValueError(f"success_distance must be a non-negative number, got {success_distance!r}")
        self.grid = grid
        self.field = grid.distance_field(goal)
        self.goal = goal
        self.success_distance = float(success_distance)
        self.min_progress = float(min_progress)
        self.keep_heading_tolerance = float(keep_heading_tolerance)

    def distance_to_goal(self, xy) -> float:
        return self.field.at(xy)

    def next_action(self, agent: NavAgent) -> str:
        d0 = self.field.at((agent.x, agent.y))
        if not math.isfinite(d0) or d0 <= self.success_distance:
            return "stop"
        k_max = int(math.ceil(math.pi / agent.turn_rad - 1e-9))
        best_k, best_v = None, math.inf
        for k in sorted(range(-k_max, k_max + 1), key=abs):
            h = agent.yaw + k * agent.turn_rad
            ex, ey, _ = agent.resolve_move(agent.x, agent.y, agent.forward_step * math.cos(h),
                                           agent.forward_step * math.sin(h))
            v = self.field.at((ex, ey))
            # Smaller turns win near-ties: fewer actions, no dithering between equal headings.
            if v < best_v - (self.keep_heading_tolerance if best_k is not None else 0.0):
                best_k, best_v = k, v
        if best_k is None or d0 - best_v < self.min_progress:
            best_k = self._heading_to_path(agent)
        if best_k == 0:
            return "move_forward"
        return "turn_left" if best_k > 0 else "turn_right"

    def _heading_to_path(self, agent: NavAgent) -> int:
        """Turns (signed count) toward the first waypoint of the shortest path."""
        path = self.grid.shortest_path((agent.x, agent.y), self.goal)
        if len(path) < 2:
            return 0
        target = path[1]
        want = math.atan2(target[1] - agent.y, target[0] - agent.x)
        return int(round(_wrap(want - agent.yaw) / agent.turn_rad))
