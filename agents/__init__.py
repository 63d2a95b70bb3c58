"""JAX/Flax offline-RL agents: BC, IQL, ReBRAC, FQL, DeFlow and FiDec behind one interface.

Every agent is an immutable pytree with ``create(seed, example_batch, config)``, a jitted
``update(batch) -> (agent, info)``, ``update_n`` (fused steps), ``sample_actions(observations, seed,
temperature)`` with actions in [-1, 1], ``validation_info`` and ``save``/``load``.

>>> from agents import make_agent
>>> agent = make_agent("iql", seed=0, example_batch=batch, config_overrides={"alpha": 1.0})
>>> agent, info = agent.update(batch)
>>> actions = agent.sample_actions(batch["observations"], seed=key, temperature=0.0)
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from fidec_gym.agents.base import (
    Agent,
    FrozenConfig,
    create_vmapped,
    make_config,
    read_checkpoint,
    unstack_agents,
    vmapped_sample_actions,
    vmapped_update,
    vmapped_update_n,
)
from fidec_gym.agents.bc import BCAgent
from fidec_gym.agents.deflow import DeFlowAgent
from fidec_gym.agents.fidec import FiDecAgent, FiDecOfficialAgent
from fidec_gym.agents.fql import FQLAgent
from fidec_gym.agents.iql import IQLAgent
from fidec_gym.agents.rebrac import ReBRACAgent
from fidec_gym.errors import ConfigError, UnknownNameError

AGENTS: dict[str, type[Agent]] = {
    "bc": BCAgent,
    "iql": IQLAgent,
    "rebrac": ReBRACAgent,
    "fql": FQLAgent,
    "deflow": DeFlowAgent,
    "fidec": FiDecAgent,
    "fidec-official": FiDecOfficialAgent,
}

__all__ = [
    "AGENTS",
    "Agent",
    "FrozenConfig",
    "create_vmapped",
    "get_config",
    "load_agent",
    "make_agent",
    "make_config",
    "unstack_agents",
    "vmapped_sample_actions",
    "vmapped_update",
    "vmapped_update_n",
]


def agent_class(name: str) -> type[Agent]:
    """The class registered as ``name``; an unknown name is an error listing the valid ones."""
    if name not in AGENTS:
        raise UnknownNameError(f"unknown agent {name!r}; valid agents: {sorted(AGENTS)}")
    return AGENTS[name]


def get_config(name: str) -> dict:
    """The default config of agent ``name`` as a plain dict."""
    return dict(agent_class(name).get_config())


def make_agent(
    name: str, seed: int, example_batch: Mapping[str, Any], config_overrides: Optional[Mapping[str, Any]] = None
) -> Agent:
    """A freshly initialised agent ``name``; ``config_overrides`` may only use keys of ``get_config(name)``."""
    cls = agent_class(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be a whole number (an int), got {type(seed).__name__} {seed!r}")
    return cls.create(seed, example_batch, config_overrides)


def example_batch_from_config(config: Mapping[str, Any], batch_size: int = 1) -> dict[str, np.ndarray]:
    """Zero arrays with the shapes an agent was created from (every key any agent's losses read)."""
    observations = np.zeros((batch_size, *config["observation_shape"]), dtype=config["observation_dtype"])
    actions = np.zeros((batch_size, config["action_dim"]), dtype=np.float32)
    scalars = np.zeros((batch_size,), dtype=np.float32)
    return {
        "observations": observations,
        "actions": actions,
        "next_observations": observations,
        "next_actions": actions,
        "rewards": scalars,
        "masks": scalars,
        "terminals": scalars,
    }


def load_agent(path: str) -> Agent:
    """Rebuild the agent saved at ``path`` (its name and config are read from the file).

    Checkpoints of vmapped seeds (``create_vmapped``) come back vmapped.
    """
    payload = read_checkpoint(path)
    cls = agent_class(payload["agent"])
    config = FrozenConfig(payload["config"])
    missing = [key for key in ("observation_shape", "observation_dtype", "action_dim") if key not in config]
    if missing:
        raise ConfigError(f"{path} lacks the config keys {missing} needed to rebuild the agent")
    example_batch = example_batch_from_config(config)
    rng = np.asarray(payload["state"]["rng"])
    if rng.ndim == 2:
        template = create_vmapped(cls, np.arange(rng.shape[0]), example_batch, config)
    else:
        template = cls.create(0, example_batch, config)
    return template.load(path)
