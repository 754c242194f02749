"""Optimus-1's Hierarchical Directed Knowledge Graph (HDKG), learned from outcomes.

Nodes are items; an edge u -> v means u is a material (consumed, with a quantity) or a tool (held)
for v, made at a station; a lock fact says which key opens a container; a raw fact says an item is
found in containers, not made. `expand(goal, inventory)` is Optimus-1's `compile`: the goal's
requirements expanded depth first with the inventory subtracted (a held unit covers one need; a tool
is needed once), emitted dependencies first (a topological order of the goal's sub-graph) as
sub-goals (fetch | make | discover: neither recipe nor raw fact known).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class RecipeFact:
    station: str
    inputs: tuple[str, ...]
    tool: str | None = None

    def as_json(self) -> dict:
        return {"station": self.station, "inputs": list(self.inputs), "tool": self.tool}


class KnowledgeGraph:
    def __init__(self):
        self.recipes: dict[str, RecipeFact] = {}
        self.locks: dict[str, str] = {}  # container -> key
        self.raw: set[str] = set()
        self.pending: list[tuple[str, str, object]] = []  # facts learned since the last commit
        self.version = 0

    # --- learning -------------------------------------------------------------------------------------
    def add_recipe(self, product: str, station: str, inputs, tool: str | None = None) -> bool:
        fact = RecipeFact(station, tuple(sorted(inputs)), tool)
        if self.recipes.get(product) == fact:
            return False
        self.recipes[product] = fact
        self.pending.append(("recipe", product, fact.as_json()))
        return True

    def add_lock(self, container: str, key: str) -> bool:
        if self.locks.get(container) == key:
            return False
        self.locks[container] = key
        self.pending.append(("lock", container, key))
        return True

    def add_raw(self, item: str) -> bool:
        if item in self.raw:
            return False
        self.raw.add(item)
        self.pending.append(("raw", item, True))
        return True

    def merge(self, other: "KnowledgeGraph") -> "KnowledgeGraph":
        """A new graph with `other`'s facts over this one's (an episode's discoveries over memory)."""
        out = KnowledgeGraph()
        out.recipes, out.locks, out.raw = {**self.recipes, **other.recipes}, {**self.locks, **other.locks}, self.raw | other.raw
        return out

    # --- persistence ----------------------------------------------------------------------------------
    def commit(self, store, world: str, note: str = "") -> int:
        if self.pending:
            self.version = store.commit_graph(world, self.pending, note)
            self.pending = []
        return self.version

    @classmethod
    def load(cls, store, world: str, version: int | None = None) -> "KnowledgeGraph":
        graph = cls()
        graph.version, facts = store.read_graph(world, version)
        for kind, node, value in facts:
            if kind == "recipe":
                graph.recipes[node] = RecipeFact(value["station"], tuple(value["inputs"]), value["tool"])
            elif kind == "lock":
                graph.locks[node] = value
            elif kind == "raw":
                graph.raw.add(node)
        return graph

    # --- planning -------------------------------------------------------------------------------------
    def expand(self, goal: str, inventory: Counter | dict | None = None) -> list[tuple[str, str]]:
        """Sub-goals (verb, item) that turn `inventory` into one more `goal`, dependencies first."""
        inv = Counter(inventory or {})
        tools: set[str] = set()
        out: list[tuple[str, str]] = []
        stack: list[str] = []

        def need(item: str) -> None:
            if inv[item] > 0:
                inv[item] -= 1
                return
            recipe = self.recipes.get(item)
            if recipe is None or item in stack:  # a cycle can only come from a wrong fact: stop there
                out.append(("fetch" if item in self.raw else "discover", item))
                return
            stack.append(item)
            for part in recipe.inputs:
                need(part)
            if recipe.tool and recipe.tool not in tools:
                tools.add(recipe.tool)
                if inv[recipe.tool] > 0:
                    inv[recipe.tool] -= 1
                else:
                    need(recipe.tool)
            stack.pop()
            out.append(("make", item))

        need(goal)
        return out

    def needed(self, goal: str) -> set[str]:
        """Every item of the goal's known sub-graph (what not to put down)."""
        seen: set[str] = set()
        todo = [goal]
        while todo:
            item = todo.pop()
            if item in seen:
                continue
            seen.add(item)
            r = self.recipes.get(item)
            if r:
                todo += list(r.inputs) + ([r.tool] if r.tool else [])
        return seen

    def describe(self, goal: str, inventory=None) -> str:
        """Optimus-1's text form: `obtain X summary: 1. fetch a 2. make b ...`."""
        steps = self.expand(goal, inventory)
        return f"obtain {goal} summary: " + " ".join(f"{i}. {v} {x}" for i, (v, x) in enumerate(steps, 1))
