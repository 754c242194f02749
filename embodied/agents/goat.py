"""The 3D-Mem agent for nav/goat (docs/goat.md): a hierarchical agent over the scene memory.

Every step it fuses the observation into its SceneMemory, asks a chooser for a memory snapshot's
object (go there and stop) or a frontier (explore), and walks to the choice with the shortest-path
follower on a grid built from its own occupancy map, never the simulator's. While the choice is a
frontier it re-decides every step, as 3D-Mem re-queries its VLM; once it has chosen an object it
walks there without re-deciding.

Variants (the paper's comparison and its baselines, same episodes):
- `kept`: memory persists across the goals of an episode (3D-Mem);
- `cleared`: memory (objects, snapshots and map) wiped at every goal (3D-Mem's
  `clear_up_memory_every_subtask`);
- `frontier`: frontier exploration without snapshots - the map persists, but only objects in the
  current view can be chosen.

Choosers, one interface `choose(query, memory, snapshots, frontiers, pose) -> Choice`:
- `ScriptedChooser`: matches the goal's category, description attributes or image to snapshot
  objects; otherwise the nearest large frontier;
- `VLMChooser`: an adapter for a user's own vision-language model (a callable taking a prompt
  and images, returning "Snapshot i, Object j" or "Frontier i", as 3D-Mem's GOAT prompt asks).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from embodied.memory.scene import DETECTABLE, OCCUPIED, UNKNOWN, Frontier, SceneMemory, SceneMemoryConfig, Snapshot
from embodied.render import Camera
from embodied.sim import ACTIONS, NavAgent, NavigableGrid, ShortestPathFollower
from embodied.tasks.goat import MODALITIES, Question, decode
from embodied.world import COLOUR_NAMES, FURNITURE_CATEGORIES, OBJECT_CATEGORIES, colour_name, semantic_classes

VARIANTS = ("kept", "cleared", "frontier")
AVOID_RADIUS = 0.4  # m around a place the goal object was not seen from: the next place to try lies beyond
MAX_BLIND = 3  # places near an object tried before stopping anyway
STALL_STEPS = 12  # steps toward the next place near it without getting nearer before stopping anyway
ROOM_FURNITURE = {  # furniture that names a room, for "in the bedroom" (the memory knows no rooms)
    "bedroom": ("bed", "nightstand", "wardrobe", "dresser"),
    "kitchen": ("fridge", "stove", "counter"),
    "bathroom": ("toilet", "bathtub", "sink"),
    "living_room": ("sofa", "tv_stand", "coffee_table", "armchair"),
}


@dataclass
class GoalQuery:
    """What a goal asks for, read from the observation (no instance id)."""

    modality: str
    category: str
    colour: str | None = None
    receptacle: str | None = None
    room: str | None = None
    context: list = field(default_factory=list)  # other classes in a goal image
    rgb: np.ndarray | None = None  # a goal image's instance: its mean colour (channels in [0, 1])

    @classmethod
    def from_observation(cls, obs: dict, classes: tuple[str, ...] | None = None) -> "GoalQuery":
        modality = MODALITIES[int(np.asarray(obs["goal_modality"]).reshape(-1)[0])]
        if modality == "category":
            return cls(modality, OBJECT_CATEGORIES[int(np.asarray(obs["goal_category"]).reshape(-1)[0])])
        if modality == "description":
            words = decode(obs["goal_text"]).split()
            category = next(w for w in words if w in OBJECT_CATEGORIES)
            colour = next((w for w in words if w in COLOUR_NAMES), None)
            receptacle = room = None
            for a, b in zip(words, words[1:]):
                if a == "the" and b in FURNITURE_CATEGORIES:
                    receptacle = b
                if a == "the" and b in ROOM_FURNITURE:
                    room = b
            return cls(modality, category, colour, receptacle, room)
        # Image: the detector (semantic classes) run on the goal image. The image frames its instance at
        # its centre: the goal is the class of the object pixel nearest the centre, the other detected
        # classes its context. (Counting classes in a window about the centre picks a larger neighbour.)
        classes = classes or semantic_classes()
        sem = np.asarray(obs["goal_semantic"])
        h, w = sem.shape
        rows, cols = np.nonzero(np.isin(sem, [classes.index(c) for c in OBJECT_CATEGORIES]))
        if not len(rows):
            raise ValueError("an image goal shows no object")
        nearest = int(np.argmin((rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2))
        best = int(sem[rows[nearest], cols[nearest]])
        labels, _ = ndimage.label(sem == best)  # the instance's own pixels give its colour, not its class's
        mask = labels == labels[rows[nearest], cols[nearest]]
        rgb = np.asarray(obs["goal_image"])[mask].astype(np.float64).mean(0) / 255.0
        present = set(np.unique(sem).tolist()) - {best}
        context = sorted(classes[k] for k in present if classes[k] in DETECTABLE)
        return cls(modality, classes[best], colour_name(rgb), None, None, context, rgb)

    def relevant_classes(self) -> list[str]:
        """Prefiltering's ranking (3D-Mem asks an LLM; here the goal's own classes come first)."""
        out = [self.category]
        out += [c for c in (self.receptacle, *self.context) if c and c not in out]
        out += list(ROOM_FURNITURE.get(self.room, ()))
        return out


@dataclass
class Choice:
    kind: str  # "object" | "frontier" | "none"
    index: int = -1  # snapshot frame id, or frontier index
    object: int = -1  # object id in the memory
    target: np.ndarray | None = None  # [2] xy


class ScriptedChooser:
    """Goal attributes matched against snapshot objects; else the frontier with the best size per
    metre. A description goal needs its category and its colour or receptacle to match; an image
    goal its category and colour; a category goal its category (the nearest instance)."""

    def choose(self, query: GoalQuery, memory: SceneMemory, snapshots: list[Snapshot], frontiers: list[Frontier],
               pose: np.ndarray, skip_frontiers: Callable[[Frontier], bool] = lambda f: False) -> Choice:
        best, best_key = None, None
        for snap in snapshots:
            for oid in snap.objects:
                obj = memory.objects[oid]
                if obj.category != query.category:
                    continue
                score, needed = self._score(query, memory, obj)
                if not needed:
                    continue
                dist = math.hypot(obj.position[0] - pose[0], obj.position[1] - pose[1])
                key = (-score, dist, oid)
                if best_key is None or key < best_key:
                    best, best_key = Choice("object", snap.frame, oid, obj.position[:2].copy()), key
        if best is not None:
            return best
        usable = [f for f in frontiers if not skip_frontiers(f)]
        if not usable:
            return Choice("none")
        f = max(usable, key=lambda f: (min(f.size, 40) / (1.0 + math.hypot(*(f.centre - pose[:2]))), -f.id))
        return Choice("frontier", f.id, -1, f.centre.copy())

    @staticmethod
    def _score(query: GoalQuery, memory: SceneMemory, obj) -> tuple[float, bool]:
        if query.modality == "category":
            return 0.0, True
        colour, receptacle, room, context = match_features(query, memory, obj)
        score = 2.0 * colour + 1.0 * receptacle + 0.5 * room + context
        needed = colour > 0 or receptacle if query.modality == "description" else colour > 0
        return score, bool(needed)


def match_features(query: GoalQuery, memory: SceneMemory, obj) -> tuple[float, float, float, float]:
    """How a remembered object matches a goal's attributes: colour similarity, the same furniture under
    it (1/0), the same room (1/0), and the fraction of a goal image's context classes near it."""
    colour = (rgb_similarity(query.rgb, obj.colour) if query.rgb is not None
              else colour_similarity(query.colour, obj.colour_name))
    receptacle = float(query.receptacle is not None and _receptacle(memory, obj) == query.receptacle)
    room = float(query.room is not None and _room(memory, obj) == query.room)
    context = 0.0
    if query.context:
        near = {o.category for o in memory.objects.values()
                if o.id != obj.id and math.hypot(*(o.position[:2] - obj.position[:2])) < 2.5}
        context = len(near & set(query.context)) / len(query.context)
    return colour, receptacle, room, context


_HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")


def colour_similarity(a: str | None, b: str | None) -> float:
    """1 for the same name, 0.5 for neighbours (white-gray, gray-black, adjacent hues), else 0:
    shading and viewpoint move a rendered colour across a bin edge."""
    if a is None or b is None:
        return 0.0
    if a == b:
        return 1.0
    if {a, b} in ({"white", "gray"}, {"gray", "black"}):
        return 0.5
    if a in _HUES and b in _HUES:
        d = abs(_HUES.index(a) - _HUES.index(b))
        return 0.5 if min(d, len(_HUES) - d) == 1 else 0.0
    return 0.0


def rgb_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two rendered mean colours are, in [0, 1]: 1 - their chromaticity distance / 0.1. The
    renderer shades a face by a factor in [0.35, 1], which keeps chromaticity (rgb / its sum), so
    brightness counts only beyond that range (white against black). A goal image gives a colour, not
    a name: comparing names would fail on the many colours near a bin edge."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = float(a.max()), float(b.max())
    if min(va, vb) < 0.35 * max(va, vb) or max(va, vb) <= 0:
        return 0.0
    d = float(np.linalg.norm(a / max(a.sum(), 1e-9) - b / max(b.sum(), 1e-9)))
    return max(0.0, 1.0 - d / 0.1)


