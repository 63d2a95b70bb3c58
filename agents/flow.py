"""Flow-matching building blocks and the common skeleton (``FlowAgent``) of FQL, DeFlow and FiDec, plus the
residual-refinement policy and trust-region terms that DeFlow and FiDec share (``RefinedFlowAgent``).

The sampler and loss functions take the velocity field as a plain callable ``velocity(x, t) -> v`` with ``x`` of
shape (N, d) and ``t`` a raw time column of shape (N, 1). Observations (already encoded where an encoder exists)
are closed over by the caller, so the Euler sampler encodes each observation once and reuses the features.

Path convention (rectified flow): x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I) and x_1 the data action, so the
regression target of the velocity is x_1 - x_0 and integrating from t = 0 to t = 1 maps noise to actions.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fidec_gym.agents.base import Agent, Array, Batch, FrozenConfig, Info, as_key, nonpytree_field
from fidec_gym.agents.encoders import make_encoder
from fidec_gym.agents.networks import ActorVectorField, Value
from fidec_gym.errors import ConfigError

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]
QFunction = Callable[[jax.Array, jax.Array], jax.Array]

CRITIC_MODES = ("learned", "oracle")
Q_AGGREGATIONS = ("mean", "min")

DEFAULT_FLOW_STEPS = 10


def euler_sample(velocity: VelocityFn, noise: jax.Array, num_steps: int = DEFAULT_FLOW_STEPS) -> jax.Array:
    """Integrate the flow ODE from ``noise`` (t = 0) to t = 1 with ``num_steps`` Euler steps; output clipped to [-1, 1].

    Step i uses the time t_i = i / num_steps and x_{i+1} = x_i + v(x_i, t_i) / num_steps. The loop is a Python loop
    on purpose: ten unrolled steps compile to a straight-line program that XLA fuses well, and ``num_steps`` is a
    static configuration value.

    The result is *not* stop-gradiented here; every agent wraps its roll-outs in ``jax.lax.stop_gradient`` at the
    call site, where the reason is stated.
    """
    if noise.ndim < 2:
        raise ConfigError(f"noise must have shape (batch, action_dim), got {noise.shape}")
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    x = noise
    dt = 1.0 / num_steps
    time_column = jnp.ones((*noise.shape[:-1], 1), dtype=noise.dtype)
    for i in range(num_steps):
        x = x + velocity(x, time_column * (i * dt)) * dt
    return jnp.clip(x, -1.0, 1.0)


def flow_matching_loss(
    velocity: VelocityFn, actions: jax.Array, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Conditional flow-matching loss of the behaviour flow on dataset ``actions`` (shape (B, d)).

    x_0 ~ N(0, I), one t ~ U[0, 1] per sample, x_t = (1 - t) x_0 + t a; the loss is the mean over
    (batch x dims) of (v(x_t, t) - (a - x_0))^2.
    """
    noise_key, time_key = jax.random.split(rng)
    x0 = jax.random.normal(noise_key, actions.shape, dtype=actions.dtype)
    t = jax.random.uniform(time_key, (*actions.shape[:-1], 1), dtype=actions.dtype)
    x_t = (1.0 - t) * x0 + t * actions
    target_velocity = actions - x0
    predicted_velocity = velocity(x_t, t)
    loss = jnp.mean((predicted_velocity - target_velocity) ** 2)
    return loss, {"bc_flow_loss": loss}


def aggregate_heads(q: jax.Array, how: str) -> jax.Array:
    """Reduce an ensemble of critic outputs (E, B) to (B,) with ``how`` in {"mean", "min"}."""
    if how == "mean":
        return q.mean(axis=0)
    if how == "min":
        return q.min(axis=0)
    raise ConfigError(f"unknown q_agg {how!r}; use 'mean' or 'min'")


def normalized_q_loss(q: jax.Array, normalize: bool) -> tuple[jax.Array, jax.Array]:
    """Actor Q term -mean(q), optionally scaled by 1/max(mean|q|, 1e-6).

    The scale is stop-gradiented: it only sets the step size of the Q term relative to the other losses and must
    not itself become something the actor can optimise (shrinking |Q| would otherwise lower the loss).
    Returns (loss, scale).
    """
    if normalize:
        scale = jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
    else:
        scale = jnp.ones((), dtype=q.dtype)
    return -scale * q.mean(), scale


