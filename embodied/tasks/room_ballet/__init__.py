"""Room Ballet (SAT's place-centric Ballet, Cho, Yoon, Ahn 2024): `room_ballet/...`.

An apartment of rooms. The agent is walked through it (its actions are ignored during the walk, as
in Ballet's show); in each room a dancer performs one of Ballet's 13 dances
(embodied.tasks.ballet.DANCES) in a loop. After the walk a question is asked and the agent answers
with one action: +1 for the right answer, 0 for a wrong one (either ends the episode);
`ANSWER_STEPS` steps to answer, else 0. The memory budget of a level (`memory_budget` tokens, one
token per step) is smaller than the walk, so what a memory keeps decides what it can answer.

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

Worlds (`task.world`, embodied.tasks.config.RoomBalletConfig):
- `grid` (default): the rooms are a rooms_wide x rooms_high grid graph (neighbours share a door)
  and observations are symbolic only.
- `apartment`: the rooms are those of a procedural apartment (`embodied.world.generate_apartment`
  with the level's room count: 8 for budget levels, 5 for multi levels; apartments have 2..8 rooms,
  so a level needing more is refused at construction). Place id = room index in the SceneSpec;
  neighbours are the rooms a door joins (`apartment_neighbours`). Each episode draws one of
  `apartments` layouts (default 16; layout k is the first of seeds 1000k, 1000k + 1, ... on which
  `stage_apartment` can place a dancer with a viewpoint in every room; an env keeps up to
  `task.scene_cache` of them built). With `rgb` (default true here) the walk is navigated: the body
  follows shortest paths on the apartment's navigable grid (`NavigableGrid`, with the entered
  room's dance floor blocked so it walks round the dancer) from viewpoint to viewpoint; during a
  stay it walks the part of the path inside the room over the first half of the stay, then stands at
  the room's viewpoint (a clear line of sight to the dancer), always turned to face the dancer.
  The dancer of the current step is a movable figure (body and head boxes whose two colours, from
  Ballet's COLOUR_RGB, encode the 32 colour ids; `dancer_colours`) posed at the room's most open
  spot plus its dance offset x `dance_steps[room]` (0.15-0.25 m) with `set_object_pose`; the
  apartment's static scene is built once. With `rgb: false` only the room graph is taken from the
  apartment (no geometry, for fast CPU runs; layout k is then seed 1000k, unstaged).

Observation (Dict):
    text  int [4]   tokens (0 = padding). Walk: [type, room, colour, dance] in `tokens` mode (what
                    is visible, perception abstracted), [type, 0, 0, 0] in `grid` mode and
                    whenever `rgb` is on (the frames show room, dancer and dance).
                    Question: [type, marker, asked room | colour | dance (the walk's token), 0].
    place int [1]   the room the agent is in (SAT's place id; the agent hands it to the memory).
    semantic int [9, 9]  `grid` mode only: the room seen from above: walls drawn in the room's
                    class (the room is recognisable), the dancer in its colour's class, moving
                    through its dance; the dance is only identifiable from several frames.
    rgb uint8 [height, width, 3]  apartment world with `rgb` only: the first-person view
                    (task.width x task.height, task.hfov, camera at task.camera_height). During
                    the question the dancer has gone and the agent stands where the walk ended.
Actions: 0 waits; 1 + d answers dance d; 1 + NUM_DANCES + r answers room r.

Simplifications (documented, not hidden): the walk is scripted (the agent's actions are ignored
until the question), and between two stays only the part of the path inside the entered room is
shown (the way out of the previous room and through rooms in between is walked but not observed,
so the step schedule, and with it the levels' budgets and questions, is that of the grid world);
only the dancer of the current step is present (others rest out of sight), so a frame shows one
dance as the symbolic views do; the `grid` world is a grid graph of rooms.
`oracle_action()` is the scripted expert: it reads the ground truth.
Viewer protocol (words for recordings; no effect on the task): `action_names`, `classes` (names of
the grid view's ids) and `observation_text(obs)` (the text tokens in words, `describe_text`).

Randomisations (what the seed draws, in this order): the apartment of the pool (apartment world);
the question type among the level's; budget levels: each room's dance and dancer colour (distinct),
the start room, each stay's length (stay_min..stay_max) and the next room (a neighbour), the asked
room or dance among those visited; multi levels: the rooms' Dirichlet preference and each segment's
room (redrawn until a dancer is answerable under exactly the type's strategy), each segment's
dancer colour (distinct) and dance, and the asked dancer among those answerable.
Success: the first non-wait action after the walk is the right answer (reward 1, success 1); a
wrong answer ends the episode with 0; `ANSWER_STEPS` steps without an answer truncate it with 0.

Parts (as dm_control's composer composes tasks): `spec` (RoomBalletLevel, LEVELS, constants),
`layout` (sample_layout: what the seed draws; kept_steps; plan_walk), `apartment` (the staged
apartment world), embodied.tasks.answer (the show-then-ask phase machine, shared with Ballet),
`oracle` (the expert; what a memory budget keeps), `render` (text tokens, grid view, apartment
frame), and `env` (RoomBalletEnv, which composes them).
"""
from embodied.tasks.registry import register_task
from embodied.tasks.room_ballet.apartment import (DANCE_MARGIN, DANCE_STEP, DANCER_BODY, DANCER_HEAD, DANCER_INSTANCE,
                                                  DEFAULT_APARTMENTS, ROOM_MARGIN, SEEDS_PER_APARTMENT, VIEW_DISTANCE,
                                                  ApartmentError, ApartmentPool, ApartmentStage, apartment_neighbours,
                                                  dancer_colours, inside_rect, room_rects, stage_apartment)