def _receptacle(memory: SceneMemory, obj) -> str | None:
    """The furniture under an object: the nearest furniture within 0.8 m when it is raised."""
    if obj.position[2] < 0.25:
        return None
    best, dist = None, 0.8
    for o in memory.objects.values():
        if o.category in FURNITURE_CATEGORIES:
            d = math.hypot(*(o.position[:2] - obj.position[:2]))
            if d < dist:
                best, dist = o.category, d
    return best


def _room(memory: SceneMemory, obj) -> str | None:
    best, dist = None, 3.0
    for o in memory.objects.values():
        for room, names in ROOM_FURNITURE.items():
            if o.category in names:
                d = math.hypot(*(o.position[:2] - obj.position[:2]))
                if d < dist:
                    best, dist = room, d
    return best


def answer(question: Question, memory: SceneMemory) -> int:
    """The index of the answer to a multiple-choice question, from the memory's objects alone
    (EM-EQA answers from the retrieved snapshots; here their objects' classes, colours, positions).
    Without an answer in memory it guesses the first choice (the choices are shuffled: chance)."""
    s, choices = question.subject, question.choices
    objs = sorted((o for o in memory.objects.values() if o.category == s["category"]), key=lambda o: o.id)
    if question.kind == "existence":
        return choices.index("yes" if objs else "no")
    if question.kind == "count":
        counts = [int(c) for c in choices]
        return min(range(len(counts)), key=lambda i: (abs(counts[i] - len(objs)), i))
    if not objs:
        return 0
    if question.kind == "attribute":
        on = [o for o in objs if _receptacle(memory, o) == s["receptacle"]] or objs
        return max(range(len(choices)), key=lambda i: (colour_similarity(choices[i], on[0].colour_name), -i))
    if question.kind == "room":
        best = max(objs, key=lambda o: (colour_similarity(s["colour"], o.colour_name), -o.id))
        room = _room(memory, best)
        return choices.index(room) if room in choices else 0
    raise ValueError(f"question kind {question.kind!r}; allowed: attribute, room, count, existence")


