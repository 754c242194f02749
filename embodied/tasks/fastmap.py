"""One-shot word learning (fast-mapping, Hill et al. ICLR 2021): `fastmap/<group>/<level>`, 29 levels.

A single room on a lattice of `CELL`-metre cells holds N unfamiliar objects from the object library
(embodied.world.library) and two familiar fixtures, a bed (2 cells) and a tray (the library's `box`
category, 1 cell). An episode runs phases:

* discovery - lifting an object (the one in the cell in front of the agent) makes the text read
  "this is a <name>" while it is held; names are nonsense words drawn per episode (or per block of
  episodes) from `vocab_size` words; `shaping_reward` on the first lift of each object. The phase
  ends once every object was lifted and the hand is empty (`discovery_ends_when_named`), or after
  `discovery_steps_per_object * N` steps.
* distractor phases (0-20) - "go to the bed" / "go to the tray": done when that fixture is in the
  cell in front of the agent (`distractor_reward`), or after `distractor_steps`.
* instruction - objects are re-placed at random; "lift the <name>", "put the <name> on the
  <fixture>" or "put the <name> near the <fixture>"; the episode ends on the first lift (lift
  instructions) or put (put instructions) with `TaskConfig.success_reward` for the right object and
  act, else 0; or it is truncated after `instruction_steps`.

Multi-episode levels keep the objects and their names for `episodes_per_names` consecutive episodes;
only the first has a discovery phase, so the later ones need a lifelong memory.

Observations: `rgb` (first-person ray-cast render, `TaskConfig.width x height`; with
`TaskConfig.scenes: symbolic` an egocentric top-down tile map instead, see `SymbolicView`),
optional `depth` / `semantic` in room mode, `text` [6] token ids (`VOCABULARY`, 0 = padding) and
`holding` [1] (1.0 while an object is held). Actions: `FASTMAP_ACTIONS`.
`oracle_action()` is the scripted expert: it reads the true names and plans on the lattice.
Viewer protocol (words for recordings; no effect on the task): `action_names`, `classes` (names of
the semantic view's ids) and `observation_text(obs)` (`decode_text` of the text tokens).

Level-independent options (`FastMapOptions`) come from `TaskConfig.options` when the config has that
key, or from the `options=` argument of the constructor. docs/fastmap.md documents every choice.
"""
from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass, fields

import numpy as np
from gymnasium import spaces

from embodied.render import Camera, RaycastRenderer
from embodied.tasks.registry import TaskEnv, register_step_selector, register_task
from embodied.world import OBJECT_CATEGORIES, build_geometry, semantic_classes
from embodied.world.library import build_exemplar, exemplar_split, sample_exemplar
from embodied.world.spec import Item, Room, SceneSpec, Wall

FASTMAP_ACTIONS = ("move_forward", "move_backward", "turn_left", "turn_right", "look_up", "look_down", "lift", "put")
CELL = 0.75  # metres per lattice cell
HOLD_DISTANCE, HOLD_DROP = 0.5, 0.45  # a held object sits this far ahead of and below the camera, metres
HEADINGS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # heading h looks along HEADINGS[h]; yaw = h * 90 degrees
TRAY_CATEGORY = "box"
FIXTURES = ("bed", "tray")
INSTRUCTION_KINDS = ("lift", "put_on", "put_near")
OBJECT_SPLITS = ("train", "novel_exemplar", "held_out_category", "held_out")
TEXT_LENGTH = 6
MODES = ("room", "symbolic")

# --- vocabulary -------------------------------------------------------------------------------------
FUNCTION_WORDS = ("this", "is", "a", "lift", "put", "the", "on", "near", "go", "to", "bed", "tray")
NAME_POOL_SIZE = 400


