"""DeFlow: a residual refinement of the BC flow under a Lagrangian trust region (docs/algorithms.md §8, D2).

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

import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Array, Batch, FrozenConfig, Info
from fidec_gym.agents.flow import (
    DEFAULT_FLOW_STEPS,
    RefinedFlowAgent,
    bc_flow_weight,
    normalized_q_loss,
    trust_region_terms,
)

DEFLOW_VARIANTS: dict[str, dict[str, Any]] = {
    "official": {"log_alpha_init": 1.0, "grad_clip": None},
    "fidec_repo": {"log_alpha_init": math.log(10.0), "grad_clip": 5.0},
}


def get_config() -> dict:
    """Defaults of DeFlow (official variant); ``target_divergence``, discount and q_agg are set per task."""
    return {
        "agent_name": "deflow",  # registry name, stored with the config (FQL/DeFlow code convention)
        "lr": 3e-4,  # Adam learning rate (DeFlow code; docs/algorithms.md §8, §10.1)
        "batch_size": 256,  # transitions per update (DeFlow code; docs/algorithms.md §10.1)
        "actor_hidden_dims": (512, 512, 512, 512),  # BC flow and refinement MLPs (docs/algorithms.md §8, §10.1)
        "value_hidden_dims": (512, 512, 512, 512),  # critic MLP, 2 heads (docs/algorithms.md §8, §10.1)
        "layer_norm": True,  # LayerNorm in the critic (docs/algorithms.md §3.1, §10.1)
        "actor_layer_norm": False,  # no LayerNorm in BC flow / refinement net (docs/algorithms.md §10.1)
        "discount": 0.99,  # gamma; 0.995 on long horizons (docs/algorithms.md §10.3, envs/task_hyperparameters.csv)
        "tau": 0.005,  # Polyak rate of the target critic (docs/algorithms.md §3.2, §10.1)
        "q_agg": "mean",  # target-head aggregation; "min" per task (docs/algorithms.md §10.3, task_hyperparameters.csv)
        "flow_steps": DEFAULT_FLOW_STEPS,  # Euler steps of the BC-flow ODE, 10 (docs/algorithms.md §7, §10.1)
        "normalize_q_loss": True,  # Q term / mean|Q|; on in every DeFlow run command (docs/algorithms.md §1 D2, §10.5)
        "deflow_variant": "official",  # official DeFlow code or its FiDec-repo copy (docs/algorithms.md §1 D2)
        # log alpha_0 = 1 (alpha_0 = e), from the variant (official DeFlow code; docs/algorithms.md §1 D2)
        "log_alpha_init": DEFLOW_VARIANTS["official"]["log_alpha_init"],
        # global-norm gradient clip; none in the official variant (docs/algorithms.md §1 D2, §3.2)
        "grad_clip": DEFLOW_VARIANTS["official"]["grad_clip"],
        "use_lagrange": True,  # tune alpha by the Lagrangian towards delta (DeFlow code; docs/algorithms.md §1 D2, §8)
        # delta, the trust-region budget; 0.001 = DeFlow code default, per task from the FiDec appendix table
        # (docs/algorithms.md §1 D4, §10.2; envs/task_hyperparameters.csv, alternatives via divergence_table)
        "target_divergence": 0.001,
        "alpha": 10.0,  # fixed multiplier, used only when use_lagrange is False (DeFlow code; docs/algorithms.md §1 D2)
        "fix_bc_flow_online": False,  # zero the BC-flow loss online (DeFlow code default; docs/algorithms.md §3.4, §8)
        # where the online phase starts, for fix_bc_flow_online; set from the run's schedule (docs/algorithms.md §3.6)
        "offline_steps": 1_000_000,
        "critic": "learned",  # "oracle" = analytic q_fn for the toy study (fidec-gym option; docs/toy_landscapes.md §4)
        "encoder": None,  # observation encoder; "impala_small" on pixel tasks (docs/algorithms.md §3.1, §10.3)
    }


class DeFlowAgent(RefinedFlowAgent):
    """BC flow + residual refinement net, with an isotropic trust region tuned by a Lagrange multiplier."""

    name = "deflow"
    get_config = staticmethod(get_config)

    @classmethod
    def make_config(
        cls, config: Optional[Mapping[str, Any]] = None, example_batch: Optional[Batch] = None
    ) -> FrozenConfig:
        """Resolve ``deflow_variant`` into explicit values, then let explicit keys override them."""
        return super().make_config(cls.expand_named_settings(config, "deflow_variant", DEFLOW_VARIANTS), example_batch)

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
