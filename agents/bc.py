"""Gaussian behaviour cloning (docs/algorithms.md §4, D3).

A Gaussian policy with fixed unit standard deviation trained by maximum likelihood on dataset actions:
L = mean_batch[-log N(a; mu(s), I)], i.e. 0.5 ||a - mu(s)||^2 up to a constant. No critic, no targets.
Evaluation (temperature 0) takes the clipped mean; temperature 1 samples with sigma = 1.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Agent, Array, Batch, Info, as_key
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.networks import GaussianActor


def get_config() -> dict:
    """Defaults of the BC agent (docs/algorithms.md D3: Gaussian BC with sigma = 1; no per-task settings)."""
    return {
        "agent_name": "bc",  # registry name, stored with the config (FQL code convention)
        "lr": 3e-4,  # Adam learning rate (as every agent; docs/algorithms.md §4, §10.1)
        "batch_size": 256,  # transitions per update (docs/algorithms.md §4, §10.1)
        "actor_hidden_dims": (512, 512, 512, 512),  # Gaussian actor MLP (docs/algorithms.md §1 D3, §4)
        "actor_layer_norm": False,  # no LayerNorm in the actor (docs/algorithms.md §4, §10.1)
        "encoder": None,  # observation encoder; "impala_small" would serve pixel tasks (docs/algorithms.md §3.1, §4)
    }


class BCAgent(Agent):
    """Behaviour cloning with a unit-variance Gaussian policy."""

    name = "bc"
    get_config = staticmethod(get_config)

    def actor_loss(self, batch: Batch, grad_params: Any) -> tuple[Array, Info]:
        dist = self.network.select("actor")(batch["observations"], params=grad_params)
        log_prob = dist.log_prob(batch["actions"])
        loss = -jnp.mean(log_prob)
        mse = jnp.mean(jnp.sum(jnp.square(dist.mode() - batch["actions"]), axis=-1))
        return loss, {"actor/loss": loss, "actor/bc_log_prob": jnp.mean(log_prob), "actor/mse": mse}

    def total_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        del rng  # the loss is deterministic
        return self.actor_loss(batch, grad_params)

    @jax.jit
    def sample_actions(self, observations: Array, seed: Array | int, temperature: float = 1.0) -> Array:
        seed = as_key(seed)  # an int seed is accepted wherever a key is
        dist = self.network.select("actor")(observations, temperature=temperature)
        return jnp.clip(dist.sample(seed), -1.0, 1.0)

    @classmethod
    def create(cls, seed: int, example_batch: Batch, config: Optional[Mapping[str, Any]] = None) -> BCAgent:
        config = cls.make_config(config, example_batch)
        actor = GaussianActor(
            hidden_dims=config["actor_hidden_dims"],
            action_dim=config["action_dim"],
            layer_norm=config["actor_layer_norm"],
            tanh_squash=False,
            const_std=True,
            encoder=make_encoder(config["encoder"]),
        )
        networks = {"actor": (actor, (example_batch["observations"],))}
        return cls.build(seed, config, networks)
