"""DeFlow: variants, gradient routing, Lagrangian and fixed multiplier, shared agent contract."""

from __future__ import annotations

import math

import flow_agent_checks as checks
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents.deflow import DeFlowAgent, get_config


@pytest.fixture(scope="module")
def batch():
    return checks.random_batch(0)


@pytest.fixture(scope="module")
def agent(batch):
    return DeFlowAgent.create(0, batch, checks.SMALL)


def test_variants_resolve_to_explicit_values():
    official = DeFlowAgent.make_config({})
    assert official["deflow_variant"] == "official"
    assert official["log_alpha_init"] == 1.0 and official["grad_clip"] is None
    assert official["normalize_q_loss"] is True and official["use_lagrange"] is True
    repo = DeFlowAgent.make_config({"deflow_variant": "fidec_repo"})
    assert repo["log_alpha_init"] == pytest.approx(math.log(10.0)) and repo["grad_clip"] == 5.0
    # An explicit key beats the variant, and re-merging a stored config changes nothing.
    custom = DeFlowAgent.make_config({"deflow_variant": "fidec_repo", "grad_clip": None})
    assert custom["grad_clip"] is None and custom["log_alpha_init"] == pytest.approx(math.log(10.0))
    assert DeFlowAgent.make_config(repo.to_dict()) == repo
    with pytest.raises(ValueError, match="deflow_variant"):
        DeFlowAgent.make_config({"deflow_variant": "paper"})
    assert get_config()["target_divergence"] == 0.001


def test_networks_and_actions(agent, batch):
    assert set(agent.network.params) == {
        "modules_critic",
        "modules_target_critic",
        "modules_actor_bc_flow",
        "modules_actor_refinement",
        "modules_log_alpha",
    }
    np.testing.assert_allclose(agent.network.params["modules_log_alpha"]["log_value"], [1.0])
    checks.assert_actions_in_range(agent, batch)
    # a = clip(ODE(s, z) + f(s, ODE(s, z))) with z drawn from the seed.
    key = jax.random.PRNGKey(3)
    base = agent.behaviour_actions(batch["observations"], key)
    expected = jnp.clip(base + agent.network.select("actor_refinement")(batch["observations"], base), -1, 1)
    np.testing.assert_allclose(agent.sample_actions(batch["observations"], key), expected, rtol=1e-5, atol=1e-6)


def test_gradient_routing(agent, batch):
    checks.assert_gradient_routing(
        agent,
        batch,
        {
            "critic/loss": {"critic"},
            "actor/bc_flow_loss": {"actor_bc_flow"},
            "actor/penalty": {"actor_refinement"},
            "actor/q_loss": {"actor_refinement"},
            "actor/alpha_loss": {"log_alpha"},
        },
    )


def test_actor_terms_known_answer(agent, batch):
    """D = mean(Delta^2); penalty = alpha D; L_alpha = -log alpha (D - delta); the total is their sum."""
    rng = jax.random.PRNGKey(7)
    loss, info = agent.actor_loss(batch, agent.network.params, rng)
    base = agent.behaviour_actions(batch["observations"], jax.random.split(rng)[1])
    residual = agent.network.select("actor_refinement")(batch["observations"], base)
    divergence = float(jnp.mean(residual**2))
    np.testing.assert_allclose(float(info["actor/divergence"]), divergence, rtol=1e-5)
    np.testing.assert_allclose(float(info["actor/penalty"]), math.e * divergence, rtol=1e-5)
    np.testing.assert_allclose(float(info["actor/alpha_loss"]), -1.0 * (divergence - 0.001), rtol=1e-5)
    q = agent.network.select("critic")(batch["observations"], jnp.clip(base + residual, -1, 1)).mean(axis=0)
    np.testing.assert_allclose(float(info["actor/q_loss"]), float(-q.mean() / jnp.abs(q).mean()), rtol=1e-5)
    total = sum(float(info[key]) for key in ("actor/bc_flow_loss", "actor/penalty", "actor/q_loss", "actor/alpha_loss"))
    np.testing.assert_allclose(float(loss), total, rtol=1e-5)


def test_fixed_multiplier_is_alpha_times_divergence(agent, batch):
    """use_lagrange=False: penalty alpha * D (alpha once, not squared) and no dual loss."""
    fixed = agent.replace(config=agent.config.replace(use_lagrange=False, alpha=3.0))
    _, info = fixed.actor_loss(batch, agent.network.params, jax.random.PRNGKey(7))
    np.testing.assert_allclose(float(info["actor/penalty"]), 3.0 * float(info["actor/divergence"]), rtol=1e-6)
    assert float(info["actor/alpha_loss"]) == 0.0


def test_bc_flow_frozen_online_only_when_asked(agent, batch):
    rng = jax.random.PRNGKey(7)
    for fix, offline_steps, frozen in ((True, 0, True), (True, 10, False), (False, 0, False)):
        variant = agent.replace(config=agent.config.replace(fix_bc_flow_online=fix, offline_steps=offline_steps))
        _, info = variant.actor_loss(batch, agent.network.params, rng)
        assert (float(info["actor/bc_flow_loss"]) == 0.0) == frozen


def test_lagrange_multiplier_tracks_the_target(agent, batch):
    checks.assert_lagrange_direction(agent, batch)


def test_critic_loss_known_answer(agent, batch):
    checks.assert_critic_loss_known_answer(agent, batch)


def test_target_update_rate(agent, batch):
    checks.assert_target_update_rate(agent, batch)


def test_clipping_only_in_the_fidec_repo_variant(agent, batch):
    checks.assert_gradient_clipping(agent, clipped=False)
    repo = DeFlowAgent.create(0, batch, {**checks.SMALL, "deflow_variant": "fidec_repo"})
    checks.assert_gradient_clipping(repo, clipped=True)


def test_nonfinite_is_reported(agent, batch):
    checks.assert_nonfinite_is_reported(agent, batch)


def test_fused_vmapped_and_resumed_updates_agree(agent, tmp_path):
    checks.assert_fused_vmapped_and_resumed_updates_agree(agent, tmp_path)
