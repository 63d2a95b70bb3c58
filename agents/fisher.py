"""Fisher metric of the FiDec trust region, as pure ``jax.numpy`` functions.

The behaviour flow's velocity v(x, t) at a perturbed time t < 1 gives a score estimate sigma(x, t); the metric is
F = E[sigma sigma^T] + damping * I, normalised by its mean eigenvalue so that tr(M) = d. The penalty of a residual
Delta is Delta^T M Delta / d, on the same scale as the isotropic mean(Delta^2) that DeFlow uses, which is why the
target divergence delta keeps its meaning across both methods.

Nothing here materialises a (B, d, d) tensor in the training path: with K scores per row,

    Delta^T F Delta = mean_k (sigma_k . Delta)^2 + damping * |Delta|^2,
    tr(F)           = mean_k |sigma_k|^2        + damping * d.

The dense matrices are available (``fisher_matrix``) for analysis and tests only.

Score estimators (x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I)):

* ``marginal``: sigma = (t v - x) / (1 - t), the exact marginal score grad log p_t(x) for the ideal velocity.
* ``velocity``: sigma = v / (1 - t), what the released FiDec code computes. Its expected outer product is
  [F_t - 2 I / (1 - t) + E[x x^T] / (1 - t)^2] / t^2 (see ``velocity_estimator_expected_fisher``), which depends on
  the position of the actions relative to the origin and is not a Fisher matrix.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fidec_gym.errors import ConfigError

SCORE_EPS = 1e-6
TRACE_EPS = 1e-6
DEFAULT_DAMPING = 1e-3

FISHER_MODES = ("state", "local", "none")

# Bounds of the per-sample Fisher time draw; keep t away from 0 (no signal) and from 1 (0/0 in the score).
_MIN_FISHER_T = 1e-3
_MAX_FISHER_T = 0.999


def marginal_score(velocity: jax.Array, x: jax.Array, t: jax.Array, eps: float = SCORE_EPS) -> jax.Array:
    """Score of the noised behaviour law p_t from the velocity: (t v - x) / max(1 - t, eps).

    Follows from u_t(x) = (E[x_1 | x] - x) / (1 - t) and Tweedie's formula; ``t`` broadcasts against ``x``
    (a (N, 1) column or a scalar).
    """
    return (t * velocity - x) / jnp.maximum(1.0 - t, eps)


def velocity_score(velocity: jax.Array, x: jax.Array, t: jax.Array, eps: float = SCORE_EPS) -> jax.Array:
    """The released code's estimator v / max(1 - t, eps); ``x`` is unused but kept for a uniform signature."""
    del x
    return velocity / jnp.maximum(1.0 - t, eps)


SCORE_ESTIMATORS: dict[str, Callable[..., jax.Array]] = {"marginal": marginal_score, "velocity": velocity_score}


def get_score_estimator(name: str) -> Callable[..., jax.Array]:
    """Look up a score estimator by its config name."""
    try:
        return SCORE_ESTIMATORS[name]
    except KeyError:
        raise ConfigError(f"unknown score_estimator {name!r}; valid: {sorted(SCORE_ESTIMATORS)}") from None


def sample_fisher_times(rng: jax.Array, shape: tuple[int, ...], t_nominal: float, width: float) -> jax.Array:
    """Fisher times t ~ U[max(1e-3, t_nominal - width), min(0.999, t_nominal)]; the constant t_nominal if width = 0.

    ``width`` is a static config value, so the branch is resolved at trace time.
    """
    if width < 0:
        raise ConfigError(f"fisher_t_width must be >= 0, got {width}")
    if width == 0:
        return jnp.full(shape, t_nominal, dtype=jnp.float32)
    low = max(_MIN_FISHER_T, t_nominal - width)
    high = min(_MAX_FISHER_T, t_nominal)
    return jax.random.uniform(rng, shape, minval=low, maxval=high)


