"""Episode measures in the habitat style: `reset_metric` at episode start, `update_metric` each step.

A measure reads the task's state through a small protocol (`task.distance_to_goal()`,
`task.episode`, `task.agent`, `task.last_collided`, `task.called_stop`) so the same measures serve
every navigation task.
"""
from __future__ import annotations

import math

import numpy as np

from embodied.tasks.registry import register_measure


class Measure:
    uuid = "measure"

    def __init__(self) -> None:
        self.value = 0.0

    def reset_metric(self, task) -> None:
        raise NotImplementedError

    def update_metric(self, task) -> None:
        raise NotImplementedError


@register_measure("distance_to_goal")
class DistanceToGoal(Measure):
    """Geodesic distance from the agent to the current goal (metres)."""

    def reset_metric(self, task) -> None:
        self.value = float(task.distance_to_goal())

    def update_metric(self, task) -> None:
        self.value = float(task.distance_to_goal())


@register_measure("success")
class Success(Measure):
    """1 if the episode's goals were all reached (stop called inside the goal region)."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        self.value = float(task.goals_reached >= task.num_goals)


@register_measure("spl")
class SPL(Measure):
    """Success weighted by path length (Anderson et al. 2018); multigoal: mean over goals."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        self.value = float(np.sum(task.goal_spl) / task.num_goals)


@register_measure("soft_spl")
class SoftSPL(Measure):
    """Progress to the current goal weighted by path efficiency (habitat's soft SPL), averaged over
    the episode's goals. As in habitat, progress is 1 - distance / start distance also for a goal
    reached (a stop 0.15 m short of a point 5 m away counts 0.97 of it), fixed at its success. Goals
    before `task.goal_index` are finished (nav/goat moves on after a failed goal too: 0 for it)."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        done = task.goal_index
        parts = float(np.sum(task.goal_soft_spl[:done]))
        if done < task.num_goals:
            parts += soft_progress(task) * efficiency(task.leg_start_distance, task.leg_path_length)
        self.value = parts / task.num_goals


def soft_progress(task) -> float:
    """Habitat's soft success of the goal under way: max(0, 1 - distance / start distance)."""
    d0, d = task.leg_start_distance, task.distance_to_goal()
    return max(0.0, 1.0 - d / d0) if d0 > 0 else 1.0


def progress(d_before: float, d_after: float) -> float:
    """The distance reward of one step: how much nearer the goal it brought the agent. 0 where either
    distance is infinite (a position the goal's field does not reach, e.g. on a user's scene whose goal
    lies in another component), where the difference would pay -inf or NaN."""
    return d_before - d_after if math.isfinite(d_before) and math.isfinite(d_after) else 0.0


def efficiency(start_distance: float, path_length: float) -> float:
    """SPL's path efficiency d0 / max(d0, walked); 1 for a goal reached where it began, unwalked; 0
    for a goal that began off the distance field (see `progress`): no shortest path to compare with,
    and inf / inf would make every mean over goals NaN."""
    if not math.isfinite(start_distance):
        return 0.0
    if max(start_distance, path_length) < 1e-9:
        return 1.0
    return start_distance / max(start_distance, path_length)


@register_measure("collisions")
class Collisions(Measure):
    """Steps whose motion was blocked (the agent slid or stayed put)."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        self.value += float(task.last_collided)


@register_measure("steps")
class Steps(Measure):
    """Actions taken in the episode."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        self.value += 1.0


@register_measure("goals_reached")
class GoalsReached(Measure):
    """Fraction of the episode's goals reached (multigoal progress)."""

    def reset_metric(self, task) -> None:
        self.value = 0.0

    def update_metric(self, task) -> None:
        self.value = task.goals_reached / task.num_goals
