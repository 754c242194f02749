"""Ballet (HCAM's memory task, Lampinen et al. 2021), symbolic version: `ballet/{2,4,8}_delay{16,48}`.

Layout as in the released pycolab Ballet (`pycolab_ballet/ballet_environment_core.py`): an 11x11
room with walls, 8 dancer slots around the agent at the centre; N dancers (distinct colours) each
perform one of 13 16-step dances, one after another, separated by `delay` empty steps; during the
show the instruction is "watch". Then the instruction names one of the performed dances and the
agent must pick the dancer that performed it: reward +1 for the right dancer, 0 for a wrong one
(either ends the episode); chance = 1/N.

Simplifications (documented, not hidden):
- Observation: `semantic` [11, 11] int grid (0 floor, 1 wall, 2 + colour for a dancer at its
  current cell) of the whole room, plus `text` [1] (token 1 = "watch", 2 + d = dance d). With
  `task.rgb: true` it also holds `rgb` [height, width, 3]: the room built as 3D geometry
  (floor, walls, dancers as coloured blocks on 0.5 m cells) and ray cast by the project's renderer
  from a camera above the room centre looking down. The original renders an egocentric 99x99 RGB
  crop of a 2D sprite world; ours sees the whole room (the agent does not walk here).
- Acting is one choice instead of walking: action 0 waits (the only sensible action during the
  show; actions are ignored then), action 1 + s picks the dancer in slot s (an empty slot is
  wrong). After the show the agent has `ANSWER_STEPS` steps to choose, else reward 0. HCAM's
  agent walks to the dancer with 8 moves; here navigation is removed so the task measures memory.
- The dance shapes are reconstructed from their names (the released table was not copied), 16
  steps each, all distinct as sequences.
Randomisations (what the seed draws, in this order): each dancer's slot, dance and colour (all
distinct), and which dancer's dance is asked.
Success: the first non-wait action after the show picks the asked dancer's slot (reward 1, success
1); a wrong pick ends the episode with 0; `ANSWER_STEPS` steps without a pick truncate it with 0.
The show/question phases and the answer step are embodied.tasks.answer.ShowThenAsk, shared with
Room Ballet.
`oracle_action()` is the scripted expert: it reads the ground truth; `labels()` gives imitation its
privileged per-step labels.
Viewer protocol (words for recordings; no effect on the task): `action_names`, `classes` (names of
the semantic grid's ids) and `observation_text(obs)` ("watch" / "go to the dancer that did <dance>").
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from embodied.tasks.answer import ShowThenAsk, checked_action
from embodied.tasks.config import BalletConfig
from embodied.tasks.registry import TaskEnv, register_task

ROOM = 11
SLOTS = ((2, 2), (2, 5), (2, 8), (5, 2), (5, 8), (8, 2), (8, 5), (8, 8))
DANCE_STEPS = 16
ANSWER_STEPS = 4
NUM_COLOURS = 8
CELL = 0.5  # metres per grid cell in the rendered room
# Distinct dancer colours (rgb in [0, 1]); index = colour id of the semantic grid minus 2.
COLOUR_RGB = ((0.9, 0.1, 0.1), (0.1, 0.7, 0.1), (0.15, 0.3, 0.95), (0.95, 0.85, 0.1),
              (0.85, 0.2, 0.85), (0.1, 0.85, 0.85), (0.95, 0.5, 0.1), (0.55, 0.35, 0.2))
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "brown")  # of COLOUR_RGB


def _repeat(cycle: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((cycle * (DANCE_STEPS // len(cycle) + 1))[:DANCE_STEPS])


_RING = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]
DANCES: dict[str, tuple[tuple[int, int], ...]] = {
    "circle_cw": _repeat(_RING),
    "circle_ccw": _repeat(_RING[::-1]),
    "up_and_down": _repeat([(0, 1), (0, 0), (0, -1), (0, 0)]),
    "left_and_right": _repeat([(1, 0), (0, 0), (-1, 0), (0, 0)]),
    "diagonal_uldr": _repeat([(-1, 1), (0, 0), (1, -1), (0, 0)]),
    "diagonal_urdl": _repeat([(1, 1), (0, 0), (-1, -1), (0, 0)]),
    "plus_cw": _repeat([(0, 1), (0, 0), (1, 0), (0, 0), (0, -1), (0, 0), (-1, 0), (0, 0)]),
    "plus_ccw": _repeat([(0, 1), (0, 0), (-1, 0), (0, 0), (0, -1), (0, 0), (1, 0), (0, 0)]),
    "times_cw": _repeat([(1, 1), (0, 0), (1, -1), (0, 0), (-1, -1), (0, 0), (-1, 1), (0, 0)]),
    "times_ccw": _repeat([(-1, 1), (0, 0), (-1, -1), (0, 0), (1, -1), (0, 0), (1, 1), (0, 0)]),
    "zee": _repeat([(-1, 1), (0, 1), (1, 1), (0, 0), (-1, -1), (0, -1), (1, -1), (0, 0)]),
    "chevron_down": _repeat([(-1, 1), (0, 0), (0, -1), (0, 0), (1, 1), (0, 0)]),
    "chevron_up": _repeat([(-1, -1), (0, 0), (0, 1), (0, 0), (1, -1), (0, 0)]),
}
DANCE_NAMES = tuple(DANCES)


class BalletEnv(TaskEnv):
    """One Ballet level; `num_dancers` and `delay` are set by the registered subclass."""

    metadata = {"render_modes": []}
    config_class = BalletConfig
    num_dancers: int = 4
    delay: int = 16

    def __init__(self, cfg: BalletConfig | None = None):
        self.cfg = cfg = BalletConfig.from_any(cfg if cfg is not None else {"name": self.task_name})
        self.show_steps = self.num_dancers * (DANCE_STEPS + self.delay)
        self.phases = ShowThenAsk(self.show_steps, ANSWER_STEPS)
        self.max_episode_steps = self.phases.max_steps
        spaces_ = {
            "semantic": spaces.Box(0, 1 + NUM_COLOURS, (ROOM, ROOM), dtype=np.int64),
            "text": spaces.Box(0, 1 + len(DANCES), (1,), dtype=np.int64),
        }
        self.renderer = None
        if cfg.rgb:
            width, height = cfg.width, cfg.height
            self.renderer, self.camera = _room_renderer(width, height)
            self._placed: dict[int, tuple[int, int] | None] = dict.fromkeys(range(NUM_COLOURS))  # colour -> posed cell (None: hidden)
            spaces_["rgb"] = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(spaces_)
        self.action_space = spaces.Discrete(1 + len(SLOTS))
        self._rng = np.random.default_rng()
        self._t = 0

    # --- episode ---------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.slots = rng.choice(len(SLOTS), self.num_dancers, replace=False)  # slot of dancer i
        self.dances = rng.choice(len(DANCES), self.num_dancers, replace=False)  # dance of dancer i
        self.colours = rng.choice(NUM_COLOURS, self.num_dancers, replace=False)
        self.target = int(rng.integers(self.num_dancers))  # the dancer whose dance is asked
        self._t = 0
        return self._observation(), self._info(success=0.0)

    def _step(self, action):
        action = checked_action(action, self.action_space)
        reward, terminated, truncated = self.phases.step(self._t, action, self.answer)
        self._t += 1
        return self._observation(), reward, terminated, truncated, self._info(success=reward)

    def oracle_action(self) -> int:
        """The expert: wait through the show, then pick the slot of the instructed dancer."""
        return self.phases.expert(self._t, self.answer)

    @property
    def answer(self) -> int:
        """The right answer: the action that picks the slot of the instructed dancer."""
        return 1 + int(self.slots[self.target])

    def labels(self) -> dict[str, np.ndarray]:
        """Privileged labels of the current observation (for imitation's probes and losses, never an
        observation): `dance`/`slot` of the dancer dancing now (-1 between dances and after the show),
        and at answer steps every question the step could ask, `counterfactual/obs/text` [N, 1], with
        the expert's answer to each, `counterfactual/action` [N] (-1 during the show)."""
        dancer, phase = divmod(self._t, DANCE_STEPS + self.delay)
        dancing = self._t < self.show_steps and phase < DANCE_STEPS
        answering = self._t >= self.show_steps
        return {"dance": np.int64(self.dances[dancer] if dancing else -1),
                "slot": np.int64(self.slots[dancer] if dancing else -1),
                "counterfactual/obs/text": (2 + np.asarray(self.dances, np.int64))[:, None],
                "counterfactual/action": np.where(answering, 1 + np.asarray(self.slots, np.int64), -1)}

    @property
    def instructed_dance(self) -> int:
        return int(self.dances[self.target])

    # --- words for viewers (recordings); the task does not use them --------------------------------
    action_names: tuple[str, ...] = ("wait",) + tuple(f"pick slot {s}" for s in range(len(SLOTS)))
    classes: tuple[str, ...] = ("floor", "wall") + tuple(f"{c} dancer" for c in COLOUR_NAMES)

    def observation_text(self, obs: dict) -> str:
        """The text channel of `obs` in words."""
        token = int(np.asarray(obs["text"]).reshape(-1)[0])
        if token == 1:
            return "watch"
        if 2 <= token < 2 + len(DANCE_NAMES):
            return f"go to the dancer that did {DANCE_NAMES[token - 2]}"
        raise ValueError(f"ballet text token {token}; allowed: 1 (watch) or 2..{1 + len(DANCE_NAMES)} (a dance)")

    # --- observation -----------------------------------------------------------------------------
    def dancer_offsets(self, t: int) -> np.ndarray:
        """[N, 2] (row, col) offset of each dancer from its slot at step t."""
        offsets = np.zeros((self.num_dancers, 2), dtype=np.int64)
        period = DANCE_STEPS + self.delay
        dancer, phase = divmod(t, period)
        if t < self.show_steps and phase < DANCE_STEPS:
            dx, dy = DANCES[DANCE_NAMES[self.dances[dancer]]][phase]
            offsets[dancer] = (-dy, dx)  # up = one row up
        return offsets

    def _observation(self) -> dict[str, np.ndarray]:
        grid = np.zeros((ROOM, ROOM), dtype=np.int64)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = 1
        offsets = self.dancer_offsets(self._t)
        for i in range(self.num_dancers):
            row, col = np.asarray(SLOTS[self.slots[i]]) + offsets[i]
            grid[row, col] = 2 + self.colours[i]
        token = 1 if self._t < self.show_steps else 2 + self.instructed_dance
        obs = {"semantic": grid, "text": np.array([token], dtype=np.int64)}
        if self.renderer is not None:
            obs["rgb"] = self._render(grid)
        return obs

    def _render(self, grid: np.ndarray) -> np.ndarray:
        """The room seen from above; dancer blocks are moved to their cells (no static rebuild). Only
        blocks whose cell changed are posed: any pose change rebuilds the small dynamic scene."""
        cells = {int(grid[r, c]) - 2: (int(r), int(c)) for r, c in zip(*np.nonzero(grid >= 2))}
        for colour in range(NUM_COLOURS):
            cell = cells.get(colour)
            if self._placed.get(colour) == cell:
                continue
            tf = None
            if cell is not None:
                tf = np.eye(4)
                tf[:3, 3] = _cell_centre(*cell)
            self.renderer.set_object_pose(1 + colour, tf)
            self._placed[colour] = cell
        centre = ROOM * CELL / 2
        # Facing north (+y) and looking down: image rows follow grid rows, image columns grid columns.
        return self.renderer.render_one((centre, centre, 0.0, np.pi / 2), self.camera, outputs=("rgb",))["rgb"]

    def _info(self, success: float) -> dict:
        return {"success": float(success), "chance": 1.0 / self.num_dancers, "show_steps": self.show_steps}


