"""The household env: "obtain X" in a symbolic apartment, with object-centric discrete actions."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from gymnasium import spaces

from embodied.tasks.answer import checked_action
from embodied.tasks.config import HouseholdConfig
from embodied.tasks.household.spec import (ACTIONS, CONTEXTS, FEEDBACK, INVENTORY_CAPACITY, ITEMS, KEYS, MATERIALS,
                                           NUM_CONTAINERS, ROOMS, STATIONS, STOCK, STUCK_TRIES, HouseholdLevel)
from embodied.tasks.household.world import World, generate_world
from embodied.tasks.registry import TaskEnv


def action_table() -> list[tuple[str, int]]:
    """(verb, target index) of each action id: goto room, open / close container, take / place /
    make item (targets index ROOMS, the world's containers and ITEMS)."""
    return ([("goto", r) for r in range(len(ROOMS))] + [("open", c) for c in range(NUM_CONTAINERS)]
            + [("close", c) for c in range(NUM_CONTAINERS)] + [(v, i) for v in ("take", "place", "make")
                                                               for i in range(len(ITEMS))])


ACTION_TABLE = action_table()
ACTION_ID = {a: i for i, a in enumerate(ACTION_TABLE)}
ITEM_ID = {name: i for i, name in enumerate(ITEMS)}
assert {v for v, _ in ACTION_TABLE} == set(ACTIONS)


class RoomBody:
    """Where the symbolic agent is and what it can reach: it stands in one room (`env.room`), and
    everything in that room is within reach. A place is ("container", index), ("station", name),
    ("floor", key: the room) or ("hands",) (what is held). The apartment variant
    (embodied.tasks.household.apartment) gives the same state machine a body that walks."""

    def __init__(self, env: "HouseholdEnv"):
        self.env = env

    def room_of(self, place) -> int:
        kind = place[0]
        if kind == "container":
            return self.env.world.containers[place[1]].room
        if kind == "station":
            return self.env.world.station_room[place[1]]
        return place[1] if kind == "floor" else self.env.room

    def in_reach(self, place) -> bool:
        return place[0] == "hands" or self.room_of(place) == self.env.room

    def cost(self, place) -> float:
        """How far away a place is (the oracle prefers cheap ones): 0 here, else 1."""
        return 0.0 if self.in_reach(place) else 1.0

    def out_of_reach(self, place) -> tuple[str, str]:
        """(feedback word, message) of an interaction with a place out of reach."""
        room = ROOMS[self.env.room]
        if place[0] == "station":
            return "no station here", f"no station in the {room}"
        return "not here", f"the {self.env.world.containers[place[1]].name} is not in the {room}"

    def stations_in_reach(self) -> list[str]:
        return [s for s, r in self.env.world.station_room.items() if r == self.env.room]

    def containers_in_reach(self) -> list[bool]:
        """Per container, whether it is within reach (one call per observation, not one per container)."""
        room = self.env.room
        return [c.room == room for c in self.env.world.containers]

    def drop_spot(self):
        """The floor key where `place` puts a thing."""
        return self.env.room


class HouseholdEnv(TaskEnv):
    """One tier; `level` is set by the registered subclass, the world by `task.world_seed`. With
    `task.world=apartment` the registered class builds the apartment variant instead, which
    composes this env as its state machine (embodied.tasks.household.apartment)."""

    metadata = {"render_modes": []}
    config_class = HouseholdConfig
    level: HouseholdLevel = HouseholdLevel()

    def __new__(cls, cfg=None):
        cfg = HouseholdConfig.from_any(cfg if cfg is not None else {"name": cls.task_name})
        if cfg.world == "apartment":
            from embodied.tasks.household.apartment import ApartmentHouseholdEnv

            return ApartmentHouseholdEnv(cfg, cls)
        return super().__new__(cls)

    def __init__(self, cfg=None):
        self.cfg = cfg = HouseholdConfig.from_any(cfg if cfg is not None else {"name": self.task_name})
        self.body = RoomBody(self)
        self.world: World = generate_world(cfg.world_seed)
        self.max_episode_steps = cfg.max_steps or self.level.max_steps
        n = len(ITEMS)
        self.observation_space = spaces.Dict({
            "goal": spaces.Box(0, n - 1, (1,), dtype=np.int64),
            "context": spaces.Box(0, len(CONTEXTS) - 1, (1,), dtype=np.int64),
            "room": spaces.Box(0, len(ROOMS) - 1, (1,), dtype=np.int64),
            "inventory": spaces.Box(0, INVENTORY_CAPACITY, (n,), dtype=np.int64),
            "visible": spaces.Box(0, 10 * STOCK, (n,), dtype=np.int64),
            "containers": spaces.Box(0, 2, (NUM_CONTAINERS,), dtype=np.int64),
            "stations": spaces.Box(0, 1, (len(STATIONS),), dtype=np.int64),
            "feedback": spaces.Box(0, len(FEEDBACK) - 1, (1,), dtype=np.int64),
            "steps_left": spaces.Box(0, self.max_episode_steps, (1,), dtype=np.int64)})
        self.action_space = spaces.Discrete(len(ACTION_TABLE))
        self.action_names = [f"{v} {self._target_name(v, i)}" for v, i in ACTION_TABLE]
        self.goal = ""
        self._t = 0

    def _target_name(self, verb: str, i: int) -> str:
        return ROOMS[i] if verb == "goto" else self.world.containers[i].name if verb in ("open", "close") else ITEMS[i]

    def floor_plan(self) -> dict:
        """What any visitor sees (public, unlike contents, locks and recipes): the rooms, each
        container's name and room, each station's room."""
        return {"rooms": list(ROOMS), "containers": [(c.name, c.room) for c in self.world.containers],
                "stations": dict(self.world.station_room)}

    # --- episode --------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        rng = np.random.default_rng(seed)
        w, cfg = self.world, self.cfg
        self.context = int(rng.integers(len(CONTEXTS)))
        self.goal = str(rng.choice(w.goals(self.level.tier)))
        self.room = int(rng.integers(len(ROOMS)))
        self.contents = [Counter() for _ in w.containers]
        for item, homes in w.homes.items():
            self.contents[homes[self.context]][item] = STOCK if item in MATERIALS else 1
        self.floor: defaultdict = defaultdict(Counter)  # floor key (a room; the apartment: a spot) -> things
        self.inventory: Counter = Counter()
        self.is_open = [False] * len(w.containers)
        self.unlocked = [c.key is None for c in w.containers]
        self.stuck = [0] * len(w.containers)
        self.tree = w.tree(self.goal)
        needed = [x for x in self.tree if x not in w.recipes]
        self.perturbations: list[str] = []
        # Perturbations for the reflector: a needed thing moved to an unlocked container of another
        # room (unpredictable), a container holding one stuck (opens on the third try).
        if rng.random() < cfg.move_prob:
            item = str(rng.choice(needed))
            src = w.homes[item][self.context]
            dst = int(rng.choice([i for i, c in enumerate(w.containers)
                                  if c.key is None and c.room != w.containers[src].room]))
            self.contents[dst][item] += self.contents[src].pop(item)
            self.perturbations.append(f"{item} moved to {w.containers[dst].name}")
        if rng.random() < cfg.stuck_prob:
            c = int(rng.choice(sorted({w.homes[x][self.context] for x in needed})))
            self.stuck[c] = STUCK_TRIES
            self.perturbations.append(f"{w.containers[c].name} stuck")
        # The measure's tree: the keys of where things are in this episode (a moved thing needs none).
        self.tree = w.tree(self.goal, lambda x: next(c for c, stock in enumerate(self.contents) if stock[x]))
        self.obtained: set[str] = set()
        self._t = 0
        self.feedback, self.message, self.event = "none", "", None
        return self._observation(), self._info()

    def _step(self, action):
        return self.act(*ACTION_TABLE[checked_action(action, self.action_space)])

    def act(self, verb: str | None, i: int = 0):
        """One step of the state machine: `verb` on target i (None: a step without interaction, e.g. a
        move of the apartment variant). Returns (obs, reward, terminated, truncated, info)."""
        self._t += 1
        self.event = None
        self.feedback, self.message = getattr(self, f"_{verb}")(i) if verb else ("none", "")
        if verb and (self.feedback == "ok" or self.event is not None):
            self.event = {"verb": verb, "target": self._target_name(verb, i), "room": ROOMS[self.room],
                          **(self.event or {})}
        success = self.inventory[self.goal] > 0
        truncated = not success and self._t >= self.max_episode_steps
        return self._observation(), float(success), success, truncated, self._info()

    # --- actions: each returns (feedback word, message) -------------------------------------------------
    def _goto(self, r: int):
        self.room = r
        return "ok", f"in the {ROOMS[r]}"

    def _here(self, c: int) -> bool:
        return self.body.in_reach(("container", c))

    def _open(self, c: int):
        box = self.world.containers[c]
        if not self._here(c):
            return self.body.out_of_reach(("container", c))
        if self.is_open[c]:
            return "already open", f"the {box.name} is open"
        used = None
        if not self.unlocked[c]:
            if self.inventory[box.key] == 0:
                return "locked", f"the {box.name} is locked"
            self.unlocked[c] = used = True
            self.event = {"key": box.key}  # the lock turned, even when the door then sticks
        if self.stuck[c]:
            self.stuck[c] -= 1
            return "stuck", f"the {box.name} is stuck"
        self.is_open[c] = True
        return "ok", f"opened the {box.name}" + (f" with the {box.key}" if used else "")

    def _close(self, c: int):
        if not self._here(c):
            return self.body.out_of_reach(("container", c))
        self.is_open[c] = False
        return "ok", f"closed the {self.world.containers[c].name}"

    def _sources(self, reach: list[bool] | None = None) -> list[tuple[str, Counter]]:
        """(name, stock) of the open containers and piles within reach (`reach`: containers_in_reach())."""
        reach = self.body.containers_in_reach() if reach is None else reach
        return [(box.name, self.contents[c]) for c, box in enumerate(self.world.containers)
                if reach[c] and self.is_open[c]] + [("floor", stock) for key, stock in list(self.floor.items())
                                                    if self.body.in_reach(("floor", key))]

    def _take(self, i: int):
        item = ITEMS[i]
        source = next(((name, stock) for name, stock in self._sources() if stock[item] > 0), None)
        if source is None:
            return "absent", f"no {item} in sight"
        if sum(self.inventory.values()) >= INVENTORY_CAPACITY:
            return "inventory full", f"hands full ({INVENTORY_CAPACITY} things)"
        source[1][item] -= 1
        self.inventory[item] += 1
        self.obtained.add(item)
        self.event = {"source": source[0]}
        return "ok", f"took the {item} from the {source[0]}"

    def _place(self, i: int):
        item = ITEMS[i]
        if self.inventory[item] == 0:
            return "not held", f"no {item} in hand"
        self.inventory[item] -= 1
        self.floor[self.body.drop_spot()][item] += 1
        return "ok", f"put the {item} on the floor"

    def _make(self, i: int):
        item = ITEMS[i]
        here = self.body.stations_in_reach()
        if not here:
            return self.body.out_of_reach(("station", None))
        recipe = self.world.recipes.get(item)
        if recipe is None or recipe.station not in here:
            return "cannot make here", f"the {', '.join(here)} cannot make {item}"
        missing = Counter(recipe.inputs) - self.inventory
        words = []
        if missing:
            words.append("missing: " + ", ".join(sorted(missing.elements())))
        if recipe.tool and self.inventory[recipe.tool] == 0:
            words.append(f"needs a {recipe.tool}")
        if words:  # what is seen at the station: its name and what it still lacks
            self.event = {"station": recipe.station, "missing": sorted(missing.elements()),
                          "tool": recipe.tool if recipe.tool and self.inventory[recipe.tool] == 0 else None}
            return ("missing" if missing else "needs tool"), f"the {recipe.station}: " + "; ".join(words)
        self.inventory -= Counter(recipe.inputs)
        self.inventory[item] += 1
        self.obtained.add(item)
        self.event = {"station": recipe.station, "consumed": list(recipe.inputs), "tool": recipe.tool}
        return "ok", f"made {item} at the {recipe.station}"

    # --- observation and measures -----------------------------------------------------------------------
    def _observation(self) -> dict:
        n = len(ITEMS)
        inventory, visible = np.zeros(n, np.int64), np.zeros(n, np.int64)
        for item, k in self.inventory.items():
            inventory[ITEM_ID[item]] = k
        reach = self.body.containers_in_reach()
        for _, stock in self._sources(reach):
            for item, k in stock.items():
                visible[ITEM_ID[item]] += k
        containers = np.array([(1 + self.is_open[c]) if r else 0 for c, r in enumerate(reach)], np.int64)
        here = self.body.stations_in_reach()
        stations = np.array([s in here for s in STATIONS], np.int64)
        return {"goal": np.array([ITEM_ID[self.goal]]), "context": np.array([self.context]),
                "room": np.array([self.room]), "inventory": np.minimum(inventory, INVENTORY_CAPACITY),
                "visible": visible, "containers": containers, "stations": stations,
                "feedback": np.array([FEEDBACK.index(self.feedback)]),
                "steps_left": np.array([self.max_episode_steps - self._t])}

    def _info(self) -> dict:
        return {"feedback": self.feedback, "message": self.message, "event": self.event,
                "success": float(self.inventory[self.goal] > 0), "steps": self._t,
                "subgoals_done": len(self.obtained & set(self.tree[:-1])), "subgoals_total": len(self.tree) - 1,
                "tier": self.level.tier, "goal": self.goal, "context": CONTEXTS[self.context]}

    def observation_text(self, obs=None) -> str:
        inv = ", ".join(f"{k} {v}" for k, v in sorted(self.inventory.items()) if v) or "nothing"
        return f"obtain {self.goal} ({CONTEXTS[self.context]}); in the {ROOMS[self.room]}; holding {inv}; {self.message}"

    # --- the oracle: knows the true rules and where everything is now -----------------------------------
    def oracle_action(self) -> int:
        step = self.oracle_interaction()
        if step is None:  # the goal is held: any action ends nothing; say where we are
            return ACTION_ID[("goto", self.room)]
        verb, target, place = step
        if not self.body.in_reach(place):
            return ACTION_ID[("goto", self.body.room_of(place))]
        return ACTION_ID[(verb, target)]

    def oracle_interaction(self) -> tuple[str, int, tuple] | None:
        """The oracle's next interaction (verb, target index, the place that must be within reach),
        or None when the goal is held. Each body gets there its own way (symbolic: goto its room)."""
        inv = Counter(self.inventory)
        step = self._oracle_for(self.goal, inv)
        if step is None:
            return None
        verb, _, place = step
        if verb == "take" and self.body.in_reach(place) and sum(self.inventory.values()) >= INVENTORY_CAPACITY:
            spare = [x for x in ITEMS if self.inventory[x] > inv[x] or (x in KEYS and self.inventory[x])]
            spare = [x for x in spare if x not in self.tree or x in KEYS and all(
                self.unlocked[c] for c, box in enumerate(self.world.containers) if box.key == x)]
            if spare:
                return "place", ITEM_ID[spare[0]], ("hands",)
        return step

    def _oracle_for(self, item: str, inv: Counter) -> tuple[str, int, tuple] | None:
        """The next interaction towards holding one more `item` than `inv` reserves (None: reserved from inv)."""
        if inv[item] > 0:
            inv[item] -= 1
            return None
        recipe = self.world.recipes.get(item)
        if recipe is not None:
            for need in recipe.inputs:
                step = self._oracle_for(need, inv)
                if step is not None:
                    return step
            if recipe.tool:
                step = self._oracle_for(recipe.tool, inv)
                if step is not None:
                    return step
                inv[recipe.tool] += 1  # a tool is not consumed
            return "make", ITEM_ID[item], ("station", recipe.station)
        floors = [("floor", key) for key, stock in self.floor.items() if stock[item]]
        if any(self.body.in_reach(f) for f in floors):
            return "take", ITEM_ID[item], next(f for f in floors if self.body.in_reach(f))
        places = [c for c in range(len(self.world.containers)) if self.contents[c][item] > 0]
        if not places:  # only on a floor out of reach (put there earlier)
            return "take", ITEM_ID[item], min(floors, key=lambda f: (self.body.cost(f), f[1]))
        places.sort(key=lambda c: (self.body.cost(("container", c)), c))
        c = places[0]
        box = self.world.containers[c]
        if not self.unlocked[c] and self.inventory[box.key] == 0:
            return self._oracle_for(box.key, inv)
        return ("take" if self.is_open[c] else "open"), (ITEM_ID[item] if self.is_open[c] else c), ("container", c)
