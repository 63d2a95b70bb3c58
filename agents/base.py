"""Agent core: the ``Agent`` base class (its module dictionary, training state and optimiser are in
:mod:`~fidec_gym.agents.train_state`).

Every agent is an immutable pytree (``flax.struct.PyTreeNode``) holding a PRNG key, one :class:`TrainState` with
all parameters (targets included) and a static, hashable config. That shape makes ``jax.jit``, ``lax.scan`` over
fused update steps, ``jax.vmap`` over seeds and msgpack serialisation work the same way for every agent.

A subclass provides ``name``, ``get_config()``, ``create(seed, example_batch, config)``,
``total_loss(batch, grad_params, rng) -> (loss, info)`` and ``sample_actions(observations, seed, temperature)``;
it lists its Polyak-averaged modules in ``target_modules`` (or overrides :meth:`Agent.update_targets`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Dict, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fidec_gym.agents.config import DERIVED_KEYS, FrozenConfig, check_overrides, make_config, merge_config
from fidec_gym.agents.seeds import (
    create_vmapped,
    unstack_agents,
    vmapped_sample_actions,
    vmapped_update,
    vmapped_update_n,
)
from fidec_gym.agents.train_state import (
    ModuleDict,
    TrainState,
    _init_params,
    _StaticModule,
    clip_by_global_norm,
    make_optimizer,
    nonpytree_field,
    polyak_update,
)
from fidec_gym.errors import ConfigError, DataNotFoundError, UnknownNameError
from fidec_gym.files import atomic_write_bytes

__all__ = [
    "DERIVED_KEYS",
    "Agent",
    "FrozenConfig",
    "ModuleDict",
    "TrainState",
    "clip_by_global_norm",
    "create_vmapped",
    "make_config",
    "make_optimizer",
    "merge_config",
    "nonpytree_field",
    "polyak_update",
    "read_checkpoint",
    "unstack_agents",
    "vmapped_sample_actions",
    "vmapped_update",
    "vmapped_update_n",
]

Array = jax.Array
Batch = Mapping[str, Array]
Info = Dict[str, Array]

FORMAT_NAME = "fidec-gym-agent"
FORMAT_VERSION = 1


def as_key(seed: Array | int) -> Array:
    """A PRNG key from a key or an integer seed, so ``sample_actions(observations, seed=0)`` works as written."""
    seed = jnp.asarray(seed)
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key) or seed.ndim > 0:
        return seed
    return jax.random.PRNGKey(seed)


# --------------------------------------------------------------------------------------------------------------
# Agent
# --------------------------------------------------------------------------------------------------------------


class Agent(flax.struct.PyTreeNode):
    """Base class of every agent: ``rng``, ``network`` (a :class:`TrainState`) and a static ``config``."""

    rng: Array
    network: TrainState
    config: FrozenConfig = nonpytree_field()
    # Compiled updates are cached by the pytree structure of ``self``, and JAX's structure equality ignores the
    # dataclass type: a subclass with an identical config could then run its parent's compiled update. The
    # class's qualified name as static data (set once, in ``build``) keeps every agent class's programs apart.
    agent_type: str = nonpytree_field(default="")

    name: ClassVar[str] = "agent"
    # Pairs (target module, online module) Polyak-averaged after every update by the default ``update_targets``.
    target_modules: ClassVar[Sequence[tuple[str, str]]] = ()
    # Batch keys the losses read (checked when an update is traced, so a wrong batch fails with a clear message).
    required_batch_keys: ClassVar[Sequence[str]] = ("observations", "actions")

    # ---- configuration ---------------------------------------------------------------------------------------

    @classmethod
    def get_config(cls) -> dict:
        """The agent's default config as a plain dict."""
        raise NotImplementedError(f"{cls.__name__} must define get_config()")

    @classmethod
    def make_config(
        cls, config: Optional[Mapping[str, Any]] = None, example_batch: Optional[Batch] = None
    ) -> FrozenConfig:
        """Defaults merged with ``config`` (which may be partial); shapes are read from ``example_batch``."""
        defaults = cls.get_config()
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"config overrides must be a mapping of config keys to values, e.g. {{'lr': 1e-4}}; got "
                f"{type(config).__name__} {config!r}"
            )
        check_overrides(cls.name, config or {}, defaults)  # unknown keys, and values of the wrong type or range
        merged = merge_config(cls.name, defaults, config)
        if example_batch is None:
            return merged
        if not isinstance(example_batch, Mapping) or not {"observations", "actions"} <= set(example_batch):
            given = sorted(example_batch) if isinstance(example_batch, Mapping) else type(example_batch).__name__
            raise ConfigError(
                "example_batch must be a dict with 'observations' and 'actions' arrays, shaped (batch, ...); "
                f"got {given}"
            )
        observations = np.asarray(jax.device_get(example_batch["observations"]))
        actions = np.asarray(jax.device_get(example_batch["actions"]))
        if actions.ndim != 2:
            raise ConfigError(f"example actions must be shaped (batch, action_dim), got {actions.shape}")
        if observations.shape[:1] != actions.shape[:1]:
            raise ConfigError(
                f"example observations {observations.shape} and actions {actions.shape} differ in batch size"
            )
        if observations.dtype == np.uint8 and merged.get("encoder") is None:
            raise ConfigError(
                "observations are uint8 images but config 'encoder' is None; set encoder='impala_small' "
                "(or another of agents.encoders.ENCODERS) for pixel tasks"
            )
        return merged.replace(
            observation_shape=tuple(int(n) for n in observations.shape[1:]),
            observation_dtype=str(observations.dtype),
            action_dim=int(actions.shape[-1]),
        )

    @classmethod
    def create(cls, seed: int, example_batch: Batch, config: Optional[Mapping[str, Any]] = None) -> Agent:
        """Build a fresh agent from example arrays (only shapes and dtypes are used)."""
        raise NotImplementedError(f"{cls.__name__} must define create()")

    @classmethod
    def build(
        cls,
        seed: int | Array,
        config: FrozenConfig,
        networks: Mapping[str, tuple[nn.Module, Any]],
        targets: Sequence[tuple[str, str]] = (),
    ) -> Agent:
        """Initialise ``networks`` ({name: (module, example args)}) in one ``ModuleDict`` and wrap the result.

        Each ``(target, source)`` pair in ``targets`` starts as an exact copy of the source parameters. ``seed``
        may be a traced integer, so this works under ``jax.vmap`` (see :func:`create_vmapped`).
        """
        rng = jax.random.PRNGKey(seed)
        rng, init_rng = jax.random.split(rng)
        model_def = ModuleDict({key: module for key, (module, _) in networks.items()})
        # Parameter shapes do not depend on the batch size: initialise batched (B, ...) inputs from one row so
        # that every batch size shares a single compiled initialiser.
        example_args = jax.tree_util.tree_map(
            lambda x: x[:1] if np.ndim(x) >= 2 else x, {key: args for key, (_, args) in networks.items()}
        )
        params = dict(_init_params(_StaticModule(model_def), init_rng, example_args)["params"])
        for target, source in targets:
            params[f"modules_{target}"] = params[f"modules_{source}"]
        return cls(
            rng=rng,
            network=TrainState.create(model_def, params, cls.optimizer(config)),
            config=config,
            agent_type=f"{cls.__module__}.{cls.__qualname__}",
        )

    @classmethod
    def optimizer(cls, config: FrozenConfig) -> optax.GradientTransformation:
        """One Adam over every parameter (docs/algorithms.md §3.2); an agent may split it (ReBRAC's
        separate-optimiser option)."""
        return make_optimizer(float(config["lr"]), config.get("grad_clip"))

    # ---- losses and updates ----------------------------------------------------------------------------------

    def total_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        """The summed loss of one step and its info; gradients flow only through ``grad_params``."""
        raise NotImplementedError(f"{type(self).__name__} must define total_loss()")

    def check_batch(self, batch: Batch) -> None:
        """Raise a clear error when ``batch`` misses keys or its shapes do not match the agent's."""
        missing = [key for key in self.required_batch_keys if key not in batch]
        if missing:
            raise UnknownNameError(f"{self.name} batch is missing {missing}; it has {sorted(batch)}")
        obs_shape = tuple(self.config.get("observation_shape") or ())
        for key in ("observations", "next_observations"):
            if key in batch and obs_shape and tuple(batch[key].shape[1:]) != obs_shape:
                raise ConfigError(
                    f"batch[{key!r}] has shape {tuple(batch[key].shape)} but this agent was built for "
                    f"observations shaped (batch, *{obs_shape}); create the agent from an example batch of this task"
                )
        action_dim = self.config.get("action_dim")
        for key in ("actions", "next_actions"):
            if key in batch and action_dim and tuple(batch[key].shape[1:]) != (action_dim,):
                raise ConfigError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}; expected (batch, {action_dim})")

    def target_update(
        self, old_network: TrainState, new_network: TrainState, target: str, source: str, tau: float | Array
    ) -> TrainState:
        """Polyak-average ``source`` into ``target`` using the source parameters from *before* this step.

        The one-step lag reproduces the reference implementation (docs/algorithms.md §3.2).
        """
        params = dict(new_network.params)
        params[f"modules_{target}"] = polyak_update(
            new_network.params[f"modules_{target}"], old_network.params[f"modules_{source}"], tau
        )
        return new_network.replace(params=params)

    def update_targets(self, old_network: TrainState, new_network: TrainState) -> TrainState:
        """Polyak updates after the optimiser step; by default every pair in ``target_modules`` with ``tau``."""
        for target, source in self.target_modules:
            new_network = self.target_update(old_network, new_network, target, source, self.config["tau"])
        return new_network

    def _update(self, batch: Batch) -> tuple[Agent, Info]:
        self.check_batch(batch)
        new_rng, loss_rng = jax.random.split(self.rng)

        def loss_fn(grad_params: Any) -> tuple[Array, Info]:
            return self.total_loss(batch, grad_params, rng=loss_rng)

        new_network, info = self.network.apply_loss_fn(loss_fn)
        new_network = self.update_targets(self.network, new_network)
        return self.replace(network=new_network, rng=new_rng), info

    @jax.jit
    def update(self, batch: Batch) -> tuple[Agent, Info]:
        """One gradient step on ``batch``; returns the new agent and a flat dict of scalar diagnostics."""
        return self._update(batch)

    def _update_n(self, batches: Batch) -> tuple[Agent, Info]:
        new_agent, infos = jax.lax.scan(lambda agent, batch: agent._update(batch), self, batches)
        info = jax.tree_util.tree_map(lambda value: value[-1], infos)
        info["nonfinite"] = jnp.max(infos["nonfinite"])
        return new_agent, info

    @jax.jit
    def update_n(self, batches: Batch) -> tuple[Agent, Info]:
        """``n`` fused updates (``lax.scan``) over batches stacked on a leading axis of length ``n``.

        Returns the info of the **last** step, except ``nonfinite``, which is the maximum over all ``n`` steps.
        """
        return self._update_n(batches)

    @jax.jit
    def validation_info(self, batch: Batch) -> Info:
        """Losses on a held-out batch without updating anything; keys are prefixed with ``val/``."""
        self.check_batch(batch)
        _, info = self.total_loss(batch, self.network.params, rng=jax.random.fold_in(self.rng, 1))
        return {f"val/{key}": value for key, value in info.items()}

    def sample_actions(self, observations: Array, seed: Array, temperature: float = 1.0) -> Array:
        """Actions in [-1, 1] for ``observations`` (batched or a single one)."""
        raise NotImplementedError(f"{type(self).__name__} must define sample_actions()")

    # ---- persistence -----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write a versioned msgpack checkpoint (config, params, optimiser state, rng, step) atomically."""
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "agent": self.name,
            "config": self.config.to_dict(),
            "state": flax.serialization.to_state_dict(
                {
                    "rng": self.rng,
                    "step": self.network.step,
                    "params": self.network.params,
                    "opt_state": self.network.opt_state,
                }
            ),
        }
        data = flax.serialization.msgpack_serialize(jax.device_get(payload))
        atomic_write_bytes(path, data)

    def load(self, path: str | os.PathLike, *, may_differ: tuple[str, ...] = ()) -> Agent:
        """This agent with the state stored at ``path``; the file's agent and config must match this one, except for
        the config keys in ``may_differ`` (the caller knows the stored state means the same under either value)."""
        payload = read_checkpoint(path)
        if payload["agent"] != self.name:
            raise ConfigError(
                f"{path} holds a {payload['agent']!r} agent, not {self.name!r}; load it with agents.load_agent(path)"
            )
        stored = FrozenConfig(payload["config"])
        differing = {
            key: (stored.get(key, "<missing>"), self.config.get(key, "<missing>"))
            for key in sorted((set(stored) | set(self.config)) - set(may_differ))
            if stored.get(key, "<missing>") != self.config.get(key, "<missing>")
        }
        if differing:
            details = ", ".join(f"{key}: file={a!r} agent={b!r}" for key, (a, b) in differing.items())
            raise ConfigError(
                f"config of {path} differs from this agent's in {sorted(differing)} ({details}); create the agent "
                "with the stored config or use agents.load_agent(path)"
            )
        template = {
            "rng": self.rng,
            "step": self.network.step,
            "params": self.network.params,
            "opt_state": self.network.opt_state,
        }
        expected = jax.tree_util.tree_map(np.shape, flax.serialization.to_state_dict(template))
        try:
            found = jax.tree_util.tree_map(np.shape, payload["state"])
        except Exception as error:  # pragma: no cover - defensive, msgpack already validated the structure
            raise ConfigError(f"{path} has a malformed state: {error}") from error
        if expected != found:
            raise ConfigError(
                f"{path} stores parameters with different structure or shapes than this agent "
                "(another task, network size or number of seeds); use agents.load_agent(path)"
            )
        state = flax.serialization.from_state_dict(template, payload["state"])
        network = self.network.replace(
            step=jnp.asarray(state["step"]),
            params=jax.tree_util.tree_map(jnp.asarray, state["params"]),
            opt_state=jax.tree_util.tree_map(jnp.asarray, state["opt_state"]),
        )
        return self.replace(rng=jnp.asarray(state["rng"]), network=network)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw payload of an agent checkpoint, after checking its format and version."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataNotFoundError(f"no agent checkpoint at {path}; check the path or train an agent first")
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        payload = flax.serialization.msgpack_restore(data)
    except Exception as error:
        raise ConfigError(
            f"{path} is not a readable agent checkpoint ({error}); it may be truncated or corrupt"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ConfigError(f"{path} is not a fidec-gym agent checkpoint (missing format marker {FORMAT_NAME!r})")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path} uses checkpoint format version {version}; this fidec-gym reads version {FORMAT_VERSION}"
        )
    return payload
