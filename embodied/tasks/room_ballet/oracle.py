"""Room Ballet's oracle: the scripted expert (it reads the layout's true answer) and what a memory of a
given budget and write strategy still holds when the question comes (`answer_kept`)."""
from __future__ import annotations

import numpy as np

from embodied.tasks.answer import ShowThenAsk
from embodied.tasks.room_ballet.layout import Layout, kept_steps


def expert_action(layout: Layout, phases: ShowThenAsk, t: int) -> int:
    """Wait through the walk, then give the true answer."""
    return phases.expert(t, layout.answer)


def question_places(layout: Layout) -> np.ndarray:
    """Place of every step up to and including the first question step (what a memory writes)."""
    return np.append(layout.places, layout.places[-1])


def answer_kept(layout: Layout, strategy: str, capacity: int) -> bool:
    """Whether a memory of `capacity` tokens under `strategy` still holds a step that shows the answer
    when the question is first asked."""
    kept = kept_steps(list(question_places(layout)), capacity, strategy)
    return bool(set(kept) & set(layout.answer_steps.tolist()))
