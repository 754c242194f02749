"""Room Ballet's oracle: the scripted expert (it reads the layout's true answer) and what a memory of a
given budget and write strategy still holds when the question comes (`answer_kept`)."""
from __future__ import annotations

import numpy as np

from embodied.tasks.answer import ShowThenAsk
from embodied.tasks.room_ballet.layout import Layout, kept_steps
from embodied.tasks.room_ballet.spec import NUM_DANCES


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


def askable(layout: Layout, mode: str) -> list[tuple[tuple[str, int], int]]:
    """Every question the episode's type could ask, with the expert's answer (an action): `budget`
    levels ask about any visited room (room_dance: "which dance was in room r?") or any dance seen
    (dance_room), `multi` levels about any dancer of the walk ("which dance did colour c do?")."""
    if mode == "multi":
        return [(("colour", int(c)), 1 + int(d)) for c, d in zip(layout.segment_colour, layout.segment_dance)]
    visited = [int(r) for r in np.unique(layout.places)]
    if layout.task_type == "room_dance":
        return [(("room", r), 1 + int(layout.room_dance[r])) for r in visited]
    return [(("dance", int(layout.room_dance[r])), 1 + NUM_DANCES + r) for r in visited]
