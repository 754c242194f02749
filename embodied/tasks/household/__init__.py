"""Household (Optimus-1's long-horizon "obtain X" tasks in a symbolic apartment): `household/tier<t>`.

An apartment of six rooms with three containers each (drawers, cabinets, a fridge, boxes,
wardrobes, shelves; four are locked, each by its own key) and six stations (toaster, stove, oven,
blender, workbench, sewing machine). Raw things (keys, tools, materials) are stored in containers;
products are made at stations from inputs (consumed) with at most one tool (held, not consumed). An
episode asks for one product of the tier's dependency depth (1..5, as Optimus-1's Wood .. Diamond
groups) within a step budget.

Fixed common-sense core (every world): a container must be open to take from it; a locked one opens
once its key is held (and stays unlocked); keys and tools are never consumed; a fridge is never
locked; the hands hold INVENTORY_CAPACITY things; `place` puts a thing on the room's floor.
Drawn from the world seed (`task.world_seed`, embodied.tasks.household.world): which containers are
locked and by which key, where each key, tool and material is stored in each of three observable
contexts (`CONTEXTS`: a context moves some things to a second home behind the same lock), which
station makes what from what with which tool, and the stations' rooms. So knowledge must be learned
from experience within one world; a memory is per world.
Drawn from the episode seed: the context, the goal among the tier's GOALS_PER_TIER products, the
start room, and the perturbations: with `task.move_prob` a needed thing is moved to an unlocked
container of another room, with `task.stuck_prob` a container holding one is stuck (the first
STUCK_TRIES opens fail with "stuck").

Actions (`ACTION_TABLE`, 174 ids): goto <room> | open / close <container> | take / place / make
<item>. Everything in the current room is within reach. Each action costs one step; a failed one
says why in `info["feedback"]` (a FEEDBACK word) and `info["message"]` ("the study box is locked",
"missing: flour; needs a knife", "the toaster cannot make pie"); a successful one reports
`info["event"]` (the source of a taken thing, the key that unlocked, the station, consumed inputs
and tool of a make), what an agent perceives and learns from.
Observation (Dict of int64): goal [1] (item id), context [1], room [1], inventory [44] and visible
[44] (counts in open containers here and on the floor), containers [18] (0 elsewhere, 1 closed
here, 2 open here), stations [6] (1 here), feedback [1], steps_left [1]. The floor plan
(`HouseholdEnv.floor_plan()`: containers' and stations' rooms) is public; contents, locks and
recipes are not.
Measures (`info`): success, steps, subgoals_done / subgoals_total (things of the goal's dependency
tree obtained at least once), tier, goal, context. Reward 1 when the goal is held (terminated).
`oracle_action()` knows the true rules and where everything is now (the ceiling).

Parts: `spec` (vocabulary, core, LEVELS), `world` (generate_world: what the world seed draws;
dependency depth), `env` (HouseholdEnv, the action table, the oracle).
"""
from embodied.tasks.household.env import ACTION_ID, ACTION_TABLE, ITEM_ID, HouseholdEnv, action_table
from embodied.tasks.household.spec import (CONTEXTS, FEEDBACK, GOALS_PER_TIER, INVENTORY_CAPACITY, ITEMS, KEYS, LEVELS,
                                           MATERIALS, MAX_TIER, PRODUCTS, RAW, ROOMS, STATIONS, TOOLS, HouseholdLevel)
from embodied.tasks.household.world import Container, Recipe, World, generate_world
from embodied.tasks.registry import register_task

for _level_name, _level in LEVELS.items():
    register_task(f"household/{_level_name}")(type(f"Household{_level_name.title()}", (HouseholdEnv,),
                                                    {"level": _level.validate()}))

__all__ = ["ACTION_ID", "ACTION_TABLE", "CONTEXTS", "FEEDBACK", "GOALS_PER_TIER", "INVENTORY_CAPACITY", "ITEMS", "ITEM_ID", "KEYS",
           "LEVELS", "MATERIALS", "MAX_TIER", "PRODUCTS", "RAW", "ROOMS", "STATIONS", "TOOLS", "Container",
           "HouseholdEnv", "HouseholdLevel", "Recipe", "World", "action_table", "generate_world"]
