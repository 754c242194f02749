"""The household's fixed vocabulary and common-sense core, and the tiers (`household/tier<t>`).

The names and the mechanics below are the same in every world; which key opens which container,
which station makes what from what, and where things are stored are drawn from the world seed
(embodied.tasks.household.world)."""
from __future__ import annotations

from dataclasses import dataclass

ROOMS = ("kitchen", "living room", "bedroom", "bathroom", "study", "garage")
CONTAINER_KINDS = ("drawer", "cabinet", "fridge", "box", "wardrobe", "shelf")
CONTAINERS_PER_ROOM = 3
NUM_CONTAINERS = len(ROOMS) * CONTAINERS_PER_ROOM
STATIONS = ("toaster", "stove", "oven", "blender", "workbench", "sewing machine")
# Common sense: a key is a key, a tool is never consumed, and a fridge is never locked.
KEYS = ("brass key", "iron key", "silver key", "red key")
TOOLS = ("knife", "scissors", "screwdriver", "whisk")
MATERIALS = ("flour", "egg", "milk", "bread", "cheese", "tomato", "lemon", "sugar", "cloth", "thread", "plank",
             "nail", "glue", "paper", "wire", "battery")
PRODUCTS = ("dough", "toast", "omelette", "sauce", "pie", "cake", "sandwich", "lemonade", "pizza", "feast", "rag",
            "patch", "doll", "quilt", "costume", "frame", "lamp", "radio", "clock", "robot")
ITEMS = KEYS + TOOLS + MATERIALS + PRODUCTS
RAW = KEYS + TOOLS + MATERIALS  # found in containers; products are only made at stations
CONTEXTS = ("tidy", "after a party", "moving day")  # observable; each moves some things to a second home
MAX_TIER = 5
GOALS_PER_TIER = len(PRODUCTS) // MAX_TIER
INVENTORY_CAPACITY = 8
STOCK = 9  # units of a material in its container (enough for any goal of a world)
STUCK_TRIES = 2  # a stuck container opens on the third try

# Feedback words (obs `feedback`, info `feedback`): what the agent perceives after each action.
FEEDBACK = ("none", "ok", "not here", "locked", "stuck", "closed", "already open", "inventory full", "absent",
            "not held", "cannot make here", "missing", "needs tool", "no station here", "nothing in reach")
ACTIONS = ("goto", "open", "close", "take", "place", "make")


@dataclass(frozen=True)
class HouseholdLevel:
    """A tier: goals whose dependency depth is `tier` (1 = one station step from stored things; each
    lock on the way and each intermediate product adds one)."""

    tier: int = 1
    max_steps: int = 60
    """Step budget of an episode."""

    def validate(self) -> "HouseholdLevel":
        if not 1 <= self.tier <= MAX_TIER or self.max_steps < 1:
            raise ValueError(f"household level {self}: tier 1..{MAX_TIER}, max_steps >= 1")
        return self


# Budgets: about twice what the oracle needs on the longest goals of the tier (13, 23, 25, 27, 33 steps on
# world 0, 60 episodes each; docs/household.md).
LEVELS = {f"tier{t}": HouseholdLevel(t, 20 + 10 * t) for t in range(1, MAX_TIER + 1)}
