"""The navigation controller that lets Optimus-1's agent (embodied.agents.household.HouseholdAgent,
unchanged: planner, skills, reflector, memory) act in the household's apartment world
(`task.world=apartment`, embodied.tasks.household.apartment).

The agent decides at the symbolic level as before; the controller turns each of its actions into
steps of the apartment env and reports back one symbolic outcome:
- `goto <room>`: walk (shortest path on the public map, the navigable grid) to the room's centre
  point until inside the room; reported as the symbolic env reports a goto;
- `open` / `close <container>`: walk to the container's approach viewpoint and turn to face it
  (`approach_action`, the env oracle's walk) until the observation says it is within reach, then
  act; what the env says is what the agent perceives;
- `make <item>`: at the station the agent's knowledge names for the item, else at each station of
  the room in turn (the symbolic `make` tries every station of the room at once) until one makes
  it or says what it lacks;
- `take` / `place <item>`: at once (the agent takes only what it sees within reach).
The controller is localised on the public map (`info["map_pose"]`) and walks with a body model of
the env's (forward step, turn angle). When the oracle acts (the teacher), the agent watches the
oracle's interactions, as it watches them in the symbolic env. Every camera frame (`rgb`) it steps
through goes to the agent's key-frame buffer, so the cases of a sub-goal keep its key frames.
"""
from __future__ import annotations

import numpy as np

from embodied.agents.household import HouseholdAgent
from embodied.memory.hybrid import KeyFrames
from embodied.sim import NavAgent
from embodied.tasks.household import ACTION_ID, ACTION_TABLE, ITEMS, ROOMS, STATIONS
from embodied.tasks.household.apartment import APARTMENT_ACTION_ID, APARTMENT_ACTION_TABLE, MOVES, approach_action

MAX_FREE_DECISIONS = 8  # symbolic decisions in a row that need no step (a goto to the room it is in)


class NavigationController:
    """A HouseholdAgent acting in an ApartmentHouseholdEnv; the same interface as the agent (reset,
    act, observe, end_episode, report, last_action), so run_episode, the eval and the recorder drive
    either."""

    def __init__(self, agent: HouseholdAgent, floor_plan: dict):
        self.agent = agent
        self.plan = floor_plan
        self.grid = floor_plan["grid"]
        self.body = NavAgent(self.grid, forward_step=floor_plan["forward_step"], turn_angle=floor_plan["turn_angle"])
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
        self._locate(info)
        self._see(obs)

    def end_episode(self, info: dict) -> dict:
        return self.agent.end_episode(info)

    def report(self) -> dict:
        return self.agent.report()

    def act(self, obs: dict, info: dict) -> int:
        self._locate(info)
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
        self._locate(info)
        self._see(obs)
        verb, target = APARTMENT_ACTION_TABLE[action]
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
        if self.agent.frames is not None and "rgb" in obs:
            self.agent.frames.push(obs["rgb"])

    def _locate(self, info: dict) -> None:
        x, y, _, yaw = info["map_pose"]
        self.body.x, self.body.y, self.body.yaw = float(x), float(y), float(yaw)  # the follower reads the pose only

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
            point = self.plan["room_points"][target]
            return APARTMENT_ACTION_ID[approach_action(self.grid, self.body, point, np.asarray(point)[None]), -1]
        if verb in ("open", "close"):
            if obs["containers"][target] == 0:
                spot = self.plan["container_spots"][target]
                return APARTMENT_ACTION_ID[approach_action(self.grid, self.body, spot["viewpoint"], spot["points"]), -1]
        elif verb == "make" and m["stations"]:
            if not any(obs["stations"][STATIONS.index(s)] for s in m["stations"]):
                station = min(m["stations"], key=self._distance_to)
                spot = self.plan["station_spots"][station]
                return APARTMENT_ACTION_ID[approach_action(self.grid, self.body, spot["viewpoint"], spot["points"]), -1]
            m["tried"] = [s for s in m["stations"] if obs["stations"][STATIONS.index(s)]]
        m["before"] = obs
        return APARTMENT_ACTION_ID[verb, target]

    def _distance_to(self, station: str) -> float:
        spot = self.plan["station_spots"][station]
        return self.grid.distance_field_to_points(spot["viewpoint"]).at((self.body.x, self.body.y))

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
    inside a NavigationController (the apartment world, whose floor plan carries the map)."""
    agent = HouseholdAgent(variant, memory, floor_plan, cases=cases, seed=seed)
    return NavigationController(agent, floor_plan) if "grid" in floor_plan else agent


__all__ = ["MAX_FREE_DECISIONS", "NavigationController", "household_agent"]
