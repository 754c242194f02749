"""Fast-mapping's level spec: what distinguishes the 29 levels (`FastMapLevel`, `LEVELS`), the
lattice's constants and the actions."""
from __future__ import annotations

from dataclasses import dataclass

from embodied.tasks.config import FastMapConfig

FASTMAP_ACTIONS = ("move_forward", "move_backward", "turn_left", "turn_right", "look_up", "look_down", "lift", "put")
CELL = 0.75  # metres per lattice cell
HEADINGS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # heading h looks along HEADINGS[h]; yaw = h * 90 degrees
TRAY_CATEGORY = "box"
FIXTURES = ("bed", "tray")
INSTRUCTION_KINDS = ("lift", "put_on", "put_near")
OBJECT_SPLITS = ("train", "novel_exemplar", "held_out_category", "held_out")
PHASES = ("discovery", "distractor", "instruction")


@dataclass(frozen=True)
class FastMapLevel:
    """What distinguishes the 29 levels (set per registered task, see LEVELS)."""

    num_objects: int = 3
    object_split: str = "train"  # train | novel_exemplar | held_out_category | held_out
    global_set: int = 0  # 0: any object of the split; k > 0: a fixed set G of k objects of the split
    naming: str = "fast"  # fast: nonsense names; familiar: the category name ("this is a mug")
    discovery: bool = True
    instructions: tuple[str, ...] = ("lift",)
    fixtures: bool = True  # bed and tray present (needed by put instructions and distractors)
    shaping_reward: float = 0.1
    distractors: int = 0
    episodes_per_names: int = 1
    split_role: str = "train"  # train | test (documentation and the leak check)

    def validate(self) -> "FastMapLevel":
        if not 1 <= self.num_objects <= 8:
            raise ValueError(f"fastmap num_objects={self.num_objects}: allowed 1..8")
        if self.object_split not in OBJECT_SPLITS:
            raise ValueError(f"fastmap object_split={self.object_split!r}; allowed: {', '.join(OBJECT_SPLITS)}")
        if self.global_set and self.global_set < self.num_objects:
            raise ValueError(f"fastmap global_set={self.global_set}: must be 0 or >= num_objects={self.num_objects}")
        if self.naming not in ("fast", "familiar"):
            raise ValueError(f"fastmap naming={self.naming!r}; allowed: fast, familiar")
        bad = [k for k in self.instructions if k not in INSTRUCTION_KINDS]
        if bad or not self.instructions:
            raise ValueError(f"fastmap instructions={self.instructions!r}; allowed: {', '.join(INSTRUCTION_KINDS)}")
        if not self.fixtures and (self.distractors or any(k != "lift" for k in self.instructions)):
            raise ValueError("fastmap: put instructions and distractor phases need fixtures=True")
        if not 0 <= self.distractors <= 20:
            raise ValueError(f"fastmap distractors={self.distractors}: allowed 0..20")
        if not 1 <= self.episodes_per_names <= 4:
            raise ValueError(f"fastmap episodes_per_names={self.episodes_per_names}: allowed 1..4")
        return self


_L = FastMapLevel
LEVELS: dict[str, FastMapLevel] = {
    "architecture_comparison/fast_map_three_objs": _L(),
    "num_generalization/fast_map_three_objs": _L(),
    "num_generalization/fast_map_five_objs": _L(num_objects=5, split_role="test"),
    "num_generalization/fast_map_eight_objs": _L(num_objects=8, split_role="test"),
    "new_obj_generalization/fast_map_three_objs_global_three": _L(global_set=3),
    "new_obj_generalization/fast_map_three_objs_global_five": _L(global_set=5),
    "new_obj_generalization/fast_map_three_objs_global_ten": _L(global_set=10),
    "new_obj_generalization/fast_map_three_objs_global_twenty": _L(global_set=20),
    "new_obj_generalization/fast_map_heldout_test_objs": _L(object_split="held_out", split_role="test"),
    "intrinsic_motivation/fast_map_three_objs_no_shaping_reward": _L(shaping_reward=0.0),
    "fast_slow/fast_map_three_objs": _L(fixtures=False),
    "fast_slow/fast_map_three_objs_bed_tray": _L(),
    "fast_slow/fast_map_three_objs_bed_tray_putting_near": _L(instructions=("put_near",)),
    "fast_slow/fast_map_three_objs_bed_tray_putting_on": _L(instructions=("put_on",)),
    "fast_slow/slow_learn_three_objs_bed_tray_lifting": _L(naming="familiar", discovery=False),
    "fast_slow/slow_learn_three_objs_bed_tray_putting_near": _L(naming="familiar", discovery=False, instructions=("put_near",)),
    "fast_slow/slow_learn_three_objs_bed_tray_putting_on": _L(naming="familiar", discovery=False, instructions=("put_on",)),
    "fast_slow/two_phase_slow_learn_three_objs_bed_tray_putting_near": _L(naming="familiar", instructions=("put_near",)),
    "fast_slow/two_phase_slow_learn_three_objs_bed_tray_putting_on": _L(naming="familiar", instructions=("put_on",)),
    "fast_slow/test_holdout_fast_map_three_objs_bed_tray_putting_on": _L(instructions=("put_on",), split_role="test"),
    "with_distractors/fast_map_three_objs_no_distractor": _L(distractors=0),
    "with_distractors/fast_map_three_objs_one_distractor": _L(distractors=1),
    "with_distractors/fast_map_three_objs_two_distractor": _L(distractors=2),
    "with_distractors/eval_fast_map_three_objs_ten_distractor": _L(distractors=10, split_role="test"),
    "with_distractors/eval_fast_map_three_objs_twenty_distractor": _L(distractors=20, split_role="test"),
    "with_distractors/eval_fast_map_two_episodes_three_objs_five_distractor": _L(distractors=5, episodes_per_names=2, split_role="test"),
    "with_distractors/eval_fast_map_three_episodes_three_objs_five_distractor": _L(distractors=5, episodes_per_names=3, split_role="test"),
    "with_distractors/eval_fast_map_four_episodes_three_objs_no_distractor": _L(distractors=0, episodes_per_names=4, split_role="test"),
    "with_distractors/eval_fast_map_four_episodes_three_objs_one_distractor": _L(distractors=1, episodes_per_names=4, split_role="test"),
}


def level_max_steps(level: FastMapLevel, cfg: FastMapConfig | None = None) -> int:
    """Steps an episode of `level` can take at most (sum of its phase budgets under `cfg`'s budgets)."""
    o = cfg or FastMapConfig()
    disc = o.discovery_steps_per_object * level.num_objects if level.discovery else 0
    return disc + level.distractors * o.distractor_steps + o.instruction_steps


def action_name(action) -> str:
    """The name of an action given as an index or a name; ValueError naming the allowed ones."""
    if isinstance(action, str):
        if action not in FASTMAP_ACTIONS:
            raise ValueError(f"unknown action {action!r}; allowed: {', '.join(FASTMAP_ACTIONS)}")
        return action
    try:
        index = int(action)
    except (TypeError, ValueError):
        raise ValueError(f"action {action!r} is not an int or a name; allowed: 0..{len(FASTMAP_ACTIONS) - 1}") from None
    if not 0 <= index < len(FASTMAP_ACTIONS) or index != action:
        raise ValueError(f"action {action!r} out of range; allowed: 0..{len(FASTMAP_ACTIONS) - 1} ({', '.join(FASTMAP_ACTIONS)})")
    return FASTMAP_ACTIONS[index]