# --------------------------------------------------------------------------------------------------------------
# The common skeleton of FQL, DeFlow and FiDec
# --------------------------------------------------------------------------------------------------------------


class LogMultiplier(nn.Module):
    """A learnable scalar (shape (1,)) holding log alpha of a Lagrangian, initialised at ``init_value``."""

    init_value: float

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("log_value", nn.initializers.constant(self.init_value), (1,))


class FlowAgent(Agent):
    """What the three flow agents share: critic, BC flow with its Euler sampler, and the oracle-critic option.

    Modules: ``critic`` (2 heads, LayerNorm) and ``target_critic``; ``actor_bc_flow`` v(s, x, t) and, for pixel
    observations, ``actor_bc_flow_encoder`` (the *same* encoder instance, so its parameters are shared and the
    sampler encodes each observation once). Subclasses add their policy modules in :meth:`policy_networks`, define
    :meth:`policy_actions` (the full policy, used for the critic target and for acting) and :meth:`actor_loss`.

    With ``config["critic"] == "oracle"`` a jittable ``q_fn(observations, actions) -> (B,)`` given to
    :meth:`create` replaces the critic inside the actor losses and the critic is not trained. ``q_fn`` is a static
    field: it is not saved, so restore such an agent with ``create(..., q_fn=q_fn).load(path)``.
    """

    q_fn: Optional[QFunction] = nonpytree_field(default=None)

    target_modules: ClassVar = (("target_critic", "critic"),)
    required_batch_keys: ClassVar = ("observations", "actions", "rewards", "masks", "next_observations")

    # ---- configuration ---------------------------------------------------------------------------------------

    @classmethod
    def make_config(
        cls, config: Optional[Mapping[str, Any]] = None, example_batch: Optional[Batch] = None
    ) -> FrozenConfig:
        merged = super().make_config(config, example_batch)
        cls.validate_config(merged)
        return merged

    @classmethod
    def expand_named_settings(
        cls, config: Optional[Mapping[str, Any]], key: str, table: Mapping[str, Mapping[str, Any]]
    ) -> dict:
        """Expand a named group of settings (a FiDec preset, a DeFlow variant) into explicit values, so the stored
        config says what ran; keys given explicitly in ``config`` win over the group's values."""
        config = dict(config or {})
        name = config.get(key, cls.get_config()[key])
        if name not in table:
            raise ConfigError(f"{cls.name}: unknown {key} {name!r}; valid: {list(table)}")
        return {**table[name], **config}

    @classmethod
    def validate_config(cls, config: FrozenConfig) -> None:
        """Reject values the losses cannot use, naming the key and the valid choices."""
        _check_choice(cls.name, config, "critic", CRITIC_MODES)
        _check_choice(cls.name, config, "q_agg", Q_AGGREGATIONS)
        if int(config["flow_steps"]) < 1:
            raise ConfigError(f"{cls.name}: flow_steps must be >= 1, got {config['flow_steps']}")

    @property
    def uses_oracle_critic(self) -> bool:
        return self.config["critic"] == "oracle"

    # ---- networks --------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        seed: int,
        example_batch: Batch,
        config: Optional[Mapping[str, Any]] = None,
        q_fn: Optional[QFunction] = None,
    ) -> FlowAgent:
        """Build the agent from example arrays; ``q_fn`` is required exactly when ``config["critic"] == "oracle"``."""
        config = cls.make_config(config, example_batch)
        if config["critic"] == "oracle" and q_fn is None:
            raise ConfigError(
                f"{cls.name}: critic='oracle' needs the analytic Q; pass create(..., q_fn=fn) with "
                "fn(observations, actions) -> (batch,) (q_fn is never saved, so pass it again when loading)"
            )
        if config["critic"] == "learned" and q_fn is not None:
            raise ConfigError(f"{cls.name}: q_fn is only used with critic='oracle'; set that config key or drop q_fn")
        return _initialise(cls, config, seed).replace(q_fn=q_fn)

    @classmethod
    def networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        """Every module with its example arguments: critic, target critic, BC flow (+ encoder), policy modules."""
        observations, actions = example_batch["observations"], example_batch["actions"]
        times = jnp.zeros((*actions.shape[:-1], 1), dtype=jnp.float32)
        critic = Value(
            config["value_hidden_dims"],
            layer_norm=config["layer_norm"],
            num_ensembles=2,
            encoder=make_encoder(config["encoder"]),
        )
        bc_flow_encoder = make_encoder(config["encoder"])
        bc_flow = ActorVectorField(
            config["actor_hidden_dims"],
            config["action_dim"],
            layer_norm=config["actor_layer_norm"],
            encoder=bc_flow_encoder,
        )
        networks = {
            "critic": (critic, (observations, actions)),
            "target_critic": (copy.deepcopy(critic), (observations, actions)),
            "actor_bc_flow": (bc_flow, (observations, actions, times)),
        }
        if bc_flow_encoder is not None:
            # The same instance as inside ``actor_bc_flow``: callable alone, parameters shared.
            networks["actor_bc_flow_encoder"] = (bc_flow_encoder, (observations,))
        networks.update(cls.policy_networks(config, example_batch))
        return networks

    @classmethod
    def policy_networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        """The agent-specific modules ({name: (module, example args)})."""
        raise NotImplementedError

    # ---- the behaviour flow ----------------------------------------------------------------------------------

    def bc_features(self, observations: Array, params: Any = None) -> Array:
        """Observation features of the BC flow (the raw observations when there is no encoder)."""
        if self.config["encoder"] is None:
            return observations
        return self.network.select("actor_bc_flow_encoder")(observations, params=params)

    def bc_velocity(self, features: Array, params: Any = None) -> VelocityFn:
        """v(x, t) of the BC flow at pre-computed ``features``; ``params=None`` uses the start-of-step values."""
        flow = self.network.select("actor_bc_flow")
        return lambda x, t: flow(features, x, t, is_encoded=True, params=params)

    def behaviour_actions(self, features: Array, rng: Array) -> Array:
        """ODE(s, z): one BC-flow sample per row of ``features`` with z ~ N(0, I), clipped to [-1, 1]."""
        noise = jax.random.normal(rng, (features.shape[0], self.config["action_dim"]))
        return euler_sample(self.bc_velocity(features), noise, self.config["flow_steps"])

    def bc_flow_loss(self, batch: Batch, grad_params: Any, rng: Array) -> Array:
        """Flow matching of the BC flow (and its encoder) on the dataset actions."""
        features = self.bc_features(batch["observations"], params=grad_params)
        loss, _ = flow_matching_loss(self.bc_velocity(features, params=grad_params), batch["actions"], rng)
        return loss

    # ---- critic ----------------------------------------------------------------------------------------------

    def policy_actions(self, observations: Array, rng: Array) -> Array:
        """Actions of the current policy in [-1, 1] with the start-of-step parameters."""
        raise NotImplementedError

    def actor_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        """The agent's policy-side terms (BC flow, policy extraction, multiplier), summed, and their info."""
        raise NotImplementedError

    def total_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        """Critic plus actor terms: one summed loss, one Adam step (docs/algorithms.md §2)."""
        critic_rng, actor_rng = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_rng)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_rng)
        loss = critic_loss + actor_loss
        return loss, {"total/loss": loss, **critic_info, **actor_info}

    def policy_q(self, observations: Array, actions: Array) -> Array:
        """Q used by the actor losses: mean over the two heads, or the oracle ``q_fn``.

        The critic runs with the start-of-step parameters (not ``grad_params``), so the gradient reaches the
        policy through ``actions`` only and never moves the critic.
        """
        if self.uses_oracle_critic:
            assert self.q_fn is not None  # create() refuses critic="oracle" without a q_fn
            return self.q_fn(observations, actions)
        return self.network.select("critic")(observations, actions).mean(axis=0)

    def critic_loss(self, batch: Batch, grad_params: Any, rng: Array) -> tuple[Array, Info]:
        """TD regression onto r + gamma * m * agg_i Q_target,i(s', a'), a' from the current policy at s'."""
        if self.uses_oracle_critic:
            # The analytic Q replaces the critic; nothing to fit.
            zero = jnp.zeros((), dtype=jnp.float32)
            return zero, {"critic/loss": zero}
        # The next action comes from an ODE roll-out with start-of-step parameters: a constant of this regression.
        next_actions = jax.lax.stop_gradient(self.policy_actions(batch["next_observations"], rng))
        next_q = aggregate_heads(
            self.network.select("target_critic")(batch["next_observations"], next_actions), self.config["q_agg"]
        )
        # Targets come from the target network only; stop-gradient makes that explicit.
        target_q = jax.lax.stop_gradient(batch["rewards"] + self.config["discount"] * batch["masks"] * next_q)
        q = self.network.select("critic")(batch["observations"], batch["actions"], params=grad_params)
        loss = jnp.mean((q - target_q) ** 2)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(), "critic/q_min": q.min()}

    # ---- acting ----------------------------------------------------------------------------------------------

    @jax.jit
    def sample_actions(self, observations: Array, seed: Array | int, temperature: float = 1.0) -> Array:
        """One stochastic policy sample per observation; flow policies ignore ``temperature``."""
        seed = as_key(seed)  # an int seed is accepted wherever a key is
        del temperature
        single = jnp.ndim(observations) == len(self.config["observation_shape"])
        if single:
            observations = observations[None]
        actions = jnp.clip(self.policy_actions(observations, seed), -1.0, 1.0)
        return actions[0] if single else actions


