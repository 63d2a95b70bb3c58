"""FQL: gradient routing, critic target, distillation and Q term, shared agent contract."""

from __future__ import annotations

import flow_agent_checks as checks
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents.fql import FQLAgent, get_config


@pytest.fixture(scope="module")
def batch():
    return checks.random_batch(0)


@pytest.fixture(scope="module")
def agent(batch):
    return FQLAgent.create(0, batch, checks.SMALL)


def test_defaults_follow_the_reference():
    config = get_config()
    assert config["alpha"] == 10.0 and config["flow_steps"] == 10 and config["q_agg"] == "mean"
    assert config["normalize_q_loss"] is False and config["grad_clip"] is None
    assert config["actor_hidden_dims"] == (512,) * 4 and config["value_hidden_dims"] == (512,) * 4


def test_networks_and_actions(agent, batch):
    assert set(agent.network.params) == {
        "modules_critic",
        "modules_target_critic",
        "modules_actor_bc_flow",
        "modules_actor_onestep_flow",
    }
    checks.assert_actions_in_range(agent, batch)
    # One network call at inference: clip(mu(s, z)) with z ~ N(0, I) drawn from the seed.
    key = jax.random.PRNGKey(3)
    noise = jax.random.normal(key, batch["actions"].shape)
    expected = jnp.clip(agent.network.select("actor_onestep_flow")(batch["observations"], noise), -1, 1)
    np.testing.assert_allclose(agent.sample_actions(batch["observations"], key), expected, rtol=1e-5, atol=1e-6)


def test_gradient_routing(agent, batch):
    checks.assert_gradient_routing(
        agent,
        batch,
        {
            "critic/loss": {"critic"},
            "actor/bc_flow_loss": {"actor_bc_flow"},
            "actor/distill_loss": {"actor_onestep_flow"},
            "actor/q_loss": {"actor_onestep_flow"},
        },
    )


def test_actor_terms_known_answer(agent, batch):
    """Distillation target is the clipped Euler roll-out from the same z; the Q term averages heads for any q_agg."""
    rng = jax.random.PRNGKey(7)
    variant = agent.replace(config=agent.config.replace(q_agg="min", normalize_q_loss=True))
    loss, info = variant.actor_loss(batch, agent.network.params, rng)
    _, noise_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, batch["actions"].shape)
    velocity = agent.bc_velocity(batch["observations"])
    x, steps = noise, agent.config["flow_steps"]
    for i in range(steps):
        x = x + velocity(x, jnp.full((len(x), 1), i / steps)) / steps
    target = jnp.clip(x, -1, 1)
    onestep = agent.network.select("actor_onestep_flow")(batch["observations"], noise)
    np.testing.assert_allclose(float(info["actor/distill_loss"]), float(jnp.mean((onestep - target) ** 2)), rtol=1e-5)
    q = agent.network.select("critic")(batch["observations"], jnp.clip(onestep, -1, 1)).mean(axis=0)
    np.testing.assert_allclose(float(info["actor/q_mean"]), float(q.mean()), rtol=1e-5)
    np.testing.assert_allclose(float(info["actor/q_loss"]), float(-q.mean() / jnp.abs(q).mean()), rtol=1e-5)
    expected_total = info["actor/bc_flow_loss"] + 10.0 * info["actor/distill_loss"] + info["actor/q_loss"]
    np.testing.assert_allclose(float(loss), float(expected_total), rtol=1e-6)


def test_critic_loss_known_answer(agent, batch):
    checks.assert_critic_loss_known_answer(agent, batch)


def test_target_update_rate(agent, batch):
    checks.assert_target_update_rate(agent, batch)


def test_no_gradient_clipping(agent):
    checks.assert_gradient_clipping(agent, clipped=False)


def test_nonfinite_is_reported(agent, batch):
    checks.assert_nonfinite_is_reported(agent, batch)


def test_fused_vmapped_and_resumed_updates_agree(agent, tmp_path):
    checks.assert_fused_vmapped_and_resumed_updates_agree(agent, tmp_path)


def test_oracle_q_replaces_the_critic_in_the_actor(agent, batch):
    """The full oracle contract (training, save/load) is checked on FiDec; the actor side is shared code."""
    q_fn = lambda observations, actions: -jnp.sum(actions**2, axis=-1)
    oracle = agent.replace(config=agent.config.replace(critic="oracle"), q_fn=q_fn)
    rng = jax.random.PRNGKey(7)
    _, info = oracle.actor_loss(batch, agent.network.params, rng)
    noise = jax.random.normal(jax.random.split(rng)[1], batch["actions"].shape)
    actions = jnp.clip(agent.network.select("actor_onestep_flow")(batch["observations"], noise), -1, 1)
    np.testing.assert_allclose(float(info["actor/q_mean"]), float(q_fn(None, actions).mean()), rtol=1e-5)
    loss, critic_info = oracle.critic_loss(batch, agent.network.params, rng)
    assert float(loss) == 0.0 and set(critic_info) == {"critic/loss"}


def test_bad_config_is_named(batch):
    with pytest.raises(ValueError, match="q_agg"):
        FQLAgent.create(0, batch, {**checks.SMALL, "q_agg": "max"})
    with pytest.raises(KeyError, match="alpah"):
        FQLAgent.create(0, batch, {"alpah": 1.0})
