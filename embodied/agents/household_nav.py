"""The navigation controller that lets Optimus-1's agent (embodied.agents.household.HouseholdAgent,
unchanged: planner, skills, reflector, memory) act in the household's apartment world
(`task.world=apartment`, embodied.tasks.household.apartment).

The agent decides at the symbolic level as before; the controller turns each of its actions into
steps of the apartment env and reports back one symbolic outcome:
- `goto <room>`: walk to the room's centre point until inside the room; reported as the symbolic
  env reports a goto;
- `open` / `close <container>`: walk to the container's approach viewpoint and turn to face it until
  the observation says it is within reach, then act; what the env says is what the agent perceives;
- `make <item>`: at the station the agent's knowledge names for the item, else at each station of
  the room in turn (the symbolic `make` tries every station of the room at once) until one makes
  it or says what it lacks;
- `take` / `place <item>`: at once (the agent takes only what it sees within reach).
The controller walks on its own map: an occupancy grid built from the depth images it steps
through (`SceneMemory.observe_map`, the 3D-Mem agent's map; unknown cells count as free, so it
learns what blocks by looking, and a bump marks the cell ahead blocked), planned on by the 3D-Mem
agent's `MapPlanner`. It never reads the env's navigable grid. What it is given is the floor
plan's layout (each room's centre point, each container's and station's footprint and approach
viewpoint: where things stand, as a household's map would say) and its pose (GPS + compass); the
targets are moved into the episode-start frame that the observation's `pose` uses. When the oracle
acts (the teacher), the agent watches the oracle's interactions, as it watches them in the
symbolic env, and its map takes in the oracle's steps too. Every camera frame (`rgb`) it steps
through goes to the agent's key-frame buffer, so the cases of a sub-goal keep its key frames.
"""
from __future__ import annotations

import math

import numpy as np

from embodied.agents.goat import MapPlanner
from embodied.agents.household import HouseholdAgent
from embodied.memory.hybrid import KeyFrames
from embodied.memory.scene import SceneMemory, SceneMemoryConfig
from embodied.render import Camera
from embodied.tasks.household import ACTION_ID, ACTION_TABLE, ITEMS, ROOMS, STATIONS
from embodied.tasks.household.apartment import (APARTMENT_ACTION_ID, APARTMENT_ACTION_TABLE, ARRIVAL, MOVES,
                                                bearing_to)
from embodied.tasks.nav import relative_pose

MAX_FREE_DECISIONS = 8  # symbolic decisions in a row that need no step (a goto to the room it is in)
ROOM_RADII = (0.3, 0.6, 1.0)  # a room's centre point may stand under furniture on the map: nearest free cells first


