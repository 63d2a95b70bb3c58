"""Flow Q-learning (FQL; spec §7).

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


class FQLAgent(FlowAgent):
    """FQL with a one-step policy distilled from the BC flow."""

    name = "fql"

    @classmethod
    def get_config(cls) -> dict:
        return get_config()

    @classmethod
    def policy_networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        onestep = ActorVectorField(config["actor_hidden_dims"], config["action_dim"],
                                   layer_norm=config["actor_layer_norm"], encoder=make_encoder(config["encoder"]))
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


def get_config() -> dict:
    """Defaults of FQL; ``alpha`` (and discount, q_agg) are set per task by the catalogue."""
    return {
        "agent_name": "fql",
        "lr": 3e-4,
        "batch_size": 256,
        "actor_hidden_dims": (512, 512, 512, 512),
        "value_hidden_dims": (512, 512, 512, 512),
        "layer_norm": True,
        "actor_layer_norm": False,
        "discount": 0.99,
        "tau": 0.005,
        "q_agg": "mean",
        "alpha": 10.0,
        "flow_steps": DEFAULT_FLOW_STEPS,
        "normalize_q_loss": False,
        "grad_clip": None,
        "critic": "learned",
        "encoder": None,
    }
