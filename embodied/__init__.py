"""embodied: memory-equipped embodied agents in procedural 3D worlds."""

__version__ = "0.1.0"
