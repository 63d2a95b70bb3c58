"""ReBRAC (docs/algorithms.md §6, D5): actor and targets only on actor steps, loss formulas, routing, resumable
state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym.agents import load_agent
from fidec_gym.agents.rebrac import ReBRACAgent

OBS_DIM, ACTION_DIM, BATCH = 5, 2, 16
CONFIG = {"actor_hidden_dims": (32, 32), "value_hidden_dims": (32, 32), "alpha_actor": 0.1, "alpha_critic": 0.5}


def random_batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-0.9, 0.9, size=(BATCH, ACTION_DIM)).astype(np.float32),
        "next_observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "next_actions": rng.uniform(-0.9, 0.9, size=(BATCH, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=(BATCH,)).astype(np.float32),
        "masks": (rng.uniform(size=(BATCH,)) > 0.2).astype(np.float32),
    }


def tree_norm(tree) -> float:
    return float(sum(np.abs(np.asarray(leaf)).sum() for leaf in jax.tree.leaves(tree)))


def tree_diff(tree_a, tree_b) -> float:
    leaves = zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))
    return float(sum(np.abs(np.asarray(a) - np.asarray(b)).sum() for a, b in leaves))


@pytest.fixture(scope="module")
def trajectory():
    """Agents at steps 1..4 and the infos of the three updates between them."""
    agents, infos = [ReBRACAgent.create(0, random_batch(0), CONFIG)], []
    for seed in (1, 2, 3):
        agent, info = agents[-1].update(random_batch(seed))
        agents.append(agent)
        infos.append(info)
    return agents, infos


def test_actor_and_targets_update_only_on_actor_steps(trajectory):
    agents, infos = trajectory
    assert [int(agent.network.step) for agent in agents] == [1, 2, 3, 4]
    params = [agent.network.params for agent in agents]
    tau = agents[0].config["tau"]

    # Step 1 (odd): zero actor loss; with Adam's moments still zero the actor stays put; targets untouched.
    assert float(infos[0]["actor/loss"]) == 0.0
    assert tree_diff(params[1]["modules_actor"], params[0]["modules_actor"]) == 0.0
    assert tree_diff(params[1]["modules_critic"], params[0]["modules_critic"]) > 0.0
    for target in ("modules_target_critic", "modules_target_actor"):
        assert tree_diff(params[1][target], params[0][target]) == 0.0

    # Step 2 (actor step): the actor trains and both targets move by tau towards the pre-step online parameters.
    assert float(infos[1]["actor/loss"]) != 0.0
    assert tree_diff(params[2]["modules_actor"], params[1]["modules_actor"]) > 0.0
    for target, source in (("modules_target_critic", "modules_critic"), ("modules_target_actor", "modules_actor")):
        expected = jax.tree.map(lambda s, t: tau * s + (1 - tau) * t, params[1][source], params[1][target])
        for got, want in zip(jax.tree.leaves(params[2][target]), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    # Step 3: actor loss is zero again, yet the shared Adam's momentum keeps moving the actor (docs/algorithms.md D5).
    assert float(infos[2]["actor/loss"]) == 0.0
    assert tree_diff(params[3]["modules_actor"], params[2]["modules_actor"]) > 0.0
    for target in ("modules_target_critic", "modules_target_actor"):
        assert tree_diff(params[3][target], params[2][target]) == 0.0


def test_separate_optimizers_keep_the_actor_still_between_actor_steps(trajectory):
    shared = [agent.network.params for agent in trajectory[0]]
    agent = ReBRACAgent.create(0, random_batch(0), {**CONFIG, "rebrac_separate_optimizers": True})
    params = [agent.network.params]
    for seed in (1, 2, 3):
        agent, _ = agent.update(random_batch(seed))
        params.append(agent.network.params)
    # The actor's own Adam steps on step 2 only: no momentum moves it on step 3, unlike the shared Adam.
    assert tree_diff(params[1]["modules_actor"], params[0]["modules_actor"]) == 0.0
    assert tree_diff(params[2]["modules_actor"], params[1]["modules_actor"]) > 0.0
    assert tree_diff(params[3]["modules_actor"], params[2]["modules_actor"]) == 0.0
    # Adam is elementwise and the critic's losses never see the actor's update, so the critic follows the same
    # trajectory as under the shared optimiser.
    for got, want in zip(jax.tree.leaves(params[3]["modules_critic"]), jax.tree.leaves(shared[3]["modules_critic"])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@jax.jit
def losses_and_expectations(agent, batch, rng):
    """The agent's losses next to the same quantities written out from the formulas of docs/algorithms.md §6."""
    config, select = agent.config, agent.network.select
    critic_loss, _ = agent.critic_loss(batch, agent.network.params, rng)
    actor_loss, _ = agent.actor_loss(batch, agent.network.params)

    noise = jnp.clip(0.2 * jax.random.normal(rng, batch["actions"].shape), -0.5, 0.5)
    next_actions = jnp.clip(jnp.tanh(select("target_actor")(batch["next_observations"]).base.loc) + noise, -1, 1)
    next_q = select("target_critic")(batch["next_observations"], next_actions).min(axis=0)
    next_q -= config["alpha_critic"] * jnp.sum((next_actions - batch["next_actions"]) ** 2, axis=-1)
    target = batch["rewards"] + config["discount"] * batch["masks"] * next_q
    expected_critic = jnp.mean((select("critic")(batch["observations"], batch["actions"]) - target) ** 2)

    policy_actions = jnp.tanh(select("actor")(batch["observations"]).base.loc)
    q = select("critic")(batch["observations"], policy_actions).min(axis=0)
    bc = jnp.mean(jnp.sum((policy_actions - batch["actions"]) ** 2, axis=-1))
    expected_actor = -jnp.mean(q) / jnp.mean(jnp.abs(q)) + config["alpha_actor"] * bc
    return critic_loss, expected_critic, actor_loss, expected_actor


