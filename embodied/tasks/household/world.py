"""A household world from its seed: containers (some locked, each lock with its key), stations in
rooms, where each raw thing is stored in each context, and the recipes. Dependency depth:

    depth(raw x)     = access(home of x): 0 if unlocked, else 1 + depth(its key)
    depth(product p) = 1 + max(depth of p's inputs and tool)

Products are drawn tier by tier so that exactly GOALS_PER_TIER of them have each depth 1..MAX_TIER:
a product of depth d has one main input of depth d - 1 (an earlier product when one exists, with
probability 0.7), at most one more material of lower depth, and with probability 0.4 a tool."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embodied.tasks.household.spec import (CONTAINER_KINDS, CONTAINERS_PER_ROOM, CONTEXTS, GOALS_PER_TIER, KEYS,
                                           MATERIALS, MAX_TIER, PRODUCTS, ROOMS, STATIONS, TOOLS)


@dataclass(frozen=True)
class Container:
    name: str
    kind: str
    room: int
    key: str | None  # the key that unlocks it; None = never locked


@dataclass(frozen=True)
class Recipe:
    product: str
    station: str
    inputs: tuple[str, ...]  # consumed, one unit each (an item may appear twice)
    tool: str | None  # held, not consumed


@dataclass
class World:
    seed: int
    containers: list[Container]
    station_room: dict[str, int]
    homes: dict[str, tuple[int, ...]]  # raw item -> container index in each context
    recipes: dict[str, Recipe]
    depth: dict[str, int] = field(default_factory=dict)

    def goals(self, tier: int) -> list[str]:
        return [p for p in PRODUCTS if self.depth[p] == tier]

    def tree(self, goal: str, where=None) -> list[str]:
        """Every item the goal depends on (recipes, tools, the keys of locked containers holding raw
        ones: their home in context 0, or `where(item)`), the goal included, each once, dependencies first."""
        out: list[str] = []

        def visit(item: str) -> None:
            if item in out:
                return
            if item in self.recipes:
                r = self.recipes[item]
                for need in r.inputs + ((r.tool,) if r.tool else ()):
                    visit(need)
            else:
                key = self.containers[where(item) if where else self.homes[item][0]].key
                if key:
                    visit(key)
            out.append(item)

        visit(goal)
        return out


def generate_world(seed: int) -> World:
    rng = np.random.default_rng([seed, 0x40E5])
    containers: list[Container] = []
    for room, room_name in enumerate(ROOMS):
        kinds = [str(k) for k in rng.choice(CONTAINER_KINDS, CONTAINERS_PER_ROOM)]
        for i, kind in enumerate(kinds):
            n = kinds[:i].count(kind)
            containers.append(Container(f"{room_name} {kind}" + (f" {n + 1}" if n else ""), kind, room, None))
    lockable = [i for i, c in enumerate(containers) if c.kind != "fridge"]
    locked = [int(i) for i in rng.choice(lockable, len(KEYS), replace=False)]
    for key, i in zip(KEYS, locked):
        c = containers[i]
        containers[i] = Container(c.name, c.kind, c.room, key)
    unlocked = [i for i, c in enumerate(containers) if c.key is None]
    homes: dict[str, tuple[int, ...]] = {}
    # Keys: the first lies in an unlocked container; each later one, with probability 0.6, behind an
    # earlier key's lock (chains of locks), never behind its own.
    for k, key in enumerate(KEYS):
        behind = [locked[j] for j in range(k)]
        place = int(rng.choice(behind)) if behind and rng.random() < 0.6 else int(rng.choice(unlocked))
        homes[key] = (place,) * len(CONTEXTS)
    # Tools and materials: a home in the tidy context (a locked one with probability 0.3); each other
    # context moves it, with probability 0.5, to a second home behind the same lock (or none).
    for item in TOOLS + MATERIALS:
        home = int(rng.choice(locked)) if rng.random() < 0.3 else int(rng.choice(unlocked))
        same = [i for i, c in enumerate(containers) if c.key == containers[home].key and i != home]
        homes[item] = (home,) + tuple(int(rng.choice(same)) if same and rng.random() < 0.5 else home
                                      for _ in CONTEXTS[1:])
    station_room = {s: int(rng.integers(len(ROOMS))) for s in STATIONS}
    depth: dict[str, int] = {}

    def access(i: int) -> int:
        key = containers[i].key
        return 0 if key is None else 1 + depth[key]

    for key in KEYS:  # in order: a key behind a lock is behind an earlier key
        depth[key] = access(homes[key][0])
    for item in TOOLS + MATERIALS:
        depth[item] = access(homes[item][0])
    recipes: dict[str, Recipe] = {}
    order = list(PRODUCTS)
    for d in range(1, MAX_TIER + 1):
        for product in order[(d - 1) * GOALS_PER_TIER: d * GOALS_PER_TIER]:
            made = [p for p in recipes if depth[p] == d - 1]
            raw = [m for m in MATERIALS if depth[m] == d - 1]
            pool = made if made and (rng.random() < 0.7 or not raw) else raw
            main = str(rng.choice(pool))
            extras = [m for m in MATERIALS if depth[m] < d and m != main]
            inputs = (main,) + ((str(rng.choice(extras)),) if extras and rng.random() < 0.6 else ())
            tools = [t for t in TOOLS if depth[t] < d]
            tool = str(rng.choice(tools)) if tools and rng.random() < 0.4 else None
            recipes[product] = Recipe(product, str(rng.choice(STATIONS)), inputs, tool)
            depth[product] = d
    return World(seed, containers, station_room, homes, recipes, depth)
