"""Room Ballet (SAT's place-centric Ballet, Cho, Yoon, Ahn 2024), symbolic: `room_ballet/...`.

An apartment of rooms (a grid of rooms; neighbours share a door). The agent is walked through it
(its actions are ignored during the walk, as in Ballet's show); in each room a dancer performs one
of Ballet's 13 dances (embodied.tasks.ballet.DANCES) in a loop. After the walk a question is asked
and the agent answers with one action: +1 for the right answer, 0 for a wrong one (either ends the
episode); `ANSWER_STEPS` steps to answer, else 0. The memory budget of a level (`memory_budget`
tokens, one token per step) is smaller than the walk, so what a memory keeps decides what it can
answer.

Two kinds of levels:
- Budget levels (`budget`, `budget_grid`; SAT's Short-Stay with a budget): one dancer per room, each
  room a distinct dance; a random walk from room to neighbouring room, staying `stay_min..stay_max`
  steps in each. Questions: `room_dance` ("which dance was in room r?", r a visited room) and
  `dance_room` ("in which room was dance d?", d a dance seen). A FIFO memory forgets the rooms of
  the early walk; evicting from the place that fills most of the memory (mvfo) keeps every room.
- Multi-task levels (`multi`, `multi_<type>`; SAT's Room Ballet Multi-Task): `segments` dancers, each
  a distinct colour, seen one after another for `segment_steps` steps each, in rooms drawn with a
  skewed (per-episode Dirichlet) preference, so some rooms are busy and some rare. The question
  type is announced from the first step (the instruction) and the question names a dancer by
  colour: "which dance did the <colour> dancer do?". The type says which dancer can be asked:
  `recent`, `early`, `rare_room`, `busy_room`. As in the released code (answer labels guaranteed to
  survive a heuristic), the asked dancer is drawn among those whose steps survive the level's
  budget under exactly one write strategy: recent -> fifo, early -> lifo, rare_room -> mvfo,
  busy_room -> lvfo (`BEST_STRATEGY`); episodes without such a dancer are redrawn. So each type
  has one write strategy that can answer it, and an allocator (AMA) has something to pick.

The strategies are simulated here (`kept_steps`) with the semantics of the SAT memory
(embodied/memory/sat.py: free slot first; fifo evicts the oldest, lifo the newest stored, mvfo /
lvfo the oldest token of the place holding the most / fewest stored tokens, ties to the lowest
place id); tests check the two agree.

Observation (Dict):
    text  int [4]   tokens (0 = padding). Walk: [type, room, colour, dance] in `tokens` mode (what
                    is visible, perception abstracted), [type, 0, 0, 0] in `grid` mode.
                    Question: [type, marker, asked room | colour | dance (the walk's token), 0].
    place int [1]   the room the agent is in (SAT's place id; the agent hands it to the memory).
    semantic int [9, 9]  `grid` mode only: the room seen from above: walls drawn in the room's
                    class (the room is recognisable), the dancer in its colour's class, moving
                    through its dance; the dance is only identifiable from several frames.
Actions: 0 waits; 1 + d answers dance d; 1 + NUM_DANCES + r answers room r.

Simplifications (documented, not hidden): the walk is scripted, not navigated; observations are
symbolic (no RGB); the rooms are a grid graph, not a procedural apartment.
`oracle_action()` is the scripted expert: it reads the ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied.tasks.ballet import DANCE_NAMES, DANCE_STEPS, DANCES
from embodied.tasks.registry import register_task

NUM_DANCES = len(DANCES)
MAX_ROOMS = 16
NUM_COLOURS = 32
ANSWER_STEPS = 4
ROOM_GRID = 9
STRATEGIES = ("fifo", "lifo", "mvfo", "lvfo")
BUDGET_TYPES = ("room_dance", "dance_room")
MULTI_TYPES = ("recent", "early", "rare_room", "busy_room")
QUESTION_TYPES = BUDGET_TYPES + MULTI_TYPES
BEST_STRATEGY = {"recent": "fifo", "early": "lifo", "rare_room": "mvfo", "busy_room": "lvfo"}

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
WALL_CLASS = 1
DANCER_CLASS = WALL_CLASS + MAX_ROOMS
NUM_CLASSES = DANCER_CLASS + NUM_COLOURS


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


def question_tokens(kind: str, value: int) -> tuple[int, int]:
    """The two text tokens of a question: its marker and the asked room / colour / dance."""
    if kind == "room":
        return ASK_ROOM_TOKEN, ROOM_TOKEN + value
    if kind == "colour":
        return ASK_COLOUR_TOKEN, COLOUR_TOKEN + value
    if kind == "dance":
        return ASK_DANCE_TOKEN, DANCE_TOKEN + value
    raise ValueError(f"question kind {kind!r}; allowed: room, colour, dance")


def room_neighbours(room: int, width: int, height: int) -> list[int]:
    """Rooms sharing a door with `room` in a width x height grid of rooms."""
    row, col = divmod(room, width)
    out = []
    for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = row + d_row, col + d_col
        if 0 <= r < height and 0 <= c < width:
            out.append(r * width + c)
    return out


class RoomBalletEnv(gym.Env):
    """One Room Ballet level; the class attributes below are set by the registered subclass."""

    metadata = {"render_modes": []}
    mode: str = "budget"  # budget | multi
    obs_mode: str = "tokens"  # tokens | grid
    rooms_wide: int = 4
    rooms_high: int = 2
    walk_steps: int = 96  # budget levels
    stay_min: int = 4
    stay_max: int = 16
    segments: int = 16  # multi levels
    segment_steps: int = 4
    memory_budget: int = 32
    question_types: tuple[str, ...] = BUDGET_TYPES

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.num_rooms = self.rooms_wide * self.rooms_high
        if self.mode == "multi":
            self.walk_steps = self.segments * self.segment_steps
        if not 2 <= self.num_rooms <= MAX_ROOMS or (self.mode == "budget" and self.num_rooms > NUM_DANCES):
            raise ValueError(f"room_ballet: {self.num_rooms} rooms; allowed 2..{NUM_DANCES} (budget) or ..{MAX_ROOMS}")
        if self.memory_budget >= self.walk_steps:
            raise ValueError(f"room_ballet: memory_budget={self.memory_budget} must be below the walk ({self.walk_steps})")
        self.max_episode_steps = self.walk_steps + ANSWER_STEPS
        obs = {"text": spaces.Box(0, VOCAB - 1, (TEXT_LENGTH,), dtype=np.int64),
               "place": spaces.Box(0, self.num_rooms - 1, (1,), dtype=np.int64)}
        if self.obs_mode == "grid":
            obs["semantic"] = spaces.Box(0, NUM_CLASSES - 1, (ROOM_GRID, ROOM_GRID), dtype=np.int64)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(1 + NUM_DANCES + self.num_rooms)
        self._rng = np.random.default_rng()
        self._t = 0
        self._done = True

    # --- episode ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.task_type = str(self.question_types[int(rng.integers(len(self.question_types)))])
        if self.mode == "budget":
            self._sample_budget_episode(rng)
        else:
            self._sample_multi_episode(rng)
        self._t = 0
        self._done = False
        return self._observation(), self._info(success=0.0)

    def _sample_budget_episode(self, rng: np.random.Generator) -> None:
        rooms = self.num_rooms
        self.room_dance = rng.choice(NUM_DANCES, rooms, replace=False)
        self.room_colour = rng.choice(NUM_COLOURS, rooms, replace=False)
        places: list[int] = []
        room = int(rng.integers(rooms))
        while len(places) < self.walk_steps:
            stay = int(rng.integers(self.stay_min, self.stay_max + 1))
            places.extend([room] * stay)
            room = int(rng.choice(room_neighbours(room, self.rooms_wide, self.rooms_high)))
        self.places = np.asarray(places[: self.walk_steps], dtype=np.int64)
        # Dance phase at each step: steps since entering the room (the dancer loops its dance).
        entered = np.zeros(self.walk_steps, dtype=np.int64)
        for t in range(1, self.walk_steps):
            entered[t] = entered[t - 1] if self.places[t] == self.places[t - 1] else t
        self.phase = np.arange(self.walk_steps) - entered
        self.step_colour = self.room_colour[self.places]
        self.step_dance = self.room_dance[self.places]
        visited = np.unique(self.places)
        if self.task_type == "room_dance":
            room = int(rng.choice(visited))
            self.question = ("room", room)
            self.answer = 1 + int(self.room_dance[room])
            self.answer_steps = np.flatnonzero(self.places == room)
        else:
            dance = int(self.room_dance[int(rng.choice(visited))])
            self.question = ("dance", dance)
            room = int(np.flatnonzero(self.room_dance == dance)[0])
            self.answer = 1 + NUM_DANCES + room
            self.answer_steps = np.flatnonzero(self.places == room)

    def _sample_multi_episode(self, rng: np.random.Generator) -> None:
        wanted = BEST_STRATEGY[self.task_type]
        length = self.segment_steps
        for _ in range(1000):
            preference = rng.dirichlet(np.ones(self.num_rooms))
            segment_room = rng.choice(self.num_rooms, self.segments, p=preference)
            places = np.repeat(segment_room, length)
            kept = {s: set(kept_steps(list(places) + [int(places[-1])], self.memory_budget, s)) for s in STRATEGIES}
            survives = {s: [any(i * length + k in kept[s] for k in range(length)) for i in range(self.segments)]
                        for s in STRATEGIES}
            candidates = [i for i in range(self.segments)
                          if survives[wanted][i] and not any(survives[s][i] for s in STRATEGIES if s != wanted)]
            if candidates:
                break
        else:  # pragma: no cover - the level parameters make this vanishingly rare
            raise RuntimeError(f"room_ballet: no episode of type {self.task_type!r} in 1000 draws; change the level")
        self.places = places.astype(np.int64)
        self.segment_room = segment_room
        self.segment_colour = rng.choice(NUM_COLOURS, self.segments, replace=False)
        self.segment_dance = rng.integers(0, NUM_DANCES, self.segments)
        self.phase = np.tile(np.arange(length), self.segments)
        self.step_colour = np.repeat(self.segment_colour, length)
        self.step_dance = np.repeat(self.segment_dance, length)
        target = int(rng.choice(candidates))
        self.target_segment = target
        self.question = ("colour", int(self.segment_colour[target]))
        self.answer = 1 + int(self.segment_dance[target])
        self.answer_steps = np.arange(target * length, (target + 1) * length)

    def step(self, action):
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} out of range 0..{self.action_space.n - 1}")
        action = int(action)
        reward, terminated = 0.0, False
        if self._t >= self.walk_steps and action > 0:
            terminated = True
            reward = 1.0 if action == self.answer else 0.0
        self._t += 1
        truncated = not terminated and self._t >= self.max_episode_steps
        self._done = terminated or truncated
        return self._observation(), reward, terminated, truncated, self._info(success=reward)

    def oracle_action(self) -> int:
        """The expert: wait through the walk, then give the true answer."""
        return self.answer if self._t >= self.walk_steps else 0

    # --- what a memory of the level's budget can answer ------------------------------------------
    def question_places(self) -> np.ndarray:
        """Place of every step up to and including the first question step (what a memory writes)."""
        return np.append(self.places, self.places[-1])

    def answer_kept(self, strategy: str, capacity: int | None = None) -> bool:
        """Whether a memory of `capacity` tokens (default: the level's budget) under `strategy`
        still holds a step that shows the answer when the question is first asked."""
        kept = kept_steps(list(self.question_places()), capacity or self.memory_budget, strategy)
        return bool(set(kept) & set(self.answer_steps.tolist()))

    # --- observation -----------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        t = min(self._t, self.walk_steps)
        type_token = TYPE_TOKEN + QUESTION_TYPES.index(self.task_type)
        text = np.zeros(TEXT_LENGTH, dtype=np.int64)
        text[0] = type_token
        place = int(self.places[min(t, self.walk_steps - 1)])
        if t < self.walk_steps:
            if self.obs_mode == "tokens":
                text[1:] = (ROOM_TOKEN + place, COLOUR_TOKEN + int(self.step_colour[t]),
                            DANCE_TOKEN + int(self.step_dance[t]))
        else:
            text[1:3] = question_tokens(*self.question)
        obs = {"text": text, "place": np.array([place], dtype=np.int64)}
        if self.obs_mode == "grid":
            obs["semantic"] = self._grid(t, place)
        return obs

    def _grid(self, t: int, place: int) -> np.ndarray:
        grid = np.zeros((ROOM_GRID, ROOM_GRID), dtype=np.int64)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL_CLASS + place
        if t < self.walk_steps:
            dx, dy = DANCES[DANCE_NAMES[int(self.step_dance[t])]][int(self.phase[t]) % DANCE_STEPS]
            centre = ROOM_GRID // 2
            grid[centre - dy, centre + dx] = DANCER_CLASS + int(self.step_colour[t])
        return grid

    def _info(self, success: float) -> dict:
        chance = 1.0 / (self.num_rooms if self.question[0] == "dance" else NUM_DANCES)
        return {"success": float(success), "chance": chance, "walk_steps": self.walk_steps,
                "memory_budget": self.memory_budget, "question_type": self.task_type}


LEVELS: dict[str, dict] = {
    "budget": dict(mode="budget", obs_mode="tokens"),
    "budget_grid": dict(mode="budget", obs_mode="grid"),
    "multi": dict(mode="multi", rooms_wide=5, rooms_high=1, memory_budget=24, question_types=MULTI_TYPES),
    **{f"multi_{kind}": dict(mode="multi", rooms_wide=5, rooms_high=1, memory_budget=24, question_types=(kind,))
       for kind in MULTI_TYPES},
}
for _level, _attrs in LEVELS.items():
    _name = "RoomBallet" + "".join(part.title() for part in _level.split("_"))
    register_task(f"room_ballet/{_level}")(type(_name, (RoomBalletEnv,), dict(_attrs)))
