"""Many seeds in one program: agents stacked on a leading axis and updated with ``jax.vmap``.

A stacked agent is an ordinary agent pytree whose every leaf has an extra leading dimension (one slice per seed);
results equal separate runs up to floating-point reassociation.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from fidec_gym.errors import ConfigError

if TYPE_CHECKING:
    from fidec_gym.agents.base import Agent

Array = jax.Array
Batch = Mapping[str, Array]
Info = dict


def create_vmapped(
    agent_cls: type[Agent],
    seeds: Sequence[int] | Array,
    example_batch: Batch,
    config: Optional[Mapping[str, Any]] = None,
) -> Agent:
    """One agent per seed, stacked on a leading axis (every leaf gains a dimension of size ``len(seeds)``)."""
    seeds = jnp.asarray(seeds, dtype=jnp.uint32)
    if seeds.ndim != 1 or seeds.shape[0] == 0:
        raise ConfigError(f"seeds must be a non-empty 1-D sequence, got shape {tuple(seeds.shape)}")
    frozen = agent_cls.make_config(config, example_batch)
    return jax.vmap(lambda seed: agent_cls.create(seed, example_batch, frozen))(seeds)


def _batch_axis(agents: Agent, batch: Batch, extra_axes: int) -> Optional[int]:
    """0 when ``batch`` has one slice per seed, ``None`` when one batch is shared by every seed."""
    obs_shape = tuple(agents.config["observation_shape"])
    ndim = jnp.ndim(batch["observations"])
    shared_ndim = 1 + extra_axes + len(obs_shape)
    if ndim == shared_ndim:
        return None
    if ndim == shared_ndim + 1:
        num_seeds = jax.tree_util.tree_leaves(agents.rng)[0].shape[0]
        if batch["observations"].shape[0] != num_seeds:
            raise ConfigError(
                f"a per-seed batch needs a leading axis of {num_seeds} seeds, got {batch['observations'].shape[0]}"
            )
        return 0
    raise ConfigError(
        f"batch observations have {ndim} dimensions; expected {shared_ndim} (shared by all seeds) or "
        f"{shared_ndim + 1} (one batch per seed)"
    )


@functools.partial(jax.jit, static_argnames=("batch_axis",))
def _vmapped_update(agents: Agent, batch: Batch, batch_axis: Optional[int]) -> tuple[Agent, Info]:
    return jax.vmap(lambda agent, b: agent._update(b), in_axes=(0, batch_axis))(agents, batch)


@functools.partial(jax.jit, static_argnames=("batch_axis",))
def _vmapped_update_n(agents: Agent, batches: Batch, batch_axis: Optional[int]) -> tuple[Agent, Info]:
    return jax.vmap(lambda agent, b: agent._update_n(b), in_axes=(0, batch_axis))(agents, batches)


def vmapped_update(agents: Agent, batch: Batch) -> tuple[Agent, Info]:
    """``update`` for every seed of a vmapped agent; ``batch`` is shared or has a leading seed axis."""
    return _vmapped_update(agents, batch, _batch_axis(agents, batch, extra_axes=0))


def vmapped_update_n(agents: Agent, batches: Batch) -> tuple[Agent, Info]:
    """``update_n`` for every seed; ``batches`` is (n, B, ...) shared or (seeds, n, B, ...) per seed."""
    return _vmapped_update_n(agents, batches, _batch_axis(agents, batches, extra_axes=1))


@jax.jit
def _vmapped_sample_actions(agents: Agent, observations: Array, seeds: Array, temperature: Array) -> Array:
    return jax.vmap(lambda agent, obs, seed: agent.sample_actions(obs, seed, temperature))(agents, observations, seeds)


def vmapped_sample_actions(agents: Agent, observations: Array, seed: Array, temperature: float = 1.0) -> Array:
    """Actions of every seed for per-seed observations shaped (seeds, batch, *observation_shape)."""
    num_seeds = jax.tree_util.tree_leaves(agents.rng)[0].shape[0]
    return _vmapped_sample_actions(agents, observations, jax.random.split(seed, num_seeds), jnp.asarray(temperature))


def unstack_agents(agents: Agent) -> list[Agent]:
    """Split a vmapped agent into one agent per seed."""
    num_seeds = jax.tree_util.tree_leaves(agents.rng)[0].shape[0]
    return [jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], agents) for i in range(num_seeds)]