class VLMChooser:
    """Adapter for a user's own vision-language model; nothing downloads or ships with it.

    `model(prompt: str, images: list[np.ndarray]) -> str` is any callable. The prompt follows
    3D-Mem's GOAT prompt (shared/reference/round2-notes.md §1): the goal, then each "Snapshot i"
    with its objects ("Object j: class"), then each "Frontier i"; images are the snapshots' frames
    then the frontiers' snapshots (rendered facing each frontier when the agent has `look`, else the
    last frame that faced it; a black image when there is neither). The reply must contain
    "Snapshot i, Object j" or "Frontier i"; anything else raises ValueError naming the reply."""

    looks_at_frontiers = True  # GoatAgent renders each frontier's snapshot for it (GoatAgent.look)

    def __init__(self, model: Callable[[str, list], str]):
        self.model = model

    def choose(self, query: GoalQuery, memory: SceneMemory, snapshots: list[Snapshot], frontiers: list[Frontier],
               pose: np.ndarray, skip_frontiers: Callable[[Frontier], bool] = lambda f: False) -> Choice:
        frontiers = [f for f in frontiers if not skip_frontiers(f)]
        lines = [f"Task: find {_goal_text(query)}.",
                 "Answer 'Snapshot i, Object j' to go to an object you have seen, or 'Frontier i' to explore."]
        images = []
        black = np.zeros((memory.camera.height, memory.camera.width, 3), np.uint8)
        for i, snap in enumerate(snapshots):
            objs = ", ".join(f"Object {j}: {memory.objects[o].category}" for j, o in enumerate(snap.objects))
            lines.append(f"Snapshot {i}: {objs}")
            image = memory.frames[snap.frame].image
            images.append(black if image is None else image)
        for i, f in enumerate(frontiers):
            lines.append(f"Frontier {i}")
            image = memory.frontier_images.get(f.key)
            if image is None and f.frame in memory.frames:
                image = memory.frames[f.frame].image
            images.append(black if image is None else image)
        reply = self.model("\n".join(lines), images)
        m = re.search(r"Snapshot\s+(\d+)\s*,\s*Object\s+(\d+)", reply)
        if m and int(m.group(1)) < len(snapshots) and int(m.group(2)) < len(snapshots[int(m.group(1))].objects):
            snap = snapshots[int(m.group(1))]
            oid = snap.objects[int(m.group(2))]
            return Choice("object", snap.frame, oid, memory.objects[oid].position[:2].copy())
        m = re.search(r"Frontier\s+(\d+)", reply)
        if m and int(m.group(1)) < len(frontiers):
            f = frontiers[int(m.group(1))]
            return Choice("frontier", f.id, -1, f.centre.copy())
        raise ValueError(f"the VLM's reply names no valid snapshot object or frontier: {reply[:200]!r}")


def _goal_text(query: GoalQuery) -> str:
    if query.modality == "image":
        return f"the object in the goal image (a {query.colour} {query.category})"
    words = [query.colour, query.category.replace("_", " ")]
    text = "the " + " ".join(w for w in words if w)
    if query.receptacle:
        text += f" on the {query.receptacle.replace('_', ' ')}"
    if query.room:
        text += f" in the {query.room.replace('_', ' ')}"
    return text


