"""The metric each FiDec preset applies on the toy landscapes (docs/algorithms.md §9.3, docs/toy_landscapes.md §5).

Estimated the way the agent estimates it, from any velocity field: the trained BC flow of an agent, or the ideal
velocity of the landscape (``envs.toy``), so a reader sees why a preset does or does not differ from ``isotropic``.
"""

from __future__ import annotations

import numpy as np

PAPER_FISHER_TIMES = (0.5, 0.7, 0.8, 0.9, 0.95)
OFFICIAL_TIME_RANGE = (0.85, 0.90)


def estimate_state_metric(
    velocity, behaviour_actions: np.ndarray, times, estimator: str, rng: np.random.Generator, damping: float = 1e-3
) -> np.ndarray:
    """The trace-normalised ``state``-mode metric from behaviour samples, as FiDec builds it (2 x 2 for the toys).

    Each sample is re-noised to its time t (x = (1 - t) x0 + t a, x0 ~ N(0, I) drawn from ``rng``), the score is the
    preset's estimator applied to ``velocity(x, t)`` and the metric is mean σσᵀ + damping·I scaled to trace d.

    Args:
        velocity: ``(x (N, d), t (N, 1)) -> (N, d)``, numpy or JAX.
        behaviour_actions: (N, d) samples of the behaviour policy.
        times: a scalar or (N,) Fisher times.
        estimator: "marginal" (paper) or "velocity" (official code).
        rng: source of the re-noising noise.
    """
    import jax.numpy as jnp

    from fidec_gym.agents import fisher

    actions = np.asarray(behaviour_actions, dtype=np.float64)
    t = np.broadcast_to(np.asarray(times, dtype=np.float64), actions.shape[:1])[:, None]
    x = (1.0 - t) * rng.standard_normal(actions.shape) + t * actions
    v = np.asarray(velocity(x, t), dtype=np.float64)
    scores = fisher.get_score_estimator(estimator)(jnp.asarray(v), jnp.asarray(x), jnp.asarray(t))
    return np.asarray(fisher.fisher_matrix(scores[None], damping), dtype=np.float64)[0]


def local_metric_summary(
    velocity, base_actions: np.ndarray, t: float, eval_point: str = "base", damping: float = 1e-3
) -> dict:
    """How the ``local`` metric varies over base actions: it is rank one along the score at each action.

    Returns the mean metric (m11, m12, m22 and its eigenvalue ratio), the axial concentration R of the constrained
    directions (1: every action constrains the same axis; 0: axes spread uniformly; computed on doubled angles
    because σσᵀ does not see the sign of σ), the mean axis angle in degrees and the median per-action eigenvalue
    ratio (how strongly one direction is preferred at a single action).
    """
    import jax.numpy as jnp

    from fidec_gym.agents import fisher

    actions = np.asarray(base_actions, dtype=np.float64)
    x = actions if eval_point == "base" else t * actions
    column = np.full((len(x), 1), float(t))
    v = np.asarray(velocity(x, column), dtype=np.float64)
    scores = np.asarray(fisher.marginal_score(jnp.asarray(v), jnp.asarray(x), jnp.asarray(column)), dtype=np.float64)
    metrics = np.asarray(fisher.fisher_matrix(jnp.asarray(scores[:, None, :]), damping), dtype=np.float64)
    mean = metrics.mean(axis=0)
    doubled = np.exp(2j * np.arctan2(scores[:, 1], scores[:, 0]))
    eig_rows = np.linalg.eigvalsh(metrics)
    return {
        **_matrix_fields(mean),
        "axial_concentration": float(abs(doubled.mean())),
        "axis_angle_deg": float(np.degrees(np.angle(doubled.mean()) / 2.0)),
        "median_row_eig_ratio": float(np.median(eig_rows[:, 1] / np.maximum(eig_rows[:, 0], 1e-12))),
    }


def _matrix_fields(matrix: np.ndarray) -> dict:
    eig = np.linalg.eigvalsh(matrix)
    vector = np.linalg.eigh(matrix)[1][:, 1]
    return {
        "m11": float(matrix[0, 0]),
        "m12": float(matrix[0, 1]),
        "m22": float(matrix[1, 1]),
        "eig_ratio": float(eig[1] / max(eig[0], 1e-12)),
        "stiff_axis_deg": float(np.degrees(np.arctan2(vector[1], vector[0])) % 180.0),
    }


def ideal_velocity(landscape: str):
    """The exact flow-matching velocity of a landscape as ``velocity(x, t)``; rows may carry different times."""
    from fidec_gym.envs.toy import marginal_velocity

    def velocity(x, t):
        x, t = np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(-1)
        out = np.empty_like(x)
        for value in np.unique(t):
            rows = t == value
            out[rows] = marginal_velocity(landscape, x[rows], float(value))
        return out

    return velocity


def _preset_rows(landscape: str, velocity, sample, source: str, num_samples: int, seed: int) -> list[dict]:
    """Rows for ``paper`` at every t_f, ``official`` and ``local`` (both evaluation points) from one velocity."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in PAPER_FISHER_TIMES:
        matrix = estimate_state_metric(velocity, sample(num_samples, rng), t, "marginal", rng)
        rows.append({"preset": "paper", "fisher_t": t, **_matrix_fields(matrix)})
    low, high = OFFICIAL_TIME_RANGE
    # Per-sample times as in the agent; the ideal velocity is evaluated on 8 quadrature times of the same range.
    times = (
        rng.uniform(low, high, num_samples)
        if source == "trained"
        else low + (np.arange(num_samples) % 8 + 0.5) * (high - low) / 8
    )
    matrix = estimate_state_metric(velocity, sample(num_samples, rng), times, "velocity", rng)
    rows.append({"preset": "official", "fisher_t": 0.5 * (low + high), **_matrix_fields(matrix)})
    for point in ("base", "scaled"):
        summary = local_metric_summary(velocity, sample(num_samples, rng), 0.8, point)
        rows.append({"preset": "local" if point == "base" else "local-scaled", "fisher_t": 0.8, **summary})
    return [{"landscape": landscape, "source": source, **row} for row in rows]


def trained_preset_metric_rows(agent, landscape: str, num_samples: int = 20_000, seed: int = 0) -> list[dict]:
    """Preset metrics from a trained flow agent's BC flow (its velocity network and its own Euler samples)."""
    import jax

    features = np.zeros((num_samples, 1), dtype=np.float32)
    # One compiled program each instead of op-by-op dispatch of the ten Euler steps.
    velocity_fn = jax.jit(lambda agent, x, t: agent.bc_velocity(features)(x, t))
    sample_fn = jax.jit(lambda agent, key: agent.behaviour_actions(features, key))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))

    def velocity(x, t):
        return np.asarray(velocity_fn(agent, np.asarray(x, np.float32), np.asarray(t, np.float32)))

    def sample(n, rng):
        del rng  # the BC flow draws its own noise
        return np.asarray(sample_fn(agent, next(keys)), dtype=np.float64)[:n]

    return _preset_rows(landscape, velocity, sample, "trained", num_samples, seed)


def analytic_preset_metric_rows(landscape: str, num_samples: int = 20_000, seed: int = 0) -> list[dict]:
    """The same rows with the landscape's ideal velocity and exact behaviour samples (docs/toy_landscapes.md §5)."""
    from fidec_gym.envs.toy import get_landscape

    land = get_landscape(landscape)
    return _preset_rows(landscape, ideal_velocity(landscape), land.sample, "analytic", num_samples, seed)
