"""Network building blocks shared by every agent (docs/algorithms.md §3.1).

All modules are Flax Linen modules. Observations may be raw vectors or, when an ``encoder`` module is given,
uint8 images that the encoder turns into a feature vector. Each network that reads observations owns its own
encoder instance.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


def default_init(scale: float = 1.0) -> Callable:
    """Glorot-uniform initialiser with an optional ``scale`` (variance scaling, fan_avg, uniform)."""
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def ensemblize(module_class: type[nn.Module], num_ensembles: int, in_axes: Any = None) -> type[nn.Module]:
    """Vectorise ``module_class`` over ``num_ensembles`` heads with independent parameters and a shared input."""
    return nn.vmap(
        module_class,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=in_axes,
        out_axes=0,
        axis_size=num_ensembles,
    )


class MLP(nn.Module):
    """Dense layers with GELU; LayerNorm (optional) follows the activation.

    The activation (and LayerNorm) is applied after every layer except the last, and after the last one too when
    ``activate_final`` is set.
    """

    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False
    activation: Callable[[Array], Array] = nn.gelu
    kernel_init: Callable = default_init()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for index, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=self.kernel_init)(x)
            if index + 1 < len(self.hidden_dims) or self.activate_final:
                x = self.activation(x)
                if self.layer_norm:
                    x = nn.LayerNorm(epsilon=1e-6)(x)
        return x


class Value(nn.Module):
    """State value V(s) or action value Q(s, a), optionally as an ensemble of heads.

    Returns shape ``(num_ensembles, batch)`` when ``num_ensembles > 1`` and ``(batch,)`` otherwise. The encoder is
    applied once, outside the vectorised heads, so every head reads the same features.
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 1
    encoder: Optional[nn.Module] = None

    def setup(self) -> None:
        mlp_class: type[nn.Module] = MLP
        if self.num_ensembles > 1:
            mlp_class = ensemblize(MLP, self.num_ensembles)
        self.value_net = mlp_class((*self.hidden_dims, 1), activate_final=False, layer_norm=self.layer_norm)

    def __call__(self, observations: Array, actions: Optional[Array] = None) -> Array:
        inputs = self.encoder(observations) if self.encoder is not None else observations
        if actions is not None:
            inputs = jnp.concatenate([inputs, actions], axis=-1)
        return self.value_net(inputs).squeeze(-1)


class DiagonalGaussian:
    """Diagonal normal distribution; ``log_prob`` sums over the last (action) axis."""

    def __init__(self, loc: Array, scale: Array):
        self.loc = loc
        self.scale = jnp.broadcast_to(scale, loc.shape)

    def log_prob(self, value: Array) -> Array:
        z = (value - self.loc) / self.scale
        return jnp.sum(-0.5 * jnp.square(z) - jnp.log(self.scale) - 0.5 * _LOG_2PI, axis=-1)

    def sample(self, seed: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        noise = jax.random.normal(seed, tuple(sample_shape) + self.loc.shape, dtype=self.loc.dtype)
        return self.loc + self.scale * noise

    def sample_and_log_prob(self, seed: Array) -> tuple[Array, Array]:
        value = self.sample(seed)
        return value, self.log_prob(value)

    def mode(self) -> Array:
        return self.loc

    def mean(self) -> Array:
        return self.loc

    def stddev(self) -> Array:
        return self.scale

    def entropy(self) -> Array:
        return jnp.sum(0.5 + 0.5 * _LOG_2PI + jnp.log(self.scale), axis=-1)


def _tanh_log_det_jacobian(pre_tanh: Array) -> Array:
    """log |d tanh(x)/dx| = log(1 - tanh(x)^2), written stably as 2 (log 2 - x - softplus(-2x))."""
    return 2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


class TanhDiagonalGaussian:
    """A diagonal normal pushed through tanh; densities include the change-of-variables correction."""

    # Squashed actions of exactly +-1 have no finite pre-image; clip just inside before atanh.
    _EDGE = 1.0 - 1e-6

    def __init__(self, loc: Array, scale: Array):
        self.base = DiagonalGaussian(loc, scale)

    def log_prob(self, value: Array) -> Array:
        pre_tanh = jnp.arctanh(jnp.clip(value, -self._EDGE, self._EDGE))
        return self.base.log_prob(pre_tanh) - jnp.sum(_tanh_log_det_jacobian(pre_tanh), axis=-1)

    def sample(self, seed: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        return jnp.tanh(self.base.sample(seed, sample_shape))

    def sample_and_log_prob(self, seed: Array) -> tuple[Array, Array]:
        pre_tanh = self.base.sample(seed)
        log_prob = self.base.log_prob(pre_tanh) - jnp.sum(_tanh_log_det_jacobian(pre_tanh), axis=-1)
        return jnp.tanh(pre_tanh), log_prob

    def mode(self) -> Array:
        return jnp.tanh(self.base.loc)

    def stddev(self) -> Array:
        return self.base.scale


class GaussianActor(nn.Module):
    """Gaussian policy head on an MLP trunk (BC, IQL, ReBRAC).

    ``temperature`` multiplies the standard deviation; temperature 0 gives a point mass at the mean, so
    ``sample`` returns the mode.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    tanh_squash: bool = False
    const_std: bool = True
    final_fc_init_scale: float = 1e-2
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    encoder: Optional[nn.Module] = None

    def setup(self) -> None:
        self.actor_net = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)
        self.mean_net = nn.Dense(self.action_dim, kernel_init=default_init(self.final_fc_init_scale))
        if not self.const_std:
            self.log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))

    def __call__(self, observations: Array, temperature: float | Array = 1.0):
        inputs = self.encoder(observations) if self.encoder is not None else observations
        means = self.mean_net(self.actor_net(inputs))
        if self.const_std:
            log_stds = jnp.zeros_like(means)
        else:
            log_stds = jnp.broadcast_to(self.log_stds, means.shape)
        log_stds = jnp.clip(log_stds, self.log_std_min, self.log_std_max)
        scale = jnp.exp(log_stds) * temperature
        if self.tanh_squash:
            return TanhDiagonalGaussian(means, scale)
        return DiagonalGaussian(means, scale)


class ActorVectorField(nn.Module):
    """A map (s, x[, t]) -> R^d: the flow-matching velocity field, or a time-free one-step / residual map.

    ``times`` is a raw ``(batch, 1)`` column concatenated to the input (no embedding). Pass ``is_encoded=True``
    when ``observations`` are already encoder features (the Euler sampler encodes once per roll-out).
    """

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    encoder: Optional[nn.Module] = None

    def setup(self) -> None:
        self.mlp = MLP((*self.hidden_dims, self.action_dim), activate_final=False, layer_norm=self.layer_norm)

    def __call__(
        self, observations: Array, actions: Array, times: Optional[Array] = None, is_encoded: bool = False
    ) -> Array:
        if self.encoder is not None and not is_encoded:
            observations = self.encoder(observations)
        parts = [observations, actions]
        if times is not None:
            parts.append(times)
        return self.mlp(jnp.concatenate(parts, axis=-1))
