"""nav/goat: lifelong multi-modal navigation to object instances (GOAT-Bench; 3D-Mem's benchmark).

An episode is `num_goals` goals in one procedural apartment, given one after another; the agent's
pose carries over from goal to goal. Each goal is one object instance, given as one of three
modalities (`MODALITIES`):

* category - an object category (`goal_category`); `stop` near ANY instance of it succeeds;
* description - "the red mug on the table in the kitchen" as word ids (`goal_text`, see `encode`,
  `decode`, `describe`); only THAT instance counts;
* image - a render of the instance from a navigable viewpoint about `image_distance` from it,
  tilted so the instance is at the image's centre (`goal_image` rgb and `goal_semantic` classes;
  never its instance ids); only that instance counts.

Randomisations (drawn from the episode's rng, in this order): the scene; a permutation of the
scene's objects, from which the first `num_goals` reachable ones are the goals (reachable: a view
point in the largest component, see below); per goal a
modality, uniform over `task.modalities`, and for image goals up to 20 viewpoints (the one showing
most instance pixels wins; with fewer than `min_image_pixels` in all the goal becomes a description);
then the start cell (its geodesic distance to the first goal in [min_goal_distance,
max_goal_distance]) and heading. A scene with fewer reachable objects than goals is redrawn.

Success: `stop` within 1.5 grid cells of a view point of the goal instance(s) reaches the goal
(`success_reward`): a navigable cell within `success_distance` of the footprint from which the
camera height sees the instance (`NavScene.view_cells`; habitat ObjectNav's view points). Unlike
nav/multigoal a wrong `stop` (paying `wrong_stop_reward`), or a goal's `steps_per_goal` budget
running out, fails that goal and the next one begins from the same pose; the episode terminates
after the last goal. Measures: `success` = every goal reached, `goals_reached` =
the fraction reached, `spl` = the mean over goals of per-goal SPL, `soft_spl` likewise.

Per goal, `goal_records` (attribute; `info["goal_records"]` on the step that ends the episode) holds
index, modality, category, instance (-1 for category goals: any instance counts; `instances` lists
those that do), seen (whether one of those instances covered >= 10 pixels of a view before the goal
began), success, spl, steps and start_distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from embodied.render import Camera
from embodied.tasks.config import GOAT_MODALITIES, GoatConfig
from embodied.tasks.measures import efficiency, progress, soft_progress
from embodied.tasks.nav import EpisodeError, Goal, ObjectGoalEnv
from embodied.tasks.registry import register_task
from embodied.tasks.scenes import NavScene
from embodied.world import COLOUR_NAMES, FURNITURE_CATEGORIES, OBJECT_CATEGORIES, colour_name, semantic_classes
from embodied.world.spec import ROOM_TYPES, Item, SceneSpec

MODALITIES = GOAT_MODALITIES  # ("category", "description", "image"); goal_modality indexes it
VOCAB = ("<pad>", "the", "on", "in") + COLOUR_NAMES + OBJECT_CATEGORIES + FURNITURE_CATEGORIES + ROOM_TYPES
MAX_WORDS = 16
SEEN_PIXELS = 10  # an instance counts as seen when it covers at least this many pixels of a view
IMAGE_CANDIDATES = 20  # viewpoints tried per image goal
_WORD_IDS = {w: i for i, w in enumerate(VOCAB)}


def encode(text: str) -> np.ndarray:
    """int64 [MAX_WORDS] ids (in VOCAB) of the whitespace-separated words of `text`, 0-padded."""
    words = str(text).split()
    if len(words) > MAX_WORDS:
        raise ValueError(f"{text!r}: {len(words)} words; at most {MAX_WORDS}")
    unknown = [w for w in words if w not in _WORD_IDS]
    if unknown:
        raise ValueError(f"{text!r}: word {unknown[0]!r} is not in the goal vocabulary (embodied.tasks.goat.VOCAB)")
    ids = np.zeros(MAX_WORDS, np.int64)
    ids[:len(words)] = [_WORD_IDS[w] for w in words]
    return ids


def decode(ids) -> str:
    """The words of non-zero ids, space-separated (inverse of `encode`)."""
    return " ".join(VOCAB[int(i)] for i in np.asarray(ids).reshape(-1) if int(i) != 0)


def describe(spec: SceneSpec, item: Item) -> str:
    """"the {colour} {category} on the {receptacle's category} in the {room type}", without the
    "on ..." part for an item that rests on no furniture; the colour is `colour_name(item.color)`."""
    room = next((r.type for r in spec.rooms if r.id == item.room), None)
    if room is None:
        raise ValueError(f"scene {spec.name}: item {item.id} is in room {item.room}, which the scene lacks")
    words = ["the", colour_name(item.color), item.category]
    if item.receptacle is not None:
        words += ["on", "the", spec.item(item.receptacle).category]
    return " ".join(words + ["in", "the", room])


@dataclass
class GoatGoal(Goal):
    modality: str = "category"  # one of MODALITIES
    instance: int = -1  # the goal's instance; -1 for category goals (any of `instances` counts)
    instances: tuple[int, ...] = ()  # instance ids whose region reaches the goal
    text: np.ndarray | None = None  # description goals: encode(describe(...)) [MAX_WORDS]
    image: np.ndarray | None = None  # image goals: rgb [H, W, 3] uint8
    semantic: np.ndarray | None = None  # image goals: semantic classes [H, W] int32
    viewpoint: np.ndarray | None = None  # image goals: pose (x, y, z_floor, yaw) the image was taken from
    tilt: float = 0.0  # image goals: the camera's tilt there (degrees, positive up)


@register_task("nav/goat")
class GoatNav(ObjectGoalEnv):
    """K object-instance goals in one scene, each a category, a description or an image; a failed
    goal (wrong stop, spent budget) moves on to the next (see the module docstring)."""

    config_class = GoatConfig
    goal_index: int = 0  # a plain attribute over NavEnv's property: a failed goal moves on too

    def __init__(self, cfg: GoatConfig) -> None:
        cfg = cfg.validate()
        h, w = cfg.height, cfg.width
        self.goal_space = {
            "goal_index": spaces.Box(0, cfg.num_goals - 1, (1,), np.int64),
            "goal_modality": spaces.Box(0, len(MODALITIES) - 1, (1,), np.int64),
            "goal_category": spaces.Box(-1, len(OBJECT_CATEGORIES) - 1, (1,), np.int64),
            "goal_text": spaces.Box(0, len(VOCAB) - 1, (MAX_WORDS,), np.int64),
            "goal_image": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "goal_semantic": spaces.Box(0, len(semantic_classes()) - 1, (h, w), np.int32),
        }
        super().__init__(cfg)
        self.goal_index = 0
        self.goal_records: list[dict] = []
        self.seen_instances: set[int] = set()  # instance ids that covered >= SEEN_PIXELS of a view this episode
        self._records_out = False
        self._image_cameras: dict[float, Camera] = {}  # goal-image cameras by tilt

    task_outputs = ("instance",)

    # -- episode sampling ------------------------------------------------------------------
    def _sample_goals(self, scene: NavScene) -> list[Goal]:
        if scene.spec is None:
            raise EpisodeError("nav/goat needs a SceneSpec scene, not a raw mesh")
        c, grid = self.cfg, scene.grid
        grid.field_cache_size = max(grid.field_cache_size, 64)
        component = grid.largest_component()
        objects = scene.spec.objects()
        picked = []
        for i in self.rng.permutation(len(objects)):
            field = self._instance_field(scene, objects[i], component)
            if field is not None:
                picked.append((objects[i], field))
                if len(picked) == c.num_goals:
                    break
        if len(picked) < c.num_goals:
            raise EpisodeError(f"{len(picked)} reachable object instances; nav/goat needs {c.num_goals}")
        goals = []
        for item, field in picked:
            modality = c.modalities[int(self.rng.integers(len(c.modalities)))]
            view = self._image_view(scene, item, component) if modality == "image" else None
            if modality == "image" and view is None:
                modality = "description"
            if modality == "category":
                goal = self._object_goal(scene, item.category)
                same = tuple(o.id for o in objects if o.category == item.category)
                goals.append(GoatGoal(field=goal.field, tolerance=goal.tolerance, category=goal.category,
                                      modality=modality, instances=same))
                continue
            goal = GoatGoal(field=field, tolerance=grid.cell * 1.5, category=OBJECT_CATEGORIES.index(item.category),
                            modality=modality, instance=item.id, instances=(item.id,))
            if modality == "description":
                goal.text = encode(describe(scene.spec, item))
            else:
                goal.image, goal.semantic, goal.viewpoint, goal.tilt = view
            goals.append(goal)
        return goals

    def _instance_field(self, scene: NavScene, item: Item, component: np.ndarray):
        """The geodesic field to the region around one instance, or None if it is out of reach."""
        try:
            field = self._view_field(scene, [item])
        except ValueError:  # no view point of it
            return None
        return field if np.isfinite(field.values[component]).any() else None

    def _image_view(self, scene: NavScene, item: Item, component: np.ndarray):
        """(rgb, semantic, pose, tilt) of the best of up to IMAGE_CANDIDATES views of `item` from navigable
        cells about image_distance away, facing it; None if none shows min_image_pixels of it."""
        c, grid = self.cfg, scene.grid
        centres = grid.grid_to_world(np.argwhere(component))
        target = np.asarray(item.position[:2], np.float64)
        d = np.hypot(*(centres - target).T)
        ok = np.flatnonzero(np.abs(d - c.image_distance) <= 0.5)
        if not len(ok):
            return None
        xy = centres[np.sort(self.rng.choice(ok, size=min(IMAGE_CANDIDATES, len(ok)), replace=False))]
        yaw = np.arctan2(target[1] - xy[:, 1], target[0] - xy[:, 0])
        z = np.array([grid.floor_height_at(p) for p in xy])
        poses = np.c_[xy, z, yaw]
        # Each view tilted to look at the instance's centre from where it stands, so the instance is at
        # the image's centre (as GOAT-Bench's goal images frame their instance). Views whose tilts round
        # to the same degree share a camera and a cast; only instance ids are cast for all of them, the
        # image of the best one after.
        drop = z + c.camera_height - (float(item.position[2]) + 0.5 * float(item.size[2]))
        tilts = np.round(-np.degrees(np.arctan2(drop, np.hypot(*(xy - target).T))))
        counts = np.zeros(len(xy), np.int64)
        for tilt in np.unique(tilts):
            group = tilts == tilt
            ids = scene.renderer.render(poses[group], self._image_camera(tilt), outputs=("instance",))["instance"]
            counts[group] = (ids[:, 0] == item.id).sum((1, 2))
        best = int(np.argmax(counts))
        if counts[best] < c.min_image_pixels:
            return None
        view = scene.renderer.render_one(poses[best], self._image_camera(tilts[best]), ("rgb", "semantic"))
        return view["rgb"], view["semantic"].astype(np.int32), poses[best].copy(), float(tilts[best])

    def _image_camera(self, tilt: float) -> Camera:
        """The goal-image camera tilted `tilt` degrees (cached per tilt)."""
        c, tilt = self.cfg, float(tilt)
        if tilt not in self._image_cameras:
            self._image_cameras[tilt] = Camera(width=c.width, height=c.height, hfov_deg=c.hfov,
                                               mount_height=c.camera_height, tilt_deg=tilt)
        return self._image_cameras[tilt]

    def instance_distance(self, instance: int) -> float:
        """Geodesic distance (m) from where the agent stands to within success_distance of one
        instance's footprint, as a goal of that instance measures it (inf when out of reach)."""
        field = self._instance_field(self.scene, self.scene.spec.item(instance), self.scene.grid.largest_component())
        return math.inf if field is None else float(field.at((self.agent.x, self.agent.y)))

    def look(self, yaw: float) -> np.ndarray:
        """rgb [H, W, 3] the agent's camera would see from where it stands, at its tilt, facing `yaw`
        (radians, in the episode-start frame of obs["pose"]): what turning in place would show, no
        more. 3D-Mem renders its frontier snapshots this way (the agent's frontier views)."""
        x, y, z, _ = self.agent.pose
        pose = np.array([[x, y, z, self.start_pose[3] + float(yaw)]])
        return self.scene.renderer.render(pose, (self._camera(),), outputs=("rgb",))["rgb"][0, 0]

    # -- episode loop ------------------------------------------------------------------------
    def _reset(self, seed, options):
        self.goal_index = 0
        self.goal_records = []
        self.seen_instances = set()
        self._records_out = False
        return super()._reset(seed, options)

    def _begin_leg(self) -> None:
        super()._begin_leg()
        self.leg_steps = 0
        goal = self.goal
        self.leg_seen = any(i in self.seen_instances for i in goal.instances)
        h, w = self.cfg.height, self.cfg.width
        self._goal_obs = {
            "goal_index": np.array([min(self.goal_index, self.num_goals - 1)], np.int64),
            "goal_modality": np.array([MODALITIES.index(goal.modality)], np.int64),
            "goal_category": np.array([goal.category if goal.modality == "category" else -1], np.int64),
            "goal_text": goal.text.copy() if goal.text is not None else np.zeros(MAX_WORDS, np.int64),
            "goal_image": goal.image.copy() if goal.image is not None else np.zeros((h, w, 3), np.uint8),
            "goal_semantic": goal.semantic.copy() if goal.semantic is not None else np.zeros((h, w), np.int32),
        }

    def _finish_goal(self, success: bool) -> None:
        goal, d0, length = self.goal, self.leg_start_distance, self.leg_path_length
        spl = float(success) * efficiency(d0, length)
        if success:
            self.goal_spl[self.goal_index] = spl
            self.goal_soft_spl[self.goal_index] = soft_progress(self) * spl
            self.goals_reached += 1
        self.goal_records.append(dict(
            index=self.goal_index, modality=goal.modality, category=OBJECT_CATEGORIES[goal.category],
            instance=goal.instance, instances=list(goal.instances), seen=bool(self.leg_seen),
            success=bool(success), spl=spl, steps=int(self.leg_steps), start_distance=float(d0)))
        self.goal_index += 1

    def _step(self, action):
        name = self._action_name(action)
        prev = self.agent.pose[:2].copy()
        reward = self.cfg.slack_reward
        self.last_collided = False
        self.leg_steps += 1
        ended = None  # the current goal's outcome, when it ends this step
        if name == "stop":
            self.called_stop = True
            ended = self.distance_to_goal() <= self.goal.tolerance
            reward += self.cfg.success_reward if ended else self.cfg.wrong_stop_reward
        else:
            d_before = self.distance_to_goal()
            self.last_collided = bool(self.agent.step(name))
            self.leg_path_length += float(np.linalg.norm(self.agent.pose[:2] - prev))
            reward += progress(d_before, self.distance_to_goal())
            if self.leg_steps >= self.cfg.steps_per_goal:
                ended = False  # the budget is spent
        terminated = False
        if ended is not None:
            self._finish_goal(ended)
            terminated = self.goal_index >= self.num_goals
            if not terminated:
                self._begin_leg()
        for m in self.measures.values():
            m.update_metric(self)
        truncated = not terminated and self.measures["steps"].value >= self.cfg.max_steps
        if truncated:  # the goal under way fails; goals not begun have no record
            self._finish_goal(False)
        self._records_out = terminated or truncated
        skip = (terminated or truncated) and not self.final_observation and self._last_obs is not None
        return self._last_obs if skip else self._observe(), float(reward), terminated, truncated, self._info()

    def _saw(self, images) -> None:
        counts = np.bincount(images["instance"].ravel())
        self.seen_instances.update(int(i) for i in np.flatnonzero(counts >= SEEN_PIXELS) if i)

    def _goal_observation(self):
        return self._goal_obs

    def _info(self) -> dict:
        info = super()._info()
        if self._records_out:
            info["goal_records"] = [dict(r) for r in self.goal_records]
        return info


