"""Checks shared by the FQL, DeFlow and FiDec test files (imported by them; holds no tests itself)."""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fidec_gym import agents
from fidec_gym.agents.base import clip_by_global_norm, vmapped_update_n

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 16
# Small nets and a 2-step sampler keep compilation short; the 10-step default is checked by the known-answer tests.
SMALL = {"actor_hidden_dims": (32, 32), "value_hidden_dims": (32, 32), "flow_steps": 2}


def random_batch(seed: int, batch_size: int = BATCH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(batch_size, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-0.9, 0.9, size=(batch_size, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=batch_size).astype(np.float32),
        "masks": (rng.uniform(size=batch_size) > 0.2).astype(np.float32),
        "next_observations": rng.normal(size=(batch_size, OBS_DIM)).astype(np.float32),
    }


def max_abs_diff(tree_a, tree_b) -> float:
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def term_gradient_norms(agent, batch, keys: Iterable[str], seed: int = 0) -> dict[str, dict[str, float]]:
    """For each info key (a loss term), the max |gradient| it sends into each module of the parameter tree."""
    keys = list(keys)
    rng = jax.random.PRNGKey(seed)

    def terms(params):
        _, info = agent.total_loss(batch, params, rng)
        return jnp.stack([info[key] for key in keys])

    jacobian = jax.jit(jax.jacrev(terms))(agent.network.params)
    return {
        key: {
            module.removeprefix("modules_"): max(float(jnp.max(jnp.abs(leaf[i]))) for leaf in jax.tree.leaves(tree))
            for module, tree in jacobian.items()
        }
        for i, key in enumerate(keys)
    }


def assert_gradient_routing(agent, batch, expected: dict[str, set[str]]) -> None:
    """Each loss term reaches exactly its modules: nonzero gradient there, exactly zero everywhere else."""
    norms = term_gradient_norms(agent, batch, expected)
    for key, modules in expected.items():
        reached = {module for module, value in norms[key].items() if value > 0.0}
        assert reached == set(modules), f"{key} trains {sorted(reached)}, expected {sorted(modules)}: {norms[key]}"


def assert_actions_in_range(agent, batch) -> None:
    key = jax.random.PRNGKey(3)
    actions = np.asarray(agent.sample_actions(batch["observations"], key))
    assert actions.shape == batch["actions"].shape and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    single = np.asarray(agent.sample_actions(batch["observations"][0], key))
    assert single.shape == (ACTION_DIM,)
    # Flow policies ignore the temperature: the same seed gives the same action.
    np.testing.assert_array_equal(actions, np.asarray(agent.sample_actions(batch["observations"], key, 0.0)))


def assert_target_update_rate(agent, batch) -> None:
    """target <- tau * critic_before_step + (1 - tau) * target, with the one-step lag."""
    params = dict(agent.network.params)
    params["modules_target_critic"] = jax.tree.map(lambda x: x + 1.0, params["modules_target_critic"])
    agent = agent.replace(network=agent.network.replace(params=params))
    new_agent, _ = agent.update(batch)
    tau = agent.config["tau"]
    expected = jax.tree.map(
        lambda c, t: tau * c + (1 - tau) * t, params["modules_critic"], params["modules_target_critic"]
    )
    assert max_abs_diff(new_agent.network.params["modules_target_critic"], expected) < 1e-6
    assert max_abs_diff(new_agent.network.params["modules_critic"], params["modules_critic"]) > 0


def assert_critic_loss_known_answer(agent, batch) -> None:
    """L_Q = mean over heads x batch of (Q_i(s, a) - r - gamma m agg_i Q_target,i(s', a'))^2 for mean and min."""
    rng = jax.random.PRNGKey(11)
    next_actions = agent.policy_actions(batch["next_observations"], rng)
    target_qs = np.asarray(agent.network.select("target_critic")(batch["next_observations"], next_actions))
    qs = np.asarray(agent.network.select("critic")(batch["observations"], batch["actions"]))
    for how, reduce in (("mean", np.mean), ("min", np.min)):
        variant = agent.replace(config=agent.config.replace(q_agg=how))
        loss, _ = variant.critic_loss(batch, agent.network.params, rng)
        y = batch["rewards"] + agent.config["discount"] * batch["masks"] * reduce(target_qs, axis=0)
        np.testing.assert_allclose(float(loss), np.mean((qs - y) ** 2), rtol=1e-5)


def assert_fused_vmapped_and_resumed_updates_agree(agent, tmp_path) -> None:
    """Fused (update_n) and vmapped updates of two seeds == separate sequential updates; save/load resumes exactly.

    One compiled program (vmapped update_n) covers both fusion and seed batching; the sequential reference reuses
    the agent's compiled ``update``.
    """
    agent_cls, config = type(agent), agent.config
    batches = [random_batch(seed) for seed in (1, 2)]
    seeds = [agent, agent_cls.create(1, batches[0], config)]

    sequential = []
    for start in seeds:
        for batch in batches:
            start, _ = start.update(batch)
        sequential.append(start)
    stacked_agents = jax.tree.map(lambda *xs: jnp.stack(xs), *seeds)
    stacked_batches = jax.tree.map(lambda *xs: np.stack(xs), *batches)  # (n, B, ...): shared by both seeds
    fused, info = vmapped_update_n(stacked_agents, stacked_batches)
    assert info["nonfinite"].shape == (2,)
    for index, reference in enumerate(sequential):
        one = jax.tree.map(lambda leaf, index=index: leaf[index], fused)
        assert max_abs_diff(one.network.params, reference.network.params) < 1e-5
        assert int(one.network.step) == int(reference.network.step) == 3

    halfway, _ = agent.update(batches[0])
    path = tmp_path / f"{agent_cls.name}.msgpack"
    halfway.save(path)
    restored = agents.load_agent(str(path))
    assert restored.config == halfway.config
    resumed, _ = restored.update(batches[1])
    uninterrupted, _ = halfway.update(batches[1])
    assert max_abs_diff(resumed.network.params, uninterrupted.network.params) == 0.0
    assert max_abs_diff(resumed.network.opt_state, uninterrupted.network.opt_state) == 0.0


def assert_nonfinite_is_reported(agent, batch) -> None:
    bad = dict(batch, rewards=np.full_like(batch["rewards"], np.nan))
    _, info = agent.update(bad)
    assert float(info["nonfinite"]) == 1.0
    _, info = agent.update(batch)
    assert float(info["nonfinite"]) == 0.0


def assert_gradient_clipping(agent, clipped: bool) -> None:
    """The agent's optimiser equals Adam after global-norm clipping at 5 exactly when ``clipped``."""
    # The optimiser does not depend on the parameter structure, so a tiny tree keeps this check instantaneous.
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    # Two steps, the first with a huge gradient: clipping changes Adam's moments and hence the second update.
    big = jax.tree.map(lambda x: jnp.full_like(x, 100.0), params)
    small = jax.tree.map(lambda x: jnp.full_like(x, 0.01), params)

    def run(tx):
        state = tx.init(params)
        _, state = tx.update(big, state, params)
        updates, _ = tx.update(small, state, params)
        return updates

    adam = optax.adam(agent.config["lr"], b1=0.9, b2=0.999, eps=1e-8)
    reference = {True: optax.chain(clip_by_global_norm(5.0), adam), False: adam}
    got = run(agent.network.tx)
    assert max_abs_diff(got, run(reference[clipped])) < 1e-9
    assert max_abs_diff(got, run(reference[not clipped])) > 1e-6


def assert_oracle_critic(agent_cls, config, tmp_path) -> None:
    """critic='oracle': q_fn drives the actor, the critic is never trained, save/load needs q_fn again."""
    target = jnp.array([0.5, -0.5])

    def q_fn(observations, actions):
        return -jnp.sum((actions - target) ** 2, axis=-1)

    batch = random_batch(5)
    oracle_config = {**config, "critic": "oracle"}
    agent = agent_cls.create(0, batch, oracle_config, q_fn=q_fn)
    new_agent, info = agent.update(batch)
    assert float(info["critic/loss"]) == 0.0
    assert max_abs_diff(new_agent.network.params["modules_critic"], agent.network.params["modules_critic"]) == 0.0
    assert "critic/q_mean" not in info
    norms = term_gradient_norms(agent, batch, ["actor/q_loss"])["actor/q_loss"]
    assert norms["critic"] == 0.0 and max(norms.values()) > 0.0

    path = tmp_path / f"{agent_cls.name}-oracle.msgpack"
    new_agent.save(path)
    restored = agent_cls.create(0, batch, oracle_config, q_fn=q_fn).load(path)
    assert max_abs_diff(restored.network.params, new_agent.network.params) == 0.0
    assert restored.q_fn is q_fn

    for call, message in (
        (lambda: agent_cls.create(0, batch, oracle_config), "q_fn"),
        (lambda: agent_cls.create(0, batch, config, q_fn=q_fn), "critic='oracle'"),
        (lambda: agents.load_agent(str(path)), "q_fn"),
        (lambda: agent_cls.create(0, batch, {**config, "critic": "analytic"}), "critic"),
    ):
        try:
            call()
        except ValueError as error:
            assert message in str(error)
        else:
            raise AssertionError(f"expected a ValueError mentioning {message!r}")


def assert_lagrange_direction(agent, batch) -> None:
    """log alpha rises by about one Adam step (lr) when D > delta and falls when D < delta.

    D < delta is produced by zeroing the refinement net's last layer (Delta = 0), which needs no new config.
    """
    params = dict(agent.network.params)
    refinement = jax.tree.map(lambda x: x, params["modules_actor_refinement"])
    last = sorted(refinement["mlp"])[-1]
    refinement["mlp"][last] = jax.tree.map(jnp.zeros_like, refinement["mlp"][last])
    zero_residual = agent.replace(
        network=agent.network.replace(params={**params, "modules_actor_refinement": refinement})
    )
    for start, sign in ((agent, 1.0), (zero_residual, -1.0)):
        new_agent, info = start.update(batch)
        before = float(start.network.params["modules_log_alpha"]["log_value"][0])
        after = float(new_agent.network.params["modules_log_alpha"]["log_value"][0])
        divergence = float(info["actor/divergence"])
        assert (divergence > start.config["target_divergence"]) == (sign > 0), divergence
        assert sign * (after - before) > 0
        np.testing.assert_allclose(abs(after - before), agent.config["lr"], rtol=0.01)
