"""The Room Ballet env: composes the level spec, the layout, the apartment world, the show-then-ask
phase machine (embodied.tasks.answer), the oracle and the observation renderer."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from embodied.tasks.answer import ShowThenAsk, checked_action
from embodied.tasks.ballet import DANCE_NAMES
from embodied.tasks.config import RoomBalletConfig
from embodied.tasks.registry import TaskEnv
from embodied.tasks.room_ballet import oracle, render
from embodied.tasks.room_ballet.apartment import DEFAULT_APARTMENTS, ApartmentPool, ApartmentStage
from embodied.tasks.room_ballet.layout import Layout, plan_walk, room_neighbours, sample_layout
from embodied.tasks.room_ballet.spec import ANSWER_STEPS, MULTI_TYPES, NUM_DANCES, RoomBalletLevel
from embodied.world.apartment import MAX_ROOMS as APARTMENT_MAX_ROOMS


def _layout_field(name: str) -> property:
    return property(lambda self: getattr(self.layout, name), doc=f"The episode's `Layout.{name}`.")


class RoomBalletEnv(TaskEnv):
    """One Room Ballet level; `level` is set by the registered subclass."""

    metadata = {"render_modes": []}
    config_class = RoomBalletConfig
    result_groups = ("question_type",)
    level: RoomBalletLevel = RoomBalletLevel()

    def __init__(self, cfg: RoomBalletConfig | None = None):
        self.cfg = cfg = RoomBalletConfig.from_any(cfg if cfg is not None else {"name": self.task_name})
        level = self.level
        self.mode, self.obs_mode, self.num_rooms = level.mode, level.obs_mode, level.num_rooms
        self.walk_steps, self.segment_steps = level.walk_length, level.segment_steps
        self.memory_budget = level.memory_budget
        self.world = cfg.world
        self.rgb = cfg.rgb if cfg.rgb is not None else self.world == "apartment"
        self.apartments = cfg.apartments or DEFAULT_APARTMENTS
        if self.world == "apartment" and self.num_rooms > APARTMENT_MAX_ROOMS:
            raise ValueError(f"room_ballet: {self.num_rooms} rooms; an apartment has at most {APARTMENT_MAX_ROOMS}")
        level.validate()
        self.phases = ShowThenAsk(self.walk_steps, ANSWER_STEPS)
        self.max_episode_steps = self.phases.max_steps
        obs = {"text": spaces.Box(0, render.VOCAB - 1, (render.TEXT_LENGTH,), dtype=np.int64),
               "place": spaces.Box(0, self.num_rooms - 1, (1,), dtype=np.int64)}
        if self.mode == "multi":  # the question type as a task id (SAT's AMA chooses a write strategy from it)
            obs["task"] = spaces.Box(0, len(MULTI_TYPES) - 1, (1,), dtype=np.int64)
        if self.obs_mode == "grid":
            obs["semantic"] = spaces.Box(0, render.NUM_CLASSES - 1, (render.ROOM_GRID, render.ROOM_GRID), dtype=np.int64)
        if self.rgb:
            from embodied.render import Camera

            self.camera = Camera(width=cfg.width, height=cfg.height, hfov_deg=cfg.hfov, mount_height=cfg.camera_height)
            obs["rgb"] = spaces.Box(0, 255, (cfg.height, cfg.width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(1 + NUM_DANCES + self.num_rooms)
        self._rng = np.random.default_rng()
        self._pool = ApartmentPool(self.num_rooms, cfg.agent_radius, cfg.agent_height, self.rgb, cfg.scene_cache)
        self.stage: ApartmentStage | None = None
        self.layout: Layout | None = None
        self._t = 0

    def _neighbours(self, room: int) -> list[int]:
        if self.stage is not None:
            return self.stage.neighbours[room]
        return room_neighbours(room, self.level.rooms_wide, self.level.rooms_high)

    # --- episode ---------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.world == "apartment":
            self.stage = self._pool[int(self._rng.integers(self.apartments))]
        self.layout = sample_layout(self.level, self._rng, self._neighbours)
        if self.rgb:
            self.poses, self.trajectory = plan_walk(self.stage, self.layout.places)
        self._t = 0
        return self._observation(), self._info(success=0.0)

    def _step(self, action):
        action = checked_action(action, self.action_space)
        reward, terminated, truncated = self.phases.step(self._t, action, self.layout.answer)
        self._t += 1
        return self._observation(), reward, terminated, truncated, self._info(success=reward)

    def oracle_action(self) -> int:
        """The expert: wait through the walk, then give the true answer."""
        return oracle.expert_action(self.layout, self.phases, self._t)

    def labels(self) -> dict[str, np.ndarray]:
        """Privileged labels of the current observation (for imitation's losses, never an
        observation): every question the episode's type could ask (`oracle.askable`), each as the
        question step's text `counterfactual/obs/text` [K, TEXT_LENGTH], the expert's answer
        `counterfactual/action` [K] (-1 during the walk and for padding) and whether it is the
        question actually asked, `counterfactual/asked` [K]. K: the rooms (budget) or the
        dancers (multi) of the level."""
        size = self.num_rooms if self.mode == "budget" else self.level.segments
        text = np.zeros((size, render.TEXT_LENGTH), dtype=np.int64)
        action = np.full(size, -1, dtype=np.int64)
        asked = np.zeros(size, dtype=bool)
        question = render.text_tokens(self.layout, self.walk_steps, self.walk_steps, False)
        for i, (kind_value, answer) in enumerate(oracle.askable(self.layout, self.mode)):
            text[i] = question
            text[i, 1:3] = render.question_tokens(*kind_value)
            action[i] = answer if self._t >= self.walk_steps else -1
            asked[i] = tuple(kind_value) == (self.layout.question[0], int(self.layout.question[1]))
        return {"counterfactual/obs/text": text, "counterfactual/action": action, "counterfactual/asked": asked}

    # The episode's layout, read as the env's own attributes.
    task_type = _layout_field("task_type")
    places = _layout_field("places")
    phase = _layout_field("phase")
    step_colour = _layout_field("step_colour")
    step_dance = _layout_field("step_dance")
    question = _layout_field("question")
    answer = _layout_field("answer")
    answer_steps = _layout_field("answer_steps")
    room_dance = _layout_field("room_dance")
    room_colour = _layout_field("room_colour")
    segment_room = _layout_field("segment_room")
    segment_colour = _layout_field("segment_colour")
    segment_dance = _layout_field("segment_dance")
    target_segment = _layout_field("target_segment")

    def dancer_position(self, t: int) -> np.ndarray:
        """World xy of the dancer shown at walk step t (apartment world)."""
        return render.dancer_position(self.stage, self.layout, t)

    # --- words for viewers (recordings); the task does not use them --------------------------------
    classes: tuple[str, ...] = render.CLASSES

    @property
    def action_names(self) -> tuple[str, ...]:
        return (("wait",) + tuple(f"answer dance {name}" for name in DANCE_NAMES)
                + tuple(f"answer room {r}" for r in range(self.num_rooms)))

    def observation_text(self, obs: dict) -> str:
        """The text channel of `obs` in words."""
        return render.describe_text(obs["text"])

    # --- what a memory of the level's budget can answer ------------------------------------------
    def question_places(self) -> np.ndarray:
        """Place of every step up to and including the first question step (what a memory writes)."""
        return oracle.question_places(self.layout)

    def answer_kept(self, strategy: str, capacity: int | None = None) -> bool:
        """Whether a memory of `capacity` tokens (default: the level's budget) under `strategy`
        still holds a step that shows the answer when the question is first asked."""
        return oracle.answer_kept(self.layout, strategy, capacity or self.memory_budget)

    # --- observation -----------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        t = min(self._t, self.walk_steps)
        place = int(self.layout.places[min(t, self.walk_steps - 1)])
        text = render.text_tokens(self.layout, t, self.walk_steps, self.obs_mode == "tokens" and not self.rgb)
        obs = {"text": text, "place": np.array([place], dtype=np.int64)}
        if self.mode == "multi":
            obs["task"] = np.array([MULTI_TYPES.index(self.layout.task_type)], dtype=np.int64)
        if self.obs_mode == "grid":
            obs["semantic"] = render.grid_view(self.layout, t, self.walk_steps, place)
        if self.rgb:
            obs["rgb"] = render.apartment_frame(self.stage, self.layout, self.poses, t, self.camera)
        return obs

    def _info(self, success: float) -> dict:
        chance = 1.0 / (self.num_rooms if self.layout.question[0] == "dance" else NUM_DANCES)
        info = {"success": float(success), "chance": chance, "walk_steps": self.walk_steps,
                "memory_budget": self.memory_budget, "question_type": self.layout.task_type}
        if self.stage is not None:
            info["scene"] = self.stage.spec.name
        return info
