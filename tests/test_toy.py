"""The six toy landscapes against docs/toy_landscapes.md: landmarks, reference statistics, flow marginals, bandit."""

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fidec_gym.envs import toy
from fidec_gym.envs.toy import LANDSCAPES, get_landscape

KEYS = ("T1", "T2", "T3", "T4", "T5", "T6")

# (landscape, action, log π_β, Q, tolerance): docs/toy_landscapes.md §2 landmarks; the tolerance follows the page's
# printed precision.
LANDMARKS = [
    ("T1", (-0.45, -0.10), 0.8986, 0.1979, 1e-3),
    ("T1", (0.45, -0.10), 3.4604, 0.1998, 1e-3),
    ("T1", (0.0, -0.10), -2.2264, 0.0414, 1e-3),
    ("T1", (-0.45, 0.35), -2.2264, 1.0000, 1e-3),
    ("T1", (-0.45, 0.20), None, 0.835, 1e-3),
    ("T1", (0.45, 0.05), None, 0.641, 1e-3),
    ("T2", (-0.5, 0.0), 2.3618, 0.6065, 1e-3),
    ("T2", (0.5, 0.05), 2.1387, 0.5002, 1e-3),
    ("T2", (0.2, -0.05), -1.8613, -0.3235, 1e-3),
    ("T2", (-0.5, 0.3), 0.3618, 1.0000, 1e-3),
    ("T2", (0.0, 0.025), None, 0.086, 1e-3),
    ("T3", (0.0, 0.0), 2.5414, 0.0, 1e-3),
    ("T3", (0.85, 0.45 * math.sin(1.6 * 0.85)), 2.0437, 1.2020, 1e-3),  # the curve end c(0.85)
    ("T3", (0.5, 0.0), -174.29, 0.5, 5e-3),
    ("T3", (1.0, 1.0), -747.7, 1.8, 5e-2),
    ("T4", (0.0, 0.30), 2.2303, 0.0171, 1e-3),
    ("T4", (0.5720, -0.0412), 2.2304, 0.343, 1e-3),
    ("T4", (0.0, -0.05), -65.05, 1.2000, 5e-3),
    ("T5", (0.5254, 0.1625), 1.8918, None, 1e-3),
    ("T5", (0.0, 0.0), -7.0022, -0.7996, 1e-3),
    ("T5", (0.7643, 0.2364), -0.2783, 0.9952, 1e-3),
    ("T6", (-0.5, 0.0), 0.5906, 0.0002, 1e-3),
    ("T6", (0.3, 0.6), 0.5906, 0.772, 1e-3),
    ("T6", (0.1, 0.0), -math.inf, 0.606, 1e-3),
]

# docs/toy_landscapes.md §2.7: τ₁, τ₀.₁, Q̄_β, Q*_supp and its location, max Q and its location, min Q.
REFERENCE = {
    "T1": (-3.09, -5.39, 0.217, 1.000, (-0.45, 0.35), 1.000, (-0.45, 0.35), 0.000),
    "T2": (-2.34, -4.67, 0.493, 1.000, (-0.50, 0.30), 1.000, (-0.50, 0.30), -0.328),
    "T3": (-0.72, -2.84, -0.001, 1.239, (0.872, 0.458), 1.800, (1.0, 1.0), -1.800),
    "T4": (-1.09, -3.21, 0.007, 0.387, (0.645, -0.020), 1.202, (0.008, -0.050), -0.600),
    "T5": (-2.72, -5.06, 0.140, 0.995, (0.768, 0.238), 0.995, (0.768, 0.238), -1.141),
    "T6": (0.591, 0.591, 0.056, 0.798, (0.342, -0.610), 0.800, (0.35, -0.62), 0.000),
}


@pytest.mark.parametrize("key, action, log_density, q, tol", LANDMARKS)
def test_landmarks(key, action, log_density, q, tol):
    land = get_landscape(key)
    a = np.array([action])
    if log_density is not None:
        assert land.log_density(a)[0] == pytest.approx(log_density, abs=tol)
    if q is not None:
        assert land.q_value(a)[0] == pytest.approx(q, abs=tol)


