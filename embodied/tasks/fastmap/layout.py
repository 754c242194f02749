"""Fast-mapping's layout: the room's lattice (`Lattice`: bed, tray, objects, the agent's cell and
heading, what it holds), how the seed places them (`draw`, and `replace_objects` for the instruction
phase's shuffle), and the queries the phases, the oracle and the renderers ask of it."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from embodied.tasks.fastmap.spec import HEADINGS

Cell = tuple[int, int]


@dataclass
class FastMapObject:
    category: str
    exemplar: int
    name: str
    colour: np.ndarray  # symbolic tile colour
    cell: Cell | None = None  # None while held
    on: str | None = None  # fixture it rests on


class Lattice:
    """A `room` x `room` lattice of cells. `held` is the index of the object in the hand (-1: none);
    `moved` says objects moved since the room renderer last posed them."""

    def __init__(self, room: int, fixtures: bool, objects: list[FastMapObject] | None = None):
        self.room, self.fixtures = room, fixtures
        self.objects: list[FastMapObject] = objects or []
        self.bed_cells: list[Cell] = []
        self.tray_cell: Cell | None = None
        self.agent: Cell = (0, 0)
        self.heading = 0
        self.held = -1
        self.moved = True

    # --- what the seed draws ----------------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator) -> None:
        """Bed (2 cells, along a wall), tray, objects and agent on distinct cells, every thing reachable."""
        r = self.room
        for _ in range(500):
            cells = [(i, j) for i in range(r) for j in range(r)]
            taken: set[Cell] = set()
            self.bed_cells, self.tray_cell = [], None
            if self.fixtures:
                # The bed lies along a wall: pick a wall cell and extend along the wall.
                horizontal = bool(rng.integers(2))
                k = int(rng.integers(0, r - 1))
                side = int(rng.integers(2)) * (r - 1)
                self.bed_cells = [(k, side), (k + 1, side)] if horizontal else [(side, k), (side, k + 1)]
                taken.update(self.bed_cells)
                free = [c for c in cells if c not in taken]
                self.tray_cell = free[int(rng.integers(len(free)))]
                taken.add(self.tray_cell)
            free = [c for c in cells if c not in taken]
            picks = rng.choice(len(free), len(self.objects) + 1, replace=False)
            for o, p in zip(self.objects, picks[:-1]):
                o.cell, o.on = free[int(p)], None
            self.agent = free[int(picks[-1])]
            self.heading = int(rng.integers(4))
            if self.all_reachable():
                break
        else:
            raise RuntimeError(f"fastmap: no solvable layout in a {r}x{r} room with {len(self.objects)} objects")
        self.moved = True

    def replace_objects(self, rng: np.random.Generator) -> None:
        """Re-place every object on a random free floor cell (the instruction phase's shuffle)."""
        r = self.room
        fixed = set(self.bed_cells) | ({self.tray_cell} if self.tray_cell else set()) | {self.agent}
        free = [(i, j) for i in range(r) for j in range(r) if (i, j) not in fixed]
        for _ in range(500):
            picks = rng.choice(len(free), len(self.objects), replace=False)
            for o, p in zip(self.objects, picks):
                o.cell, o.on = free[int(p)], None
            if self.all_reachable():
                break
        else:
            raise RuntimeError("fastmap: no solvable re-placement of the objects")
        self.held = -1
        self.moved = True

    def all_reachable(self) -> bool:
        """Every object and fixture cell has a 4-neighbour the agent can reach, and a free cell
        lies next to (8-neighbourhood) each fixture for put-near."""
        reach = self.reachable_cells()
        if len(reach) < 2:
            return False
        targets = [o.cell for o in self.objects] + list(self.bed_cells) + ([self.tray_cell] if self.tray_cell else [])
        for c in targets:
            if not any((c[0] + dx, c[1] + dy) in reach for dx, dy in HEADINGS):
                return False
        return True

    def reachable_cells(self) -> set[Cell]:
        seen = {self.agent}
        queue = deque([self.agent])
        while queue:
            x, y = queue.popleft()
            for dx, dy in HEADINGS:
                c = (x + dx, y + dy)
                if c not in seen and self.walkable(c):
                    seen.add(c)
                    queue.append(c)
        return seen

    # --- queries ----------------------------------------------------------------------------------------------
    def front_cell(self) -> Cell:
        dx, dy = HEADINGS[self.heading]
        return self.agent[0] + dx, self.agent[1] + dy

    def view_position(self, c) -> tuple[int, int]:
        """(row, col) of room cell `c` in the symbolic map (the agent at the centre, heading up)."""
        dx, dy = HEADINGS[self.heading]
        off = (c[0] - self.agent[0], c[1] - self.agent[1])
        forward, right = off[0] * dx + off[1] * dy, off[0] * dy - off[1] * dx
        return self.room - 1 - forward, self.room - 1 + right  # the map is (2R-1)^2 cells

    def inside(self, c) -> bool:
        return 0 <= c[0] < self.room and 0 <= c[1] < self.room

    def fixture_at(self, c) -> str | None:
        if c in self.bed_cells:
            return "bed"
        if self.tray_cell is not None and c == self.tray_cell:
            return "tray"
        return None

    def fixture_cells(self, fixture: str) -> list[Cell]:
        return list(self.bed_cells) if fixture == "bed" else [self.tray_cell]

    def facing_fixture(self, fixture: str) -> bool:
        return self.front_cell() in self.fixture_cells(fixture)

    def object_at(self, c) -> int:
        for i, o in enumerate(self.objects):
            if o.cell == c and i != self.held:
                return i
        return -1

    def walkable(self, c) -> bool:
        return self.inside(c) and self.fixture_at(c) is None and self.object_at(c) < 0

    def free_floor(self) -> set[Cell]:
        r = self.room
        return {(x, y) for x in range(r) for y in range(r) if self.walkable((x, y))}

    def put_spot(self, c) -> str | None:
        """Where a put into cell c lands: 'floor', a fixture name, or None (blocked)."""
        if not self.inside(c) or self.object_at(c) >= 0:
            return None
        return self.fixture_at(c) or "floor"

    def put_satisfies(self, c, kind: str, fixture: str) -> bool:
        """Whether a put into cell c obeys "put ... on / near the <fixture>" (`kind` put_on / put_near)."""
        cells = self.fixture_cells(fixture)
        if kind == "put_on":
            return c in cells
        return c not in cells and any(max(abs(c[0] - f[0]), abs(c[1] - f[1])) == 1 for f in cells)

    # --- changes ----------------------------------------------------------------------------------------------
    def move(self, sign: int) -> None:
        """One cell forward (sign 1) or back (-1) when that cell is walkable."""
        dx, dy = HEADINGS[self.heading]
        cell = (self.agent[0] + sign * dx, self.agent[1] + sign * dy)
        if self.walkable(cell):
            self.agent = cell
            self.moved |= self.held >= 0  # a held object goes with the hand

    def turn(self, quarter_turns: int) -> None:
        """Turn left (1) or right (-1)."""
        self.heading = (self.heading + quarter_turns) % 4
        self.moved |= self.held >= 0

    def pick(self, i: int) -> None:
        self.held = i
        self.objects[i].cell, self.objects[i].on = None, None
        self.moved = True

    def place(self, i: int, c, spot: str) -> None:
        self.objects[i].cell, self.objects[i].on = c, (None if spot == "floor" else spot)
        self.held = -1
        self.moved = True

    def drop_anywhere(self, i: int, rng: np.random.Generator) -> None:
        r = self.room
        free = [(x, y) for x in range(r) for y in range(r) if self.walkable((x, y)) and (x, y) != self.agent]
        self.place(i, free[int(rng.integers(len(free)))], "floor")