# -- questions from memory (EM-EQA style) -------------------------------------------------------------
QUESTION_KINDS = ("attribute", "room", "count", "existence")
ACTIVE_KINDS = ("attribute", "room")  # about one instance: an agent can go and look at it


@dataclass
class Question:
    """A multiple-choice question about the apartment. `subject` holds what a language parser would
    read from `text` (category, and receptacle or colour where the question names one), so an
    answerer needs no parser; `answer` indexes `choices`."""

    kind: str  # one of QUESTION_KINDS
    text: str
    choices: list
    answer: int
    subject: dict
    instance: int = -1  # the one instance an attribute or room question is about; -1 for the others

    def goal_text(self) -> str:
        """The subject worded as a description goal ("the mug on the table", "the red mug"): where an
        agent that must look before it answers (an active question, A-EQA style) goes to look."""
        s = self.subject
        if self.kind == "attribute":
            return f"the {s['category']} on the {s['receptacle']}"
        if self.kind == "room":
            return f"the {s['colour']} {s['category']}"
        raise ValueError(f"a {self.kind} question names no one instance to look at; allowed: {', '.join(ACTIVE_KINDS)}")


def questions(spec: SceneSpec, seen: set, rng: np.random.Generator, n: int,
              kinds: tuple[str, ...] = QUESTION_KINDS) -> list[Question]:
    """Up to `n` questions about the objects an agent saw (instance ids in `seen`), EM-EQA style
    (OpenEQA's episodic-memory questions are about what the agent's trajectory showed), drawn from
    `rng`: the colour of the {category} on the {furniture}; the room of the {colour} {category};
    how many {category} it saw; whether it saw a {category} (half of these name a category absent from
    the apartment). Each subject is unambiguous in the apartment (e.g. one mug on the table). Only
    questions of `kinds` are drawn (the rng is used the same way whatever `kinds` is)."""
    bad = [k for k in kinds if k not in QUESTION_KINDS]
    if bad or not kinds:
        raise ValueError(f"question kinds {list(kinds)}; allowed: a non-empty subset of {', '.join(QUESTION_KINDS)}")
    objects = spec.objects()
    rooms = {r.id: r.type for r in spec.rooms}
    seen_objects = [o for o in objects if o.id in seen]
    pool: list[Question] = []

    def options(truth: str, others: list[str], k: int = 4) -> tuple[list, int]:
        others = [o for o in dict.fromkeys(others) if o != truth]
        picks = [others[i] for i in rng.permutation(len(others))[: k - 1]]
        choices = picks + [truth]
        order = rng.permutation(len(choices))
        choices = [choices[i] for i in order]
        return choices, choices.index(truth)

    for o in seen_objects:
        if o.receptacle is not None:
            rec = spec.item(o.receptacle).category
            twins = [p for p in objects if p.category == o.category and p.receptacle is not None
                     and spec.item(p.receptacle).category == rec]
            if len(twins) == 1:
                choices, answer = options(colour_name(o.color), list(COLOUR_NAMES))
                pool.append(Question("attribute", f"what colour is the {o.category} on the {rec} ?", choices, answer,
                                     {"category": o.category, "receptacle": rec}, o.id))
        colour = colour_name(o.color)
        twins = [p for p in objects if p.category == o.category and colour_name(p.color) == colour]
        if len(twins) == 1:
            choices, answer = options(rooms[o.room], sorted(set(rooms.values())) + list(ROOM_TYPES))
            pool.append(Question("room", f"in which room is the {colour} {o.category} ?", choices, answer,
                                 {"category": o.category, "colour": colour}, o.id))
    for category in sorted({o.category for o in seen_objects}):
        count = sum(o.category == category for o in seen_objects)
        choices, answer = options(str(count), [str(k) for k in range(1, 6)])
        pool.append(Question("count", f"how many {category} did you see ?", choices, answer, {"category": category}))
        pool.append(Question("existence", f"did you see a {category} ?", ["yes", "no"], 0, {"category": category}))
    absent = sorted(set(OBJECT_CATEGORIES) - {o.category for o in objects})
    for category in [absent[i] for i in rng.permutation(len(absent))[: max(1, len(seen_objects) // 2)]]:
        pool.append(Question("existence", f"did you see a {category} ?", ["yes", "no"], 1, {"category": category}))
    pool = [q for q in pool if q.kind in kinds]
    return [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