class MapPlanner:
    """The shortest-path follower on a NavigableGrid built from the memory's occupancy map.
    Unknown cells count as free (an optimistic planner: the agent learns what blocks by looking),
    the grid is cropped to what the map has seen plus a margin, and rebuilt every few steps.
    `cover_target`: the crop also holds the agent and the target, for targets the map has not seen
    (a room the floor plan names; the 3D-Mem agent only walks to what its map holds)."""

    def __init__(self, forward_step: float, turn_angle: float, agent_radius: float, agent_height: float,
                 rebuild_every: int = 4, margin: float = 1.0, cover_target: bool = False):
        self.forward_step, self.turn_angle = forward_step, turn_angle
        self.radius, self.height = agent_radius, agent_height
        self.rebuild_every, self.margin = rebuild_every, margin
        self.cover_target = cover_target
        self.reset()

    def invalidate(self) -> None:
        self.grid: NavigableGrid | None = None
        self._relaxed: NavigableGrid | None = None

    def reset(self) -> None:
        """A new start (an episode, or the agent put back at its start): nothing planned, no last turn.
        A last turn kept from before would bend the first plan made where it was taken."""
        self.invalidate()
        self._age = 0
        self._last_turn: tuple | None = None  # (x, y, action) of the last turn in place
        self.distance = math.inf  # the last plan's geodesic distance (m) on the map to its goal cells

    def _build(self, memory: SceneMemory, radius: float, also=None) -> NavigableGrid:
        known = memory.grid != UNKNOWN
        rows, cols = np.nonzero(known)
        if also is not None:  # floor points [k, 2] the crop must hold too
            rc = memory.cells_of(np.asarray(also, np.float64).reshape(-1, 2)).reshape(-1, 2)
            rows, cols = np.concatenate([rows, rc[:, 0]]), np.concatenate([cols, rc[:, 1]])
        m = int(math.ceil(self.margin / memory.cfg.cell))
        r0, r1 = max(rows.min() - m, 0), min(rows.max() + m + 1, memory.shape[0])
        c0, c1 = max(cols.min() - m, 0), min(cols.max() + m + 1, memory.shape[1])
        free = memory.grid[r0:r1, c0:c1] != OCCUPIED
        origin = memory.origin + np.array([c0, r0]) * memory.cfg.cell
        return NavigableGrid(free, np.zeros(free.shape, np.float32), origin, memory.cfg.cell, radius,
                             self.height, max_step=0.1, neighbourhood=8)

    def action(self, memory: SceneMemory, pose: np.ndarray, target: np.ndarray, radii: tuple,
               avoid: tuple = ()) -> tuple[str, str]:
        """(action, status): "move_forward" | "turn_left" | "turn_right" while "moving" toward the
        navigable cells within the first of `radii` of target that has any reachable, less those within
        AVOID_RADIUS of a point of `avoid`; ("stop", "arrived") inside them; ("stop", "unreachable")
        when no radius gives a path on the map."""
        also = np.stack([np.asarray(pose[:2], np.float64), np.asarray(target, np.float64)]) if self.cover_target else None
        if (self.grid is None or self._age >= self.rebuild_every
                or (also is not None and not self._holds(self.grid, also[1]))):
            self.grid, self._relaxed, self._age = self._build(memory, self.radius, also), None, 0
        self._age += 1
        result = self._plan(self.grid, pose, target, radii, avoid)
        if result[1] == "unreachable":
            # Obstacles seen in depth, fused into 10 cm cells and grown by the agent's radius, can close a
            # doorway or the gap the agent stands in on the map while the true one is open (the agent
            # stood there, so the gap exists): plan again with half the clearance. A wrong guess costs
            # a bump, which marks the cell blocked.
            if self._relaxed is None:
                self._relaxed = self._build(memory, 0.5 * self.radius, also)
            result = self._plan(self._relaxed, pose, target, radii, avoid)
        action = result[0]
        if action in ("turn_left", "turn_right"):
            self._last_turn = (float(pose[0]), float(pose[1]), action)
        return result

    @staticmethod
    def _holds(grid: NavigableGrid, point: np.ndarray) -> bool:
        r, c = grid.world_to_grid(point)
        return 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]

    def _plan(self, grid: NavigableGrid, pose: np.ndarray, target: np.ndarray, radii: tuple,
              avoid: tuple = ()) -> tuple[str, str]:
        agent = NavAgent(grid, forward_step=self.forward_step, turn_angle=self.turn_angle)
        try:
            agent.reset(np.asarray(pose[:2], np.float64), float(pose[3]))
        except ValueError:  # the map marks where the agent stands as blocked: plan from the nearest free cell
            try:
                agent.reset(grid.nearest_navigable(pose[:2]), float(pose[3]))
            except ValueError:
                return "stop", "unreachable"
        for radius in radii:  # an object in the middle of a table: the nearest standing place may be farther
            goal = grid.goal_cells_near(target, radius)
            for point in avoid:
                goal &= ~grid.goal_cells_near(point, AVOID_RADIUS)
            if not goal.any():
                continue
            field = grid.distance_field_to_region(goal)
            d = field.at((agent.x, agent.y))
            if math.isfinite(d):
                self.distance = d
                if d <= 0:
                    return "stop", "arrived"
                follower = ShortestPathFollower(grid, field, success_distance=0.0)
                action = follower.next_action(agent)
                last = self._last_turn
                if (last is not None and {action, last[2]} == {"turn_left", "turn_right"}
                        and math.hypot(pose[0] - last[0], pose[1] - last[1]) < 1e-3):
                    # Undoing the last turn where it stands: on a cell boundary the same heading can
                    # read two cells' distances, one from each side, and the follower would turn back
                    # and forth for ever. Walk on instead while that makes progress.
                    ex, ey, _ = agent.resolve_move(agent.x, agent.y, agent.forward_step * math.cos(agent.yaw),
                                                   agent.forward_step * math.sin(agent.yaw))
                    if field.at((ex, ey)) < d - follower.min_progress:
                        action = "move_forward"
                return action, "arrived" if action == "stop" else "moving"
        return "stop", "unreachable"


