"""FiDec: presets, the Fisher trust region inside the agent, gradient routing, oracle critic, pixels."""

from __future__ import annotations

import math

import flow_agent_checks as checks
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents import fisher
from fidec_gym.agents.deflow import DeFlowAgent
from fidec_gym.agents.fidec import PRESETS, FiDecAgent, get_config


@pytest.fixture(scope="module")
def batch():
    return checks.random_batch(0)


@pytest.fixture(scope="module")
def agent(batch):
    return FiDecAgent.create(0, batch, checks.SMALL)


def with_config(agent, **updates):
    """The same parameters under another (static) config: no new initialisation."""
    return agent.replace(config=agent.config.replace(**updates))


# ---- configuration ---------------------------------------------------------------------------------------------


def test_presets_resolve_to_the_decision_table():
    expected = {
        "paper": ("state", "marginal", 0.8, 0.0, 4),
        "official": ("state", "velocity", 0.9, 0.05, 8),
        "local": ("local", "marginal", 0.8, 0.0, 1),
        "isotropic": ("none", "marginal", 0.8, 0.0, 4),
    }
    assert FiDecAgent.make_config({})["preset"] == "paper"
    for preset, values in expected.items():
        config = FiDecAgent.make_config({"preset": preset})
        keys = ("fisher_mode", "score_estimator", "fisher_t", "fisher_t_width", "num_fisher_samples")
        assert tuple(config[key] for key in keys) == values
        # Shared by every preset.
        assert config["fisher_damping"] == 1e-3 and config["normalize_q_loss"] is True
        assert config["grad_clip"] == 5.0 and config["log_alpha_init"] == pytest.approx(math.log(10.0))
        assert config["use_lagrange"] is True and config["local_eval_point"] == "base"
        # The stored config is explicit and re-merging it is a no-op.
        assert FiDecAgent.make_config(config.to_dict()) == config
    assert set(PRESETS) == set(expected)