def test_five_lobes_values_along_each_lobe():
    land = LANDSCAPES["T5"]
    centres = land.q_value(0.55 * land.directions)
    outward = land.q_value(0.8 * land.directions)
    np.testing.assert_allclose(centres, [0.387, 0.112, 0.237, 0.021, 0.158], atol=1e-3)
    np.testing.assert_allclose(outward, [0.995, 0.395, 0.695, 0.195, 0.495], atol=1e-3)


def test_crescent_area_and_tips():
    land = LANDSCAPES["T6"]
    # Lens of the two discs (doc): 0.6² acos(-0.225) + 0.7² acos(0.55) - ½ √(1.05 · 0.15 · 0.35 · 1.55).
    lens = 0.36 * math.acos(-0.225) + 0.49 * math.acos(0.55) - 0.5 * math.sqrt(1.05 * 0.15 * 0.35 * 1.55)
    assert land.area == pytest.approx(math.pi * 0.49 - lens, abs=1e-12)
    assert land.area == pytest.approx(0.55403, abs=2e-5)
    # Independent check: midpoint rule on a 2,000² grid over the bounding square.
    centres = -0.7 + (np.arange(2000) + 0.5) * 1.4 / 2000
    grid = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    assert land.contains(grid).mean() * 1.4**2 == pytest.approx(land.area, abs=2e-4)
    np.testing.assert_allclose(land.tips[0], (0.385, 0.585), atol=1e-3)


@pytest.mark.parametrize("key", KEYS)
def test_samples_lie_in_the_box_and_are_reproducible(key):
    land = get_landscape(key)
    first = land.sample(20_000, np.random.default_rng(3))
    assert first.shape == (20_000, 2)
    assert np.all(np.abs(first) <= 1.0)
    np.testing.assert_array_equal(first, land.sample(20_000, np.random.default_rng(3)))
    assert np.all(np.isfinite(land.log_density(first)))  # every sample lies in the support (T4/T6: not -inf)


def test_draws_from_the_definition_keep_the_mass_outside_the_box():
    draws = LANDSCAPES["T1"].sample(400_000, np.random.default_rng(2), within_box=False)
    assert np.mean(np.any(np.abs(draws) > 1.0, axis=1)) == pytest.approx(1 - 0.9993, abs=1.5e-4)  # doc: 99.93 % inside


def _mixture_moments(mix):
    mean = mix.weights @ mix.means
    second = np.einsum("k,kij->ij", mix.weights, mix.covariances + np.einsum("ki,kj->kij", mix.means, mix.means))
    return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("key", ["T1", "T2", "T5"])
def test_mixture_sampler_moments(key):
    land = get_landscape(key)
    samples = land.sample(200_000, np.random.default_rng(11))
    mean, cov = _mixture_moments(land.components)
    # Standard errors are below 1e-3; the < 0.1 % of mass rejected outside A moves the moments by less than that.
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=3e-3)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=3e-3)
    counts = np.bincount(np.argmax(land.components.responsibilities(samples), axis=1)) / len(samples)
    np.testing.assert_allclose(counts, land.components.weights, atol=0.01)


def test_manifold_and_arc_sampler_moments():
    arc = LANDSCAPES["T4"].sample(100_000, np.random.default_rng(5))
    rho, theta = LANDSCAPES["T4"].polar(arc)
    assert rho.mean() == pytest.approx(0.65, abs=1e-3)
    assert rho.std() == pytest.approx(0.03, abs=1e-3)
    assert theta.min() >= 0.15 * math.pi and theta.max() <= 0.85 * math.pi
    curve = LANDSCAPES["T3"].sample(100_000, np.random.default_rng(5))
    assert curve[:, 0].mean() == pytest.approx(0.0, abs=5e-3)
    assert curve[:, 0].var() == pytest.approx(1.7**2 / 12 + 0.015**2, abs=5e-3)  # uniform u plus tube noise


def _grid(lo, hi, step):
    axis = np.arange(lo + step / 2, hi, step)
    return np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2), step**2


@pytest.mark.parametrize("key, mass", [("T1", 0.9993), ("T2", 0.9997), ("T5", 0.99997), ("T4", 1.0), ("T6", 1.0)])
def test_log_density_integrates_to_the_mass_inside_the_box(key, mass):
    points, cell = _grid(-1.0, 1.0, 0.004)  # far finer than the narrowest scale (0.03 radial in T4)
    total = np.exp(get_landscape(key).log_density(points)).sum() * cell
    # T4 and T6 have sharp edges that the grid cuts, so their rule converges only at O(step).
    assert total == pytest.approx(mass, abs=1e-3 if key in ("T4", "T6") else 2e-4)


