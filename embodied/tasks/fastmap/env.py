"""The fast-mapping env: composes the level spec, the object pools, the lattice layout, the phase
machine, the oracle and the observation renderers (symbolic map or room)."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from embodied.tasks.config import FastMapConfig
from embodied.tasks.fastmap import oracle
from embodied.tasks.fastmap.layout import FastMapObject, Lattice
from embodied.tasks.fastmap.objects import draw_from_set, global_set, sample_objects
from embodied.tasks.fastmap.phases import FastMapPhases
from embodied.tasks.fastmap.render import RoomView, glyph_mask, object_symbol_colour, symbolic_map
from embodied.tasks.fastmap.spec import FASTMAP_ACTIONS, PHASES, FastMapLevel, action_name, level_max_steps
from embodied.tasks.fastmap.text import NONSENSE_WORDS, TEXT_LENGTH, VOCABULARY, decode_text
from embodied.tasks.registry import TaskEnv
from embodied.world import semantic_classes


def _part_field(part: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, part), name), doc=f"`{part}.{name}`.")


class FastMapEnv(TaskEnv):
    """One fast-mapping level; `level` is set by the registered subclass."""

    metadata = {"render_modes": ["rgb_array"]}
    config_class = FastMapConfig
    level: FastMapLevel = FastMapLevel()

    def __init__(self, cfg: FastMapConfig | None = None):
        self.cfg = cfg = FastMapConfig.from_any(cfg if cfg is not None else {"name": self.task_name})
        self.level = self.level.validate()
        self.mode = cfg.scenes
        # A hard cap: by default the sum of the level's phase budgets, which end every episode first.
        self.max_episode_steps = cfg.max_steps or level_max_steps(self.level, cfg)
        self.room = cfg.room_cells
        if self.level.global_set:
            self.global_objects = global_set(self.level.object_split, self.level.global_set)
        else:
            self.global_objects = None
        self.names_pool = NONSENSE_WORDS[: self.cfg.vocab_size]
        obs = {}
        if self.mode == "symbolic":
            self.view = 2 * self.room - 1
            side = self.view * self.cfg.cell_pixels
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
        self.lattice = Lattice(self.room, self.level.fixtures)
        self.phases = FastMapPhases(self.level, cfg)
        self.room_view = RoomView(cfg)

    # --- gymnasium API -------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self._block_left = 0
        if self._block_left == 0:
            self.lattice = Lattice(self.room, self.level.fixtures, self._new_objects())
            self._block_left = self.level.episodes_per_names
            self.episode_in_block = 0
        else:
            self.episode_in_block += 1
        self._block_left -= 1
        self.lattice.held = -1
        self.lattice.draw(self.rng)
        self.room_view.reset()  # fixtures moved: the static scene is rebuilt at the next render
        self.t = 0
        self.tilt = -1  # in tilt steps: start looking one step down, at the floor in front
        self.phases.begin(self.lattice, self.rng, discovery=self.level.discovery and self.episode_in_block == 0)
        return self._observe(), self._info()

    def _step(self, action):
        name = action_name(action)
        lattice, phases = self.lattice, self.phases
        reward, terminated = 0.0, False
        self.t += 1
        phases.tick()
        front = lattice.front_cell()
        if name in ("move_forward", "move_backward"):
            lattice.move(1 if name == "move_forward" else -1)
        elif name in ("turn_left", "turn_right"):
            lattice.turn(1 if name == "turn_left" else -1)
        elif name == "look_up":
            self.tilt = min(self.tilt + 1, 2)
        elif name == "look_down":
            self.tilt = max(self.tilt - 1, -2)
        elif name == "lift":
            i = lattice.object_at(front)
            if lattice.held < 0 and i >= 0:
                lattice.pick(i)
                shaping, terminated = phases.lifted(i)
                reward += shaping
        elif name == "put" and lattice.held >= 0:
            i = lattice.held
            spot = lattice.put_spot(front)
            if spot is not None:
                lattice.place(i, front, spot)
                terminated = phases.put(lattice, i, front)
        if terminated:
            reward += self.cfg.success_reward * phases.success
        else:
            reward += phases.advance(lattice, self.rng)
        reward += self.cfg.slack_reward
        truncated = not terminated and (phases.out_of_time() or self.t >= self.max_episode_steps)
        return self._observe(), float(reward), terminated, truncated, self._info()

    def render(self):
        return self._observe()["rgb"] if "rgb" in self.observation_space.spaces else None

    def _new_objects(self) -> list[FastMapObject]:
        """A block's objects and their names (and the fixtures' exemplars)."""
        lv = self.level
        if self.global_objects is not None:
            chosen = draw_from_set(self.rng, self.global_objects, lv.num_objects)
        else:
            chosen = sample_objects(self.rng, lv.object_split, lv.num_objects)
        if lv.naming == "fast":
            names = [self.names_pool[int(i)] for i in self.rng.choice(len(self.names_pool), lv.num_objects, replace=False)]
        else:
            names = [c for c, _ in chosen]
        self.bed_exemplar = int(self.rng.integers(0, 100_000))
        self.tray_exemplar = int(self.rng.integers(0, 100_000))
        return [FastMapObject(c, e, nm, object_symbol_colour(c, e)) for (c, e), nm in zip(chosen, names)]

    # --- the parts' state, read as the env's own -----------------------------------------------------------
    objects = _part_field("lattice", "objects")
    held = _part_field("lattice", "held")
    agent = _part_field("lattice", "agent")
    heading = _part_field("lattice", "heading")
    bed_cells = _part_field("lattice", "bed_cells")
    tray_cell = _part_field("lattice", "tray_cell")
    phase = _part_field("phases", "phase")
    phase_t = _part_field("phases", "phase_t")
    named = _part_field("phases", "named")
    success = _part_field("phases", "success")
    distractors_done = _part_field("phases", "distractors_done")
    distractor_target = _part_field("phases", "distractor_target")
    target = _part_field("phases", "target")
    instruction = _part_field("phases", "instruction")

    def front_cell(self) -> tuple[int, int]:
        return self.lattice.front_cell()

    def view_position(self, c) -> tuple[int, int]:
        """(row, col) of room cell `c` in the symbolic map (the agent at the centre, heading up)."""
        return self.lattice.view_position(c)

    def object_at(self, c) -> int:
        return self.lattice.object_at(c)

    def _fixture_cells(self, fixture: str) -> list[tuple[int, int]]:
        return self.lattice.fixture_cells(fixture)

    def _approach(self, goals: set, final: str | None) -> int:
        return oracle.approach(self.lattice, goals, final)

    # --- the scripted expert ---------------------------------------------------------------------------------------
    def oracle_action(self) -> int:
        """The expert's action: it reads the true names (and the instruction) and plans on the lattice."""
        return oracle.expert_action(self.lattice, self.phases)

    def labels(self) -> dict[str, np.ndarray]:
        """Privileged labels of the current observation for imitation (never an observation):
        `target_look`, the instructed object's tile as the symbolic map draws it (glyph in its colour
        on black), flat [cell_pixels * cell_pixels * 3] in [0, 1]; all zero outside the instruction phase."""
        px = self.cfg.cell_pixels
        tile = np.zeros((px, px, 3), np.float32)
        if self.phase == "instruction":
            target = self.objects[self.target]
            tile[glyph_mask(target.category, px)] = np.asarray(target.colour, np.float32) / 255.0
        return {"target_look": tile.reshape(-1)}

    # --- observation -------------------------------------------------------------------------------------------------
    def _observe(self) -> dict[str, np.ndarray]:
        text = self.phases.observe_text(self.lattice)
        if self.mode == "symbolic":
            obs = {"rgb": symbolic_map(self.lattice, self.cfg.cell_pixels)}
        else:
            obs = self.room_view.render(self.lattice, self.tilt, self.bed_exemplar, self.tray_exemplar)
        obs["text"] = text
        obs["holding"] = np.array([1.0 if self.lattice.held >= 0 else 0.0], np.float32)
        return obs

    def _info(self) -> dict:
        return {"success": float(self.phases.success), "chance": 1.0 / len(self.objects),
                "phase": float(PHASES.index(self.phase)), "named": float(len(self.named)),
                "distractors_done": float(self.distractors_done), "episode_in_block": float(self.episode_in_block)}

    def text_string(self) -> str:
        return decode_text(self.phases.text)

    # --- words for viewers (recordings); the task does not use them ----------------------------------
    action_names: tuple[str, ...] = FASTMAP_ACTIONS

    @property
    def classes(self) -> tuple[str, ...]:
        return semantic_classes()

    def observation_text(self, obs: dict) -> str:
        """The text channel of `obs` in words ("" while there is none)."""
        return decode_text(obs["text"])
