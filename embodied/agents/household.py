"""Optimus-1's agent loop on the household tasks: a planner (the knowledge graph's expansion), a
scripted controller (object-centric skills: fetch, make, discover) and a reflector (on failure and
when a sub-goal stalls: retrieve cases, then continue / replan / done), around the hybrid memory
(embodied.memory.hybrid). Memory starts empty and grows from the agent's own episodes and from
watching a teacher (the env's oracle); `VARIANTS` are the ablations.

What the agent reads: its observation, `info` (feedback word, message, event: what it perceives of
its action's outcome) and the public floor plan. The rules, contents and locks it must learn.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from embodied.memory.hybrid import ExperiencePool, KeyFrames, KnowledgeGraph, MemoryStore
from embodied.tasks.household import ACTION_ID, CONTEXTS, INVENTORY_CAPACITY, ITEM_ID, ITEMS, KEYS, ROOMS

# variant -> (graph, pool, which cases the controller and reflector retrieve)
VARIANTS = {"full": (True, True, "both"), "no_pool": (True, False, "none"), "no_graph": (False, True, "both"),
            "no_cases": (True, True, "none"), "success_only": (True, True, "success"),
            "failure_only": (True, True, "failure"), "reactive": (False, False, "none")}
DECISIONS = ("continue", "replan", "done")


class HybridMemory:
    """A variant's view of one world's memory file: the graph (loaded, learned, committed per
    episode) and the pool (every case written at once)."""

    def __init__(self, path, world: str, graph: bool = True, pool: bool = True, readonly: bool = False):
        self.store = MemoryStore(path, readonly=readonly) if (graph or pool) else None
        self.world = world
        self.graph = KnowledgeGraph.load(self.store, world) if graph else None
        self.pool = ExperiencePool(self.store, world) if pool else None
        self.readonly = readonly

    def commit(self, note: str = "") -> None:
        if self.graph is not None and not self.readonly:
            self.graph.commit(self.store, self.world, note)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@dataclass
class _Episode:
    """What the agent knows about the current episode only."""

    goal: str = ""
    context: str = ""
    graph: KnowledgeGraph = field(default_factory=KnowledgeGraph)  # recipes seen at stations, raw things found
    contents: dict[int, Counter] = field(default_factory=dict)  # container -> what was seen in it
    dead: dict[str, set] = field(default_factory=lambda: defaultdict(set))  # item -> containers not to search
    blocked: set = field(default_factory=set)  # containers given up on
    locked: set = field(default_factory=set)
    keys_tried: dict[int, set] = field(default_factory=lambda: defaultdict(set))
    make_tried: dict[str, set] = field(default_factory=lambda: defaultdict(set))  # item -> rooms tried
    not_made: set = field(default_factory=set)  # items no station makes (searched as raw)
    ignore_cases: set = field(default_factory=set)
    expected: dict[int, str] = field(default_factory=dict)  # container -> item a case sent us there for
    steps_done: list = field(default_factory=list)  # made / fetched, for the task case
    pending: list = field(default_factory=list)  # reflections whose outcome is not known yet
    stuck_on: int | None = None
    start: dict = field(default_factory=dict)
    subgoal_start: int = 0
    last_progress: int = 0
    t: int = 0
    replans: int = 0
    reflections: int = 0


class HouseholdAgent:
    """One variant (VARIANTS) acting in one world. `learning=True` writes memory and explores (the
    reflector decides at random where no case votes); evaluation reads only."""

    def __init__(self, variant: str, memory: HybridMemory | None, floor_plan: dict, cases: int = 8,
                 reflect_every: int = 12, seed: int = 0):
        self.variant = variant
        self.use_graph, self.use_pool, self.cases = VARIANTS[variant]
        self.memory = memory
        self.containers = [room for _, room in floor_plan["containers"]]
        self.names = [name for name, _ in floor_plan["containers"]]
        self.station_room = floor_plan["stations"]
        self.k, self.reflect_every = cases, reflect_every
        self.rng = np.random.default_rng(seed)
        self.learning = self.teaching = False
        self.ep = _Episode()
        # What the last act() planned, retrieved and decided (the viewer's panels; `report`).
        self.plan: list[tuple[str, str]] = []
        self.graph = KnowledgeGraph()  # the knowledge that plan was expanded from
        self.retrieved: list[tuple[str, float, str, dict]] = []  # (kind, similarity, outcome, record)
        self.reflection: dict | None = None
        self.last_action: int | None = None  # what observe() is told happened (own action or the teacher's)
        # The current sub-goal attempt's key frames, stored with its cases: set where the world has a camera
        # (the apartment's NavigationController pushes every frame), None in the symbolic world.
        self.frames: KeyFrames | None = None
        self._shown: tuple[int | None, list] = (None, [])  # the case whose frames report() last read

    # --- episode boundaries ---------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict, learning: bool = False, teaching: bool = False) -> None:
        self.learning = learning and self.memory is not None and not self.memory.readonly
        self.teaching = teaching
        self.ep = _Episode(goal=ITEMS[int(obs["goal"][0])], context=CONTEXTS[int(obs["context"][0])])
        self.ep.start = {"room": ROOMS[int(obs["room"][0])], "inventory": self._inventory_words(obs)}
        self.obs = obs
        if self.frames is not None:
            self.frames.clear()
        if self.use_pool and not self.use_graph:  # plan from examples: recipes of similar successful tasks
            for score, record in self._pool().retrieve({"subgoal": "obtain", "item": self.ep.goal,
                                                        "context": self.ep.context}, "success", 3, kind="task"):
                if score > 0.5:
                    for verb, item, detail in record["plan"]:
                        if verb == "make":
                            self.ep.graph.add_recipe(item, detail["station"], detail["inputs"], detail["tool"])

    def end_episode(self, info: dict) -> dict:
        """Write the task case and the reflections left open; commit the graph; the agent's measures."""
        success = bool(info.get("success"))
        if self.learning:
            for r in self.ep.pending:
                self._reflection_case(r, success=r["decision"] == "replan" and success)
            if self.use_pool:
                self._pool().add("success" if success else "failure", "task", f"obtain {self.ep.goal}",
                                 {"subgoal": "obtain", "item": self.ep.goal, "context": self.ep.context},
                                 {"plan": self.ep.steps_done, "steps": self.ep.t, "initial": self.ep.start})
            self.memory.commit(f"episode goal={self.ep.goal}")
        return {"replans": self.ep.replans, "reflections": self.ep.reflections}

    # --- knowledge ------------------------------------------------------------------------------------
    def _pool(self) -> ExperiencePool:
        return self.memory.pool

    def knowledge(self) -> KnowledgeGraph:
        base = self.memory.graph if (self.use_graph and self.memory is not None) else KnowledgeGraph()
        return base.merge(self.ep.graph)

    def _retrieve(self, fields: dict, kind: str) -> list[tuple[float, str, dict]]:
        """(similarity, outcome, record) of the cases this variant may use."""
        if not self.use_pool or self.cases == "none":
            return []
        outcomes = ("success", "failure") if self.cases == "both" else (self.cases,)
        found = self._pool().nearest(fields, outcomes, self.k, kind=kind)
        self.retrieved += [(kind, s, o, r) for s, o, r in found]
        return found

    @staticmethod
    def _inventory_words(obs) -> list[str]:
        return [ITEMS[i] for i in np.flatnonzero(obs["inventory"])]

    # --- learning from what happened (own steps or a teacher's) ----------------------------------------
    def observe(self, action: int, obs: dict, info: dict) -> None:
        ep, prev = self.ep, self.obs
        ep.t += 1
        event, feedback = info.get("event") or {}, info.get("feedback")
        room = int(prev["room"][0])
        verb = event.get("verb")
        if verb == "open" and event.get("key"):
            ep.graph.add_lock(event["target"], event["key"])
            if self.learning and self.memory.graph is not None:
                self.memory.graph.add_lock(event["target"], event["key"])
        if verb == "open" and feedback == "ok":
            c = self.names.index(event["target"])
            ep.locked.discard(c)
            seen = Counter({ITEMS[i]: int(n) for i, n in enumerate(obs["visible"] - prev["visible"]) if n > 0})
            ep.contents[c] = seen
            if ep.stuck_on == c:  # retrying a stuck container worked
                self._resolve(c, opened=True)
            item = ep.expected.pop(c, None)
            if item is not None and seen[item] == 0 and self.learning and self.use_pool:
                self._pool().add("failure", "fetch", f"fetch {item}", self._fields("fetch", item),
                                 {"container": event["target"], "reason": "absent", "initial": ep.start},
                                 self._key_frames())
        if verb == "take" and feedback == "ok":
            item, source = event["target"], event["source"]
            if source != "floor":
                ep.graph.add_raw(item)
                if self.learning and self.memory.graph is not None:
                    self.memory.graph.add_raw(item)
                if self.learning and self.use_pool:
                    self._pool().add("success", "fetch", f"fetch {item}", self._fields("fetch", item),
                                     {"container": source, "steps": ep.t - ep.subgoal_start, "initial": ep.start},
                                     self._key_frames())
                ep.steps_done.append(("fetch", item, {"container": source}))
            self._progress(item)
        if verb == "make" and feedback == "ok":
            item = event["target"]
            ep.graph.add_recipe(item, event["station"], event["consumed"], event["tool"])
            if self.learning and self.memory.graph is not None:
                self.memory.graph.add_recipe(item, event["station"], event["consumed"], event["tool"])
            detail = {"station": event["station"], "inputs": event["consumed"], "tool": event["tool"]}
            if self.learning and self.use_pool:
                self._pool().add("success", "make", f"make {item}", self._fields("make", item), detail,
                                 self._key_frames())
            ep.steps_done.append(("make", item, detail))
            self._progress(item)
        if verb == "make" and feedback in ("missing", "needs tool"):
            # The station names what it lacks: an in-episode recipe (held inputs stay unknown till made).
            item = event["target"]
            known = ep.graph.recipes.get(item)
            inputs = sorted(set(event["missing"]) | set(known.inputs if known else ()))
            ep.graph.add_recipe(item, event["station"], inputs, event["tool"] or (known.tool if known else None))
            ep.replans += 1
        if verb is None and feedback in ("cannot make here", "no station here"):
            ep.make_tried[ITEMS[_target(action)]].add(room)
        if feedback == "locked":
            ep.locked.add(_target(action))
        if feedback == "stuck" and self.teaching and ep.stuck_on is None:  # the teacher retries: a case of continue
            ep.stuck_on = _target(action)
            ep.pending.append({"reason": "stuck", "item": self._current_item(prev), "decision": "continue",
                               "container": ep.stuck_on, "t": ep.t})
        self.obs = obs

    def _fields(self, verb: str, item: str, **more) -> dict:
        return {"subgoal": verb, "item": item, "context": self.ep.context, "room": self.ep.start.get("room"),
                "inventory": self.ep.start.get("inventory"), **more}

    def _progress(self, item: str) -> None:
        ep = self.ep
        ep.last_progress = ep.subgoal_start = ep.t
        for r in [r for r in ep.pending if r["decision"] == "replan" and r["item"] == item]:
            ep.pending.remove(r)
            self._reflection_case(r, success=ep.t - r["t"] <= 8)
        if self.frames is not None:  # a new sub-goal attempt begins
            self.frames.clear()

    def _resolve(self, container: int, opened: bool) -> None:
        ep = self.ep
        for r in [r for r in ep.pending if r["decision"] == "continue" and r["container"] == container]:
            ep.pending.remove(r)
            self._reflection_case(r, success=opened)
        ep.stuck_on = None

    def _reflection_case(self, r: dict, success: bool) -> None:
        if self.learning and self.use_pool:
            self._pool().add("success" if success else "failure", "reflect", f"{r['reason']} {r['item']}",
                             self._fields("fetch", r["item"], reason=r["reason"]), {"decision": r["decision"]},
                             self._key_frames())

    def _key_frames(self) -> list:
        return self.frames.frames() if self.frames is not None else []

    # --- the reflector ----------------------------------------------------------------------------------
    def reflect(self, reason: str, item: str, container: int | None) -> str:
        """continue / replan / done from the votes of retrieved cases: a success case votes for its
        decision, a failure case against it; no votes: replan (learning: a random choice)."""
        ep = self.ep
        ep.reflections += 1
        if self.obs["inventory"][ITEM_ID[item]] > 0:
            return "done"
        votes = Counter()
        for score, outcome, record in self._retrieve(self._fields("fetch", item, reason=reason), "reflect"):
            d = record["decision"]
            if outcome == "success":
                votes[d] += score
            else:
                for other in ("continue", "replan"):
                    if other != d:
                        votes[other] += score
        if votes:
            decision = max(("continue", "replan"), key=lambda d: (votes[d], d == "replan"))
        else:
            decision = str(self.rng.choice(["continue", "replan"])) if self.learning else "replan"
        if decision == "replan":
            ep.replans += 1
        self.reflection = {"reason": reason, "item": item, "decision": decision, "votes": dict(votes)}
        ep.pending.append({"reason": reason, "item": item, "decision": decision, "container": container, "t": ep.t})
        return decision

    # --- the controller -----------------------------------------------------------------------------------
    def act(self, obs: dict, info: dict) -> int:
        ep = self.ep
        self.retrieved, self.reflection = [], None
        feedback = info.get("feedback")
        if feedback == "stuck":
            c = _target(self.last_action)
            item = ep.expected.get(c) or self._current_item(obs)
            if self.reflect("stuck", item, c) == "continue":
                ep.stuck_on = c
                return self._remember(ACTION_ID[("open", c)])
            ep.blocked.add(c)
            ep.stuck_on = None
        graph = self.knowledge()
        plan = graph.expand(ep.goal, Counter({ITEMS[i]: int(n) for i, n in enumerate(obs["inventory"]) if n}))
        self.plan, self.graph = plan, graph
        verb, item = plan[0] if plan else ("make", ep.goal)
        if ep.t - ep.last_progress >= self.reflect_every and item not in ep.ignore_cases:
            # Stalled: cases may point at where the thing no longer is; search without them.
            ep.reflections += 1
            ep.replans += 1
            ep.ignore_cases.add(item)
            ep.last_progress = ep.t
        return self._remember(self._skill(verb, item, graph, obs))

    def report(self) -> dict:
        """What the last act() used, for the viewer: the goal, the plan (sub-goals in order, the
        first is current), the cases it retrieved (with the key frames of the most similar one that has
        them), the reflector's decision, and the goal's known dependency graph (edges input -> product
        and tool -> product)."""
        graph = self.graph
        edges = []
        for product in sorted(graph.needed(self.ep.goal)):
            recipe = graph.recipes.get(product)
            if recipe is not None:
                edges += [(part, product, "input") for part in dict.fromkeys(recipe.inputs)]
                edges += [(recipe.tool, product, "tool")] if recipe.tool else []
        inventory = {ITEMS[i]: int(n) for i, n in enumerate(self.obs["inventory"]) if n}
        return {"goal": self.ep.goal, "context": self.ep.context, "variant": self.variant, "plan": list(self.plan),
                "inventory": inventory, "cases": list(self.retrieved), "reflection": self.reflection,
                "edges": edges, "replans": self.ep.replans, "case_frames": self._case_frames()}

    def _case_frames(self) -> tuple[int | None, list]:
        """(id, key frames) of the most similar retrieved case stored with frames; (None, []) if none."""
        if self.frames is None or self.memory is None or self.memory.pool is None:
            return None, []
        for _, _, _, record in sorted(self.retrieved, key=lambda c: -c[1]):
            case = record.get("id")
            if case is not None and case == self._shown[0]:
                return self._shown
            frames = self.memory.pool.frames(case) if case is not None else []
            if frames:
                self._shown = (case, frames)
                return self._shown
        return None, []

    def _remember(self, action: int) -> int:
        self.last_action = action
        return action

    def _current_item(self, obs) -> str:
        plan = self.knowledge().expand(self.ep.goal, Counter({ITEMS[i]: int(n) for i, n in enumerate(obs["inventory"]) if n}))
        return plan[0][1] if plan else self.ep.goal

    def _skill(self, verb: str, item: str, graph: KnowledgeGraph, obs: dict, depth: int = 0) -> int:
        ep, room = self.ep, int(obs["room"][0])
        if obs["visible"][ITEM_ID[item]] > 0 and verb != "make":
            return self._take(item, graph, obs)
        if verb == "make":
            station = graph.recipes[item].station
            where = self.station_room[station]
            return ACTION_ID[("make", ITEM_ID[item])] if where == room else ACTION_ID[("goto", where)]
        if verb == "discover" and item not in ep.not_made and item not in graph.raw:
            rooms = sorted({r for r in self.station_room.values()} - ep.make_tried[item], key=lambda r: (r != room, r))
            if rooms:
                return ACTION_ID[("make", ITEM_ID[item])] if rooms[0] == room else ACTION_ID[("goto", rooms[0])]
            ep.not_made.add(item)
        c = self._choose_container(item, room)
        if c is None:  # searched everywhere: start over (things may have been missed behind locks)
            ep.dead.clear()
            ep.blocked.clear()
            ep.replans += 1
            return ACTION_ID[("goto", int(self.rng.integers(len(ROOMS))))]
        if c in ep.locked:
            # Known locked: the key comes first, wherever the container is (going to the container's
            # room first, then leaving it for the key, made a fetch oscillate between two rooms).
            key = graph.locks.get(self.names[c])
            held = [k for k in KEYS if obs["inventory"][ITEM_ID[k]] > 0]
            if key is None:
                untried = [k for k in held if k not in ep.keys_tried[c]]
                if untried:  # try the keys in hand (the env turns the right one)
                    if self.containers[c] != room:
                        return ACTION_ID[("goto", self.containers[c])]
                    ep.keys_tried[c].update(held)
                    return ACTION_ID[("open", c)]
                key = next((k for k in KEYS if k not in ep.keys_tried[c] and k != item), None)  # go find one
                if key is None or depth > 3:
                    ep.dead[item].add(c)
                    return self._skill(verb, item, graph, obs, depth + 1)
            if obs["inventory"][ITEM_ID[key]] == 0:
                if depth > 3:
                    ep.dead[item].add(c)
                    return self._skill(verb, item, graph, obs, depth + 1)
                return self._skill("fetch" if key in graph.raw else "discover", key, graph, obs, depth + 1)
        if self.containers[c] != room:
            return ACTION_ID[("goto", self.containers[c])]
        if obs["containers"][c] == 2:  # open here and the item is not in sight: not there
            ep.dead[item].add(c)
            return self._skill(verb, item, graph, obs, depth) if depth < 40 else ACTION_ID[("goto", room)]
        return ACTION_ID[("open", c)]

    def _take(self, item: str, graph: KnowledgeGraph, obs: dict) -> int:
        if obs["inventory"].sum() >= INVENTORY_CAPACITY:
            needed = graph.needed(self.ep.goal)
            spare = [ITEMS[i] for i in np.flatnonzero(obs["inventory"]) if ITEMS[i] not in needed]
            spare.sort(key=lambda x: x not in KEYS)  # keys first: a lock stays open
            if spare:
                return ACTION_ID[("place", ITEM_ID[spare[0]])]
        return ACTION_ID[("take", ITEM_ID[item])]

    def _choose_container(self, item: str, room: int) -> int | None:
        ep = self.ep
        score = {c: 0.0 for c in range(len(self.containers)) if c not in ep.dead[item] and c not in ep.blocked
                 and not (c in ep.contents and ep.contents[c][item] == 0)}
        if not score:
            return None
        for c in score:
            if c in ep.contents and ep.contents[c][item] > 0:
                score[c] += 10.0
            score[c] += 0.5 * (self.containers[c] == room) - 0.3 * (c in ep.locked)
        voted = set()
        if item not in ep.ignore_cases:
            for s, outcome, record in self._retrieve(self._fields("fetch", item), "fetch"):
                c = self.names.index(record["container"]) if record["container"] in self.names else None
                if c in score and record.get("fields", {}).get("item") == item:
                    score[c] += 3.0 * s if outcome == "success" else -3.0 * s
                    voted.add(c)
        best = max(score, key=lambda c: (score[c], -c))
        if best in voted and score[best] > 0:
            ep.expected[best] = item
        return best


def _target(action: int) -> int:
    from embodied.tasks.household import ACTION_TABLE

    return ACTION_TABLE[action][1]


def run_episode(env, agent: HouseholdAgent | None, seed: int, learning: bool = False, teacher: bool = False) -> dict:
    """One episode: `agent` acts (None or teacher=True: the env's oracle acts while the agent, if
    any, watches and learns). Returns the env's measures plus the agent's (replans, reflections)."""
    obs, info = env.reset(seed=seed)
    if agent is not None:
        agent.reset(obs, info, learning=learning, teaching=teacher)
    done = False
    while not done:
        if agent is None or teacher:
            action = env.oracle_action()
            if agent is not None:
                agent.last_action = action
        else:
            action = agent.act(obs, info)
        obs, _, terminated, truncated, info = env.step(action)
        if agent is not None:
            agent.observe(action, obs, info)
        done = terminated or truncated
    extra = agent.end_episode(info) if agent is not None else {"replans": 0, "reflections": 0}
    return {k: info[k] for k in ("success", "steps", "subgoals_done", "subgoals_total", "tier", "goal", "context")} | extra
