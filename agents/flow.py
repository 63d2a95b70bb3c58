"""Flow-matching building blocks shared by the flow agents (FQL, DeFlow, FiDec).

All functions take the velocity field as a plain callable ``velocity(x, t) -> v`` with ``x`` of shape (N, d) and
``t`` a raw time column of shape (N, 1). Observations (already encoded where an encoder exists) are closed over by
the caller, so the Euler sampler encodes each observation once and reuses the features for every step.

Path convention (rectified flow): x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I) and x_1 the data action, so the
regression target of the velocity is x_1 - x_0 and integrating from t = 0 to t = 1 maps noise to actions.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

DEFAULT_FLOW_STEPS = 10


def euler_sample(velocity: VelocityFn, noise: jax.Array, num_steps: int = DEFAULT_FLOW_STEPS) -> jax.Array:
    """Integrate the flow ODE from ``noise`` (t = 0) to t = 1 with ``num_steps`` Euler steps; output clipped to [-1, 1].

    Step i uses the time t_i = i / num_steps and x_{i+1} = x_i + v(x_i, t_i) / num_steps. The loop is a Python loop
    on purpose: ten unrolled steps compile to a straight-line program that XLA fuses well, and ``num_steps`` is a
    static configuration value.

    The result is *not* stop-gradiented here; every agent wraps its roll-outs in ``jax.lax.stop_gradient`` at the
    call site, where the reason is stated.
    """
    if noise.ndim < 2:
        raise ValueError(f"noise must have shape (batch, action_dim), got {noise.shape}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x = noise
    dt = 1.0 / num_steps
    time_column = jnp.ones((*noise.shape[:-1], 1), dtype=noise.dtype)
    for i in range(num_steps):
        x = x + velocity(x, time_column * (i * dt)) * dt
    return jnp.clip(x, -1.0, 1.0)


def flow_matching_loss(
    velocity: VelocityFn, actions: jax.Array, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Conditional flow-matching loss of the behaviour flow on dataset ``actions`` (shape (B, d)).

    x_0 ~ N(0, I), one t ~ U[0, 1] per sample, x_t = (1 - t) x_0 + t a; the loss is the mean over
    (batch x dims) of (v(x_t, t) - (a - x_0))^2.
    """
    noise_key, time_key = jax.random.split(rng)
    x0 = jax.random.normal(noise_key, actions.shape, dtype=actions.dtype)
    t = jax.random.uniform(time_key, (*actions.shape[:-1], 1), dtype=actions.dtype)
    x_t = (1.0 - t) * x0 + t * actions
    target_velocity = actions - x0
    predicted_velocity = velocity(x_t, t)
    loss = jnp.mean((predicted_velocity - target_velocity) ** 2)
    return loss, {"bc_flow_loss": loss}


def aggregate_heads(q: jax.Array, how: str) -> jax.Array:
    """Reduce an ensemble of critic outputs (E, B) to (B,) with ``how`` in {"mean", "min"}."""
    if how == "mean":
        return q.mean(axis=0)
    if how == "min":
        return q.min(axis=0)
    raise ValueError(f"unknown q_agg {how!r}; use 'mean' or 'min'")


def normalized_q_loss(q: jax.Array, normalize: bool) -> tuple[jax.Array, jax.Array]:
    """Actor Q term -mean(q), optionally scaled by 1/max(mean|q|, 1e-6).

    The scale is stop-gradiented: it only sets the step size of the Q term relative to the other losses and must
    not itself become something the actor can optimise (shrinking |Q| would otherwise lower the loss).
    Returns (loss, scale).
    """
    if normalize:
        scale = jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
    else:
        scale = jnp.ones((), dtype=q.dtype)
    return -scale * q.mean(), scale
