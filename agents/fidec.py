"""FiDec, the Fisher Decorator (docs/algorithms.md §9, D1).

FiDec refines a flow behaviour policy with a local transport map T(a) = a + Delta(s, a) and keeps the refined
policy close to the behaviour policy in KL, which to second order is a Fisher quadratic form of the residual.
It is DeFlow with one change: the isotropic penalty mean(Delta^2) becomes Delta^T M Delta / d, with M the
trace-normalised Fisher of the behaviour flow at a perturbed time t_f.

One training step (all terms summed, one Adam step after global-norm clipping at 5, then Polyak on the critic):

    1. Critic     y = r + gamma * m * agg_i Q_target,i(s', a'),  a' = clip(a'_base + Delta(s', a'_base))
                  L_Q = mean over (heads x batch) of (Q_i(s, a) - y)^2
    2. BC flow    L_BC = flow matching of v(s, x, t) on dataset actions
    3. Residual   a_base = stop_grad(ODE(s, z)),  Delta = f(s, a_base)
    4. Metric     scores sigma from the BC velocity at t_f (marginal: (t v - x)/(1 - t); velocity: v/(1 - t))
                  F = mean_k sigma_k sigma_k^T + lambda_d I,  M = F / stop_grad(tr(F)/d)
    5. Divergence D = mean_b Delta_b^T M_b Delta_b / d
    6. Dual       alpha = exp(log alpha),  penalty = stop_grad(alpha) * D,
                  L_alpha = -log alpha * (stop_grad(D) - delta)
    7. Q term     L_Qpi = -mean_b mean_i Q_i(s, clip(a_base + Delta)) / stop_grad(max(mean|Q|, 1e-6))
    8. Total      L_Q + L_BC + penalty + L_Qpi + L_alpha

Presets (config ``preset``; any key given explicitly overrides its preset value):

    paper      state metric, marginal score, t_f = 0.8,             K = 4   (default)
    official   state metric, velocity score, t_f ~ U[0.85, 0.90],   K = 8   (the released code and scripts)
    local      rank-one metric at a_base itself, marginal score, t_f = 0.8 (Theorem 3.1 literally)
    isotropic  M = I (the paper's Table 4 ablation; DeFlow with FiDec's other settings)

``state`` metrics average K fresh, re-noised BC-flow samples per state, so M depends on s only. ``local`` builds
M from the one score at a_base (``local_eval_point="scaled"`` evaluates at t_f * a_base instead, removing the
1/t location shift of the noised law; see docs/algorithms.md §9.6).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from fidec_gym.agents import fisher
from fidec_gym.agents.base import Array, Batch, FrozenConfig, Info
from fidec_gym.agents.flow import (
    DEFAULT_FLOW_STEPS,
    RefinedFlowAgent,
    bc_flow_weight,
    normalized_q_loss,
    trust_region_terms,
)
from fidec_gym.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "fisher_mode": "state",
        "score_estimator": "marginal",
        "fisher_t": 0.8,
        "fisher_t_width": 0.0,
        "num_fisher_samples": 4,
    },
    "official": {
        "fisher_mode": "state",
        "score_estimator": "velocity",
        "fisher_t": 0.9,
        "fisher_t_width": 0.05,
        "num_fisher_samples": 8,
    },
    # One velocity call at a_base per row; no Fisher samples are drawn.
    "local": {
        "fisher_mode": "local",
        "score_estimator": "marginal",
        "fisher_t": 0.8,
        "fisher_t_width": 0.0,
        "num_fisher_samples": 1,
    },
    # M = I; the score settings are unused and kept at the paper's values.
    "isotropic": {
        "fisher_mode": "none",
        "score_estimator": "marginal",
        "fisher_t": 0.8,
        "fisher_t_width": 0.0,
        "num_fisher_samples": 4,
    },
}
LOCAL_EVAL_POINTS = ("base", "scaled")


def get_config() -> dict:
    """Defaults of FiDec (``paper`` preset); ``target_divergence``, discount and q_agg are set per task."""
    return {
        "agent_name": "fidec",  # registry name, stored with the config (FQL/FiDec code convention)
        "lr": 3e-4,  # Adam learning rate; lost from the paper, FiDec code value (docs/algorithms.md §9.5, §10.1)
        "batch_size": 256,  # transitions per update (FiDec paper Table 6; docs/algorithms.md §9.5, §10.1)
        # BC flow and refinement MLPs; lost from the paper, FiDec code value (docs/algorithms.md §9.1, §9.5)
        "actor_hidden_dims": (512, 512, 512, 512),
        "value_hidden_dims": (512, 512, 512, 512),  # critic MLP, 2 heads (FiDec code; docs/algorithms.md §9.1)
        "layer_norm": True,  # LayerNorm in the critic (FiDec paper Table 6; docs/algorithms.md §9.5)
        "actor_layer_norm": False,  # no LayerNorm in the actor nets (FiDec paper Table 6; docs/algorithms.md §9.5)
        "discount": 0.99,  # gamma; 0.995 on long horizons (docs/algorithms.md §10.3, envs/task_hyperparameters.csv)
        "tau": 0.005,  # Polyak rate of the target critic (FiDec paper Table 6; docs/algorithms.md §9.1, §9.5)
        "q_agg": "mean",  # target-head aggregation; "min" per task (docs/algorithms.md §10.3, task_hyperparameters.csv)
        "flow_steps": DEFAULT_FLOW_STEPS,  # Euler steps of the BC flow (FiDec paper Table 6; docs/algorithms.md §9.5)
        "preset": "paper",  # named group of metric settings, expanded at creation (docs/algorithms.md §1 D1)
        # The `paper` preset's metric settings (docs/algorithms.md §1 D1, §9.3):
        #   fisher_mode "state": metric averaged over K re-noised BC-flow samples per state
        #     (FiDec code; docs/algorithms.md §9.8 row 4)
        #   score_estimator "marginal": sigma = (t v - x)/(1 - t)
        #     (FiDec paper Lemma B.4; docs/algorithms.md §9.6, §9.8 row 1)
        #   fisher_t 0.8: Fisher time t_f (FiDec paper Table 6 and appendix table;
        #     docs/algorithms.md §9.8 row 2, §10.2)
        #   fisher_t_width 0.0: t_f ~ U[fisher_t - width, fisher_t]; 0 = fixed, as in the paper
        #     (docs/algorithms.md §9.3, §9.8 row 2)
        #   num_fisher_samples 4: K samples per state (FiDec code default; docs/algorithms.md §9.8 row 3)
        **PRESETS["paper"],
        # lambda_d = 1e-3, added to F before trace normalisation (FiDec code; docs/algorithms.md §1 D1, §9.3)
        "fisher_damping": fisher.DEFAULT_DAMPING,
        # where the `local` metric reads the score: a_base itself, or "scaled" = t_f * a_base
        # (docs/algorithms.md §1 D1, §9.6)
        "local_eval_point": "base",
        # Q term / mean|Q|; FiDec paper Table 6 (the code default is off) (docs/algorithms.md §1 D1, §9.8 row 9)
        "normalize_q_loss": True,
        "grad_clip": 5.0,  # global-norm gradient clip (FiDec paper Table 6 and code; docs/algorithms.md §1 D1, §3.2)
        "log_alpha_init": math.log(10.0),  # alpha_0 = 10 (FiDec paper Table 6 and code; docs/algorithms.md §9.8 row 8)
        "use_lagrange": True,  # Lagrangian tuning of alpha towards delta (FiDec paper Table 6; docs/algorithms.md §9.4)
        # delta, the trust-region budget; 0.001 = FiDec code default, per task from the FiDec appendix table
        # (docs/algorithms.md §1 D4, §10.2; envs/task_hyperparameters.csv, alternatives via divergence_table)
        "target_divergence": 0.001,
        "alpha": 10.0,  # fixed multiplier, used only when use_lagrange is False (FiDec code; docs/algorithms.md §9.2)
        "fix_bc_flow_online": False,  # zero the BC-flow loss online (FiDec paper Table 6; docs/algorithms.md §9.2)
        # where the online phase starts, for fix_bc_flow_online; set from the run's schedule (docs/algorithms.md §3.6)
        "offline_steps": 1_000_000,
        # log the MSE of one extra policy sample, as the FiDec code does; logging only (docs/algorithms.md §9.2)
        "log_sample_mse": False,
        "critic": "learned",  # "oracle" = analytic q_fn for the toy study (fidec-gym option; docs/toy_landscapes.md §4)
        "encoder": None,  # observation encoder; "impala_small" on pixel tasks (docs/algorithms.md §3.1, §9.1)
    }


class FiDecAgent(RefinedFlowAgent):
    """BC flow + residual transport map under a Fisher trust region tuned by a Lagrange multiplier."""

    name = "fidec"
    get_config = staticmethod(get_config)

    @classmethod
    def make_config(
        cls, config: Optional[Mapping[str, Any]] = None, example_batch: Optional[Batch] = None
    ) -> FrozenConfig:
        """Resolve ``preset`` into explicit values (so the stored config says what ran); explicit keys win."""
        return super().make_config(cls.expand_named_settings(config, "preset", PRESETS), example_batch)

    @classmethod
    def validate_config(cls, config: FrozenConfig) -> None:
        super().validate_config(config)
        if config["fisher_mode"] not in fisher.FISHER_MODES:
            raise ConfigError(
                f"fidec: unknown fisher_mode {config['fisher_mode']!r}; valid: {list(fisher.FISHER_MODES)}"
            )
        fisher.get_score_estimator(config["score_estimator"])
        if config["local_eval_point"] not in LOCAL_EVAL_POINTS:
            raise ConfigError(
                f"fidec: unknown local_eval_point {config['local_eval_point']!r}; valid: {list(LOCAL_EVAL_POINTS)}"
            )
        if not 0.0 < config["fisher_t"] < 1.0:
            raise ConfigError(f"fidec: fisher_t must lie in (0, 1), got {config['fisher_t']}")
        if config["fisher_t_width"] < 0:
            raise ConfigError(f"fidec: fisher_t_width must be >= 0, got {config['fisher_t_width']}")
        if int(config["num_fisher_samples"]) < 1:
            raise ConfigError(f"fidec: num_fisher_samples must be >= 1, got {config['num_fisher_samples']}")
        if config["fisher_damping"] < 0:
            raise ConfigError(f"fidec: fisher_damping must be >= 0, got {config['fisher_damping']}")

    # ---- the algorithm ---------------------------------------------------------------------------------------

    def actor_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        """Steps 2-8: BC flow, residual, metric, divergence, dual variable and Q term."""
        observations = batch["observations"]
        bc_rng, base_rng, fisher_rng, mse_rng = jax.random.split(rng, 4)

        # 2. BC flow, trained jointly (frozen online only with fix_bc_flow_online).
        bc_flow_loss = self.bc_flow_loss(batch, grad_params, bc_rng)
        bc_flow_loss = bc_flow_loss * bc_flow_weight(self.config, self.network.step)

        # 3. Base action and residual. The roll-out is stop-gradiented: the behaviour policy is the anchor of the
        #    trust region and must receive no gradient from the penalty or the Q term.
        features = self.bc_features(observations)  # encoded once, for the roll-outs and the metric
        base_actions = jax.lax.stop_gradient(self.behaviour_actions(features, base_rng))
        residual = self.network.select("actor_refinement")(observations, base_actions, params=grad_params)

        # 4-5. Metric and divergence D = mean_b Delta^T M Delta / d (M is a constant; see fisher.py).
        scores = self.fisher_scores(features, base_actions, fisher_rng)
        divergence, metric_info = fisher.divergence(residual, scores, self.config["fisher_damping"])

        # 6. Dual variable: stop_grad(alpha) * D trains the residual, L_alpha trains log alpha only.
        penalty, alpha_loss, alpha = trust_region_terms(self.config, divergence, grad_params)

        # 7. Q term: gradient reaches the residual through the action only (critic frozen inside policy_q).
        q = self.policy_q(observations, jnp.clip(base_actions + residual, -1.0, 1.0))
        q_loss, q_scale = normalized_q_loss(q, self.config["normalize_q_loss"])

        # 8. Actor total.
        loss = bc_flow_loss + penalty + q_loss + alpha_loss
        info = {
            "actor/loss": loss,
            "actor/bc_flow_loss": bc_flow_loss,
            "actor/divergence": divergence,
            "actor/penalty": penalty,
            "actor/alpha": alpha,
            "actor/alpha_loss": alpha_loss,
            "actor/q_loss": q_loss,
            "actor/q_mean": q.mean(),
            "actor/q_scale": q_scale,
            "actor/residual_norm": jnp.sqrt(jnp.sum(residual**2, axis=-1)).mean(),
            **{f"actor/{key}": value for key, value in metric_info.items()},
        }
        if self.config["log_sample_mse"]:
            # Logging only (the released code does this every step): one more full roll-out, no effect on training.
            sampled = jax.lax.stop_gradient(self.policy_actions(observations, mse_rng))
            info["actor/mse"] = jnp.mean((sampled - batch["actions"]) ** 2)
        return loss, info

    def fisher_scores(self, features: Array, base_actions: Array, rng: Array) -> Optional[Array]:
        """Score samples (B, K, d) defining M for each row, or None for the identity metric.

        The velocity is evaluated with the start-of-step BC flow and stop-gradiented: the metric is a fixed
        geometry of the behaviour policy, not something the actor loss may reshape.
        """
        mode = self.config["fisher_mode"]
        if mode == "none":
            return None
        score = fisher.get_score_estimator(self.config["score_estimator"])
        batch_size, action_dim = base_actions.shape
        time_rng, sample_rng, noise_rng = jax.random.split(rng, 3)

        if mode == "local":
            # Rank one at the base action itself (Theorem 3.1); no extra roll-outs.
            t = fisher.sample_fisher_times(
                time_rng, (batch_size, 1), self.config["fisher_t"], self.config["fisher_t_width"]
            )
            x = base_actions if self.config["local_eval_point"] == "base" else t * base_actions
            velocity = jax.lax.stop_gradient(self.bc_velocity(features)(x, t))
            return score(velocity, x, t)[:, None, :]

        # state: K fresh behaviour samples per state, re-noised to time t; row b*K + k belongs to state b.
        num_samples = int(self.config["num_fisher_samples"])
        repeated = jnp.repeat(features, num_samples, axis=0)
        # Fresh BC-flow samples (not a_base), stop-gradiented like every roll-out.
        samples = jax.lax.stop_gradient(self.behaviour_actions(repeated, sample_rng))
        t = fisher.sample_fisher_times(
            time_rng, (batch_size * num_samples, 1), self.config["fisher_t"], self.config["fisher_t_width"]
        )
        x = (1.0 - t) * jax.random.normal(noise_rng, samples.shape) + t * samples
        velocity = jax.lax.stop_gradient(self.bc_velocity(repeated)(x, t))
        return score(velocity, x, t).reshape(batch_size, num_samples, action_dim)


def get_official_config() -> dict:
    """Defaults of ``fidec-official``: FiDec's, with the ``official`` preset (the released code's estimator)."""
    return {**get_config(), "agent_name": "fidec-official", "preset": "official", **PRESETS["official"]}


class FiDecOfficialAgent(FiDecAgent):
    """FiDec registered a second time with the ``official`` preset as default (fidec_gym/names.py says why)."""

    name = "fidec-official"
    get_config = staticmethod(get_official_config)