def _cell_centre(row: int, col: int) -> np.ndarray:
    """World (x, y, 0) of a grid cell: column -> x, row 0 is the north (largest y) wall."""
    return np.array([(col + 0.5) * CELL, (ROOM - row - 0.5) * CELL, 0.0])


def _room_renderer(width: int, height: int):
    """Renderer of the Ballet room (floor, wall ring, one movable block per dancer colour, hidden
    until placed) and the top-down camera that sees all of it."""
    import trimesh

    from embodied.render import Camera, RaycastRenderer
    from embodied.world.geometry import MeshPart, SceneGeometry

    def box(name, size, centre, colour, semantic, instance=0, movable=False):
        mesh = trimesh.creation.box(extents=size)
        mesh.apply_translation(centre)
        return MeshPart(name, np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), colour,
                        semantic, instance, movable)

    side = ROOM * CELL
    parts = [box("floor", (side, side, 0.1), (side / 2, side / 2, -0.05), (0.75, 0.75, 0.72), 1)]
    for row in range(ROOM):
        for col in range(ROOM):
            if row in (0, ROOM - 1) or col in (0, ROOM - 1):
                parts.append(box(f"wall_{row}_{col}", (CELL, CELL, 0.6), _cell_centre(row, col) + (0, 0, 0.3),
                                 (0.35, 0.35, 0.4), 2))
    for colour, rgb in enumerate(COLOUR_RGB):
        # Centred on the origin: the renderer places it with set_object_pose.
        parts.append(box(f"dancer_{colour}", (0.8 * CELL, 0.8 * CELL, 0.5), (0, 0, 0.25), rgb, 3,
                         instance=1 + colour, movable=True))
    geometry = SceneGeometry(parts, semantic_classes=["nothing", "floor", "wall", "dancer"])
    renderer = RaycastRenderer(geometry, nthreads=1, bake_movables=False)
    for colour in range(NUM_COLOURS):
        renderer.set_object_pose(1 + colour, None)
    # Straight down from 3.3 m with a 90 degree fov sees the 5.5 m room with a margin.
    camera = Camera(width=width, height=height, hfov_deg=90.0, mount_height=3.3, tilt_deg=-89.0)
    return renderer, camera


LEVELS = {f"{n}_delay{d}": (n, d) for d in (16, 48) for n in (2, 4, 8)}
for _level, (_n, _d) in LEVELS.items():
    register_task(f"ballet/{_level}")(type(f"Ballet{_n}Delay{_d}", (BalletEnv,), {"num_dancers": _n, "delay": _d}))
