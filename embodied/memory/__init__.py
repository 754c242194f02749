"""Memory modules behind one interface (see `embodied.memory.base`), registered by name."""
from embodied.memory.base import MEMORIES, Memory, build_memory, memory_config, register_memory, step_at
from embodied.memory.config import GRUConfig, LSTMConfig, MemoryConfig, NoMemoryConfig, TrXLConfig
from embodied.memory.gtrxl import GatedTransformerXLMemory
from embodied.memory.hcam import HCAMConfig, HCAMMemory
from embodied.memory.sat import SATConfig, SpatiallyAwareMemory
from embodied.memory.recurrent import GRUMemory, LSTMMemory, NoMemory
from embodied.memory import dcem as _dcem  # noqa: F401  (registers dcem)
from embodied.memory import membank as _membank  # noqa: F401  (registers membank)
from embodied.config import load_plugins

load_plugins("memory")  # installed packages' memories (entry point group embodied.memory)

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