from embodied.tasks.room_ballet.env import RoomBalletEnv
from embodied.tasks.room_ballet.layout import Layout, kept_steps, plan_walk, room_neighbours, sample_layout
from embodied.tasks.room_ballet.render import (ASK_COLOUR_TOKEN, ASK_DANCE_TOKEN, ASK_ROOM_TOKEN, CLASSES, COLOUR_TOKEN,
                                               DANCE_TOKEN, DANCER_CLASS, NUM_CLASSES, ROOM_GRID, ROOM_TOKEN, TEXT_LENGTH,
                                               TYPE_TOKEN, VOCAB, WALL_CLASS, colour_name, describe_text,
                                               question_tokens)
from embodied.tasks.room_ballet.spec import (ANSWER_STEPS, BEST_STRATEGY, BUDGET_TYPES, LEVELS, MAX_ROOMS, MULTI_TYPES,
                                             NUM_COLOURS, NUM_DANCES, QUESTION_TYPES, STRATEGIES, RoomBalletLevel)

for _level_name, _level in LEVELS.items():
    _class_name = "RoomBallet" + "".join(part.title() for part in _level_name.split("_"))
    register_task(f"room_ballet/{_level_name}")(type(_class_name, (RoomBalletEnv,), {"level": _level.validate()}))

__all__ = ["ANSWER_STEPS", "ASK_COLOUR_TOKEN", "ASK_DANCE_TOKEN", "ASK_ROOM_TOKEN", "BEST_STRATEGY", "BUDGET_TYPES",
           "CLASSES", "COLOUR_TOKEN", "DANCE_MARGIN", "DANCE_STEP", "DANCE_TOKEN", "DANCER_BODY", "DANCER_CLASS",
           "DANCER_HEAD", "DANCER_INSTANCE", "DEFAULT_APARTMENTS", "LEVELS", "MAX_ROOMS", "MULTI_TYPES", "NUM_CLASSES",
           "NUM_COLOURS", "NUM_DANCES", "QUESTION_TYPES", "ROOM_GRID", "ROOM_MARGIN", "ROOM_TOKEN", "SEEDS_PER_APARTMENT",
           "STRATEGIES", "TEXT_LENGTH", "TYPE_TOKEN", "VIEW_DISTANCE", "VOCAB", "WALL_CLASS", "ApartmentError",
           "ApartmentPool", "ApartmentStage", "Layout", "RoomBalletEnv", "RoomBalletLevel", "apartment_neighbours",
           "colour_name", "dancer_colours", "describe_text", "inside_rect", "kept_steps", "plan_walk",
           "question_tokens", "room_neighbours", "room_rects", "sample_layout", "stage_apartment"]
