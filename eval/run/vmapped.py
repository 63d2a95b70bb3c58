"""The compiled pieces of multi-seed training (:mod:`fidec_gym.eval.run.multiseed`): K updates of every seed per
dispatch with batches drawn on the device or given by the host, and what one seed's checkpoint holds."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jax

from fidec_gym.errors import ConfigError

DEFAULT_UPDATES_PER_CALL = 100


@dataclass
class SeedState:
    """What one seed's checkpoint holds besides its agent slice; a resume restores exactly this."""

    step: int
    seed: int
    group: list  # the seeds trained together
    train_config: dict
    resolved_overrides: dict
    sample_key: list | None  # device sampling: the seed's batch-index key (uint32 pair)
    sampler: dict | None  # host sampling: the seed's BatchSampler state
    val_sampler: dict | None
    evaluations: list
    elapsed: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> SeedState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in state.items() if key in names})


def parse_seeds(text: str) -> list[int]:
    """``"8"`` -> seeds 0..7; ``"0,1,2"`` -> those seeds (distinct, >= 0)."""
    try:
        parts = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (e.g. --seeds 8) or a list (e.g. --seeds 0,1,2)") from None
    seeds = list(range(parts[0])) if len(parts) == 1 and "," not in str(text) else parts
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: need at least one seed, all distinct and >= 0")
    return seeds


# ================================================================================================ compiled steps
def _sample_rows(data: dict, key: Any, batch_size: int) -> dict:
    index = jax.random.randint(key, (batch_size,), 0, data["observations"].shape[0])
    return {name: values[index] for name, values in data.items()}


@functools.partial(jax.jit, static_argnames=("batch_size",))
def device_updates(agents: Any, keys: Any, data: dict, num_updates: Any, batch_size: int):
    """``num_updates`` updates of every seed, batches drawn on the device; returns the new agents and keys, the last
    step's info per seed and, as its ``nonfinite``, the per-seed maximum over the steps.

    ``num_updates`` is a traced count (a ``while`` loop, not a fixed-length ``scan``), so one compiled program serves
    every chunk length the schedule cuts (1 for the step-1 evaluation, K, the rest up to a boundary).
    """
    num_updates = jax.numpy.asarray(num_updates, dtype=jax.numpy.int32)

    def one_seed(agent, key):
        # jit so that the abstract update below and the loop body share one trace (tracing an update takes seconds).
        @jax.jit
        def step(agent, key):
            key, batch_key = jax.random.split(key)
            agent, info = agent._update(_sample_rows(data, batch_key, batch_size))
            return agent, key, info

        # The loop carries the last info; its structure comes from one abstract update (nothing is computed).
        info_shape = jax.eval_shape(step, agent, key)[2]
        blank = jax.tree_util.tree_map(lambda leaf: jax.numpy.zeros(leaf.shape, leaf.dtype), info_shape)

        def body(_, carry):
            agent, key, _, worst = carry
            agent, key, info = step(agent, key)
            return agent, key, info, jax.numpy.maximum(worst, info["nonfinite"])

        agent, key, last, worst = jax.lax.fori_loop(0, num_updates, body, (agent, key, blank, blank["nonfinite"]))
        return agent, key, {**last, "nonfinite": worst}

    return jax.vmap(one_seed)(agents, keys)


@jax.jit
def host_updates(agents: Any, batches: dict):
    """Updates of every seed from host batches shaped (seeds, n, batch, ...)."""
    return jax.vmap(lambda agent, b: agent._update_n(b))(agents, batches)


@jax.jit
def _validation(agents: Any, batches: dict):
    return jax.vmap(lambda agent, b: agent.validation_info(b))(agents, batches)


def grouped_policy(agents: Any, seeds: list[int], width: int):
    """A numpy policy for a vector env of ``len(seeds) x width`` sub-environments, ``width`` per seed: one batched
    call per vector step gives each seed's agent its own sub-environments' actions (evaluation temperature 0).

    Each seed draws its action keys from its own chain, seeded by ``seeds[i]``, exactly as a one-seed evaluation
    (:func:`fidec_gym.eval.run.evaluate.make_policy`) does, so a seed's evaluation does not depend on its group.
    """
    import jax.numpy as jnp
    import numpy as np

    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])
    count = len(seeds)

    def policy(observations: np.ndarray) -> np.ndarray:
        nonlocal keys
        grouped = observations.reshape(count, width, *observations.shape[1:])
        actions, keys = _sample_each(agents, jnp.asarray(grouped), keys)
        actions = np.asarray(actions)
        # A seed that diverged still fills its sub-environments; its (discarded) actions must be finite to step.
        actions = np.where(np.isfinite(actions), actions, 0.0)
        return np.clip(actions.reshape(count * width, -1), -1.0, 1.0)

    return policy


@jax.jit
def _sample_each(agents: Any, observations: Any, keys: Any) -> tuple[Any, Any]:
    """Each seed's actions and its next key. The split is compiled with the sampling: op by op, a vmapped split
    is traced again on every call and cost as much as the rest of the policy call."""
    pairs = jax.vmap(jax.random.split)(keys)
    sample = jax.vmap(lambda agent, obs, key: agent.sample_actions(obs, key, 0.0))
    return sample(agents, observations, pairs[:, 1]), pairs[:, 0]
