"""Optimus-1's hybrid multimodal memory, symbolic (Li et al., NeurIPS 2024; docs/household.md): a
knowledge graph learned from outcomes (`KnowledgeGraph`, HDKG) and an experience pool of sub-goal
cases retrieved by similarity (`ExperiencePool`, AMEP; with the attempt's `KeyFrames` where the
world has a camera), persisted in one SQLite file (`MemoryStore`).

It is a structured memory (DESIGN.md): not tensor state but objects per world that outlive the
process; it imports no torch and nothing above this layer. Agents that plan with it live in
embodied.agents.household."""
from embodied.memory.hybrid.frames import KeyFrames
from embodied.memory.hybrid.graph import KnowledgeGraph, RecipeFact
from embodied.memory.hybrid.pool import FEATURE_DIM, ExperiencePool, features
from embodied.memory.hybrid.store import MemoryStore, MemoryStoreError

__all__ = ["FEATURE_DIM", "ExperiencePool", "KeyFrames", "KnowledgeGraph", "MemoryStore", "MemoryStoreError",
           "RecipeFact", "features"]
