"""One-shot word learning (fast-mapping, Hill et al. ICLR 2021): `fastmap/<group>/<level>`, 29 levels.

A single room on a lattice of `CELL`-metre cells holds N unfamiliar objects from the object library
(embodied.world.library) and two familiar fixtures, a bed (2 cells) and a tray (the library's `box`
category, 1 cell). An episode runs phases:

* discovery - lifting an object (the one in the cell in front of the agent) makes the text read
  "this is a <name>" while it is held; names are nonsense words drawn per episode (or per block of
  episodes) from `vocab_size` words; `shaping_reward` on the first lift of each object. The phase
  ends once every object was lifted and the hand is empty (`discovery_ends_when_named`), or after
  `discovery_steps_per_object * N` steps.
* distractor phases (0-20) - "go to the bed" / "go to the tray": done when that fixture is in the
  cell in front of the agent (`distractor_reward`), or after `distractor_steps`.
* instruction - objects are re-placed at random; "lift the <name>", "put the <name> on the
  <fixture>" or "put the <name> near the <fixture>"; the episode ends on the first lift (lift
  instructions) or put (put instructions) with `FastMapConfig.success_reward` for the right object and
  act, else 0; or it is truncated after `instruction_steps`.

Multi-episode levels keep the objects and their names for `episodes_per_names` consecutive episodes;
only the first has a discovery phase, so the later ones need a lifelong memory.

Observations: `rgb` (first-person ray-cast render, `task.width x height`; with
`task.scenes: symbolic` an egocentric top-down tile map instead, see `render.symbolic_map`),
optional `depth` / `semantic` in room mode, `text` [6] token ids (`VOCABULARY`, 0 = padding) and
`holding` [1] (1.0 while an object is held). Actions: `FASTMAP_ACTIONS`.
`oracle_action()` is the scripted expert: it reads the true names and plans on the lattice.
Viewer protocol (words for recordings; no effect on the task): `action_names`, `classes` (names of
the semantic view's ids) and `observation_text(obs)` (`decode_text` of the text tokens).

Level-independent keys (budgets, vocabulary, room size) are those of `FastMapConfig`
(embodied/tasks/config.py), the same for every level. docs/fastmap.md documents every choice.

Randomisations (what the seed draws, in this order): per block of `episodes_per_names` episodes the
objects (distinct categories from the level's split, or from its fixed global set), their names
(nonsense words without repeats, or the category names), the bed's and tray's exemplars; per episode
the bed (wall and cells), the tray's cell, the objects' cells, the agent's cell and heading (redrawn
until everything is reachable); after discovery the drop cell of an object still held; each
distractor's fixture (one not faced now); at the instruction the objects' new cells, the target
object, the instruction kind among the level's and, for put, the fixture.
Success (info `success` 1, reward `success_reward`): lift instructions - the first lift in the
instruction phase lifts the target; put instructions - the first put in it puts the target onto
(put_on) or next to, not onto (put_near), the instructed fixture. Any other first lift / put ends
the episode with 0; `instruction_steps` steps without one truncate it with 0.

Parts (as dm_control's composer composes tasks): `spec` (FastMapLevel, LEVELS, actions, lattice
constants), `objects` (the splits' object pools), `layout` (Lattice: what the seed places and the
lattice queries), `phases` (FastMapPhases: discovery -> distractors -> instruction), `oracle` (the
expert), `render` (symbolic map and room renderer), `text` (vocabulary and sentences) and `env`
(FastMapEnv, which composes them).
"""
from embodied.tasks.config import FastMapConfig
from embodied.tasks.fastmap.env import FastMapEnv
from embodied.tasks.fastmap.layout import FastMapObject, Lattice
from embodied.tasks.fastmap.objects import (draw_from_set, global_set, object_in_split, sample_objects,
                                            split_categories)
from embodied.tasks.fastmap.phases import FastMapPhases
from embodied.tasks.fastmap.render import (AGENT_RGB, BED_RGB, FLOOR_RGB, GLYPHS, HOLD_DISTANCE, HOLD_DROP, TRAY_RGB,
                                           WALL_RGB, RoomView, glyph_mask, object_symbol_colour, symbolic_map)
from embodied.tasks.fastmap.spec import (CELL, FASTMAP_ACTIONS, FIXTURES, HEADINGS, INSTRUCTION_KINDS, LEVELS,
                                         OBJECT_SPLITS, PHASES, TRAY_CATEGORY, FastMapLevel, action_name,
                                         level_max_steps)
from embodied.tasks.fastmap.text import (FUNCTION_WORDS, NAME_POOL_SIZE, NONSENSE_WORDS, TEXT_LENGTH, TOKEN, VOCABULARY,
                                         decode_text, encode_text, instruction_steps)
from embodied.tasks.registry import register_task

_glyph_mask = glyph_mask  # the name tests and harnesses imported before the split

for _name, _level in LEVELS.items():
    _cls = type("FastMap_" + _name.replace("/", "__"), (FastMapEnv,), {"level": _level.validate()})
    register_task(f"fastmap/{_name}")(_cls)

__all__ = ["AGENT_RGB", "BED_RGB", "CELL", "FASTMAP_ACTIONS", "FIXTURES", "FLOOR_RGB", "FUNCTION_WORDS", "GLYPHS",
           "HEADINGS", "HOLD_DISTANCE", "HOLD_DROP", "INSTRUCTION_KINDS", "LEVELS", "NAME_POOL_SIZE", "NONSENSE_WORDS",
           "OBJECT_SPLITS", "PHASES", "TEXT_LENGTH", "TOKEN", "TRAY_CATEGORY", "TRAY_RGB", "VOCABULARY", "WALL_RGB",
           "FastMapConfig", "FastMapEnv", "FastMapLevel", "FastMapObject", "FastMapPhases", "Lattice", "RoomView",
           "action_name", "decode_text", "draw_from_set", "encode_text", "glyph_mask", "global_set",
           "instruction_steps", "level_max_steps", "object_in_split", "object_symbol_colour", "sample_objects",
           "split_categories", "symbolic_map"]
