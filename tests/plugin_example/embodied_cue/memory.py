"""cue_gru: the GRU baseline registered under the plugin's own name and options."""
from dataclasses import dataclass

from embodied.memory import register_memory
from embodied.memory.config import GRUConfig
from embodied.memory.recurrent import GRUMemory


@dataclass
class CueGRUConfig(GRUConfig):
    name: str = "cue_gru"
    hidden: int = 32


@register_memory("cue_gru", config=CueGRUConfig)
class CueGRUMemory(GRUMemory):
    pass
