"""Room Ballet's layout: what the seed draws for one episode (`sample_layout`: the question type, the
walk through the rooms, the dancers and their dances, the question and its answer), the write
strategies' simulation that multi levels draw with (`kept_steps`), and the walk's poses in an
apartment (`plan_walk`)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embodied.tasks.ballet import DANCE_NAMES, DANCE_STEPS, DANCES
from embodied.tasks.room_ballet.apartment import ROOM_MARGIN, ApartmentStage, inside_rect
from embodied.tasks.room_ballet.spec import BEST_STRATEGY, NUM_COLOURS, NUM_DANCES, STRATEGIES, RoomBalletLevel


def kept_steps(places: Sequence[int], capacity: int, strategy: str) -> list[int]:
    """Steps (indices into `places`) a `capacity`-token memory holds after writing every step."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if capacity < 1:
        raise ValueError(f"capacity={capacity}: must be >= 1")
    stored: list[int] = []
    for step in range(len(places)):
        if len(stored) == capacity:
            if strategy == "fifo":
                victim = stored[0]
            elif strategy == "lifo":
                victim = stored[-1]
            else:
                counts: dict[int, int] = {}
                for s in stored:
                    counts[places[s]] = counts.get(places[s], 0) + 1
                best = (max if strategy == "mvfo" else min)(counts.values())
                target = min(p for p, c in counts.items() if c == best)
                victim = next(s for s in stored if places[s] == target)
            stored.remove(victim)
        stored.append(step)
    return stored


def room_neighbours(room: int, width: int, height: int) -> list[int]:
    """Rooms sharing a door with `room` in a width x height grid of rooms."""
    row, col = divmod(room, width)
    out = []
    for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = row + d_row, col + d_col
        if 0 <= r < height and 0 <= c < width:
            out.append(r * width + c)
    return out


@dataclass
class Layout:
    """One episode: at every walk step t the room `places[t]`, the dancer shown (`step_colour`,
    `step_dance`) at `phase[t]` steps into its dance; the question (`("room" | "dance" | "colour",
    value)`), the right answer action and the walk steps that show it (`answer_steps`). Budget
    levels fill `room_dance`/`room_colour` (one dancer per room), multi levels the `segment_*`
    arrays and `target_segment` (the asked dancer)."""

    task_type: str
    places: np.ndarray
    phase: np.ndarray
    step_colour: np.ndarray
    step_dance: np.ndarray
    question: tuple[str, int]
    answer: int
    answer_steps: np.ndarray
    room_dance: np.ndarray | None = None
    room_colour: np.ndarray | None = None
    segment_room: np.ndarray | None = None
    segment_colour: np.ndarray | None = None
    segment_dance: np.ndarray | None = None
    target_segment: int | None = None

    def dance_offset(self, t: int) -> tuple[int, int]:
        """(dx, dy) of the dancer shown at walk step t from its home (dance units; y is up)."""
        return DANCES[DANCE_NAMES[int(self.step_dance[t])]][int(self.phase[t]) % DANCE_STEPS]


def sample_layout(level: RoomBalletLevel, rng: np.random.Generator, neighbours: Callable[[int], list[int]]) -> Layout:
    """Draw an episode of `level`: its question type, then the walk (`neighbours(room)`: the rooms a
    walk may go to next) and the question."""
    task_type = str(level.question_types[int(rng.integers(len(level.question_types)))])
    if level.mode == "budget":
        return _budget_layout(level, rng, neighbours, task_type)
    return _multi_layout(level, rng, task_type)


