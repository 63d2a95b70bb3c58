"""The module dictionary, the training state and the optimiser that every agent is built from."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fidec_gym.errors import ConfigError, UnknownNameError

Array = jax.Array
Info = Dict[str, Array]


def nonpytree_field(**kwargs: Any):
    """A dataclass field that is static metadata (part of the tree structure), not a pytree leaf."""
    return flax.struct.field(pytree_node=False, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Modules, training state, optimiser
# --------------------------------------------------------------------------------------------------------------


class ModuleDict(nn.Module):
    """A dictionary of named sub-modules sharing one parameter tree (``params["modules_<name>"]``).

    ``module_dict(*args, name="critic", **kwargs)`` calls one sub-module. At initialisation call it without
    ``name`` and with one keyword per sub-module holding that module's example arguments (a tuple of positional
    arguments, a dict of keyword arguments, or a single array) so that every parameter gets created.
    """

    modules: Dict[str, nn.Module]

    @nn.compact
    def __call__(self, *args: Any, name: Optional[str] = None, **kwargs: Any) -> Any:
        if name is not None:
            if name not in self.modules:
                raise UnknownNameError(f"no module named {name!r}; this network has {sorted(self.modules)}")
            return self.modules[name](*args, **kwargs)
        if set(kwargs) != set(self.modules):
            raise ConfigError(
                f"initialisation needs example inputs for every module {sorted(self.modules)}, got {sorted(kwargs)}"
            )
        outputs = {}
        for key, value in kwargs.items():
            if isinstance(value, Mapping):
                outputs[key] = self.modules[key](**value)
            elif isinstance(value, (tuple, list)):
                outputs[key] = self.modules[key](*value)
            else:
                outputs[key] = self.modules[key](value)
        return outputs


@dataclasses.dataclass(frozen=True, eq=True)
class _ApplyFn:
    """``model_def.apply`` that compares equal for equal module definitions.

    A bound method compares by identity, which would make every freshly created agent a new static argument
    and force ``jax.jit`` to recompile; comparing the module definition by value avoids that.
    """

    model_def: nn.Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model_def.apply(*args, **kwargs)

    def __hash__(self) -> int:
        return hash(type(self.model_def))


@dataclasses.dataclass(frozen=True, eq=True)
class _StaticModule:
    """A module definition as a static ``jax.jit`` argument: equal definitions share one compiled init."""

    model_def: nn.Module

    def __hash__(self) -> int:
        return hash(type(self.model_def))


@functools.partial(jax.jit, static_argnums=0)
def _init_params(module: _StaticModule, rng: Array, example_args: Dict[str, Any]) -> Any:
    return module.model_def.init(rng, **example_args)


class TrainState(flax.struct.PyTreeNode):
    """Parameters, optimiser state and the step counter (starts at 1, +1 per update) of one ``ModuleDict``."""

    step: Array
    apply_fn: Callable = nonpytree_field()
    model_def: nn.Module = nonpytree_field()
    params: Any = None
    tx: optax.GradientTransformation = nonpytree_field(default=None)
    opt_state: Any = None

    @classmethod
    def create(cls, model_def: nn.Module, params: Any, tx: optax.GradientTransformation) -> TrainState:
        return cls(
            step=jnp.asarray(1, dtype=jnp.int32),
            apply_fn=_ApplyFn(model_def),
            model_def=model_def,
            params=params,
            tx=tx,
            opt_state=tx.init(params),
        )

    def __call__(self, *args: Any, params: Any = None, method: Any = None, **kwargs: Any) -> Any:
        """Run the module dictionary; ``params`` overrides the stored parameters (pass them to get gradients)."""
        variables = {"params": self.params if params is None else params}
        if method is not None:
            kwargs["method"] = method
        return self.apply_fn(variables, *args, **kwargs)

    def select(self, name: str) -> Callable[..., Any]:
        """A callable running sub-module ``name``; it accepts the same ``params=`` override."""
        return functools.partial(self, name=name)

    def apply_gradients(self, grads: Any) -> TrainState:
        updates, new_opt_state = self.tx.update(grads, self.opt_state, self.params)
        new_params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=new_params, opt_state=new_opt_state)

    def apply_loss_fn(self, loss_fn: Callable[[Any], tuple[Array, Info]]) -> tuple[TrainState, Info]:
        """One optimiser step on ``loss_fn(params) -> (loss, info)``.

        ``info`` gains gradient statistics and ``nonfinite`` (1.0 when the loss or any gradient is NaN or inf),
        which training loops use to stop a diverged run.
        """
        (loss, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(self.params)
        leaves = jax.tree_util.tree_leaves(grads)
        grad_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
        info = dict(info)
        info["grad/norm"] = optax.global_norm(grads)
        info["grad/max"] = jnp.max(jnp.stack([jnp.max(leaf) for leaf in leaves]))
        info["grad/min"] = jnp.min(jnp.stack([jnp.min(leaf) for leaf in leaves]))
        info["nonfinite"] = 1.0 - (jnp.isfinite(loss) & grad_finite).astype(jnp.float32)
        return self.apply_gradients(grads), info


def clip_by_global_norm(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    """g <- g * min(1, max_norm / (||g||_2 + eps)) with the norm over all leaves together (docs/algorithms.md §3.2).

    ``optax.clip_by_global_norm`` rescales by max_norm/||g|| without the eps; docs/algorithms.md §3.2 fixes this form.
    """

    def clip(updates: Any, params: Any = None) -> Any:
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.global_norm(updates) + eps))
        return jax.tree_util.tree_map(lambda g: g * scale, updates)

    return optax.stateless(clip)


@functools.cache
def make_optimizer(learning_rate: float = 3e-4, grad_clip: Optional[float] = None) -> optax.GradientTransformation:
    """Adam(lr, 0.9, 0.999, 1e-8), preceded by global-norm clipping when ``grad_clip`` is set.

    Cached so that agents with equal settings share one optimiser object (equal static fields, no recompiles).
    """
    adam = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    if grad_clip is None:
        return adam
    return optax.chain(clip_by_global_norm(float(grad_clip)), adam)


def polyak_update(target_params: Any, source_params: Any, tau: float | Array) -> Any:
    """target <- tau * source + (1 - tau) * target, leaf by leaf."""
    return jax.tree_util.tree_map(lambda s, t: tau * s + (1.0 - tau) * t, source_params, target_params)
