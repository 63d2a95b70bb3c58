"""Gaussian BC (docs/algorithms.md §4): loss formula, learning a known mean, deterministic evaluation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents.bc import BCAgent

OBS_DIM, ACTION_DIM, BATCH = 5, 2, 16
TARGET_MEAN = np.array([0.2, -0.15], dtype=np.float32)


def gaussian_batches(seed: int, num_batches: int, batch_size: int = BATCH) -> dict:
    """Observations carry no information; actions ~ N(TARGET_MEAN, 0.05^2 I)."""
    rng = np.random.default_rng(seed)
    shape = (num_batches, batch_size)
    return {
        "observations": rng.normal(size=(*shape, OBS_DIM)).astype(np.float32),
        "actions": (TARGET_MEAN + 0.05 * rng.normal(size=(*shape, ACTION_DIM))).astype(np.float32),
    }


@pytest.fixture(scope="module")
def agent():
    return BCAgent.create(0, jax.tree.map(lambda x: x[0], gaussian_batches(0, 1)), {"actor_hidden_dims": (32, 32)})


def test_loss_is_gaussian_nll_with_unit_std(agent):
    batch = jax.tree.map(lambda x: x[0], gaussian_batches(1, 1))
    info = agent.validation_info(batch)
    mean = agent.sample_actions(batch["observations"], jax.random.PRNGKey(0), 0.0)
    squared = np.sum(np.square(batch["actions"] - np.asarray(mean)), axis=-1)
    expected = np.mean(0.5 * squared + 0.5 * ACTION_DIM * math.log(2 * math.pi))
    np.testing.assert_allclose(info["val/actor/loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(info["val/actor/mse"], squared.mean(), rtol=1e-5)


def test_bc_learns_the_mean_of_a_gaussian_dataset(agent):
    trained, info = agent.update_n(gaussian_batches(2, 1500))
    assert float(info["nonfinite"]) == 0.0
    observations = gaussian_batches(3, 1, batch_size=64)["observations"][0]
    greedy = trained.sample_actions(observations, jax.random.PRNGKey(0), 0.0)
    np.testing.assert_allclose(np.asarray(greedy).mean(axis=0), TARGET_MEAN, atol=0.03)
    # With sigma fixed at 1 the minimum of the loss is d/2 log(2 pi) + E||a - mu||^2 / 2 (noise variance 0.05^2).
    floor = 0.5 * ACTION_DIM * (math.log(2 * math.pi) + 0.05**2)
    assert float(info["actor/loss"]) == pytest.approx(floor, abs=0.01)


def test_actions_are_clipped_and_temperature_controls_noise(agent):
    observations = jnp.zeros((256, OBS_DIM))
    greedy = agent.sample_actions(observations, jax.random.PRNGKey(1), 0.0)
    np.testing.assert_allclose(greedy, greedy[:1].repeat(256, axis=0), atol=1e-6)  # same state, same action
    noisy = np.asarray(agent.sample_actions(observations, jax.random.PRNGKey(1), 1.0))
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0
    assert (np.abs(noisy) == 1.0).mean() > 0.2  # sigma = 1 puts about a third of the mass beyond +-1
    unclipped = noisy[np.abs(noisy) < 1.0]
    assert 0.3 < unclipped.std() < 0.8  # a unit normal truncated to [-1, 1] has std ~0.54
