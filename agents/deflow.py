"""DeFlow: a residual refinement of the BC flow under a Lagrangian trust region (spec §8, decision D2).

Policy: a_base = ODE(s, z) (10 Euler steps of the BC flow, clipped), a = clip(a_base + f(s, a_base)).

* Critic: as FQL, with a' drawn from the full refined policy at s'.
* BC flow: flow matching on dataset actions (zeroed online only with ``fix_bc_flow_online``).
* Divergence: D = mean over (batch x dims) of Delta^2 with Delta = f(s, a_base).
* Lagrangian: alpha = exp(log alpha); penalty stop_grad(alpha) * D; L_alpha = -log alpha * (stop_grad(D) - delta),
  so Adam raises alpha while D > delta and lowers it while D < delta. Fixed mode (``use_lagrange=False``):
  alpha_config * D (alpha once, not squared).
* Q term: -mean_i,b Q_i(s, clip(a_base + Delta)), scaled by 1/mean|Q| (on by default, as in every official run).

Variants (config ``deflow_variant``): ``official`` (log alpha_0 = 1, no clipping) and ``fidec_repo`` (the copy in
the FiDec code: log alpha_0 = ln 10, global-norm clipping at 5). Per-key overrides win over the variant.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Array, Batch, FrozenConfig, Info
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.flow import DEFAULT_FLOW_STEPS, FlowAgent, LogMultiplier, normalized_q_loss
from fidec_gym.agents.networks import ActorVectorField

DEFLOW_VARIANTS: dict[str, dict[str, Any]] = {
    "official": {"log_alpha_init": 1.0, "grad_clip": None},
    "fidec_repo": {"log_alpha_init": math.log(10.0), "grad_clip": 5.0},
}


class DeFlowAgent(FlowAgent):
    """BC flow + residual refinement net, with an isotropic trust region tuned by a Lagrange multiplier."""

    name = "deflow"

    @classmethod
    def get_config(cls) -> dict:
        return get_config()

    @classmethod
    def make_config(cls, config: Optional[Mapping[str, Any]] = None, example_batch: Optional[Batch] = None) -> FrozenConfig:
        """Resolve ``deflow_variant`` into explicit values, then let explicit keys override them."""
        return super().make_config(cls.expand_named_settings(config, "deflow_variant", DEFLOW_VARIANTS), example_batch)

    @classmethod
    def policy_networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        return refinement_networks(config, example_batch)

    def policy_actions(self, observations: Array, rng: Array) -> Array:
        base_actions = self.behaviour_actions(self.bc_features(observations), rng)
        residual = self.network.select("actor_refinement")(observations, base_actions)
        return jnp.clip(base_actions + residual, -1.0, 1.0)

    def actor_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        observations = batch["observations"]
        bc_rng, base_rng = jax.random.split(rng)

        # 1. Behaviour flow (optionally frozen after the offline phase).
        bc_flow_loss = self.bc_flow_loss(batch, grad_params, bc_rng)
        bc_flow_loss = bc_flow_loss * bc_flow_weight(self.config, self.network.step)

        # 2. Base action from the behaviour flow: a constant, so neither the penalty nor the Q term can move the
        #    BC flow through it.
        base_actions = jax.lax.stop_gradient(self.behaviour_actions(self.bc_features(observations), base_rng))
        residual = self.network.select("actor_refinement")(observations, base_actions, params=grad_params)

        # 3. Isotropic divergence.
        divergence = jnp.mean(residual**2)

        # 4. Trust region: Lagrangian multiplier or a fixed weight.
        penalty, alpha_loss, alpha = trust_region_terms(self.config, divergence, grad_params)

        # 5. Q term through the refined action (critic parameters frozen inside policy_q).
        q = self.policy_q(observations, jnp.clip(base_actions + residual, -1.0, 1.0))
        q_loss, q_scale = normalized_q_loss(q, self.config["normalize_q_loss"])

        loss = bc_flow_loss + penalty + q_loss + alpha_loss
        return loss, {
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
        }


# ---- pieces shared with FiDec ----------------------------------------------------------------------------------


def refinement_networks(config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
    """The residual net f(s, a_base) (no time input, unbounded output) and the scalar log alpha."""
    refinement = ActorVectorField(config["actor_hidden_dims"], config["action_dim"],
                                  layer_norm=config["actor_layer_norm"], encoder=make_encoder(config["encoder"]))
    return {
        "actor_refinement": (refinement, (example_batch["observations"], example_batch["actions"])),
        "log_alpha": (LogMultiplier(float(config["log_alpha_init"])), ()),
    }


def trust_region_terms(config: FrozenConfig, divergence: Array, grad_params: Any) -> tuple[Array, Array, Array]:
    """(penalty, L_alpha, alpha) for the divergence D.

    Lagrangian mode: alpha = exp(log alpha), penalty = stop_grad(alpha) * D, L_alpha = -log alpha * (stop_grad(D)
    - delta). Fixed mode: penalty = alpha_config * D and L_alpha = 0.
    """
    if not config["use_lagrange"]:
        alpha = jnp.asarray(config["alpha"], dtype=jnp.float32)
        return alpha * divergence, jnp.zeros((), dtype=jnp.float32), alpha
    log_alpha = grad_params["modules_log_alpha"]["log_value"][0]
    alpha = jnp.exp(log_alpha)
    # alpha is a constant of the penalty: the refinement net sees a fixed weight, it cannot lower alpha itself.
    penalty = jax.lax.stop_gradient(alpha) * divergence
    # D is a constant of the dual loss: the multiplier reacts to the constraint, it does not shape the residual.
    alpha_loss = -log_alpha * (jax.lax.stop_gradient(divergence) - config["target_divergence"])
    return penalty, alpha_loss, alpha


def bc_flow_weight(config: FrozenConfig, step: Array) -> Array:
    """1, or 0 during the online phase (step > offline_steps) when ``fix_bc_flow_online`` is set."""
    if not config["fix_bc_flow_online"]:
        return jnp.ones((), dtype=jnp.float32)
    return jnp.where(step > config["offline_steps"], 0.0, 1.0)


def get_config() -> dict:
    """Defaults of DeFlow (official variant); ``target_divergence``, discount and q_agg are set per task."""
    return {
        "agent_name": "deflow",
        "lr": 3e-4,
        "batch_size": 256,
        "actor_hidden_dims": (512, 512, 512, 512),
        "value_hidden_dims": (512, 512, 512, 512),
        "layer_norm": True,
        "actor_layer_norm": False,
        "discount": 0.99,
        "tau": 0.005,
        "q_agg": "mean",
        "flow_steps": DEFAULT_FLOW_STEPS,
        "normalize_q_loss": True,
        "deflow_variant": "official",
        "log_alpha_init": DEFLOW_VARIANTS["official"]["log_alpha_init"],
        "grad_clip": DEFLOW_VARIANTS["official"]["grad_clip"],
        "use_lagrange": True,
        "target_divergence": 0.001,
        "alpha": 10.0,  # the fixed multiplier, used only when use_lagrange is False
        "fix_bc_flow_online": False,
        "offline_steps": 1_000_000,  # where the online phase starts, for fix_bc_flow_online
        "critic": "learned",
        "encoder": None,
    }
