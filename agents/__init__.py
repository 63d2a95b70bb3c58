"""JAX/Flax offline-RL agents: BC, IQL, ReBRAC, FQL, DeFlow and FiDec behind one interface.

>>> from agents import make_agent
>>> agent = make_agent("iql", seed=0, example_batch=batch, config_overrides={"alpha": 1.0})
>>> agent, info = agent.update(batch)
>>> actions = agent.sample_actions(batch["observations"], seed=key, temperature=0.0)
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Optional

from agents.base import Agent, FrozenConfig, make_config, read_checkpoint
from agents.bc import BCAgent

AGENTS: dict[str, type[Agent]] = {"bc": BCAgent}

__all__ = ["AGENTS", "Agent", "FrozenConfig", "get_config", "load_agent", "make_agent", "make_config"]


def _agent_class(name: str) -> type[Agent]:
    if name not in AGENTS:
        raise KeyError(f"unknown agent {name!r}; valid agents: {sorted(AGENTS)}")
    return AGENTS[name]


def get_config(name: str) -> dict:
    """The default config of agent ``name`` as a plain dict."""
    return dict(_agent_class(name).get_config())


def make_agent(name: str, seed: int, example_batch: Mapping[str, Any],
               config_overrides: Optional[Mapping[str, Any]] = None) -> Agent:
    """A freshly initialised agent ``name``; ``config_overrides`` may only use keys of ``get_config(name)``."""
    return _agent_class(name).create(seed, example_batch, config_overrides)
