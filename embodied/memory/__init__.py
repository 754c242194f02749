"""Memory modules behind one interface (see `embodied.memory.base`), registered by name."""
from embodied.memory.base import MEMORIES, Memory, build_memory, memory_config, register_memory, step_at
from embodied.memory.config import GRUConfig, LSTMConfig, MemoryConfig, NoMemoryConfig, TrXLConfig
from embodied.memory.gtrxl import GatedTransformerXLMemory
from embodied.memory.hcam import HCAMConfig, HCAMMemory
from embodied.memory.sat import SATConfig, SpatiallyAwareMemory
from embodied.memory.recurrent import GRUMemory, LSTMMemory, NoMemory

__all__ = [
    "MEMORIES",
    "Memory",
    "MemoryConfig",
    "build_memory",
    "memory_config",
    "register_memory",
    "step_at",
    "NoMemory",
    "NoMemoryConfig",
    "GRUMemory",
    "GRUConfig",
    "LSTMMemory",
    "LSTMConfig",
    "GatedTransformerXLMemory",
    "TrXLConfig",
    "HCAMMemory",
    "HCAMConfig",
    "SpatiallyAwareMemory",
    "SATConfig",
]