class GoatAgent:
    """`reset()`, then `act(obs) -> action index` every step of a nav/goat episode."""

    def __init__(self, camera: Camera, variant: str = "kept", chooser=None, memory: SceneMemoryConfig | None = None,
                 forward_step: float = 0.25, turn_angle: float = 30.0, agent_radius: float = 0.18,
                 agent_height: float = 1.5, stop_distance: float = 0.9, look_down: bool = True,
                 tilt_angle: float = 30.0):
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        self.variant = variant
        self.memory = SceneMemory(camera, memory)
        self.chooser = chooser or ScriptedChooser()
        self.planner = MapPlanner(forward_step, turn_angle, agent_radius, agent_height)
        self.turn_angle, self.stop_distance, self.look_down = turn_angle, stop_distance, look_down
        self.tilt_angle = tilt_angle
        self.classes = semantic_classes()
        # look(yaw) -> rgb: the camera from where the agent stands, facing yaw (episode-start frame); set
        # by whoever holds the env (`GoatNav.look`), it renders frontier snapshots for a chooser that
        # looks at them. None: the last frame that faced a frontier stands in.
        self.look: Callable[[float], np.ndarray] | None = None
        self.reset()

    @classmethod
    def for_task(cls, task_cfg, variant: str = "kept", chooser=None,
                 memory: SceneMemoryConfig | None = None) -> "GoatAgent":
        """The agent sized to a nav/goat config (GoatConfig): its camera, steps and body."""
        c = task_cfg
        camera = Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height)
        # Stop just inside the goal's success distance (1.0 m of the instance): walking deeper in is path
        # that SPL counts against the agent (0.7 m cost 0.08 of SPL on goals seen earlier).
        return cls(camera, variant, chooser, memory, forward_step=c.forward_step, turn_angle=c.turn_angle,
                   agent_radius=c.agent_radius, agent_height=c.agent_height,
                   stop_distance=max(0.3, (c.success_distance or 1.0) - 0.1), tilt_angle=c.tilt_angle)

    def reset(self) -> None:
        self.memory.reset()
        self.planner.reset()
        self.tilt = self.tilt_before = 0.0
        self.goal_index = -1
        self.query: GoalQuery | None = None
        self.choice: Choice | None = None
        self.recalled: Choice | None = None
        self.pending: list[str] = ["look_down"] if self.look_down else []
        self.last_action = None
        self.last_pose = None
        self.visited: list[np.ndarray] = []  # frontier centres reached without revealing them
        self.retried = self.reexplored = False
        self.unreachable = set()
        self.blind: list[np.ndarray] = []  # places near the chosen object it was not seen from
        self.nearest, self.stalled = math.inf, 0  # the planner's distance to the next place, steps without progress
        self.sighted = None  # where the chosen object was last detected (x, y)
        self.looked_up_at = None

    def relocated(self) -> None:
        """The env put the agent back at the episode's start (a reset with the episode's seed: the same
        apartment and pose frame) without a new episode for the agent: its memory stays; its camera is
        level again, and no bump is read from the jump."""
        self.tilt = self.tilt_before = 0.0
        self.pending = ["look_down"] if self.look_down else []
        self.last_action = self.last_pose = None
        self.planner.reset()

    def _begin_goal(self, obs: dict) -> None:
        self.query = GoalQuery.from_observation(obs, self.classes)
        self.choice = None
        # The first remembered object the chooser picked for this goal, even one the map gives no path
        # to: what an answer from memory is about (an active question needs no walk there).
        self.recalled = None
        self.visited = []
        self.unreachable: set[int] = set()  # objects without a path on the map, for this goal
        self.retried = self.reexplored = False
        self.blind, self.sighted, self.looked_up_at = [], None, None
        if self.variant == "cleared" and self.goal_index >= 0:
            self.memory.clear()
            self.planner.invalidate()
        if self.goal_index < 0 or self.variant == "cleared":  # look around once where the map starts
            self.pending += ["turn_left"] * int(round(360 / self.turn_angle))
        self.goal_index = int(np.asarray(obs["goal_index"]).reshape(-1)[0])

    def act(self, obs: dict) -> int:
        pose = np.asarray(obs["pose"], np.float64)
        if (self.last_action == "move_forward" and self.last_pose is not None
                and math.hypot(*(pose[:2] - self.last_pose[:2])) < 0.02):
            ahead = pose[:2] + 0.3 * np.array([math.cos(pose[3]), math.sin(pose[3])])
            self.memory.mark_blocked(ahead)
            self.planner.invalidate()
        if int(np.asarray(obs["goal_index"]).reshape(-1)[0]) != self.goal_index:
            self._begin_goal(obs)
        detected = self.memory.observe(obs, self.tilt)
        if (self.choice is not None and self.choice.kind == "object"
                and (self.choice.object in detected or self.choice.object in self.memory.glimpsed)):
            self.sighted = pose[:2].copy()
        action = self.pending.pop(0) if self.pending else self._decide(pose, detected)
        self.tilt_before, self.tilt = self.tilt, self._tilt_after(self.tilt, action)
        self.last_action, self.last_pose = action, pose
        return ACTIONS.index(action)

    def _tilt_after(self, tilt: float, action: str) -> float:
        """The camera tilt after `action`, as the env moves it: tilt_angle per look, two at most either way."""
        step = {"look_down": -self.tilt_angle, "look_up": self.tilt_angle}.get(action, 0.0)
        return max(-2 * self.tilt_angle, min(2 * self.tilt_angle, tilt + step))

    def executed(self, action: int) -> None:
        """Another actor's action ran instead of the one act() returned (a learner's, in DAgger's
        mixture): the camera tilt and the bump check follow what happened."""
        name = ACTIONS[int(action)]
        if name != self.last_action:
            self.tilt, self.last_action = self._tilt_after(self.tilt_before, name), name

    def _decide(self, pose: np.ndarray, detected: list[int]) -> str:
        if self.choice is None or self.choice.kind != "object":
            snaps, frontiers = self.memory.candidates(self.query.relevant_classes())
            if self.variant == "frontier":  # no snapshots: only what is in view now
                snaps = [Snapshot(self.memory.step - 1, [o for o in detected])] if detected else []
            if self.unreachable:
                snaps = [Snapshot(s.frame, [o for o in s.objects if o not in self.unreachable]) for s in snaps]
            if self.look is not None and getattr(self.chooser, "looks_at_frontiers", False):
                for f in frontiers:
                    if f.key not in self.memory.frontier_images and not self._visited(f):
                        bearing = math.atan2(f.centre[1] - pose[1], f.centre[0] - pose[0])
                        self.memory.frontier_images[f.key] = self.look(bearing)
            choice = self.chooser.choose(self.query, self.memory, snaps, frontiers, pose, self._visited)
            if choice.kind == "object" and self.recalled is None:
                self.recalled = choice
            if choice.kind == "frontier" and self.choice is not None and self.choice.kind == "frontier":
                # Keep walking to the frontier chosen before while it exists: re-deciding between
                # two similar frontiers every step would dither between them.
                same = [f for f in frontiers if math.hypot(*(f.centre - self.choice.target)) < 1.0
                        and not self._visited(f)]
                if same:
                    choice = Choice("frontier", same[0].id, -1, same[0].centre.copy())
            if choice.kind == "none" and self.visited and not self.retried:  # all tried: look again, retry once
                self.visited, self.retried = [], True
                self.pending += ["turn_left"] * int(round(360 / self.turn_angle))
                return self.pending.pop(0)
            if choice.kind == "none" and not self.reexplored:
                # Explored everywhere and the goal still unseen (a small thing on a high shelf, seen from
                # no cell walked so far): sweep the map once more from here, objects and map kept, as
                # the cleared agent sweeps anew for every goal.
                self.memory.reexplore()
                self.visited, self.reexplored = [], True
                self.pending += ["turn_left"] * int(round(360 / self.turn_angle))
                return self.pending.pop(0)
            if choice.kind == "object" and (self.choice is None or self.choice.object != choice.object):
                self.blind, self.sighted, self.looked_up_at = [], None, None
            self.choice = choice
        if self.choice.kind == "none":
            return "stop"
        if self.choice.kind == "object":
            target = self.memory.objects[self.choice.object].position[:2]
            radii = (self.stop_distance, self.stop_distance + 0.15, self.stop_distance + 0.3)
            action, status = self.planner.action(self.memory, pose, target, radii, tuple(self.blind))
            if status == "arrived":
                return self._arrive(pose, target, detected)
            if status != "unreachable":
                if self.blind:  # a place left beside it that 0.25 m steps keep missing is not worth the budget
                    if self.planner.distance < self.nearest - 0.05:
                        self.nearest, self.stalled = self.planner.distance, 0
                    else:
                        self.stalled += 1
                    if self.stalled > STALL_STEPS:
                        return "stop"
                return action
            if self.blind:  # every place near it left was tried: it stands as near as the map allows
                return "stop"
            self.unreachable.add(self.choice.object)  # no path on the map: another choice, or explore
            self.choice = None
            return self._decide(pose, detected) if len(self.unreachable) < 20 else "stop"
        action, status = self.planner.action(self.memory, pose, self.choice.target, (0.5, 0.8))
        if status != "moving":  # at the frontier, or out of reach: not again for this goal
            self.visited.append(self.choice.target.copy())
            if status == "arrived":  # reached and still unexplored beyond: give it up
                self.memory.give_up(self.choice.target, 1.0)
            self.choice = None
            return self._decide(pose, detected) if len(self.visited) < 50 else "stop"
        return action

    def _arrive(self, pose: np.ndarray, target: np.ndarray, detected: list[int]) -> str:
        """Near the chosen object: stop where it has been seen (a goal's view points must see it, as
        habitat's ObjectNav view points do; the map alone cannot tell the near side of a wall from
        the far side). Else face it, look up once, and failing that try another place near it."""
        here = pose[:2]
        if self.sighted is not None and math.hypot(*(self.sighted - here)) < 1e-3:
            return "stop"
        if len(self.blind) >= MAX_BLIND:
            return "stop"
        bearing = math.atan2(target[1] - here[1], target[0] - here[0])
        diff = (bearing - pose[3] + math.pi) % (2 * math.pi) - math.pi
        if abs(diff) > 0.5 * math.radians(self.turn_angle):
            return "turn_left" if diff > 0 else "turn_right"
        if self.looked_up_at is None or math.hypot(*(self.looked_up_at - here)) >= 1e-3:
            self.looked_up_at = here.copy()
            self.pending.append("look_down")
            return "look_up"
        self.blind.append(here.copy())
        self.nearest, self.stalled = math.inf, 0
        return self._decide(pose, detected)

    def _visited(self, f: Frontier) -> bool:
        return any(math.hypot(*(f.centre - v)) < 1.0 for v in self.visited)