def _nonsense_words(n: int) -> tuple[str, ...]:
    """`n` pronounceable nonsense words (CVCV / CVC shapes), fixed order, none a real category name."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    words = [c1 + v1 + c2 + v2 for c1 in cons for v1 in vows for c2 in cons for v2 in vows]
    words += [c1 + v1 + c2 for c1 in cons for v1 in vows for c2 in "xkptg"]
    words = [w for w in words if w not in OBJECT_CATEGORIES and w not in FUNCTION_WORDS]
    order = np.random.default_rng(20201101).permutation(len(words))
    return tuple(words[i] for i in order[:n])


NONSENSE_WORDS = _nonsense_words(NAME_POOL_SIZE)
VOCABULARY = ("<pad>",) + FUNCTION_WORDS + OBJECT_CATEGORIES + NONSENSE_WORDS
TOKEN = {w: i for i, w in enumerate(VOCABULARY)}


def encode_text(words: list[str] | tuple[str, ...]) -> np.ndarray:
    """Token ids [TEXT_LENGTH], left-aligned, 0-padded."""
    if len(words) > TEXT_LENGTH:
        raise ValueError(f"text {' '.join(words)!r} is longer than {TEXT_LENGTH} tokens")
    out = np.zeros(TEXT_LENGTH, np.int64)
    for i, w in enumerate(words):
        if w not in TOKEN:
            raise ValueError(f"word {w!r} is not in the fastmap vocabulary")
        out[i] = TOKEN[w]
    return out


@register_step_selector("fastmap/instruction")
def instruction_steps(obs):
    """[..., L] token ids of `obs["text"]` -> [...] bool: the step is in the instruction phase (its text
    starts with "lift" or "put"). These steps are ~20% of an expert episode and the only ones where
    the name matters, so behaviour cloning weights them up (trainer.upweight)."""
    first = obs["text"][..., 0]
    return (first == TOKEN["lift"]) | (first == TOKEN["put"])


def decode_text(tokens) -> str:
    """The words of a token array (padding dropped)."""
    return " ".join(VOCABULARY[int(t)] for t in np.asarray(tokens).reshape(-1) if int(t) != 0)


# --- levels and options --------------------------------------------------------------------------------
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


@dataclass
class FastMapOptions:
    """Level-independent options (same for every level unless overridden)."""

    vocab_size: int = 120
    """Nonsense names a level draws from (>= 100 as the issue asks; at most NAME_POOL_SIZE)."""
    room_cells: int = 5
    """Interior side of the room in cells. The same for every level, so observation shapes (the
    symbolic view is (2R-1)^2 cells) do not change between train and test levels."""
    discovery_steps_per_object: int = 20
    """Discovery phase budget per object (steps)."""
    discovery_ends_when_named: bool = True
    """End discovery as soon as every object has been lifted and the hand is empty."""
    distractor_steps: int = 20
    """Budget of each distractor phase (steps)."""
    distractor_reward: float = 0.1
    """Reward for completing a distractor phase."""
    instruction_steps: int = 30
    """Budget of the instruction phase (steps); then the episode is truncated with success 0."""
    cell_pixels: int = 3
    """Symbolic mode: pixels per cell side of the tile map."""
    object_extent: float = 0.35
    """Room mode: objects are scaled (proportions kept) to this largest extent, metres, so they read at 96x72."""

    def validate(self) -> "FastMapOptions":
        if not 100 <= self.vocab_size <= NAME_POOL_SIZE:
            raise ValueError(f"fastmap option vocab_size={self.vocab_size}: allowed 100..{NAME_POOL_SIZE}")
        if not 4 <= self.room_cells <= 10:
            raise ValueError(f"fastmap option room_cells={self.room_cells}: allowed 4..10")
        for key in ("discovery_steps_per_object", "distractor_steps", "instruction_steps", "cell_pixels"):
            if getattr(self, key) < 1:
                raise ValueError(f"fastmap option {key}={getattr(self, key)}: must be >= 1")
        if not 0.05 <= self.object_extent <= 0.7:
            raise ValueError(f"fastmap option object_extent={self.object_extent}: allowed 0.05..0.7")
        return self

    @classmethod
    def from_any(cls, options) -> "FastMapOptions":
        if options is None:
            return cls().validate()
        if isinstance(options, FastMapOptions):
            return options.validate()
        options = dict(options)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(f"fastmap option {unknown[0]!r} unknown; allowed: {', '.join(sorted(names))}")
        return cls(**options).validate()


# --- object pools ---------------------------------------------------------------------------------------
def split_categories(split: str) -> tuple[str, ...]:
    """Unfamiliar-object categories of a split (the tray's category is a fixture, never an object)."""
    from embodied.world.library import category_split

    # held_out mixes held-out categories with novel exemplars of training categories: all categories.
    which = {"train": "train", "novel_exemplar": "train", "held_out_category": "held_out", "held_out": "all"}[split]
    cats = category_split(which)
    return tuple(c for c in cats if c != TRAY_CATEGORY)


def object_in_split(category: str, exemplar: int, split: str) -> bool:
    """Whether (category, exemplar) belongs to an object split."""
    from embodied.world.library import HELD_OUT_CATEGORIES

    held_cat = category in HELD_OUT_CATEGORIES
    ex = exemplar_split(exemplar)
    if category == TRAY_CATEGORY:
        return False
    if split == "train":
        return not held_cat and ex == "train"
    if split == "novel_exemplar":
        return not held_cat and ex == "test"
    if split == "held_out_category":
        return held_cat
    return held_cat or ex == "test"  # held_out: either kind of novelty


def sample_objects(rng: np.random.Generator, split: str, n: int) -> list[tuple[str, int]]:
    """n objects of distinct categories from a split."""
    if split == "held_out":
        # Mix the two kinds of novelty: each object is a held-out category or a novel exemplar.
        cats = list(split_categories("held_out"))
        picks = rng.choice(len(cats), n, replace=False)
        out = []
        from embodied.world.library import HELD_OUT_CATEGORIES

        for i in picks:
            c = cats[int(i)]
            out.append((c, sample_exemplar(rng, "any" if c in HELD_OUT_CATEGORIES else "test")))
        return out
    cats = split_categories(split)
    if n > len(cats):
        raise ValueError(f"fastmap: split {split!r} has {len(cats)} categories, fewer than {n} objects")
    picks = rng.choice(len(cats), n, replace=False)
    ex_split = {"train": "train", "novel_exemplar": "test", "held_out_category": "any"}[split]
    return [(cats[int(i)], sample_exemplar(rng, ex_split)) for i in picks]


def global_set(split: str, size: int) -> list[tuple[str, int]]:
    """The fixed global object set G of a `global_set` level (same for every env and seed): distinct
    objects, categories repeating only once every category is used (|G| = 20 > 19 categories)."""
    rng = np.random.default_rng([zlib.crc32(split.encode()), size])
    out: list[tuple[str, int]] = []
    while len(out) < size:
        k = min(size - len(out), len(split_categories(split)))
        out += [o for o in sample_objects(rng, split, k) if o not in out]
    return out


def draw_from_set(rng: np.random.Generator, objects: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """n objects of distinct categories from a fixed set."""
    for _ in range(1000):
        picks = [objects[int(i)] for i in rng.choice(len(objects), n, replace=False)]
        if len({c for c, _ in picks}) == n:
            return picks
    raise ValueError(f"fastmap: cannot draw {n} objects of distinct categories from a set of {len(objects)}")


# --- symbolic view ---------------------------------------------------------------------------------------
def _glyphs() -> dict[str, np.ndarray]:
    masks = [m for m in range(512) if bin(m).count("1") in (4, 5) and m & 16]  # centre pixel always on
    order = np.random.default_rng(7).permutation(len(masks))
    return {c: np.array([(masks[order[i]] >> b) & 1 for b in range(9)], bool).reshape(3, 3)
            for i, c in enumerate(OBJECT_CATEGORIES)}


GLYPHS = _glyphs()
FLOOR_RGB = np.array([30, 30, 30], np.uint8)
WALL_RGB = np.array([128, 128, 128], np.uint8)
BED_RGB = np.array([150, 50, 60], np.uint8)
TRAY_RGB = np.array([50, 90, 170], np.uint8)
AGENT_RGB = np.array([230, 230, 90], np.uint8)


def object_symbol_colour(category: str, exemplar: int) -> np.ndarray:
    """The exemplar's primary colour, lifted away from the floor's darkness."""
    col = np.asarray(build_exemplar(category, exemplar).color, np.float64)
    return (70 + 185 * col).astype(np.uint8)


# --- the env -------------------------------------------------------------------------------------------
@dataclass
class _Object:
    category: str
    exemplar: int
    name: str
    colour: np.ndarray  # symbolic tile colour
    cell: tuple[int, int] | None = None  # None while held
    on: str | None = None  # fixture it rests on


class FastMapEnv(TaskEnv):
    """One fast-mapping level; `level` is set by the registered subclass."""

    metadata = {"render_modes": ["rgb_array"]}
    level: FastMapLevel = FastMapLevel()

    def __init__(self, cfg=None, options=None):
        from embodied.tasks.config import TaskConfig

        self.cfg = cfg = TaskConfig.from_any(cfg if cfg is not None else {"name": self.task_name, "scenes": "room"})
        self.level = self.level.validate()
        if options is None:
            options = getattr(cfg, "options", None)
        self.options = FastMapOptions.from_any(options)
        if cfg.scenes not in MODES:
            raise ValueError(f"task.scenes={cfg.scenes!r}: fastmap takes room (rendered) or symbolic (tile map)")
        self.mode = cfg.scenes
        self.room = self.options.room_cells
        if self.level.global_set:
            self.global_objects = global_set(self.level.object_split, self.level.global_set)
        else:
            self.global_objects = None
        self.names_pool = NONSENSE_WORDS[: self.options.vocab_size]
        obs = {}
        if self.mode == "symbolic":
            bad = [s for s in cfg.sensors if s != "rgb"]
            if bad:
                raise ValueError(f"task.sensors={cfg.sensors}: symbolic fastmap renders only rgb")
            self.view = 2 * self.room - 1
            side = self.view * self.options.cell_pixels
            obs["rgb"] = spaces.Box(0, 255, (side, side, 3), np.uint8)
        else:
            h, w = cfg.height, cfg.width
            if "rgb" in cfg.sensors:
                obs["rgb"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
            if "depth" in cfg.sensors:
                obs["depth"] = spaces.Box(0.0, cfg.max_depth, (h, w, 1), np.float32)
            if "semantic" in cfg.sensors:
                obs["semantic"] = spaces.Box(0, len(semantic_classes()) - 1, (h, w), np.int32)
        obs["text"] = spaces.Box(0, len(VOCABULARY) - 1, (TEXT_LENGTH,), np.int64)
        obs["holding"] = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(len(FASTMAP_ACTIONS))
        self.rng = np.random.default_rng()
        self._block_left = 0
        self.renderer: RaycastRenderer | None = None

    # --- gymnasium API -------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self._block_left = 0
        lv = self.level
        if self._block_left == 0:
            self._new_objects()
            self._block_left = lv.episodes_per_names
            self.episode_in_block = 0
        else:
            self.episode_in_block += 1
        self._block_left -= 1
        self.held = -1
        self._layout()
        self.t = 0
        self.tilt = -1  # in tilt steps: start looking one step down, at the floor in front
        self.named: set[int] = set()
        self.success = 0.0
        self.distractors_done = 0
        self.target = -1
        self.instruction: tuple[str, str | None] = ("", None)
        self._text = np.zeros(TEXT_LENGTH, np.int64)
        self.phase = ""
        if lv.discovery and self.episode_in_block == 0:
            self._begin_discovery()
        else:
            self._after_discovery()
        return self._observe(), self._info()

    def _step(self, action):
        name = self._action_name(action)
        reward, terminated = 0.0, False
        self.t += 1
        self.phase_t += 1
        fx, fy = self.front_cell()
        if name in ("move_forward", "move_backward"):
            dx, dy = HEADINGS[self.heading]
            sign = 1 if name == "move_forward" else -1
            cell = (self.agent[0] + sign * dx, self.agent[1] + sign * dy)
            if self._walkable(cell):
                self.agent = cell
        elif name == "turn_left":
            self.heading = (self.heading + 1) % 4
        elif name == "turn_right":
            self.heading = (self.heading - 1) % 4
        elif name == "look_up":
            self.tilt = min(self.tilt + 1, 2)
        elif name == "look_down":
            self.tilt = max(self.tilt - 1, -2)
        elif name == "lift":
            i = self.object_at((fx, fy))
            if self.held < 0 and i >= 0:
                self._pick(i)
                if self.phase == "discovery" and i not in self.named:
                    self.named.add(i)
                    reward += float(self.level.shaping_reward)
                if self.phase == "instruction" and self.instruction[0] == "lift":
                    terminated = True
                    self.success = float(i == self.target)
        elif name == "put":
            if self.held >= 0:
                i = self.held
                spot = self._put_spot((fx, fy))
                if spot is not None:
                    self._place(i, (fx, fy), spot)
                    if self.phase == "instruction" and self.instruction[0] != "lift":
                        terminated = True
                        self.success = float(i == self.target and self._put_satisfies((fx, fy)))
        if terminated:
            reward += self.cfg.success_reward * self.success
        else:
            reward += self._advance_phase()
        reward += self.cfg.slack_reward
        truncated = False
        if not terminated and self.phase == "instruction" and self.phase_t >= self.options.instruction_steps:
            truncated = True
        if not terminated and self.t >= self.cfg.max_steps:
            truncated = True
        return self._observe(), float(reward), terminated, truncated, self._info()

    def render(self):
        return self._observe()["rgb"] if "rgb" in self.observation_space.spaces else None

    # --- episode construction ---------------------------------------------------------------------------------
    def _new_objects(self) -> None:
        lv = self.level
        if self.global_objects is not None:
            chosen = draw_from_set(self.rng, self.global_objects, lv.num_objects)
        else:
            chosen = sample_objects(self.rng, lv.object_split, lv.num_objects)
        if lv.naming == "fast":
            names = [self.names_pool[int(i)] for i in self.rng.choice(len(self.names_pool), lv.num_objects, replace=False)]
        else:
            names = [c for c, _ in chosen]
        self.objects = [_Object(c, e, nm, object_symbol_colour(c, e)) for (c, e), nm in zip(chosen, names)]
        self.bed_exemplar = int(self.rng.integers(0, 100_000))
        self.tray_exemplar = int(self.rng.integers(0, 100_000))
        self.renderer = None

    def _layout(self) -> None:
        """Bed (2 cells), tray, objects and agent on distinct cells, every thing reachable."""
        r = self.room
        for _ in range(500):
            cells = [(i, j) for i in range(r) for j in range(r)]
            taken: set[tuple[int, int]] = set()
            self.bed_cells: list[tuple[int, int]] = []
            self.tray_cell: tuple[int, int] | None = None
            if self.level.fixtures:
                # The bed lies along a wall: pick a wall cell and extend along the wall.
                horizontal = bool(self.rng.integers(2))
                k = int(self.rng.integers(0, r - 1))
                side = int(self.rng.integers(2)) * (r - 1)
                self.bed_cells = [(k, side), (k + 1, side)] if horizontal else [(side, k), (side, k + 1)]
                taken.update(self.bed_cells)
                free = [c for c in cells if c not in taken]
                self.tray_cell = free[int(self.rng.integers(len(free)))]
                taken.add(self.tray_cell)
            free = [c for c in cells if c not in taken]
            picks = self.rng.choice(len(free), len(self.objects) + 1, replace=False)
            for o, p in zip(self.objects, picks[:-1]):
                o.cell, o.on = free[int(p)], None
            self.agent = free[int(picks[-1])]
            self.heading = int(self.rng.integers(4))
            if self._all_reachable():
                break
        else:
            raise RuntimeError(f"fastmap: no solvable layout in a {r}x{r} room with {len(self.objects)} objects")
        self.renderer = None  # fixtures moved: the static scene is rebuilt at the next render

    def _replace_objects(self) -> None:
        """Re-place every object on a random free floor cell (the instruction phase's shuffle)."""
        r = self.room
        fixed = set(self.bed_cells) | ({self.tray_cell} if self.tray_cell else set()) | {self.agent}
        free = [(i, j) for i in range(r) for j in range(r) if (i, j) not in fixed]
        for _ in range(500):
            picks = self.rng.choice(len(free), len(self.objects), replace=False)
            for o, p in zip(self.objects, picks):
                o.cell, o.on = free[int(p)], None
            if self._all_reachable():
                break
        else:
            raise RuntimeError("fastmap: no solvable re-placement of the objects")
        self.held = -1

    def _all_reachable(self) -> bool:
        """Every object and fixture cell has a 4-neighbour the agent can reach, and a free cell
        lies next to (8-neighbourhood) each fixture for put-near."""
        reach = self._reachable_cells()
        if len(reach) < 2:
            return False
        targets = [o.cell for o in self.objects] + list(self.bed_cells) + ([self.tray_cell] if self.tray_cell else [])
        for c in targets:
            if not any((c[0] + dx, c[1] + dy) in reach for dx, dy in HEADINGS):
                return False
        return True

    def _reachable_cells(self) -> set[tuple[int, int]]:
        seen = {self.agent}
        queue = deque([self.agent])
        while queue:
            x, y = queue.popleft()
            for dx, dy in HEADINGS:
                c = (x + dx, y + dy)
                if c not in seen and self._walkable(c):
                    seen.add(c)
                    queue.append(c)
        return seen

    # --- phases -------------------------------------------------------------------------------------------------
    def _begin_discovery(self) -> None:
        self.phase, self.phase_t = "discovery", 0
        self.discovery_budget = self.options.discovery_steps_per_object * len(self.objects)

    def _after_discovery(self) -> None:
        if self.held >= 0:
            self._drop_anywhere(self.held)
        if self.distractors_done < self.level.distractors:
            self._begin_distractor()
        else:
            self._begin_instruction()

    def _begin_distractor(self) -> None:
        self.phase, self.phase_t = "distractor", 0
        choices = [f for f in FIXTURES if not self._facing_fixture(f)]
        self.distractor_target = choices[int(self.rng.integers(len(choices)))]
        self._text = encode_text(["go", "to", "the", self.distractor_target])

    def _begin_instruction(self) -> None:
        self.phase, self.phase_t = "instruction", 0
        self._replace_objects()
        self._scene_dirty = True
        self.target = int(self.rng.integers(len(self.objects)))
        kind = self.level.instructions[int(self.rng.integers(len(self.level.instructions)))]
        fixture = None if kind == "lift" else FIXTURES[int(self.rng.integers(2))]
        self.instruction = (kind, fixture)
        name = self.objects[self.target].name
        if kind == "lift":
            words = ["lift", "the", name]
        else:
            words = ["put", "the", name, "on" if kind == "put_on" else "near", "the", fixture]
        self._text = encode_text(words)

    def _advance_phase(self) -> float:
        """Phase transitions after an action; returns the reward they pay."""
        if self.phase == "discovery":
            all_named = len(self.named) == len(self.objects) and self.held < 0
            if (self.options.discovery_ends_when_named and all_named) or self.phase_t >= self.discovery_budget:
                self._after_discovery()
            return 0.0
        if self.phase == "distractor":
            done = self._facing_fixture(self.distractor_target)
            if done or self.phase_t >= self.options.distractor_steps:
                self.distractors_done += 1
                self._after_discovery()
                return self.options.distractor_reward if done else 0.0
        return 0.0

    # --- lattice queries -------------------------------------------------------------------------------------------
    def front_cell(self) -> tuple[int, int]:
        dx, dy = HEADINGS[self.heading]
        return self.agent[0] + dx, self.agent[1] + dy

    def view_position(self, c) -> tuple[int, int]:
        """(row, col) of room cell `c` in the symbolic map (the agent at the centre, heading up)."""
        dx, dy = HEADINGS[self.heading]
        off = (c[0] - self.agent[0], c[1] - self.agent[1])
        forward, right = off[0] * dx + off[1] * dy, off[0] * dy - off[1] * dx
        return self.room - 1 - forward, self.room - 1 + right  # the map is (2R-1)^2 cells

    def _inside(self, c) -> bool:
        return 0 <= c[0] < self.room and 0 <= c[1] < self.room

    def _fixture_at(self, c) -> str | None:
        if c in self.bed_cells:
            return "bed"
        if self.tray_cell is not None and c == self.tray_cell:
            return "tray"
        return None

    def _fixture_cells(self, fixture: str) -> list[tuple[int, int]]:
        return list(self.bed_cells) if fixture == "bed" else [self.tray_cell]

    def _facing_fixture(self, fixture: str) -> bool:
        return self.front_cell() in self._fixture_cells(fixture)

    def object_at(self, c) -> int:
        for i, o in enumerate(self.objects):
            if o.cell == c and i != self.held:
                return i
        return -1

    def _walkable(self, c) -> bool:
        return self._inside(c) and self._fixture_at(c) is None and self.object_at(c) < 0

    def _put_spot(self, c) -> str | None:
        """Where a put into cell c lands: 'floor', a fixture name, or None (blocked)."""
        if not self._inside(c) or self.object_at(c) >= 0:
            return None
        return self._fixture_at(c) or "floor"

    def _put_satisfies(self, c) -> bool:
        kind, fixture = self.instruction
        cells = self._fixture_cells(fixture)
        if kind == "put_on":
            return c in cells
        return c not in cells and any(max(abs(c[0] - f[0]), abs(c[1] - f[1])) == 1 for f in cells)

    def _pick(self, i: int) -> None:
        self.held = i
        self.objects[i].cell, self.objects[i].on = None, None
        self._scene_dirty = True

    def _place(self, i: int, c, spot: str) -> None:
        self.objects[i].cell, self.objects[i].on = c, (None if spot == "floor" else spot)
        self.held = -1
        self._scene_dirty = True

    def _drop_anywhere(self, i: int) -> None:
        r = self.room
        free = [(x, y) for x in range(r) for y in range(r) if self._walkable((x, y)) and (x, y) != self.agent]
        self._place(i, free[int(self.rng.integers(len(free)))], "floor")

    # --- the scripted expert ---------------------------------------------------------------------------------------
    def oracle_action(self) -> int:
        """The expert's action: it reads the true names (and the instruction) and plans on the lattice."""
        if self.phase == "discovery":
            if self.held >= 0:
                return self._put_or_find_floor()  # the expert puts it back where it was
            goals = {o.cell for i, o in enumerate(self.objects) if i not in self.named}
            return self._approach(goals, "lift")
        if self.phase == "distractor":
            return self._approach(set(self._fixture_cells(self.distractor_target)), None)
        kind, fixture = self.instruction
        if self.held >= 0 and self.held != self.target:
            # Only after a learner's mistake under a put instruction: no put can succeed any more.
            return self._put_or_find_floor()
        if self.held != self.target:
            return self._approach({self.objects[self.target].cell}, "lift")
        r = self.room
        if kind == "put_on":
            goals = {c for c in self._fixture_cells(fixture) if self.object_at(c) < 0}
        else:
            goals = {(x, y) for x in range(r) for y in range(r) if self._walkable((x, y))}
            goals = {c for c in goals if self._put_satisfies(c)}
        return self._approach(goals, "put")

    def _put_or_find_floor(self) -> int:
        if self._put_spot(self.front_cell()) is not None:
            return FASTMAP_ACTIONS.index("put")
        return self._approach(self._free_floor(), "put")

    def _free_floor(self) -> set[tuple[int, int]]:
        r = self.room
        return {(x, y) for x in range(r) for y in range(r) if self._walkable((x, y))}

    def _approach(self, goals: set, final: str | None) -> int:
        """First action of a shortest (cell, heading) plan that ends facing a goal cell, then `final`."""
        start = (self.agent, self.heading)
        if self.front_cell() in goals:
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
                if nxt in parents or (act == "move_forward" and not self._walkable(nxt[0])):
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

    # --- observation -------------------------------------------------------------------------------------------------
    def _observe(self) -> dict[str, np.ndarray]:
        if self.phase == "discovery":
            if self.held >= 0:
                self._text = encode_text(["this", "is", "a", self.objects[self.held].name])
            else:
                self._text = np.zeros(TEXT_LENGTH, np.int64)
        obs = self._symbolic() if self.mode == "symbolic" else self._render()
        obs["text"] = self._text.copy()
        obs["holding"] = np.array([1.0 if self.held >= 0 else 0.0], np.float32)
        return obs

    def _symbolic(self) -> dict[str, np.ndarray]:
        """Egocentric tile map: (2R-1)^2 cells centred on the agent, heading up, `cell_pixels` px each."""
        v, px = self.view, self.options.cell_pixels
        img = np.empty((v, v, px, px, 3), np.uint8)
        img[:] = WALL_RGB
        dx, dy = HEADINGS[self.heading]
        rx, ry = dy, -dx  # the agent's right
        half = v // 2
        for row in range(v):
            fwd = half - row
            for col in range(v):
                right = col - half
                c = (self.agent[0] + fwd * dx + right * rx, self.agent[1] + fwd * dy + right * ry)
                if not self._inside(c):
                    continue
                tile = img[row, col]
                fixture = self._fixture_at(c)
                tile[:] = BED_RGB if fixture == "bed" else TRAY_RGB if fixture == "tray" else FLOOR_RGB
                if fixture == "tray":
                    tile[1:-1, 1:-1] = FLOOR_RGB
                i = self.object_at(c)
                if c == self.agent:
                    # A held object is drawn as it looks on the floor, so recalling how it looked
                    # when named is enough to find it again; an empty hand shows the agent's colour.
                    i = self.held
                    if i < 0:
                        tile[:] = AGENT_RGB
                if i >= 0:
                    o = self.objects[i]
                    tile[_glyph_mask(o.category, px)] = o.colour
        return {"rgb": np.ascontiguousarray(img.transpose(0, 2, 1, 3, 4).reshape(v * px, v * px, 3))}

    def _render(self) -> dict[str, np.ndarray]:
        if self.renderer is None:
            self._build_scene()
        if self._scene_dirty:
            self._pose_objects()
        pose = np.array([(self.agent[0] + 0.5) * CELL, (self.agent[1] + 0.5) * CELL, 0.0,
                         self.heading * math.pi / 2], np.float32)
        c = self.cfg
        cam = Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height,
                     tilt_deg=self.tilt * c.tilt_angle)
        out = self.renderer.render(pose[None], [cam], outputs=tuple(c.sensors))
        obs = {}
        if "rgb" in out:
            obs["rgb"] = out["rgb"][0, 0]
        if "depth" in out:
            obs["depth"] = out["depth"][0, 0][..., None]
        if "semantic" in out:
            obs["semantic"] = out["semantic"][0, 0].astype(np.int32)
        return obs

    def _build_scene(self) -> None:
        """Room + fixtures + objects as a SceneSpec built with the world layer's parts. Objects are
        stored at the origin and posed with `set_object_pose`; fixtures are posed per layout, so the
        renderer is rebuilt when the layout changes (once per episode)."""
        side = self.room * CELL
        items: list[Item] = []
        if self.level.fixtures:
            (b0, b1) = self.bed_cells
            along_x = b0[1] == b1[1]
            centre = [(b0[0] + b1[0] + 1) / 2 * CELL, (b0[1] + b1[1] + 1) / 2 * CELL, 0.0]
            bed_size = [2 * CELL * 0.92, CELL * 0.92, 0.45] if along_x else [CELL * 0.92, 2 * CELL * 0.92, 0.45]
            items.append(Item(1, "furniture", "bed", self.bed_exemplar, centre, 0.0, bed_size, [0.6, 0.2, 0.25], 0))
            tx, ty = self.tray_cell
            items.append(Item(2, "furniture", TRAY_CATEGORY, self.tray_exemplar, [(tx + 0.5) * CELL, (ty + 0.5) * CELL, 0.0],
                              0.0, [CELL * 0.7, CELL * 0.7, 0.12], [0.2, 0.35, 0.7], 0))
        for k, o in enumerate(self.objects):
            ex = build_exemplar(o.category, o.exemplar)
            scale = self.options.object_extent / max(ex.size)
            items.append(Item(10 + k, "object", o.category, o.exemplar, [0.0, 0.0, 0.0], 0.0,
                              [s * scale for s in ex.size], list(ex.color), 0))
        walls = [Wall([0, 0], [side, 0], 0.1, 1.5), Wall([side, 0], [side, side], 0.1, 1.5),
                 Wall([side, side], [0, side], 0.1, 1.5), Wall([0, side], [0, 0], 0.1, 1.5)]
        spec = SceneSpec(seed=0, name="fastmap_room", wall_height=1.5,
                         rooms=[Room(0, "bedroom", [[0, 0], [side, 0], [side, side], [0, side]])], walls=walls, items=items)
        self.fixture_spec = spec
        self.renderer = RaycastRenderer(build_geometry(spec), nthreads=_render_threads(), max_depth=self.cfg.max_depth,
                                        bake_movables=False)
        self._scene_dirty = True

    def _pose_objects(self) -> None:
        heights = {"bed": 0.45, "tray": 0.12}
        for k, o in enumerate(self.objects):
            tf = np.eye(4)
            if k == self.held:
                # In the hand: in front of and below the camera, in view at the default tilt.
                dx, dy = HEADINGS[self.heading]
                tf[:3, 3] = [(self.agent[0] + 0.5) * CELL + HOLD_DISTANCE * dx,
                             (self.agent[1] + 0.5) * CELL + HOLD_DISTANCE * dy,
                             self.cfg.camera_height - HOLD_DROP]
            else:
                tf[:3, 3] = [(o.cell[0] + 0.5) * CELL, (o.cell[1] + 0.5) * CELL, heights.get(o.on, 0.0)]
            self.renderer.set_object_pose(10 + k, tf)
        self._scene_dirty = False

    # --- misc -------------------------------------------------------------------------------------------------------------
    def _action_name(self, action) -> str:
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

    def _info(self) -> dict:
        return {"success": float(self.success), "chance": 1.0 / len(self.objects),
                "phase": float(("discovery", "distractor", "instruction").index(self.phase)),
                "named": float(len(self.named)), "distractors_done": float(self.distractors_done),
                "episode_in_block": float(self.episode_in_block)}

    def text_string(self) -> str:
        return decode_text(self._text)

    # --- words for viewers (recordings); the task does not use them ----------------------------------
    action_names: tuple[str, ...] = FASTMAP_ACTIONS

    @property
    def classes(self) -> tuple[str, ...]:
        return semantic_classes()

    def observation_text(self, obs: dict) -> str:
        """The text channel of `obs` in words ("" while there is none)."""
        return decode_text(obs["text"])


def _render_threads() -> int:
    import os

    return int(os.environ.get("EMBODIED_RENDER_THREADS", "0"))


_GLYPH_CACHE: dict[tuple[str, int], np.ndarray] = {}


def _glyph_mask(category: str, px: int) -> np.ndarray:
    """A category's 3x3 glyph resampled to a px x px tile."""
    key = (category, px)
    if key not in _GLYPH_CACHE:
        idx = (np.arange(px) * 3) // px
        _GLYPH_CACHE[key] = GLYPHS[category][np.ix_(idx, idx)]
    return _GLYPH_CACHE[key]


# --- the 29 levels ---------------------------------------------------------------------------------------------------
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


def level_max_steps(level: FastMapLevel, options: FastMapOptions | None = None) -> int:
    """Steps an episode of `level` can take at most (sum of its phase budgets)."""
    o = options or FastMapOptions()
    disc = o.discovery_steps_per_object * level.num_objects if level.discovery else 0
    return disc + level.distractors * o.distractor_steps + o.instruction_steps


for _name, _level in LEVELS.items():
    _cls = type("FastMap_" + _name.replace("/", "__"), (FastMapEnv,), {"level": _level.validate()})
    register_task(f"fastmap/{_name}")(_cls)

__all__ = ["FASTMAP_ACTIONS", "FastMapEnv", "FastMapLevel", "FastMapOptions", "LEVELS", "VOCABULARY",
           "decode_text", "encode_text", "level_max_steps", "object_in_split", "sample_objects"]