def test_thin_manifold_log_density_integrates_to_one():
    land = LANDSCAPES["T3"]
    points, cell = _grid(-1.0, 1.0, 0.003)
    band = np.abs(points[:, 1] - 0.45 * np.sin(1.6 * np.clip(points[:, 0], -0.85, 0.85))) < 0.12
    band &= np.abs(points[:, 0]) < 0.95  # outside this band the density is below e^-30
    assert np.exp(land.log_density(points[band])).sum() * cell == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("key", KEYS)
def test_reference_statistics_match_the_doc(key):
    tau_1, tau_01, mean_q, best_q, best_at, max_q, max_at, min_q = REFERENCE[key]
    stats = toy.reference_statistics(key)
    assert stats.tau_1 == pytest.approx(tau_1, abs=0.02)
    # τ₀.₁ is a 0.1 % quantile: its Monte Carlo standard error is about 0.035 at 10⁶ samples (0.08 at T3's 2·10⁵),
    # and the values of docs/toy_landscapes.md §2.7 carry the same noise (quadrature of the exact law: T2 -4.64,
    # T4 -3.18, T5 -5.01).
    assert stats.tau_01 == pytest.approx(tau_01, abs=0.12 if key == "T3" else 0.06)
    assert stats.behaviour_mean_q == pytest.approx(mean_q, abs=0.005)
    assert stats.best_supported_q == pytest.approx(best_q, abs=0.003)
    assert stats.max_q == pytest.approx(max_q, abs=0.003)
    assert stats.min_q == pytest.approx(min_q, abs=0.003)
    best_action, max_action = np.array(stats.best_supported_action), np.array(stats.max_q_action)
    if key == "T6":  # two symmetric optima; docs/toy_landscapes.md §2.7 lists the lower one
        best_action[1], max_action[1] = -abs(best_action[1]), -abs(max_action[1])
    np.testing.assert_allclose(best_action, best_at, atol=3e-3)
    np.testing.assert_allclose(max_action, max_at, atol=3e-3)


@pytest.mark.parametrize("key", sorted(LANDSCAPES))
def test_stored_thresholds_equal_a_fresh_computation(key):
    size = toy.REFERENCE_SIZE_T3 if key == "T3" else toy.REFERENCE_SIZE
    for q in (1.0, 0.1):
        # Equal to float precision: numpy's SIMD log/exp may differ in the last bit with the array's alignment.
        assert toy.support_threshold(key, q, num_samples=size) == pytest.approx(
            toy.REFERENCE_THRESHOLDS[(key, q)], rel=1e-12
        )


@pytest.mark.parametrize("key", ["T1", "T2", "T5"])
def test_support_threshold_is_the_behaviour_percentile(key):
    land = get_landscape(key)
    tau = toy.support_threshold(key, 1.0)
    fresh = land.sample(200_000, np.random.default_rng(8))
    assert np.mean(land.log_density(fresh) >= tau) == pytest.approx(0.99, abs=0.002)