class NavigationController:
    """A HouseholdAgent acting in an ApartmentHouseholdEnv; the same interface as the agent (reset,
    act, observe, end_episode, report, last_action), so run_episode, the eval and the recorder drive
    either."""

    def __init__(self, agent: HouseholdAgent, floor_plan: dict):
        self.agent = agent
        self.plan = p = floor_plan
        if "depth" not in p["sensors"]:
            raise ValueError(f"the navigation controller maps from depth; task.sensors={p['sensors']} lacks it")
        camera = Camera(width=p["width"], height=p["height"], hfov_deg=p["hfov"], mount_height=p["camera_height"])
        self.map = SceneMemory(camera, SceneMemoryConfig(keep_images=False, agent_height=p["agent_height"]))
        self.planner = MapPlanner(p["forward_step"], p["turn_angle"], p["agent_radius"], p["agent_height"],
                                  cover_target=True)
        self.half_turn = 0.5 * math.radians(p["turn_angle"])
        self.start = np.zeros(4)
        self.pose = np.zeros(4)  # in the episode-start frame, as the observation's pose
        self.bumps = self.map_resets = 0  # per episode: bumps the map did not foresee, maps forgotten (no path left on them)
        self.macro: dict | None = None
        self.prev_obs: dict | None = None
        self.last_action: int | None = None
        self.teaching = False
        self.agent_info: dict = {}

    # --- the agent's interface ------------------------------------------------------------------------
    @property
    def memory(self):
        return self.agent.memory

    @property
    def variant(self) -> str:
        return self.agent.variant

    def reset(self, obs: dict, info: dict, learning: bool = False, teaching: bool = False) -> None:
        if self.agent.frames is None and "rgb" in obs:
            self.agent.frames = KeyFrames()
        self.agent.reset(obs, info, learning=learning, teaching=teaching)
        self.teaching, self.macro, self.prev_obs = teaching, None, obs
        self.start = np.asarray(info["map_pose"], np.float64)
        self.map.reset()
        self.planner.reset()
        self.bumps = self.map_resets = 0
        self._see(obs)

    def end_episode(self, info: dict) -> dict:
        return self.agent.end_episode(info)

    def report(self) -> dict:
        return self.agent.report()

    def act(self, obs: dict, info: dict) -> int:
        for _ in range(MAX_FREE_DECISIONS):
            if self.macro is None:
                self._begin(self.agent.act(obs, info), obs)
            action = self._next(obs)
            if action is not None:
                self.last_action = action
                return action
            # Done without a step (in the room already): tell the agent as the symbolic env would.
            room = ROOMS[int(obs["room"][0])]
            self._report(obs, {**info, "feedback": "ok", "message": f"in the {room}",
                               "event": {"verb": "goto", "target": room, "room": room}})
            info = self.agent_info
        self.last_action = APARTMENT_ACTION_ID["turn_left", -1]
        return self.last_action

    def observe(self, action: int, obs: dict, info: dict) -> None:
        """After each env step (own action or, teaching, the oracle's)."""
        verb, target = APARTMENT_ACTION_TABLE[action]
        if verb == "move_forward" and info.get("collided"):
            # Depth missed what stopped it (a thin leg, a corner between rays): block the cell ahead.
            self.bumps += 1
            yaw = self.pose[3]
            self.map.mark_blocked(self.pose[:2] + 0.3 * np.array([math.cos(yaw), math.sin(yaw)]))
            self.planner.invalidate()
        self._see(obs)
        if verb not in MOVES:
            if self.teaching or self.macro is None:
                self.agent.last_action = ACTION_ID[verb, target]
                self._report(obs, info, self.agent.last_action)
            elif not self._retry_make(info):
                self._report(obs, info)
        elif self.macro is not None and self.macro["verb"] == "goto" and int(obs["room"][0]) == self.macro["target"]:
            room = ROOMS[self.macro["target"]]
            self._report(obs, {**info, "feedback": "ok", "message": f"in the {room}",
                               "event": {"verb": "goto", "target": room, "room": room}})
        self.prev_obs = obs

    # --- macros ----------------------------------------------------------------------------------------
    def _see(self, obs: dict) -> None:
        """Every camera frame: into the map (the camera stays level: neither the controller nor the
        oracle looks up or down) and the agent's key-frame buffer."""
        self.pose = np.asarray(obs["pose"], np.float64).reshape(4)
        self.map.observe_map(obs)
        if self.agent.frames is not None and "rgb" in obs:
            self.agent.frames.push(obs["rgb"])

    def _local(self, points) -> np.ndarray:
        """Floor-plan points [k, 2] (or one [2]) in the episode-start frame of the observation's pose."""
        p = np.asarray(points, np.float64)
        flat = p.reshape(-1, 2)
        out = np.stack([relative_pose(self.start, (x, y, self.start[2], 0.0))[:2] for x, y in flat])
        return out.reshape(p.shape)

    def _walk(self, target, radii: tuple, face=None) -> int:
        """The next step to the nearest free cells within radii of `target` (floor-plan frame) on the
        agent's map; there, a turn to face the nearest of `face`, or a step towards it when it is faced
        already and still out of reach."""
        goal = self._local(target)
        action, status = self.planner.action(self.map, self.pose, goal, radii)
        if status == "unreachable":
            # No path on the map even with half the clearance: obstacles fused from depth closed the
            # way (the target's room exists, and rooms connect). Forget the map and look afresh.
            self.map_resets += 1
            self.map.clear()
            self.planner.reset()
            action, status = self.planner.action(self.map, self.pose, goal, radii)
        if status == "arrived":
            if face is None:  # at a room's centre point and not yet in the room: a step on
                return APARTMENT_ACTION_ID["move_forward", -1]
            turn = bearing_to(self._local(face), self.pose[0], self.pose[1], self.pose[3])
            # Faced and still out of reach (arrived at the outer radius): a step closer.
            action = "move_forward" if abs(turn) <= self.half_turn else "turn_left" if turn > 0 else "turn_right"
        elif status == "unreachable":
            action = "turn_left"
        return APARTMENT_ACTION_ID[action, -1]

    def _begin(self, symbolic: int, obs: dict) -> None:
        verb, target = ACTION_TABLE[symbolic]
        macro = {"symbolic": symbolic, "verb": verb, "target": target}
        if verb == "make":
            known = self.agent.knowledge().recipes.get(ITEMS[target])
            room = int(obs["room"][0])
            here = [s for s in STATIONS if self.plan["stations"][s] == room]
            macro["stations"] = [known.station] if known is not None and known.station in here else here
        self.macro = macro

    def _next(self, obs: dict) -> int | None:
        """The macro's next env action; None when it is done without one."""
        m = self.macro
        verb, target = m["verb"], m["target"]
        if verb == "goto":
            if int(obs["room"][0]) == target:
                return None
            return self._walk(self.plan["room_points"][target], ROOM_RADII)
        if verb in ("open", "close"):
            if obs["containers"][target] == 0:
                spot = self.plan["container_spots"][target]
                return self._walk(spot["viewpoint"], (ARRIVAL, ARRIVAL + 0.15, ARRIVAL + 0.3), spot["points"])
        elif verb == "make" and m["stations"]:
            if not any(obs["stations"][STATIONS.index(s)] for s in m["stations"]):
                station = min(m["stations"], key=self._distance_to)
                spot = self.plan["station_spots"][station]
                return self._walk(spot["viewpoint"], (ARRIVAL, ARRIVAL + 0.15, ARRIVAL + 0.3), spot["points"])
            m["tried"] = [s for s in m["stations"] if obs["stations"][STATIONS.index(s)]]
        m["before"] = obs
        return APARTMENT_ACTION_ID[verb, target]

    def _distance_to(self, station: str) -> float:
        """Straight-line distance to a station's viewpoint (its room is the agent's: no walls between)."""
        return float(np.hypot(*(self._local(self.plan["station_spots"][station]["viewpoint"]) - self.pose[:2])))

    def _retry_make(self, info: dict) -> bool:
        """A make the station in reach cannot do while other stations of the room are untried: go on."""
        m = self.macro
        if m["verb"] != "make" or info.get("feedback") != "cannot make here":
            return False
        m["stations"] = [s for s in m["stations"] if s not in m.get("tried", ())]
        return bool(m["stations"])

    def _report(self, obs: dict, info: dict, symbolic: int | None = None) -> None:
        """The agent observes one symbolic step: the obs before it (the macro's interaction, or the last
        step), its action, the obs and info after."""
        before = self.macro.get("before") if self.macro is not None and symbolic is None else None
        self.agent.obs = before if before is not None else self.prev_obs
        if symbolic is None:
            symbolic = self.macro["symbolic"]
        if info.get("feedback") == "nothing in reach" and ACTION_TABLE[symbolic][0] == "make":
            info = {**info, "feedback": "no station here"}  # the symbolic word for a make with no station at hand
        self.agent.observe(symbolic, obs, info)
        self.agent_info = info
        self.macro = None


def household_agent(variant: str, memory, floor_plan: dict, cases: int = 8, seed: int = 0):
    """Optimus-1's agent for a household env's floor plan: the HouseholdAgent itself (symbolic world), or
    inside a NavigationController (the apartment world, whose floor plan says where things stand)."""
    agent = HouseholdAgent(variant, memory, floor_plan, cases=cases, seed=seed)
    return NavigationController(agent, floor_plan) if "room_points" in floor_plan else agent


__all__ = ["MAX_FREE_DECISIONS", "NavigationController", "household_agent"]
