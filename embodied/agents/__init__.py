"""Agents: observation encoders + a memory + policy/value heads (see `embodied.agents.policy`)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gymnasium import spaces

from embodied.config import plugin_entry_points
from embodied.agents.aux_heads import AUX_HEADS, register_aux_head
from embodied.agents.config import AgentConfig
from embodied.agents.encoders import KNOWN_KEYS, ObservationEncoder
from embodied.agents.policy import Agent


# Agents that are not `Agent` (configs/agent/<name>.yaml with `name:`): name -> "module:function" of a
# builder from the whole run config (agent, memory, task); imported only when chosen.
AGENT_KINDS = {"keyframe": "embodied.agents.keyframe:build_from_run_config",
               "goat_pointer": "embodied.agents.goat_chooser:build_from_run_config"}
# Installed packages add kinds in entry point group embodied.agents (name = kind, value = module:function).
AGENT_KINDS.update({ep.name: ep.value for ep in plugin_entry_points("agents") if ep.name not in AGENT_KINDS})


def build_agent_kind(config: Mapping):
    """The agent of a run config whose `agent.name` is in AGENT_KINDS, else None."""
    import importlib

    target = AGENT_KINDS.get(str((config.get("agent") or {}).get("name")))
    if target is None:
        return None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(config)


def build_agent(
    observation_space: spaces.Dict,
    action_space: spaces.Discrete,
    memory: str = "gru",
    memory_options: Mapping | None = None,
    **agent_options,
) -> Agent:
    """Build an Agent; `agent_options` are AgentConfig fields (unknown keys raise ValueError)."""
    allowed = [f.name for f in dataclasses.fields(AgentConfig)]
    for key in agent_options:
        if key not in allowed:
            raise ValueError(f"unknown agent option {key!r}; allowed: {', '.join(allowed)}")
    return Agent(observation_space, action_space, memory, memory_options, AgentConfig(**agent_options))


__all__ = ["AGENT_KINDS", "build_agent_kind", "AUX_HEADS", "Agent", "AgentConfig", "KNOWN_KEYS", "ObservationEncoder", "build_agent", "register_aux_head"]