# ---------------------------------------------------------------------------------------------- the flow path
@pytest.mark.parametrize("key", ["T1", "T2", "T5"])
@pytest.mark.parametrize("t", [0.3, 0.8, 0.95])
def test_mixture_score_equals_the_velocity_identity(key, t):
    x = np.random.default_rng(0).uniform(-1.2, 1.2, size=(500, 2))
    score = toy.marginal_score(key, x, t)
    velocity = toy.marginal_velocity(key, x, t)
    np.testing.assert_allclose(score, (t * velocity - x) / (1 - t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("key, t", [("T1", 0.8), ("T3", 0.9), ("T4", 0.9), ("T6", 0.8)])
def test_marginal_score_is_the_gradient_of_the_marginal_log_density(key, t):
    x = np.random.default_rng(1).uniform(-0.9, 0.9, size=(40, 2))
    eps = 1e-5
    grad = np.stack(
        [
            (toy.marginal_log_density(key, x + eps * e, t) - toy.marginal_log_density(key, x - eps * e, t)) / (2 * eps)
            for e in np.eye(2)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(toy.marginal_score(key, x, t), grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", ["T3", "T4", "T6"])
def test_quadrature_posterior_mean_matches_monte_carlo(key):
    """E[x1 | x] from the quadrature against self-normalised Monte Carlo over 100,000 reference samples."""
    t = 0.8
    x1 = toy.reference_samples(key)[:100_000]
    x = t * get_landscape(key).sample(6, np.random.default_rng(2)) + 0.1 * np.random.default_rng(3).normal(size=(6, 2))
    log_w = -np.sum((x[:, None, :] - t * x1[None]) ** 2, axis=-1) / (2 * (1 - t) ** 2)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    monte_carlo = (w @ x1) / w.sum(axis=1, keepdims=True)
    _, posterior_mean, _ = toy.marginal_posterior(key, x, t)
    np.testing.assert_allclose(posterior_mean, monte_carlo, atol=5e-3)


# docs/toy_landscapes.md §5: trace-normalised `state` metric (marginal matrix, marginal ratio, velocity ratio);
# velocity matrices where given.
STATE_METRIC = [
    ("T1", 0.8, [[0.74, 0.00], [0.00, 1.26]], 1.70, 1.78, [[0.72, 0.0], [0.0, 1.28]]),
    ("T1", 0.9, [[0.97, -0.01], [-0.01, 1.03]], 1.07, 1.32, None),
    ("T2", 0.8, [[0.83, -0.02], [-0.02, 1.17]], 1.42, 1.23, None),
    ("T2", 0.9, [[1.05, -0.01], [-0.01, 0.95]], 1.10, 1.72, None),
    ("T3", 0.8, [[0.70, -0.52], [-0.52, 1.30]], 4.06, 6.91, None),
    ("T3", 0.9, [[0.58, -0.65], [-0.65, 1.42]], 7.91, 4.15, None),
    ("T4", 0.8, [[0.64, 0.01], [0.01, 1.36]], 2.14, 4.04, [[0.40, 0.0], [0.0, 1.60]]),
    ("T4", 0.9, [[0.60, 0.02], [0.02, 1.40]], 2.31, 2.41, None),
    ("T5", 0.8, [[1.0, 0.0], [0.0, 1.0]], 1.03, 1.02, None),
    ("T5", 0.9, [[1.0, 0.0], [0.0, 1.0]], 1.02, 1.02, None),
    ("T6", 0.8, [[1.21, 0.00], [0.00, 0.79]], 1.53, 2.20, None),
    ("T6", 0.9, [[1.07, 0.02], [0.02, 0.93]], 1.16, 1.09, None),
]


def _ratio(matrix):
    low, high = np.linalg.eigvalsh(matrix)
    return high / low


@pytest.mark.parametrize("key, t, marginal, marginal_ratio, velocity_ratio, velocity", STATE_METRIC)
def test_state_metric_matches_the_doc_table(key, t, marginal, marginal_ratio, velocity_ratio, velocity):
    by_marginal = toy.state_metric(key, t, "marginal")
    by_velocity = toy.state_metric(key, t, "velocity")
    assert np.trace(by_marginal) == pytest.approx(2.0)
    np.testing.assert_allclose(by_marginal, marginal, atol=0.03)
    if velocity is not None:
        np.testing.assert_allclose(by_velocity, velocity, atol=0.03)
    # Eigenvalue ratios amplify the ±0.02 sampling noise of the entries; 8 % covers it.
    assert _ratio(by_marginal) == pytest.approx(marginal_ratio, rel=0.08)
    assert _ratio(by_velocity) == pytest.approx(velocity_ratio, rel=0.08)


def test_flow_path_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        toy.marginal_score("T1", np.zeros((1, 2)), 1.0)
    with pytest.raises(ValueError, match="estimator"):
        toy.state_metric("T1", 0.8, "exact")
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        toy.marginal_velocity("T1", np.zeros((4, 3)), 0.5)


# ------------------------------------------------------------------------------------------ jax.numpy oracle
@pytest.mark.parametrize("key", KEYS)
def test_q_value_under_jax_numpy_matches_numpy(key):
    import jax
    import jax.numpy as jnp

    land = get_landscape(key)
    a = np.random.default_rng(4).uniform(-1, 1, size=(256, 2)).astype(np.float32)
    expected = land.q_value(a.astype(np.float64))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x: land.q_value(x, xp=jnp))(a)), expected, atol=1e-5)
    if land.components is not None:
        log_density = np.asarray(land.log_density(jnp.asarray(a), xp=jnp))
        np.testing.assert_allclose(log_density, land.log_density(a), rtol=1e-5, atol=1e-4)


# -------------------------------------------------------------------------------------------- environment
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version:UserWarning")
def test_gymnasium_env_checker_passes():
    # The environment as gym.make returns it, so the registration's time limit and the wrappers are checked too
    # (tests/test_check_env.py checks every ID without rendering).
    for env_id in ("fidec/toy-saddle-v0", "fidec/toy-crescent-v0"):
        env = gym.make(env_id, render_mode="rgb_array")
        check_env(env, skip_render_check=False)
        env.close()


def test_one_step_bandit_reward_and_info():
    env = gym.make("fidec/toy-bimodal-v0")
    observation, _ = env.reset(seed=0)
    np.testing.assert_array_equal(observation, np.zeros(1, dtype=np.float32))
    land = env.unwrapped.landscape
    _, reward, terminated, truncated, info = env.step(np.array([-0.45, 0.35], dtype=np.float32))
    assert terminated and not truncated  # the bandit ends by termination; no one-step time limit truncates it
    assert "success" not in info["episode"]  # toy tasks have no success signal: absent, never NaN
    assert reward == pytest.approx(float(land.q_value(np.array([-0.45, 0.35]))), abs=1e-6)
    assert info["q_value"] == reward and info["in_support"]
    assert info["log_density"] == pytest.approx(-2.2264, abs=1e-3)
    assert info["episode"]["l"] == 1 and info["episode"]["r"] == pytest.approx(reward)
    env.reset()
    _, reward, _, _, info = env.step(np.array([0.2, 3.0]))  # clipped to (0.2, 1.0): far off support
    assert reward == pytest.approx(float(land.q_value(np.array([0.2, 1.0]))))
    assert not info["in_support"]
    assert env.unwrapped.q_value(np.array([[0.2, 1.0]]))[0] == pytest.approx(reward)
    env.close()


def test_render_marks_the_last_action():
    env = toy.ToyLandscapeEnv("T4", render_mode="rgb_array")
    env.reset(seed=0)
    background = env.render().copy()
    env.step(np.array([0.5, -0.5], dtype=np.float32))
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    assert (frame != background).any()


def test_unknown_landscape_and_non_toy_task_errors():
    with pytest.raises(KeyError, match="T1"):
        get_landscape("T9")
    assert get_landscape("fidec/toy-saddle-v0").key == "T2"
    assert get_landscape("t5").key == "T5"
    with pytest.raises(ValueError, match="not a toy task"):
        toy.make_toy_env("antmaze-umaze-v2")
    with pytest.raises(ValueError, match="NaN"):
        LANDSCAPES["T3"].log_density(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="2 finite"):
        toy.ToyLandscapeEnv("T1").step(np.array([np.nan, 0.0]))


# ------------------------------------------------------------------------------------------------ dataset
def test_toy_dataset_arrays_form_and_determinism():
    data = toy.toy_dataset_arrays("T5", 2_000, seed=0)
    assert data["observations"].shape == (2_000, 1) and data["actions"].shape == (2_000, 2)
    assert all(v.dtype == np.float32 for v in data.values())
    assert np.all(data["observations"] == 0) and np.all(data["next_observations"] == 0)
    assert np.all(data["masks"] == 0) and np.all(data["terminals"] == 1)
    np.testing.assert_allclose(data["rewards"], LANDSCAPES["T5"].q_value(data["actions"].astype(np.float64)), atol=1e-6)
    again = toy.toy_dataset_arrays("fidec/toy-five-lobes-v0", 2_000, seed=0)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])
    assert not np.array_equal(toy.toy_dataset_arrays("T5", 2_000, seed=1)["actions"], data["actions"])
    with pytest.raises(ValueError, match="positive"):
        toy.toy_dataset_arrays("T5", 0, seed=0)