def fisher_quadratic_form(
    scores: jax.Array, delta: jax.Array, damping: float = DEFAULT_DAMPING, trace_eps: float = TRACE_EPS
) -> tuple[jax.Array, jax.Array]:
    """Per-row Delta^T M Delta / d with M the trace-normalised, damped Fisher built from ``scores``.

    Args:
      scores: (B, K, d) score samples per row (K = 1 for the local, rank-one metric).
      delta: (B, d) residuals.
      damping: lambda_d added to F before normalisation.
      trace_eps: floor of the normaliser tr(F) / d.

    Returns:
      (quad, trace_scale), both (B,): quad_b = Delta_b^T M_b Delta_b / d and trace_scale_b = tr(F_b) / d.
    """
    if scores.ndim != 3 or delta.ndim != 2 or scores.shape[0] != delta.shape[0] or scores.shape[2] != delta.shape[1]:
        raise ConfigError(
            f"expected scores (B, K, d) and delta (B, d) with matching B and d, got {scores.shape} and {delta.shape}"
        )
    action_dim = delta.shape[-1]
    # The metric is a fixed geometry of the behaviour policy: only the residual Delta may be trained through it.
    scores = jax.lax.stop_gradient(scores)
    projections = jnp.einsum("bkd,bd->bk", scores, delta)
    delta_f_delta = jnp.mean(projections**2, axis=1) + damping * jnp.sum(delta**2, axis=-1)
    trace = jnp.mean(jnp.sum(scores**2, axis=-1), axis=1) + damping * action_dim
    # Stop-gradient on the normaliser: it rescales the metric to unit mean eigenvalue and carries no learning signal.
    trace_scale = jax.lax.stop_gradient(jnp.maximum(trace / action_dim, trace_eps))
    return delta_f_delta / trace_scale / action_dim, trace_scale


def isotropic_quadratic_form(delta: jax.Array) -> jax.Array:
    """Per-row |Delta|^2 / d: the metric M = I (DeFlow's penalty)."""
    return jnp.mean(delta**2, axis=-1)


def fisher_matrix(scores: jax.Array, damping: float = DEFAULT_DAMPING, trace_eps: float = TRACE_EPS) -> jax.Array:
    """Dense trace-normalised metrics M_b of shape (B, d, d) from scores (B, K, d). For analysis and tests."""
    action_dim = scores.shape[-1]
    fisher = jnp.einsum("bki,bkj->bij", scores, scores) / scores.shape[1]
    fisher = fisher + damping * jnp.eye(action_dim, dtype=scores.dtype)
    trace_scale = jnp.maximum(jnp.trace(fisher, axis1=-2, axis2=-1) / action_dim, trace_eps)
    return fisher / trace_scale[:, None, None]


def trace_normalize(matrix: jax.Array) -> jax.Array:
    """Scale a (..., d, d) matrix to trace d (unit mean eigenvalue)."""
    action_dim = matrix.shape[-1]
    return matrix * action_dim / jnp.trace(matrix, axis1=-2, axis2=-1)[..., None, None]


def velocity_estimator_expected_fisher(true_fisher: jax.Array, second_moment: jax.Array, t: float) -> jax.Array:
    """E[sigma sigma^T] of the ``velocity`` estimator under x ~ p_t, for an ideal velocity.

    sigma_code = score / t + x / (t (1 - t)); with E[x score^T] = -I (integration by parts) this is
    [F_t - 2 I / (1 - t) + E[x x^T] / (1 - t)^2] / t^2.
    """
    eye = jnp.eye(true_fisher.shape[-1], dtype=true_fisher.dtype)
    return (true_fisher - 2.0 * eye / (1.0 - t) + second_moment / (1.0 - t) ** 2) / t**2


def divergence(
    delta: jax.Array, scores: jax.Array | None, damping: float = DEFAULT_DAMPING, trace_eps: float = TRACE_EPS
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch divergence D = mean_b Delta_b^T M_b Delta_b / d; isotropic (M = I) when ``scores`` is None.

    Returns (D, info) with the mean trace scale when a Fisher metric is used.
    """
    if scores is None:
        return isotropic_quadratic_form(delta).mean(), {}
    quad, trace_scale = fisher_quadratic_form(scores, delta, damping, trace_eps)
    return quad.mean(), {"fisher_trace_scale": trace_scale.mean()}
