"""Kinematic navigation: a navigable grid ray-cast from SceneGeometry, a cylinder agent with
discrete and velocity actions and sliding collisions, and a shortest-path expert."""
from embodied.sim.agent import ACTIONS, NavAgent
from embodied.sim.navgrid import DistanceField, NavigableGrid
from embodied.sim.oracle import ShortestPathFollower

__all__ = ["ACTIONS", "DistanceField", "NavAgent", "NavigableGrid", "ShortestPathFollower"]
