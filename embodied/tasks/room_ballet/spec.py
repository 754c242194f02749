"""Room Ballet's level spec: what distinguishes the levels (`RoomBalletLevel`, `LEVELS`) and the
constants every part shares (question types, the write strategies, the text vocabulary's ranges)."""
from __future__ import annotations

from dataclasses import dataclass

from embodied.tasks.ballet import DANCES

NUM_DANCES = len(DANCES)
MAX_ROOMS = 16
NUM_COLOURS = 32
ANSWER_STEPS = 4
STRATEGIES = ("fifo", "lifo", "mvfo", "lvfo")
BUDGET_TYPES = ("room_dance", "dance_room")
MULTI_TYPES = ("recent", "early", "rare_room", "busy_room")
QUESTION_TYPES = BUDGET_TYPES + MULTI_TYPES
BEST_STRATEGY = {"recent": "fifo", "early": "lifo", "rare_room": "mvfo", "busy_room": "lvfo"}


@dataclass(frozen=True)
class RoomBalletLevel:
    """One level: its kind (`budget`: one dancer per room on a random walk; `multi`: `segments`
    dancers in rooms of skewed preference), the room graph's size, the walk and the memory budget."""

    mode: str = "budget"  # budget | multi
    obs_mode: str = "tokens"  # tokens | grid
    rooms_wide: int = 4
    rooms_high: int = 2
    walk_steps: int = 96  # budget levels; multi levels walk segments x segment_steps
    stay_min: int = 4
    stay_max: int = 16
    segments: int = 16  # multi levels
    segment_steps: int = 4
    memory_budget: int = 32
    question_types: tuple[str, ...] = BUDGET_TYPES

    @property
    def num_rooms(self) -> int:
        return self.rooms_wide * self.rooms_high

    @property
    def walk_length(self) -> int:
        """Steps of the walk (the show)."""
        return self.segments * self.segment_steps if self.mode == "multi" else self.walk_steps

    def validate(self) -> "RoomBalletLevel":
        if not 2 <= self.num_rooms <= MAX_ROOMS or (self.mode == "budget" and self.num_rooms > NUM_DANCES):
            raise ValueError(f"room_ballet: {self.num_rooms} rooms; allowed 2..{NUM_DANCES} (budget) or ..{MAX_ROOMS}")
        if self.memory_budget >= self.walk_length:
            raise ValueError(f"room_ballet: memory_budget={self.memory_budget} must be below the walk ({self.walk_length})")
        return self


_MULTI = dict(mode="multi", rooms_wide=5, rooms_high=1, memory_budget=24)
LEVELS: dict[str, RoomBalletLevel] = {
    # 16 tokens for a 96-step walk over 8 rooms: mvfo keeps every room's latest steps, while the
    # latest 16 steps (fifo) hold the asked room in about 44% of episodes (answer_kept).
    "budget": RoomBalletLevel(mode="budget", obs_mode="tokens", memory_budget=16),
    "budget_grid": RoomBalletLevel(mode="budget", obs_mode="grid"),
    "multi": RoomBalletLevel(**_MULTI, question_types=MULTI_TYPES),
    **{f"multi_{kind}": RoomBalletLevel(**_MULTI, question_types=(kind,)) for kind in MULTI_TYPES},
}
