"""ReBRAC: TD3+BC with behaviour-regularised actor and critic (docs/algorithms.md §6, D5).

* Critic (every step): a' = clip(mu_target(s') + clip(eps, +-0.5)), eps ~ N(0, 0.2^2 I);
  q' = min_i Q_target,i(s', a') - alpha_critic * ||a' - a'_D||^2; L_Q = mean over (heads x batch) of (Q_i - y)^2.
* Actor (only when ``step % actor_freq == 0``): a_pi = tanh(mean(s)); q = min_i Q_i(s, a_pi) with frozen critic
  parameters; L_pi = -mean(lambda q) + alpha_actor * mean ||a_pi - a||^2 with lambda = 1 / mean|q| (constant).
* On other steps the actor loss is exactly zero, yet the shared Adam's momentum still moves the
  actor (docs/algorithms.md D5).
  ``rebrac_separate_optimizers=True`` (off by default, a deviation) gives the actor its own Adam that steps only on
  actor steps.
  Target actor and target critic are Polyak-averaged only on actor steps.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from fidec_gym.agents.base import Agent, Array, Batch, FrozenConfig, Info, TrainState, as_key
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.networks import GaussianActor, Value


def get_config() -> dict:
    """Defaults of ReBRAC; ``alpha_actor``/``alpha_critic`` must be set per task (task catalogue)."""
    return {
        "agent_name": "rebrac",  # registry name, stored with the config (FQL code convention)
        "lr": 3e-4,  # Adam learning rate (FQL code; docs/algorithms.md §6, §10.1)
        "batch_size": 256,  # transitions per update (FQL code; docs/algorithms.md §10.1)
        "actor_hidden_dims": (512, 512, 512, 512),  # actor MLP (FQL code; docs/algorithms.md §6, §10.1)
        "value_hidden_dims": (512, 512, 512, 512),  # critic MLP, 2 heads (FQL code; docs/algorithms.md §6, §10.1)
        "layer_norm": True,  # LayerNorm in the critic (FQL code; docs/algorithms.md §6, §10.1)
        "actor_layer_norm": False,  # no LayerNorm in the actor (FQL code; docs/algorithms.md §6, §10.1)
        "discount": 0.99,  # gamma; 0.995 on long horizons (docs/algorithms.md §10.3, envs/task_hyperparameters.csv)
        "tau": 0.005,  # Polyak rate of both targets, on actor steps only (FQL code; docs/algorithms.md §6)
        "tanh_squash": True,  # deterministic policy tanh(mean(s)) (FQL code; docs/algorithms.md §6)
        "actor_freq": 2,  # actor and target updates every 2nd step (FQL code; docs/algorithms.md §6, §10.1)
        # actor BC weight alpha_actor; FQL code default 0, per task from the FiDec appendix table
        # (docs/algorithms.md §6, §10.2; envs/task_hyperparameters.csv)
        "alpha_actor": 0.0,
        # critic penalty on the next action, alpha_critic; FQL code default 0, per task as alpha_actor
        # (docs/algorithms.md §6, §10.2; envs/task_hyperparameters.csv)
        "alpha_critic": 0.0,
        # std of the target-smoothing noise and, times temperature, of acting noise (FQL code; docs/algorithms.md §6)
        "actor_noise": 0.2,
        "actor_noise_clip": 0.5,  # clip of that noise (FQL code; docs/algorithms.md §6)
        # one shared Adam, the reference behaviour; True = the untested own-Adam deviation (docs/algorithms.md §1 D5)
        "rebrac_separate_optimizers": False,
        "encoder": None,  # observation encoder; "impala_small" on pixel tasks (docs/algorithms.md §3.1)
    }


class ReBRACAgent(Agent):
    """Revisited behaviour-regularised actor-critic (Tarasov et al.) as in the FQL reference code."""

    name = "rebrac"
    target_modules = (("target_critic", "critic"), ("target_actor", "actor"))
    required_batch_keys = ("observations", "actions", "rewards", "masks", "next_observations", "next_actions")
    get_config = staticmethod(get_config)

    def is_actor_step(self, step: Array) -> Array:
        """Whether training-state step ``step`` (counting from 1) updates the actor and the targets."""
        return step % self.config["actor_freq"] == 0

    def critic_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        # Target policy smoothing: clipped Gaussian noise around the target actor's deterministic action.
        next_mode = self.network.select("target_actor")(batch["next_observations"]).mode()
        noise = jnp.clip(
            jax.random.normal(rng, next_mode.shape) * self.config["actor_noise"],
            -self.config["actor_noise_clip"],
            self.config["actor_noise_clip"],
        )
        next_actions = jnp.clip(next_mode + noise, -1.0, 1.0)
        next_q = jnp.min(self.network.select("target_critic")(batch["next_observations"], next_actions), axis=0)
        # Critic-side behaviour penalty against the dataset's next action, summed over action dimensions.
        next_q = next_q - self.config["alpha_critic"] * jnp.sum(jnp.square(next_actions - batch["next_actions"]), -1)
        # The TD target is built from target networks only; it is a constant for the critic regression.
        target_q = jax.lax.stop_gradient(batch["rewards"] + self.config["discount"] * batch["masks"] * next_q)

        qs = self.network.select("critic")(batch["observations"], batch["actions"], params=grad_params)
        loss = jnp.mean(jnp.square(qs - target_q))
        return loss, {
            "critic/loss": loss,
            "critic/q_mean": qs.mean(),
            "critic/q_max": qs.max(),
            "critic/q_min": qs.min(),
        }

    def actor_loss(self, batch: Batch, grad_params: Any) -> tuple[Array, Info]:
        dist = self.network.select("actor")(batch["observations"], params=grad_params)
        actions = dist.mode()
        # The critic runs with the start-of-step parameters (not ``grad_params``): gradient reaches the actor
        # through the actions only and never moves the critic.
        q = jnp.min(self.network.select("critic")(batch["observations"], actions), axis=0)
        # Scale-free Q term: the normaliser is a constant, as in TD3+BC.
        lam = jax.lax.stop_gradient(1.0 / jnp.mean(jnp.abs(q)))
        q_loss = -jnp.mean(lam * q)
        bc_loss = jnp.mean(jnp.sum(jnp.square(actions - batch["actions"]), axis=-1))
        loss = q_loss + self.config["alpha_actor"] * bc_loss
        return loss, {
            "actor/loss": loss,
            "actor/q_loss": q_loss,
            "actor/bc_loss": bc_loss,
            "actor/q_mean": q.mean(),
            "actor/lambda": lam,
        }

    def total_loss(
        self, batch: Batch, grad_params: Any, rng: Array, actor_step: Array | None = None
    ) -> tuple[Array, Info]:
        """Critic loss, plus the actor loss on actor steps (``actor_step``; default: every ``actor_freq``-th)."""
        critic_loss, critic_info = self.critic_loss(batch, grad_params, rng)

        def skipped_actor_loss() -> tuple[Array, Info]:
            shapes = jax.eval_shape(lambda: self.actor_loss(batch, grad_params))
            return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        if actor_step is None:
            actor_step = self.is_actor_step(self.network.step)
        actor_loss, actor_info = jax.lax.cond(
            actor_step, lambda: self.actor_loss(batch, grad_params), skipped_actor_loss
        )
        loss = critic_loss + actor_loss
        return loss, {"total/loss": loss, **critic_info, **actor_info}

    @jax.jit
    def validation_info(self, batch: Batch) -> Info:
        """Held-out losses, the actor's always included: validation runs at log steps (multiples of 1,000, say),
        where the step parity would otherwise make every one a critic-only step with an actor loss of 0."""
        self.check_batch(batch)
        rng = jax.random.fold_in(self.rng, 1)
        _, info = self.total_loss(batch, self.network.params, rng=rng, actor_step=jnp.bool_(True))
        return {f"val/{key}": value for key, value in info.items()}

    def update_targets(self, old_network: TrainState, new_network: TrainState) -> TrainState:
        # tau = 0 leaves the targets bit-for-bit unchanged on critic-only steps.
        tau = jnp.where(self.is_actor_step(old_network.step), self.config["tau"], 0.0)
        for target, source in self.target_modules:
            new_network = self.target_update(old_network, new_network, target, source, tau)
        return new_network

    @classmethod
    def optimizer(cls, config: FrozenConfig) -> optax.GradientTransformation:
        shared = super().optimizer(config)
        if not config["rebrac_separate_optimizers"]:
            return shared
        # The actor's Adam (its own state, same settings) counts its own updates and is skipped (zero update,
        # unchanged moments) on critic-only steps; its k-th call is training step k + 1 (steps count from 1).
        actor_freq = int(config["actor_freq"])
        actor_adam = optax.transforms.conditionally_mask(shared, lambda calls: (calls + 1) % actor_freq == 0)
        return optax.multi_transform(
            {"actor": actor_adam, "rest": shared},
            lambda params: {name: "actor" if name == "modules_actor" else "rest" for name in params},
        )

    @jax.jit
    def sample_actions(self, observations: Array, seed: Array | int, temperature: float = 1.0) -> Array:
        seed = as_key(seed)  # an int seed is accepted wherever a key is
        actions = self.network.select("actor")(observations).mode()
        noise = jnp.clip(
            jax.random.normal(seed, actions.shape) * self.config["actor_noise"] * temperature,
            -self.config["actor_noise_clip"],
            self.config["actor_noise_clip"],
        )
        return jnp.clip(actions + noise, -1.0, 1.0)

    @classmethod
    def create(cls, seed: int, example_batch: Batch, config: Optional[Mapping[str, Any]] = None) -> ReBRACAgent:
        config = cls.make_config(config, example_batch)
        observations, actions = example_batch["observations"], example_batch["actions"]
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
            tanh_squash=config["tanh_squash"],
            const_std=True,
            encoder=make_encoder(config["encoder"]),
        )
        networks = {
            "critic": (critic, (observations, actions)),
            "target_critic": (copy.deepcopy(critic), (observations, actions)),
            "actor": (actor, (observations,)),
            "target_actor": (copy.deepcopy(actor), (observations,)),
        }
        return cls.build(seed, config, networks, targets=cls.target_modules)
