"""The phase machine of the show-then-ask tasks (Ballet, Room Ballet): a show of `show_steps` steps
during which actions are ignored, then a question the agent answers with one action.

Phases by the step clock t (steps taken so far): `show` while t < show_steps, then `question` (the
question is observed and an answer is accepted) until `answer_steps` steps have passed. Action 0
waits; any other action at a question step answers: reward 1 when it is the right answer, else 0,
and either ends the episode (terminated). Not answering in time truncates the episode with 0.
"""
from __future__ import annotations

from dataclasses import dataclass

WAIT = 0


@dataclass(frozen=True)
class ShowThenAsk:
    """Show `show_steps` steps, then accept one answer in the next `answer_steps` steps."""

    show_steps: int
    answer_steps: int

    @property
    def max_steps(self) -> int:
        return self.show_steps + self.answer_steps

    def phase(self, t: int) -> str:
        """`show` or `question` at step clock t."""
        return "show" if t < self.show_steps else "question"

    def step(self, t: int, action: int, answer: int) -> tuple[float, bool, bool]:
        """(reward, terminated, truncated) of taking `action` at step clock t when `answer` is right."""
        terminated = t >= self.show_steps and action != WAIT
        reward = 1.0 if terminated and action == answer else 0.0
        truncated = not terminated and t + 1 >= self.max_steps
        return reward, terminated, truncated

    def expert(self, t: int, answer: int) -> int:
        """The scripted expert's action: wait through the show, then give the answer."""
        return answer if t >= self.show_steps else WAIT


def checked_action(action, space) -> int:
    """`action` as an int, or ValueError when the Discrete `space` does not hold it."""
    if not space.contains(int(action)):
        raise ValueError(f"action {action!r} out of range 0..{space.n - 1}")
    return int(action)
