"""Fast-mapping's phase machine: discovery -> distractor x `level.distractors` -> instruction, driven by
the lattice's events (a lift, a put) and a clock of steps in the current phase (`phase_t`)."""
from __future__ import annotations

import numpy as np

from embodied.tasks.config import FastMapConfig
from embodied.tasks.fastmap.layout import Lattice
from embodied.tasks.fastmap.spec import FIXTURES, FastMapLevel
from embodied.tasks.fastmap.text import TEXT_LENGTH, distractor_text, instruction_text, naming_text


class FastMapPhases:
    """The phase of an episode, what it asks (`text`, `instruction`, `target`, `distractor_target`),
    what it has seen (`named`, `distractors_done`) and whether the episode succeeded (`success`)."""

    def __init__(self, level: FastMapLevel, cfg: FastMapConfig):
        self.level, self.cfg = level, cfg
        self.begin(None, None, discovery=False, start=False)

    def begin(self, lattice: Lattice | None, rng: np.random.Generator | None, discovery: bool, start: bool = True) -> None:
        """A new episode: discovery when `discovery` (the first episode of a block of a level that has
        one), else straight to the distractors or the instruction."""
        self.phase, self.phase_t = "", 0
        self.named: set[int] = set()
        self.success = 0.0
        self.distractors_done = 0
        self.target = -1
        self.instruction: tuple[str, str | None] = ("", None)
        self.distractor_target: str | None = None
        self.text = np.zeros(TEXT_LENGTH, np.int64)
        if not start:
            return
        if discovery:
            self.phase, self.phase_t = "discovery", 0
            self.discovery_budget = self.cfg.discovery_steps_per_object * len(lattice.objects)
        else:
            self._after_discovery(lattice, rng)

    def tick(self) -> None:
        """One step passed in the phase."""
        self.phase_t += 1

    # --- events (each returns the reward it pays, and whether it ends the episode) ----------------------------
    def lifted(self, i: int) -> tuple[float, bool]:
        """Object i was lifted: named on its first lift in discovery; ends a lift instruction."""
        if self.phase == "discovery" and i not in self.named:
            self.named.add(i)
            return float(self.level.shaping_reward), False
        if self.phase == "instruction" and self.instruction[0] == "lift":
            self.success = float(i == self.target)
            return 0.0, True
        return 0.0, False

    def put(self, lattice: Lattice, i: int, cell) -> bool:
        """Object i was put into `cell`: ends a put instruction (success when it was the target, put
        on / near the instructed fixture)."""
        kind, fixture = self.instruction
        if self.phase != "instruction" or kind == "lift":
            return False
        self.success = float(i == self.target and lattice.put_satisfies(cell, kind, fixture))
        return True

    def advance(self, lattice: Lattice, rng: np.random.Generator) -> float:
        """Phase transitions after an action; returns the reward they pay."""
        if self.phase == "discovery":
            all_named = len(self.named) == len(lattice.objects) and lattice.held < 0
            if (self.cfg.discovery_ends_when_named and all_named) or self.phase_t >= self.discovery_budget:
                self._after_discovery(lattice, rng)
            return 0.0
        if self.phase == "distractor":
            done = lattice.facing_fixture(self.distractor_target)
            if done or self.phase_t >= self.cfg.distractor_steps:
                self.distractors_done += 1
                self._after_discovery(lattice, rng)
                return self.cfg.distractor_reward if done else 0.0
        return 0.0

    def out_of_time(self) -> bool:
        """The instruction's budget is spent (the episode is truncated)."""
        return self.phase == "instruction" and self.phase_t >= self.cfg.instruction_steps

    def observe_text(self, lattice: Lattice) -> np.ndarray:
        """The text channel now: in discovery "this is a <name>" while an object is held (else
        nothing), in the later phases their sentence."""
        if self.phase == "discovery":
            held = lattice.held
            self.text = naming_text(lattice.objects[held].name) if held >= 0 else np.zeros(TEXT_LENGTH, np.int64)
        return self.text.copy()

    # --- transitions ------------------------------------------------------------------------------------------
    def _after_discovery(self, lattice: Lattice, rng: np.random.Generator) -> None:
        if lattice.held >= 0:
            lattice.drop_anywhere(lattice.held, rng)
        if self.distractors_done < self.level.distractors:
            self.phase, self.phase_t = "distractor", 0
            choices = [f for f in FIXTURES if not lattice.facing_fixture(f)]
            self.distractor_target = choices[int(rng.integers(len(choices)))]
            self.text = distractor_text(self.distractor_target)
        else:
            self._begin_instruction(lattice, rng)

    def _begin_instruction(self, lattice: Lattice, rng: np.random.Generator) -> None:
        self.phase, self.phase_t = "instruction", 0
        lattice.replace_objects(rng)
        self.target = int(rng.integers(len(lattice.objects)))
        kind = self.level.instructions[int(rng.integers(len(self.level.instructions)))]
        fixture = None if kind == "lift" else FIXTURES[int(rng.integers(2))]
        self.instruction = (kind, fixture)
        self.text = instruction_text(kind, lattice.objects[self.target].name, fixture)
