"""Flow Q-learning (FQL; docs/algorithms.md §7).

A BC flow v(s, x, t) models the behaviour policy; a one-step policy mu(s, z) is distilled from its 10-step Euler
roll-out and pushed up the critic, so acting costs one network call:

* Critic: a' = clip(mu(s', z')), y = r + gamma * m * agg_i Q_target,i(s', a'), L_Q = mean over (heads x batch).
* BC flow: flow matching on dataset actions.
* Distillation: L_D = mean (mu(s, z) - ODE(s, z))^2 with the same z; the prediction is not clipped, the target is.
* Q term: L_Qpi = -mean_i,b Q_i(s, clip(mu(s, z))) (mean over heads regardless of q_agg), optionally scaled by
  1/mean|Q|.
* Total: L_Q + L_BC + alpha * L_D + L_Qpi; one Adam step, no gradient clipping; Polyak 0.005 on the critic.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Array, Batch, FrozenConfig, Info
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.flow import DEFAULT_FLOW_STEPS, FlowAgent, euler_sample, normalized_q_loss
from fidec_gym.agents.networks import ActorVectorField


def get_config() -> dict:
    """Defaults of FQL; ``alpha`` (and discount, q_agg) are set per task by the catalogue."""
    return {
        "agent_name": "fql",  # registry name, stored with the config (FQL code convention)
        "lr": 3e-4,  # Adam learning rate (FQL code; docs/algorithms.md §3.2, §10.1)
        "batch_size": 256,  # transitions per update (FQL code; docs/algorithms.md §10.1)
        # BC flow and one-step policy MLPs (FQL code; docs/algorithms.md §7, §10.1)
        "actor_hidden_dims": (512, 512, 512, 512),
        "value_hidden_dims": (512, 512, 512, 512),  # critic MLP, 2 heads (FQL code; docs/algorithms.md §7, §10.1)
        "layer_norm": True,  # LayerNorm in the critic (FQL code; docs/algorithms.md §7, §10.1)
        "actor_layer_norm": False,  # no LayerNorm in BC flow / one-step policy (FQL code; docs/algorithms.md §7)
        "discount": 0.99,  # gamma; 0.995 on long horizons (docs/algorithms.md §10.3, envs/task_hyperparameters.csv)
        "tau": 0.005,  # Polyak rate of the target critic (FQL code; docs/algorithms.md §7, §10.1)
        "q_agg": "mean",  # target-head aggregation; "min" per task (docs/algorithms.md §10.3, task_hyperparameters.csv)
        # distillation weight; 10 = FQL code default (docs/algorithms.md §7), set per task via
        # envs/task_hyperparameters.csv from the FiDec appendix table (offline, docs/algorithms.md §10.2) and the
        # FQL README (offline-to-online, docs/algorithms.md §10.4)
        "alpha": 10.0,
        "flow_steps": DEFAULT_FLOW_STEPS,  # Euler steps of the BC-flow ODE, 10 (FQL code; docs/algorithms.md §7)
        "normalize_q_loss": False,  # Q term / mean|Q|; off in all FQL paper runs (docs/algorithms.md §7, §10.5)
        "grad_clip": None,  # no gradient clipping, as the FQL code (docs/algorithms.md §3.2, §7)
        "critic": "learned",  # "oracle" = analytic q_fn for the toy study (fidec-gym option; docs/toy_landscapes.md §4)
        "encoder": None,  # observation encoder; "impala_small" on pixel tasks (docs/algorithms.md §3.1, §7)
    }


class FQLAgent(FlowAgent):
    """FQL with a one-step policy distilled from the BC flow."""

    name = "fql"
    get_config = staticmethod(get_config)

    @classmethod
    def policy_networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        onestep = ActorVectorField(
            config["actor_hidden_dims"],
            config["action_dim"],
            layer_norm=config["actor_layer_norm"],
            encoder=make_encoder(config["encoder"]),
        )
        return {"actor_onestep_flow": (onestep, (example_batch["observations"], example_batch["actions"]))}

    def policy_actions(self, observations: Array, rng: Array) -> Array:
        noise = jax.random.normal(rng, (observations.shape[0], self.config["action_dim"]))
        return jnp.clip(self.network.select("actor_onestep_flow")(observations, noise), -1.0, 1.0)

    def actor_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        observations = batch["observations"]
        bc_rng, noise_rng = jax.random.split(rng)

        # 1. Behaviour flow.
        bc_flow_loss = self.bc_flow_loss(batch, grad_params, bc_rng)

        # 2. Distillation onto the flow's own roll-out from the same noise. The target is stop-gradiented so that
        #    distillation trains the one-step policy only, never the BC flow.
        noise = jax.random.normal(noise_rng, (observations.shape[0], self.config["action_dim"]))
        target_actions = jax.lax.stop_gradient(
            euler_sample(self.bc_velocity(self.bc_features(observations)), noise, self.config["flow_steps"])
        )
        onestep_actions = self.network.select("actor_onestep_flow")(observations, noise, params=grad_params)
        distill_loss = jnp.mean((onestep_actions - target_actions) ** 2)

        # 3. Q term through the clipped one-step action (critic parameters frozen inside policy_q).
        q = self.policy_q(observations, jnp.clip(onestep_actions, -1.0, 1.0))
        q_loss, q_scale = normalized_q_loss(q, self.config["normalize_q_loss"])

        loss = bc_flow_loss + self.config["alpha"] * distill_loss + q_loss
        return loss, {
            "actor/loss": loss,
            "actor/bc_flow_loss": bc_flow_loss,
            "actor/distill_loss": distill_loss,
            "actor/q_loss": q_loss,
            "actor/q_mean": q.mean(),
            "actor/q_scale": q_scale,
            "actor/mse": jnp.mean((jnp.clip(onestep_actions, -1, 1) - batch["actions"]) ** 2),
        }