def test_explicit_keys_override_the_preset():
    config = FiDecAgent.make_config(
        {
            "preset": "official",
            "num_fisher_samples": 2,
            "fisher_t": 0.95,
            "score_estimator": "marginal",
            "q_agg": "min",
            "target_divergence": 0.01,
        }
    )
    assert (config["num_fisher_samples"], config["fisher_t"], config["score_estimator"]) == (2, 0.95, "marginal")
    assert config["fisher_t_width"] == 0.05 and config["q_agg"] == "min" and config["target_divergence"] == 0.01


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"preset": "exact"}, "preset"),
        ({"fisher_mode": "global"}, "fisher_mode"),
        ({"score_estimator": "tweedie"}, "score_estimator"),
        ({"fisher_t": 1.0}, "fisher_t"),
        ({"num_fisher_samples": 0}, "num_fisher_samples"),
        ({"local_eval_point": "mean"}, "local_eval_point"),
        ({"fisher_damping": -1.0}, "fisher_damping"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        FiDecAgent.make_config(overrides)


# ---- the algorithm ---------------------------------------------------------------------------------------------


def test_networks_and_actions(agent, batch):
    assert set(agent.network.params) == {
        "modules_critic",
        "modules_target_critic",
        "modules_actor_bc_flow",
        "modules_actor_refinement",
        "modules_log_alpha",
    }
    np.testing.assert_allclose(agent.network.params["modules_log_alpha"]["log_value"], [math.log(10.0)], rtol=1e-6)
    checks.assert_actions_in_range(agent, batch)


def test_gradient_routing(agent, batch):
    """docs/algorithms.md §9.2: L_Q -> critic; L_BC -> BC flow; penalty and L_Qpi -> refinement only;
    L_alpha -> log alpha only."""
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


def actor_pieces(agent, batch, rng):
    """Replay steps 3-4 of the actor loss with its own random streams."""
    _, base_rng, fisher_rng, mse_rng = jax.random.split(rng, 4)
    features = agent.bc_features(batch["observations"])
    base = agent.behaviour_actions(features, base_rng)
    residual = agent.network.select("actor_refinement")(batch["observations"], base)
    return features, base, residual, fisher_rng, mse_rng


def test_divergence_is_the_trace_normalised_fisher_form(agent, batch):
    """D = mean_b Delta^T M_b Delta / d with M_b from K scores per state, tr(M_b) = d; the total sums the terms."""
    rng = jax.random.PRNGKey(7)
    loss, info = agent.actor_loss(batch, agent.network.params, rng)
    features, base, residual, fisher_rng, _ = actor_pieces(agent, batch, rng)
    scores = agent.fisher_scores(features, base, fisher_rng)
    assert scores.shape == (len(base), 4, 2)
    metric = fisher.fisher_matrix(scores, damping=1e-3)
    np.testing.assert_allclose(np.trace(metric, axis1=1, axis2=2), 2.0, rtol=1e-5)
    expected = jnp.mean(jnp.einsum("bi,bij,bj->b", residual, metric, residual)) / 2
    np.testing.assert_allclose(float(info["actor/divergence"]), float(expected), rtol=1e-4)
    np.testing.assert_allclose(float(info["actor/penalty"]), 10.0 * float(expected), rtol=1e-4)
    np.testing.assert_allclose(float(info["actor/alpha_loss"]), -math.log(10.0) * (float(expected) - 0.001), rtol=1e-4)
    total = sum(float(info[key]) for key in ("actor/bc_flow_loss", "actor/penalty", "actor/q_loss", "actor/alpha_loss"))
    np.testing.assert_allclose(float(loss), total, rtol=1e-5)


def test_state_metric_ignores_the_base_action_and_uses_fresh_samples(agent, batch):
    features = agent.bc_features(batch["observations"])
    rng = jax.random.PRNGKey(9)
    base = jnp.zeros_like(batch["actions"])
    first = agent.fisher_scores(features, base, rng)
    np.testing.assert_array_equal(first, agent.fisher_scores(features, base + 0.5, rng))
    # The velocity estimator on the very same draws: sigma_marginal = t sigma_velocity - x / (1 - t).
    velocity = with_config(agent, score_estimator="velocity").fisher_scores(features, base, rng)
    x = (1 - 0.8) * (0.8 * velocity - first)
    assert np.all(np.abs(np.asarray(x)) < 10)  # x_t = 0.2 x0 + 0.8 a~ stays in a few noise scales
    assert float(jnp.abs(x[:, 0] - x[:, 1]).max()) > 0  # K distinct samples per state


def test_local_metric_reads_the_score_at_the_base_action(agent, batch):
    features = agent.bc_features(batch["observations"])
    base = agent.behaviour_actions(features, jax.random.PRNGKey(1))
    rng = jax.random.PRNGKey(2)
    t = 0.8
    for eval_point, x in (("base", base), ("scaled", t * base)):
        local = with_config(agent, fisher_mode="local", local_eval_point=eval_point)
        scores = local.fisher_scores(features, base, rng)
        velocity = agent.bc_velocity(features)(x, jnp.full((len(x), 1), t))
        np.testing.assert_allclose(scores[:, 0], fisher.marginal_score(velocity, x, t), rtol=1e-4, atol=1e-4)
        assert scores.shape == (len(base), 1, 2)


def test_isotropic_preset_equals_deflow_with_fidec_settings(agent, batch):
    """M = I reproduces the fidec_repo DeFlow variant (with Q-normalisation) term by term."""
    isotropic = with_config(agent, **FiDecAgent.make_config({**checks.SMALL, "preset": "isotropic"}, batch))
    assert isotropic.config["fisher_mode"] == "none"
    # Same modules and parameters; only the agent class and its config differ.
    deflow_config = DeFlowAgent.make_config({**checks.SMALL, "deflow_variant": "fidec_repo"}, batch)
    deflow = DeFlowAgent(rng=agent.rng, network=agent.network, config=deflow_config)
    rng = jax.random.PRNGKey(4)
    _, fidec_info = isotropic.total_loss(batch, agent.network.params, rng)
    _, deflow_info = deflow.total_loss(batch, agent.network.params, rng)
    assert set(deflow_info) == set(fidec_info)
    for key, value in deflow_info.items():
        np.testing.assert_allclose(float(fidec_info[key]), float(value), rtol=1e-6, err_msg=key)


def test_logging_roll_out_only_when_asked(agent, batch):
    rng = jax.random.PRNGKey(7)
    _, info = agent.actor_loss(batch, agent.network.params, rng)
    assert "actor/mse" not in info
    _, info = with_config(agent, log_sample_mse=True).actor_loss(batch, agent.network.params, rng)
    *_, mse_rng = actor_pieces(agent, batch, rng)
    sampled = agent.policy_actions(batch["observations"], mse_rng)
    np.testing.assert_allclose(float(info["actor/mse"]), float(jnp.mean((sampled - batch["actions"]) ** 2)), rtol=1e-5)


def test_bc_flow_keeps_training_online_by_default(agent, batch):
    rng = jax.random.PRNGKey(7)
    online = with_config(agent, offline_steps=0)
    assert float(online.actor_loss(batch, agent.network.params, rng)[1]["actor/bc_flow_loss"]) > 0
    frozen = with_config(agent, offline_steps=0, fix_bc_flow_online=True)
    assert float(frozen.actor_loss(batch, agent.network.params, rng)[1]["actor/bc_flow_loss"]) == 0


def test_lagrange_multiplier_tracks_the_target(agent, batch):
    checks.assert_lagrange_direction(agent, batch)


def test_global_norm_clipping(agent):
    checks.assert_gradient_clipping(agent, clipped=True)


def test_critic_loss_known_answer(agent, batch):
    checks.assert_critic_loss_known_answer(agent, batch)


def test_target_update_rate(agent, batch):
    checks.assert_target_update_rate(agent, batch)


def test_nonfinite_is_reported(agent, batch):
    checks.assert_nonfinite_is_reported(agent, batch)


def test_fused_vmapped_and_resumed_updates_agree(agent, tmp_path):
    checks.assert_fused_vmapped_and_resumed_updates_agree(agent, tmp_path)


def test_oracle_critic(tmp_path):
    checks.assert_oracle_critic(FiDecAgent, checks.SMALL, tmp_path)


def test_pixel_observations_share_the_bc_flow_encoder():
    """impala_small encoders: the BC flow's encoder is one set of parameters, trained by L_BC only."""
    rng = np.random.default_rng(0)
    batch = checks.random_batch(0, batch_size=4)
    batch["observations"] = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    batch["next_observations"] = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    pixel = FiDecAgent.create(0, batch, {**checks.SMALL, "encoder": "impala_small", "num_fisher_samples": 2})
    params = pixel.network.params
    assert "modules_actor_bc_flow_encoder" in params
    assert set(params["modules_actor_bc_flow"]) == {"mlp"}  # no second copy of the encoder
    assert "encoder" in params["modules_critic"] and "encoder" in params["modules_actor_refinement"]
    # L_BC reaches the shared encoder (the full routing table is checked on state inputs).
    checks.assert_gradient_routing(pixel, batch, {"actor/bc_flow_loss": {"actor_bc_flow", "actor_bc_flow_encoder"}})
    actions = np.asarray(pixel.sample_actions(batch["observations"], jax.random.PRNGKey(0)))
    assert actions.shape == (4, 2) and np.all(np.abs(actions) <= 1)


def test_defaults():
    config = get_config()
    assert config["preset"] == "paper" and config["log_sample_mse"] is False and config["critic"] == "learned"
    assert config["target_divergence"] == 0.001 and config["flow_steps"] == 10


def test_registry_make_config_resolves_presets():
    from fidec_gym.agents import make_config

    official = make_config("fidec", {"preset": "official"})
    assert (official["score_estimator"], official["fisher_t"], official["num_fisher_samples"]) == ("velocity", 0.9, 8)
    assert make_config("fidec", {"preset": "official", "num_fisher_samples": 3})["num_fisher_samples"] == 3