# --------------------------------------------------------------------------------------------------------------
# The residual-refinement policy shared by DeFlow and FiDec
# --------------------------------------------------------------------------------------------------------------


class RefinedFlowAgent(FlowAgent):
    """DeFlow's and FiDec's policy: a = clip(a_base + f(s, a_base)), a_base = ODE(s, z), under a trust region.

    Adds the residual net ``actor_refinement`` f(s, a_base) and the scalar ``log_alpha`` to the flow skeleton.
    Subclasses define :meth:`actor_loss`, built from :func:`bc_flow_weight` and :func:`trust_region_terms`; they
    differ only in the divergence D the trust region bounds.
    """

    @classmethod
    def policy_networks(cls, config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
        return refinement_networks(config, example_batch)

    def policy_actions(self, observations: Array, rng: Array) -> Array:
        """a = clip(a_base + Delta(s, a_base)), a_base = ODE(s, z): one sample, the temperature plays no part."""
        base_actions = self.behaviour_actions(self.bc_features(observations), rng)
        residual = self.network.select("actor_refinement")(observations, base_actions)
        return jnp.clip(base_actions + residual, -1.0, 1.0)


def refinement_networks(config: FrozenConfig, example_batch: Batch) -> dict[str, tuple[nn.Module, Any]]:
    """The residual net f(s, a_base) (no time input, unbounded output) and the scalar log alpha."""
    refinement = ActorVectorField(
        config["actor_hidden_dims"],
        config["action_dim"],
        layer_norm=config["actor_layer_norm"],
        encoder=make_encoder(config["encoder"]),
    )
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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _initialise(cls: type[FlowAgent], config: FrozenConfig, seed: Array) -> FlowAgent:
    """Initialise an agent in one compiled program, cached per (agent class, config).

    Run eagerly, every layer's initialiser would compile on its own, which is far slower (tens of seconds with
    image encoders). Only shapes matter for initialisation, so the example batch is rebuilt from the config.
    """
    example_batch = {
        "observations": jnp.zeros((1, *config["observation_shape"]), dtype=config["observation_dtype"]),
        "actions": jnp.zeros((1, config["action_dim"]), dtype=jnp.float32),
    }
    return cls.build(seed, config, cls.networks(config, example_batch), targets=cls.target_modules)


def _check_choice(agent_name: str, config: Mapping[str, Any], key: str, choices: tuple) -> None:
    if config[key] not in choices:
        raise ConfigError(f"{agent_name}: unknown {key} {config[key]!r}; valid: {list(choices)}")
