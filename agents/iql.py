"""Implicit Q-learning with an advantage-weighted (AWR) actor (docs/algorithms.md §5).

Per step, summed and optimised by one Adam step:

1. value:  expectile regression of V(s) towards min_i Q_target,i(s, a) (expectile 0.9);
2. critic: both heads regress onto y = r + gamma * m * V(s'), with the current (not a target) value network;
3. actor:  -mean[min(exp(alpha * A), 100) * log pi(a|s)], A = min_i Q_i(s, a) - V(s) with the online critic.

The target critic is Polyak-averaged after every step.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Agent, Array, Batch, Info, as_key
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.networks import GaussianActor, Value


def expectile_loss(diff: Array, expectile: float) -> Array:
    """Asymmetric squared loss: weight ``expectile`` where diff >= 0 and 1 - expectile elsewhere."""
    weight = jnp.where(diff >= 0, expectile, 1.0 - expectile)
    return weight * jnp.square(diff)


def get_config() -> dict:
    """Defaults of the IQL agent (per-task ``alpha`` and ``discount`` come from the task catalogue)."""
    return {
        "agent_name": "iql",  # registry name, stored with the config (FQL code convention)
        "lr": 3e-4,  # Adam learning rate (FQL code; docs/algorithms.md §5, §10.1)
        "batch_size": 256,  # transitions per update (FQL code; docs/algorithms.md §5, §10.1)
        "actor_hidden_dims": (512, 512, 512, 512),  # Gaussian actor MLP (FQL code; docs/algorithms.md §5)
        "value_hidden_dims": (512, 512, 512, 512),  # value net and 2-head critic MLPs (FQL code; docs/algorithms.md §5)
        "layer_norm": True,  # LayerNorm in value and critic (FQL code; docs/algorithms.md §5, §10.1)
        "actor_layer_norm": False,  # no LayerNorm in the actor (FQL code; docs/algorithms.md §5, §10.1)
        "discount": 0.99,  # gamma; 0.995 on long horizons (docs/algorithms.md §10.3, envs/task_hyperparameters.csv)
        "tau": 0.005,  # Polyak rate of the target critic (FQL code; docs/algorithms.md §5, §10.1)
        "expectile": 0.9,  # expectile of the value regression (FQL code; docs/algorithms.md §5)
        # AWR inverse temperature; per task from the FiDec appendix table (docs/algorithms.md §10.2,
        # envs/task_hyperparameters.csv); 10 = FQL code default (docs/algorithms.md §5)
        "alpha": 10.0,
        "encoder": None,  # observation encoder; "impala_small" on pixel tasks (docs/algorithms.md §3.1, §5)
    }


class IQLAgent(Agent):
    """Implicit Q-learning (Kostrikov et al.) as in the FQL reference code."""

    name = "iql"
    target_modules = (("target_critic", "critic"),)
    required_batch_keys = ("observations", "actions", "rewards", "masks", "next_observations")
    get_config = staticmethod(get_config)

    def value_loss(self, batch: Batch, grad_params: Any) -> tuple[Array, Info]:
        # The regression target comes from the target critic's parameters and is a constant for this loss.
        target_qs = self.network.select("target_critic")(batch["observations"], batch["actions"])
        target_q = jax.lax.stop_gradient(jnp.min(target_qs, axis=0))
        value = self.network.select("value")(batch["observations"], params=grad_params)
        loss = jnp.mean(expectile_loss(target_q - value, self.config["expectile"]))
        return loss, {
            "value/loss": loss,
            "value/v_mean": value.mean(),
            "value/v_max": value.max(),
            "value/v_min": value.min(),
        }

    def critic_loss(self, batch: Batch, grad_params: Any) -> tuple[Array, Info]:
        # V(s') from the current value network (start-of-step parameters): a bootstrap target, not trained here.
        next_value = jax.lax.stop_gradient(self.network.select("value")(batch["next_observations"]))
        target_q = batch["rewards"] + self.config["discount"] * batch["masks"] * next_value
        qs = self.network.select("critic")(batch["observations"], batch["actions"], params=grad_params)
        # Squared errors summed over the heads, averaged over the batch (reference reduction).
        loss = jnp.mean(jnp.sum(jnp.square(qs - target_q), axis=0))
        return loss, {
            "critic/loss": loss,
            "critic/q_mean": qs.mean(),
            "critic/q_max": qs.max(),
            "critic/q_min": qs.min(),
        }

    def actor_loss(self, batch: Batch, grad_params: Any) -> tuple[Array, Info]:
        # Advantages use the online critic and value as they were at the start of the step; the AWR weights are
        # constants so that only the policy's log-likelihood is differentiated.
        value = self.network.select("value")(batch["observations"])
        q = jnp.min(self.network.select("critic")(batch["observations"], batch["actions"]), axis=0)
        advantage = jax.lax.stop_gradient(q - value)
        weights = jax.lax.stop_gradient(jnp.minimum(jnp.exp(self.config["alpha"] * advantage), 100.0))

        dist = self.network.select("actor")(batch["observations"], params=grad_params)
        log_prob = dist.log_prob(batch["actions"])
        loss = -jnp.mean(weights * log_prob)
        mse = jnp.mean(jnp.sum(jnp.square(dist.mode() - batch["actions"]), axis=-1))
        return loss, {
            "actor/loss": loss,
            "actor/advantage": advantage.mean(),
            "actor/weight_mean": weights.mean(),
            "actor/weight_max": weights.max(),
            "actor/bc_log_prob": log_prob.mean(),
            "actor/mse": mse,
        }

    def total_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        del rng  # every IQL loss is deterministic
        value_loss, value_info = self.value_loss(batch, grad_params)
        critic_loss, critic_info = self.critic_loss(batch, grad_params)
        actor_loss, actor_info = self.actor_loss(batch, grad_params)
        loss = value_loss + critic_loss + actor_loss
        return loss, {"total/loss": loss, **value_info, **critic_info, **actor_info}

    @jax.jit
    def sample_actions(self, observations: Array, seed: Array | int, temperature: float = 1.0) -> Array:
        seed = as_key(seed)  # an int seed is accepted wherever a key is
        dist = self.network.select("actor")(observations, temperature=temperature)
        return jnp.clip(dist.sample(seed), -1.0, 1.0)

    @classmethod
    def create(cls, seed: int, example_batch: Batch, config: Optional[Mapping[str, Any]] = None) -> IQLAgent:
        config = cls.make_config(config, example_batch)
        observations, actions = example_batch["observations"], example_batch["actions"]
        value = Value(
            config["value_hidden_dims"],
            layer_norm=config["layer_norm"],
            num_ensembles=1,
            encoder=make_encoder(config["encoder"]),
        )
        critic = Value(
            config["value_hidden_dims"],
            layer_norm=config["layer_norm"],
            num_ensembles=2,
            encoder=make_encoder(config["encoder"]),
        )
        actor = GaussianActor(
            hidden_dims=config["actor_hidden_dims"],
            action_dim=config["action_dim"],
            layer_norm=config["actor_layer_norm"],
            tanh_squash=False,
            const_std=True,
            encoder=make_encoder(config["encoder"]),
        )
        networks = {
            "value": (value, (observations,)),
            "critic": (critic, (observations, actions)),
            "target_critic": (copy.deepcopy(critic), (observations, actions)),
            "actor": (actor, (observations,)),
        }
        return cls.build(seed, config, networks, targets=cls.target_modules)