def test_losses_match_the_formulas(trajectory):
    agent = trajectory[0][3]
    critic_loss, expected_critic, actor_loss, expected_actor = losses_and_expectations(
        agent, random_batch(4), jax.random.PRNGKey(7)
    )
    np.testing.assert_allclose(critic_loss, expected_critic, rtol=1e-5)
    np.testing.assert_allclose(actor_loss, expected_actor, rtol=1e-5)


@jax.jit
def loss_term_grads(agent, batch):
    params = agent.network.params
    return {
        "critic": jax.grad(lambda p: agent.critic_loss(batch, p, jax.random.PRNGKey(0))[0])(params),
        "actor": jax.grad(lambda p: agent.actor_loss(batch, p)[0])(params),
    }


def test_actor_loss_never_reaches_the_critic(trajectory):
    grads = loss_term_grads(trajectory[0][2], random_batch(5))
    assert tree_norm(grads["actor"]["modules_actor"]) > 0.0
    assert tree_norm(grads["critic"]["modules_critic"]) > 0.0
    for module in ("modules_critic", "modules_target_critic", "modules_target_actor"):
        assert tree_norm(grads["actor"][module]) == 0.0, module
    for module in ("modules_actor", "modules_target_critic", "modules_target_actor"):
        assert tree_norm(grads["critic"][module]) == 0.0, module


def test_actions_deterministic_at_zero_temperature_and_noise_clipped(trajectory):
    agent = trajectory[0][2]
    observations = jnp.tile(random_batch(6)["observations"][:1], (512, 1))
    greedy = agent.sample_actions(observations, jax.random.PRNGKey(0), 0.0)
    np.testing.assert_allclose(greedy, greedy[:1].repeat(512, axis=0), atol=1e-6)
    noisy = agent.sample_actions(observations, jax.random.PRNGKey(0), 1.0)
    offset = np.asarray(noisy - greedy)
    assert float(jnp.abs(noisy).max()) <= 1.0 and np.abs(offset).max() <= 0.5 + 1e-6
    assert 0.15 < offset.std() < 0.25  # N(0, 0.2^2) clipped at +-0.5


def test_save_load_update_equals_uninterrupted(trajectory, tmp_path):
    agent = trajectory[0][1]  # step 2: the next update is an actor step, so the step counter must survive
    agent.save(tmp_path / "rebrac.msgpack")
    restored = load_agent(str(tmp_path / "rebrac.msgpack"))
    continued, info = agent.update(random_batch(2))
    resumed, resumed_info = restored.update(random_batch(2))
    assert tree_diff(continued.network.params, resumed.network.params) == 0.0
    assert float(resumed_info["actor/loss"]) == float(info["actor/loss"]) != 0.0


def test_validation_reports_the_actor_loss_on_either_step_parity(trajectory):
    batch = random_batch(6)
    for agent in trajectory[0][2:4]:  # one actor step and one critic-only step
        info = agent.validation_info(batch)
        expected, _ = agent.actor_loss(batch, agent.network.params)
        np.testing.assert_allclose(info["val/actor/loss"], expected, rtol=1e-5)
        assert float(info["val/actor/loss"]) != 0.0