def _budget_layout(level: RoomBalletLevel, rng: np.random.Generator, neighbours, task_type: str) -> Layout:
    rooms, walk_steps = level.num_rooms, level.walk_length
    room_dance = rng.choice(NUM_DANCES, rooms, replace=False)
    room_colour = rng.choice(NUM_COLOURS, rooms, replace=False)
    walk: list[int] = []
    room = int(rng.integers(rooms))
    while len(walk) < walk_steps:
        stay = int(rng.integers(level.stay_min, level.stay_max + 1))
        walk.extend([room] * stay)
        room = int(rng.choice(neighbours(room)))
    places = np.asarray(walk[:walk_steps], dtype=np.int64)
    # Dance phase at each step: steps since entering the room (the dancer loops its dance).
    entered = np.zeros(walk_steps, dtype=np.int64)
    for t in range(1, walk_steps):
        entered[t] = entered[t - 1] if places[t] == places[t - 1] else t
    visited = np.unique(places)
    if task_type == "room_dance":
        room = int(rng.choice(visited))
        question = ("room", room)
        answer = 1 + int(room_dance[room])
    else:
        dance = int(room_dance[int(rng.choice(visited))])
        question = ("dance", dance)
        room = int(np.flatnonzero(room_dance == dance)[0])
        answer = 1 + NUM_DANCES + room
    return Layout(task_type, places, np.arange(walk_steps) - entered, room_colour[places], room_dance[places],
                  question, answer, np.flatnonzero(places == room), room_dance=room_dance, room_colour=room_colour)


def _multi_layout(level: RoomBalletLevel, rng: np.random.Generator, task_type: str) -> Layout:
    wanted = BEST_STRATEGY[task_type]
    length, segments = level.segment_steps, level.segments
    for _ in range(1000):
        preference = rng.dirichlet(np.ones(level.num_rooms))
        segment_room = rng.choice(level.num_rooms, segments, p=preference)
        places = np.repeat(segment_room, length)
        kept = {s: set(kept_steps(list(places) + [int(places[-1])], level.memory_budget, s)) for s in STRATEGIES}
        survives = {s: [any(i * length + k in kept[s] for k in range(length)) for i in range(segments)]
                    for s in STRATEGIES}
        candidates = [i for i in range(segments)
                      if survives[wanted][i] and not any(survives[s][i] for s in STRATEGIES if s != wanted)]
        if candidates:
            break
    else:  # pragma: no cover - the level parameters make this vanishingly rare
        raise RuntimeError(f"room_ballet: no episode of type {task_type!r} in 1000 draws; change the level")
    segment_colour = rng.choice(NUM_COLOURS, segments, replace=False)
    segment_dance = rng.integers(0, NUM_DANCES, segments)
    target = int(rng.choice(candidates))
    return Layout(task_type, places.astype(np.int64), np.tile(np.arange(length), segments),
                  np.repeat(segment_colour, length), np.repeat(segment_dance, length),
                  ("colour", int(segment_colour[target])), 1 + int(segment_dance[target]),
                  np.arange(target * length, (target + 1) * length), segment_room=segment_room,
                  segment_colour=segment_colour, segment_dance=segment_dance, target_segment=target)


def plan_walk(stage: ApartmentStage, places: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The agent's pose (x, y, yaw) at every walk step in an apartment `stage`, and
    every path walked (for checks). Each stay in a room: the body walks the shortest path on the
    navigable grid from the previous room's viewpoint to this one's; the part of the path inside this
    room is played over the first half of the stay (the rest of the way between two stays is not
    shown), then the agent stands at the viewpoint. It always faces the dancer."""
    walk_steps = len(places)
    poses = np.zeros((walk_steps, 3))
    trajectory: list[np.ndarray] = []
    starts = [0] + [t for t in range(1, walk_steps) if places[t] != places[t - 1]] + [walk_steps]
    previous = None
    for begin, end in zip(starts[:-1], starts[1:]):
        room = int(places[begin])
        target = stage.viewpoints[room]
        if previous is None:
            inside = target[None]
        else:
            path = stage.paths[previous, room]
            trajectory.append(path)
            outside = np.flatnonzero(~inside_rect(stage.rects[room], path, ROOM_MARGIN))
            inside = path[outside[-1] + 1:] if len(outside) else path
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(inside, axis=0), axis=1))])
        arrive = max(1, (end - begin) // 2)
        for f in range(end - begin):
            s = arc[-1] * min(1.0, f / arrive)
            x, y = (np.interp(s, arc, inside[:, k]) for k in range(2))
            dx, dy = stage.homes[room] - (x, y)
            poses[begin + f] = (x, y, math.atan2(dy, dx))
        previous = room
    return poses, trajectory
