"""Room Ballet's observation renderer: the text tokens (and their words), the symbolic room view of
`obs_mode: grid` and the first-person frame of the apartment world, each a function of the layout
and the step clock."""
from __future__ import annotations

import numpy as np

from embodied.tasks.ballet import COLOUR_NAMES, COLOUR_RGB, DANCE_NAMES
from embodied.tasks.room_ballet.apartment import ApartmentStage
from embodied.tasks.room_ballet.layout import Layout
from embodied.tasks.room_ballet.spec import MAX_ROOMS, NUM_COLOURS, NUM_DANCES, QUESTION_TYPES

# Text vocabulary: disjoint id ranges per field, so a mean of token embeddings keeps them apart.
TYPE_TOKEN = 1
ROOM_TOKEN = TYPE_TOKEN + len(QUESTION_TYPES)
COLOUR_TOKEN = ROOM_TOKEN + MAX_ROOMS
DANCE_TOKEN = COLOUR_TOKEN + NUM_COLOURS
# The question is a marker ("which room / which dancer / which dance") and the same token the walk
# showed, so what is asked and what was seen share an embedding.
ASK_ROOM_TOKEN = DANCE_TOKEN + NUM_DANCES
ASK_COLOUR_TOKEN = ASK_ROOM_TOKEN + 1
ASK_DANCE_TOKEN = ASK_COLOUR_TOKEN + 1
VOCAB = ASK_DANCE_TOKEN + 1
TEXT_LENGTH = 4

# Semantic classes of the grid view: 0 floor, 1 + r walls of room r, 1 + MAX_ROOMS + c dancer colour c.
ROOM_GRID = 9
WALL_CLASS = 1
DANCER_CLASS = WALL_CLASS + MAX_ROOMS
NUM_CLASSES = DANCER_CLASS + NUM_COLOURS


def question_tokens(kind: str, value: int) -> tuple[int, int]:
    """The two text tokens of a question: its marker and the asked room / colour / dance."""
    if kind == "room":
        return ASK_ROOM_TOKEN, ROOM_TOKEN + value
    if kind == "colour":
        return ASK_COLOUR_TOKEN, COLOUR_TOKEN + value
    if kind == "dance":
        return ASK_DANCE_TOKEN, DANCE_TOKEN + value
    raise ValueError(f"question kind {kind!r}; allowed: room, colour, dance")


def colour_name(colour: int) -> str:
    """Words for dancer colour id `colour`: "body/head" colour names (`dancer_colours`)."""
    if not 0 <= colour < NUM_COLOURS:
        raise ValueError(f"colour {colour!r}; allowed: 0..{NUM_COLOURS - 1}")
    body = colour % len(COLOUR_RGB)
    return f"{COLOUR_NAMES[body]}/{COLOUR_NAMES[(body + 1 + colour // len(COLOUR_RGB)) % len(COLOUR_RGB)]}"


def describe_text(tokens) -> str:
    """The words of a Room Ballet text observation: "<type>: <what is seen>" during the walk (just
    "watch" when the tokens hide it), "<type>: <question>" after it."""
    t = [int(v) for v in np.asarray(tokens).reshape(-1)]
    if len(t) != TEXT_LENGTH or not 0 <= t[0] - TYPE_TOKEN < len(QUESTION_TYPES):
        raise ValueError(f"room_ballet text {t}: expected {TEXT_LENGTH} tokens starting with a question type")
    kind = QUESTION_TYPES[t[0] - TYPE_TOKEN]
    marker, value = t[1], t[2]
    if marker == ASK_ROOM_TOKEN:
        return f"{kind}: which dance was in room {value - ROOM_TOKEN}?"
    if marker == ASK_DANCE_TOKEN:
        return f"{kind}: in which room was dance {DANCE_NAMES[value - DANCE_TOKEN]}?"
    if marker == ASK_COLOUR_TOKEN:
        return f"{kind}: which dance did the {colour_name(value - COLOUR_TOKEN)} dancer do?"
    if t[1:] == [0, 0, 0]:
        return f"{kind}: watch"
    return (f"{kind}: watch room {t[1] - ROOM_TOKEN}, {colour_name(t[2] - COLOUR_TOKEN)} dancer, "
            f"dance {DANCE_NAMES[t[3] - DANCE_TOKEN]}")


# Names of the grid view's ids (viewer protocol).
CLASSES: tuple[str, ...] = (("floor",) + tuple(f"room {r} wall" for r in range(MAX_ROOMS))
                            + tuple(f"{colour_name(c)} dancer" for c in range(NUM_COLOURS)))


def text_tokens(layout: Layout, t: int, walk_steps: int, show_walk: bool) -> np.ndarray:
    """[TEXT_LENGTH] tokens at step clock t (clamped to the question): the question type, then during
    the walk what is visible (room, colour, dance) when `show_walk`, else zeros; then the question."""
    text = np.zeros(TEXT_LENGTH, dtype=np.int64)
    text[0] = TYPE_TOKEN + QUESTION_TYPES.index(layout.task_type)
    if t < walk_steps:
        if show_walk:
            text[1:] = (ROOM_TOKEN + int(layout.places[t]), COLOUR_TOKEN + int(layout.step_colour[t]),
                        DANCE_TOKEN + int(layout.step_dance[t]))
    else:
        text[1:3] = question_tokens(*layout.question)
    return text


def grid_view(layout: Layout, t: int, walk_steps: int, place: int) -> np.ndarray:
    """[ROOM_GRID, ROOM_GRID] room seen from above: walls in room `place`'s class, during the walk the
    dancer in its colour's class at its dance offset from the centre."""
    grid = np.zeros((ROOM_GRID, ROOM_GRID), dtype=np.int64)
    grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL_CLASS + place
    if t < walk_steps:
        dx, dy = layout.dance_offset(t)
        centre = ROOM_GRID // 2
        grid[centre - dy, centre + dx] = DANCER_CLASS + int(layout.step_colour[t])
    return grid


def dancer_position(stage: ApartmentStage, layout: Layout, t: int) -> np.ndarray:
    """World xy of the dancer shown at walk step t (apartment world)."""
    room = int(layout.places[t])
    return stage.homes[room] + stage.dance_steps[room] * np.array(layout.dance_offset(t), np.float64)


def apartment_frame(stage: ApartmentStage, layout: Layout, poses: np.ndarray, t: int, camera) -> np.ndarray:
    """First-person rgb at step clock t: the walk's dancer posed at its dance offset; at the question
    the dancer has gone (as in the grid view) and the agent stands where the walk ended."""
    walk_steps = len(layout.places)
    if t < walk_steps:
        stage.show_dancer(int(layout.step_colour[t]), dancer_position(stage, layout, t))
    else:
        stage.show_dancer(None)
    x, y, yaw = poses[min(t, walk_steps - 1)]
    return stage.renderer.render_one((x, y, 0.0, yaw), camera, outputs=("rgb",))["rgb"]