class GoatTeacher:
    """The 3D-Mem agent (scripted chooser, memory kept) as the expert that imitation learns from on
    nav/goat (`trainer.expert=scenemem`): one GoatAgent per env of a batch, acting on that env's
    observations alone, so its labels ask nothing a learner could not see (the shortest-path
    oracle's turn toward a goal out of sight does). `actions(obs)` labels one step of the batch;
    `stepped(executed, done)` tells each agent what ran (a learner's action in DAgger's mixture)
    and whose episode ended."""

    SENSORS = ("depth", "semantic", "instance")  # what the teacher reads (its detector: instance ids)

    @classmethod
    def check_sensors(cls, sensors) -> None:
        """One ConfigError line when the task's sensors lack what the teacher reads."""
        from embodied.config import check

        missing = [s for s in cls.SENSORS if s not in sensors]
        check(not missing, "task.sensors", f"{list(sensors)} lacks {missing}; trainer.expert=scenemem "
              "reads depth, semantic and instance (add them; the learner's agent.ignore can leave them out)")

    def __init__(self, task_cfg, num_envs: int):
        self.check_sensors(task_cfg.sensors)
        self.agents = [GoatAgent.for_task(task_cfg, "kept") for _ in range(num_envs)]

    def reset(self) -> None:
        for agent in self.agents:
            agent.reset()

    def actions(self, obs: dict) -> np.ndarray:
        # In-process numpy observations (the batched simulator, whose are tensors, does not run nav/goat).
        return np.array([agent.act({k: v[i] for k, v in obs.items()}) for i, agent in enumerate(self.agents)],
                        np.int64)

    def stepped(self, executed, done) -> None:
        for i, agent in enumerate(self.agents):
            if done[i]:
                agent.reset()
            else:
                agent.executed(int(executed[i]))
