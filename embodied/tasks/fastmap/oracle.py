"""Fast-mapping's oracle: the scripted expert. It reads the true names and the instruction from the
phase machine and plans shortest (cell, heading) paths on the lattice."""
from __future__ import annotations

from collections import deque

from embodied.tasks.fastmap.layout import Lattice
from embodied.tasks.fastmap.phases import FastMapPhases
from embodied.tasks.fastmap.spec import FASTMAP_ACTIONS, HEADINGS


def expert_action(lattice: Lattice, phases: FastMapPhases) -> int:
    """Discovery: lift each unnamed object (putting each back down); distractor: face the fixture;
    instruction: lift the target, and for a put carry it onto / next to the fixture."""
    if phases.phase == "discovery":
        if lattice.held >= 0:
            return _put_or_find_floor(lattice)  # the expert puts it back where it was
        goals = {o.cell for i, o in enumerate(lattice.objects) if i not in phases.named}
        return approach(lattice, goals, "lift")
    if phases.phase == "distractor":
        return approach(lattice, set(lattice.fixture_cells(phases.distractor_target)), None)
    kind, fixture = phases.instruction
    if lattice.held >= 0 and lattice.held != phases.target:
        # Only after a learner's mistake under a put instruction: no put can succeed any more.
        return _put_or_find_floor(lattice)
    if lattice.held != phases.target:
        return approach(lattice, {lattice.objects[phases.target].cell}, "lift")
    if kind == "put_on":
        goals = {c for c in lattice.fixture_cells(fixture) if lattice.object_at(c) < 0}
    else:
        goals = {c for c in lattice.free_floor() if lattice.put_satisfies(c, kind, fixture)}
    return approach(lattice, goals, "put")


def _put_or_find_floor(lattice: Lattice) -> int:
    if lattice.put_spot(lattice.front_cell()) is not None:
        return FASTMAP_ACTIONS.index("put")
    return approach(lattice, lattice.free_floor(), "put")


def approach(lattice: Lattice, goals: set, final: str | None) -> int:
    """First action of a shortest (cell, heading) plan that ends facing a goal cell, then `final`."""
    start = (lattice.agent, lattice.heading)
    if lattice.front_cell() in goals:
        if final is not None:
            return FASTMAP_ACTIONS.index(final)
    parents = {start: None}
    queue = deque([start])
    found = None
    while queue:
        state = queue.popleft()
        (x, y), h = state
        dx, dy = HEADINGS[h]
        if (x + dx, y + dy) in goals and state != start:
            found = state
            break
        for act, nxt in (("move_forward", ((x + dx, y + dy), h)), ("turn_left", ((x, y), (h + 1) % 4)),
                         ("turn_right", ((x, y), (h - 1) % 4))):
            if nxt in parents or (act == "move_forward" and not lattice.walkable(nxt[0])):
                continue
            parents[nxt] = (state, act)
            queue.append(nxt)
    if found is None:
        return FASTMAP_ACTIONS.index("turn_left")  # unreachable goal: cannot happen on a checked layout
    state, act = found, None
    while parents[state] is not None:
        state, act = parents[state]
        if state == start:
            break
    return FASTMAP_ACTIONS.index(act)
