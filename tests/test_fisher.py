"""Known answers for the FiDec metric: score identities, the closed forms of docs/algorithms.md §9.6, the efficient
quadratic form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents import fisher


def gaussian_mixture_velocity(x: np.ndarray, t: float, means, stds, weights=None) -> np.ndarray:
    """Ideal flow-matching velocity E[x1 - x0 | x_t = x] for a mixture of axis-aligned Gaussians."""
    means = np.asarray(means, dtype=np.float64)
    variances = np.asarray(stds, dtype=np.float64) ** 2
    num_components = len(means)
    weights = np.full(num_components, 1.0 / num_components) if weights is None else np.asarray(weights)
    marginal_var = t**2 * variances + (1 - t) ** 2  # (K, d): p_t component covariances (diagonal)
    diff = x[:, None, :] - t * means[None]  # (N, K, d)
    log_resp = np.log(weights)[None] - 0.5 * np.sum(diff**2 / marginal_var + np.log(marginal_var), axis=-1)
    resp = np.exp(log_resp - log_resp.max(axis=1, keepdims=True))
    resp /= resp.sum(axis=1, keepdims=True)
    posterior_mean_x1 = means[None] + t * variances[None] / marginal_var[None] * diff  # E[x1 | x, component]
    expected_x1 = np.sum(resp[..., None] * posterior_mean_x1, axis=1)
    return (expected_x1 - x) / (1 - t)


def sample_noised_mixture(rng: np.random.Generator, n: int, t: float, means, stds) -> np.ndarray:
    """x_t = (1 - t) x0 + t x1 with x1 from the equal-weight mixture."""
    means, stds = np.asarray(means), np.asarray(stds)
    component = rng.integers(len(means), size=n)
    x1 = means[component] + stds[component] * rng.standard_normal((n, means.shape[1]))
    return (1 - t) * rng.standard_normal(x1.shape) + t * x1


def monte_carlo_fisher(scores: np.ndarray) -> np.ndarray:
    return scores.T @ scores / len(scores)


def test_marginal_score_is_exact_for_gaussian():
    """(t v - x) / (1 - t) equals grad log N(x; t mu, C), C = t^2 Sigma + (1 - t)^2 I, pointwise."""
    rng = np.random.default_rng(0)
    mean, std, t = np.array([[0.3, -0.2]]), np.array([[0.1, 0.4]]), 0.8
    x = sample_noised_mixture(rng, 512, t, mean, std)
    v = gaussian_mixture_velocity(x, t, mean, std)
    cov = t**2 * std[0] ** 2 + (1 - t) ** 2
    expected = -(x - t * mean[0]) / cov
    got = fisher.marginal_score(jnp.asarray(v), jnp.asarray(x), t)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


def test_velocity_score_definition():
    v = jnp.array([[1.0, -2.0]])
    np.testing.assert_allclose(fisher.velocity_score(v, jnp.zeros_like(v), 0.75), [[4.0, -8.0]], rtol=1e-6)
    # The floor keeps t -> 1 finite.
    assert np.all(np.isfinite(np.asarray(fisher.velocity_score(v, v, 1.0))))
    assert np.all(np.isfinite(np.asarray(fisher.marginal_score(v, v, 1.0))))


@pytest.fixture(scope="module")
def gaussian_case():
    """N(mu, Sigma) with a strongly anisotropic Sigma and mu != 0, noised at t = 0.85."""
    rng = np.random.default_rng(1)
    mean, std, t = np.array([[0.4, -0.3]]), np.array([[0.08, 0.35]]), 0.85
    x = sample_noised_mixture(rng, 400_000, t, mean, std)
    v = gaussian_mixture_velocity(x, t, mean, std)
    cov = np.diag(t**2 * std[0] ** 2 + (1 - t) ** 2)
    return dict(mean=mean[0], cov=cov, t=t, x=x, v=v)


def test_marginal_estimator_gives_trace_normalised_inverse_covariance(gaussian_case):
    c = gaussian_case
    scores = np.asarray(fisher.marginal_score(jnp.asarray(c["v"]), jnp.asarray(c["x"]), c["t"]))
    got = np.asarray(fisher.trace_normalize(jnp.asarray(monte_carlo_fisher(scores))))
    expected = np.asarray(fisher.trace_normalize(jnp.asarray(np.linalg.inv(c["cov"]))))
    np.testing.assert_allclose(got, expected, atol=0.01)


def test_velocity_estimator_matches_closed_form(gaussian_case):
    """E[sigma sigma^T] of v/(1-t) = [C^-1 - 2I/(1-t) + (C + t^2 mu mu^T)/(1-t)^2] / t^2."""
    c = gaussian_case
    t, mean, cov = c["t"], c["mean"], c["cov"]
    scores = np.asarray(fisher.velocity_score(jnp.asarray(c["v"]), jnp.asarray(c["x"]), t))
    empirical = monte_carlo_fisher(scores)
    second_moment = cov + t**2 * np.outer(mean, mean)
    closed_form = (np.linalg.inv(cov) - 2 * np.eye(2) / (1 - t) + second_moment / (1 - t) ** 2) / t**2
    helper = np.asarray(fisher.velocity_estimator_expected_fisher(jnp.asarray(np.linalg.inv(cov)), second_moment, t))
    np.testing.assert_allclose(helper, closed_form, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(fisher.trace_normalize(jnp.asarray(empirical))),
        np.asarray(fisher.trace_normalize(jnp.asarray(closed_form))),
        atol=0.02,
    )
    # It is not the Fisher: far more anisotropic than C^-1 here.
    true_metric = np.asarray(fisher.trace_normalize(jnp.asarray(np.linalg.inv(cov))))
    assert np.abs(np.asarray(fisher.trace_normalize(jnp.asarray(closed_form))) - true_metric).max() > 0.1


def test_mixture_numbers_of_the_analysis_section():
    """docs/algorithms.md §9.6 worked example: code metric [[1.20, -0.13], [-0.13, 0.80]] vs true
    [[0.995, 0.007], [0.007, 1.005]]."""
    means, stds, t = [[-0.5, 0.2], [0.5, -0.1]], [[0.25, 0.05], [0.05, 0.3]], 0.9
    x = sample_noised_mixture(np.random.default_rng(2), 400_000, t, means, stds)
    v = jnp.asarray(gaussian_mixture_velocity(x, t, means, stds))
    x = jnp.asarray(x)
    true_fisher = monte_carlo_fisher(np.asarray(fisher.marginal_score(v, x, t)))
    code_matrix = monte_carlo_fisher(np.asarray(fisher.velocity_score(v, x, t)))
    np.testing.assert_allclose(true_fisher, [[46.7, 0.35], [0.35, 47.2]], atol=1.0)
    np.testing.assert_allclose(code_matrix, [[62.5, -6.9], [-6.9, 41.9]], atol=1.0)
    np.testing.assert_allclose(
        fisher.trace_normalize(jnp.asarray(code_matrix)), [[1.20, -0.13], [-0.13, 0.80]], atol=0.02
    )
    np.testing.assert_allclose(
        fisher.trace_normalize(jnp.asarray(true_fisher)), [[0.995, 0.007], [0.007, 1.005]], atol=0.02
    )


def test_efficient_quadratic_form_equals_dense_metric():
    key_s, key_d = jax.random.split(jax.random.PRNGKey(3))
    scores = 5.0 * jax.random.normal(key_s, (6, 4, 3))
    delta = jax.random.normal(key_d, (6, 3))
    quad, trace_scale = fisher.fisher_quadratic_form(scores, delta, damping=1e-3)
    metric = fisher.fisher_matrix(scores, damping=1e-3)
    dense = jnp.einsum("bi,bij,bj->b", delta, metric, delta) / 3
    np.testing.assert_allclose(np.asarray(quad), np.asarray(dense), rtol=1e-5)
    np.testing.assert_allclose(np.trace(np.asarray(metric), axis1=1, axis2=2), 3.0, rtol=1e-5)
    expected_scale = (np.sum(np.asarray(scores) ** 2, axis=-1).mean(axis=1) + 3e-3) / 3
    np.testing.assert_allclose(np.asarray(trace_scale), expected_scale, rtol=1e-5)


def test_isotropic_scores_reduce_to_deflow_penalty():
    """F proportional to I gives M = I, so the penalty equals mean(Delta^2)."""
    d = 3
    scores = jnp.broadcast_to(7.0 * jnp.sqrt(d) * jnp.eye(d), (5, d, d))  # K = d orthogonal scores
    delta = jax.random.normal(jax.random.PRNGKey(4), (5, d))
    quad, _ = fisher.fisher_quadratic_form(scores, delta)
    np.testing.assert_allclose(np.asarray(quad), np.asarray(fisher.isotropic_quadratic_form(delta)), rtol=1e-5)
    value, info = fisher.divergence(delta, None)
    np.testing.assert_allclose(float(value), float(jnp.mean(delta**2)), rtol=1e-6)
    assert info == {}


def test_rank_one_metric_nearly_frees_orthogonal_directions():
    """Local mode: a move orthogonal to the score costs damping / tau / d per unit squared length."""
    damping, d = 1e-3, 2
    score = jnp.array([[[30.0, 40.0]]])  # |sigma| = 50
    along = jnp.array([[0.6, 0.8]])
    across = jnp.array([[-0.8, 0.6]])
    tau = (2500.0 + d * damping) / d
    quad_along, _ = fisher.fisher_quadratic_form(score, along, damping)
    quad_across, _ = fisher.fisher_quadratic_form(score, across, damping)
    np.testing.assert_allclose(float(quad_across[0]), damping / tau / d, rtol=1e-5)
    np.testing.assert_allclose(float(quad_along[0]), (2500.0 + damping) / tau / d, rtol=1e-5)


def test_metric_carries_no_gradient():
    scores = jax.random.normal(jax.random.PRNGKey(5), (4, 2, 3))
    delta = jax.random.normal(jax.random.PRNGKey(6), (4, 3))

    def penalty(s, dl):
        return fisher.fisher_quadratic_form(s, dl)[0].sum()

    grad_scores, grad_delta = jax.grad(penalty, argnums=(0, 1))(scores, delta)
    assert float(jnp.abs(grad_scores).max()) == 0.0
    metric = fisher.fisher_matrix(scores)
    np.testing.assert_allclose(
        np.asarray(grad_delta), np.asarray(2 * jnp.einsum("bij,bj->bi", metric, delta) / 3), rtol=1e-5, atol=1e-6
    )


def test_fisher_time_sampling_ranges():
    key = jax.random.PRNGKey(7)
    constant = fisher.sample_fisher_times(key, (1000, 1), 0.8, 0.0)
    assert constant.shape == (1000, 1) and np.all(np.asarray(constant) == np.float32(0.8))
    official = np.asarray(fisher.sample_fisher_times(key, (20_000, 1), 0.9, 0.05))
    assert official.min() >= 0.85 - 1e-6 and official.max() <= 0.9 + 1e-6
    assert abs(official.mean() - 0.875) < 2e-3
    low = np.asarray(fisher.sample_fisher_times(key, (1000, 1), 0.02, 0.05))
    assert low.min() >= 1e-3 and low.max() <= 0.02
    high = np.asarray(fisher.sample_fisher_times(key, (1000, 1), 1.0, 0.1))
    assert high.max() <= 0.999 and high.min() >= 0.9 - 1e-6
    with pytest.raises(ValueError, match="fisher_t_width"):
        fisher.sample_fisher_times(key, (2, 1), 0.9, -0.1)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="score_estimator"):
        fisher.get_score_estimator("exact")
    assert fisher.get_score_estimator("velocity") is fisher.velocity_score
    with pytest.raises(ValueError, match=r"scores \(B, K, d\)"):
        fisher.fisher_quadratic_form(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
