"""Agent core: networks, distributions, optimiser, config handling, fused/vmapped updates and checkpoints."""

import ast
import importlib
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym import agents
from fidec_gym.agents.base import (
    FrozenConfig,
    ModuleDict,
    TrainState,
    clip_by_global_norm,
    create_vmapped,
    make_optimizer,
    polyak_update,
    unstack_agents,
    vmapped_sample_actions,
    vmapped_update,
    vmapped_update_n,
)
from fidec_gym.agents.bc import BCAgent
from fidec_gym.agents.encoders import ENCODERS
from fidec_gym.agents.iql import IQLAgent
from fidec_gym.agents.networks import (
    MLP,
    ActorVectorField,
    DiagonalGaussian,
    GaussianActor,
    TanhDiagonalGaussian,
    Value,
    default_init,
)
from fidec_gym.errors import ConfigError

OBS_DIM, ACTION_DIM, BATCH = 5, 2, 16
SMALL = {"actor_hidden_dims": (32, 32)}


def random_batch(seed: int, batch_size: int = BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(batch_size, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-0.9, 0.9, size=(batch_size, ACTION_DIM)).astype(np.float32),
    }


def init_and_apply(module, *args, **kwargs):
    """Jitted init and apply (op-by-op execution would compile every primitive separately)."""
    params = jax.jit(module.init)(jax.random.PRNGKey(1), *args)
    return params, jax.jit(lambda p, *a: module.apply(p, *a, **kwargs))(params, *args)


def max_abs_diff(tree_a, tree_b) -> float:
    leaves = zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in leaves)


@pytest.fixture(scope="module")
def bc_agent():
    return BCAgent.create(0, random_batch(0), SMALL)


# ---- networks -----------------------------------------------------------------------------------------------


def test_mlp_applies_activation_then_layer_norm_except_last():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    mlp = MLP((8, 6), layer_norm=True)
    params, output = init_and_apply(mlp, x)
    assert set(params["params"]) == {"Dense_0", "Dense_1", "LayerNorm_0"}  # no norm after the last layer
    p = params["params"]
    hidden = jax.nn.gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], approximate=True)
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    hidden = (hidden - mean) / jnp.sqrt(var + 1e-6) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    expected = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    final = jax.eval_shape(MLP((8, 6), activate_final=True, layer_norm=True).init, jax.random.PRNGKey(1), x)
    assert "LayerNorm_1" in final["params"]


def test_default_init_is_glorot_uniform():
    kernel = default_init()(jax.random.PRNGKey(0), (300, 200))
    limit = math.sqrt(6.0 / (300 + 200))
    assert float(jnp.max(jnp.abs(kernel))) <= limit
    np.testing.assert_allclose(float(jnp.var(kernel)), limit**2 / 3.0, rtol=0.02)
    small = default_init(0.01)(jax.random.PRNGKey(0), (300, 200))
    np.testing.assert_allclose(float(jnp.var(small)), 0.01 * limit**2 / 3.0, rtol=0.02)


def test_value_ensemble_shapes_and_independent_heads():
    obs, act = jnp.ones((7, OBS_DIM)), jnp.zeros((7, ACTION_DIM))
    critic = Value((16, 16), num_ensembles=2)
    params = jax.jit(critic.init)(jax.random.PRNGKey(0), obs, act)
    assert jax.eval_shape(critic.apply, params, obs, act).shape == (2, 7)
    kernels = params["params"]["value_net"]["Dense_0"]["kernel"]
    assert kernels.shape == (2, OBS_DIM + ACTION_DIM, 16) and not np.allclose(kernels[0], kernels[1])
    value_shape = jax.eval_shape(lambda: init_and_apply(Value((16, 16)), obs)[1])
    assert value_shape.shape == (7,)


def test_gaussian_log_prob_matches_closed_form():
    loc, scale = jnp.array([[0.2, -0.5]]), jnp.array([[0.5, 2.0]])
    x = jnp.array([[0.4, 1.0]])
    expected = sum(
        -0.5 * ((xi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
        for xi, m, s in zip([0.4, 1.0], [0.2, -0.5], [0.5, 2.0])
    )
    np.testing.assert_allclose(DiagonalGaussian(loc, scale).log_prob(x), [expected], rtol=1e-6)


def test_tanh_gaussian_density_integrates_to_one_and_matches_samples():
    dist = TanhDiagonalGaussian(jnp.array([[0.3]]), jnp.array([[0.7]]))
    grid = jnp.linspace(-1 + 1e-6, 1 - 1e-6, 200001)[:, None, None]
    density = jnp.exp(jax.vmap(dist.log_prob)(grid))[:, 0]
    np.testing.assert_allclose(float(jnp.trapezoid(density, grid[:, 0, 0])), 1.0, atol=2e-3)
    actions, log_probs = dist.sample_and_log_prob(jax.random.PRNGKey(0))
    np.testing.assert_allclose(log_probs, dist.log_prob(actions), rtol=1e-4)
    assert float(dist.mode()[0, 0]) == pytest.approx(math.tanh(0.3))


def test_gaussian_actor_std_temperature_and_mean_head_scale():
    obs = jax.random.normal(jax.random.PRNGKey(0), (64, OBS_DIM))
    actor = GaussianActor((32,), ACTION_DIM, const_std=False)
    params = jax.jit(actor.init)(jax.random.PRNGKey(1), obs)

    @jax.jit
    def stats(params, temperature):
        dist = actor.apply(params, obs, temperature=temperature)
        return dist.stddev(), dist.mode(), dist.sample(jax.random.PRNGKey(2))

    std, mode, sample = stats(params, 0.5)
    np.testing.assert_allclose(std, 0.5)  # learned log-std starts at 0, temperature scales it
    limit = math.sqrt(0.01 * 6.0 / (32 + ACTION_DIM))  # mean head: Glorot-uniform at scale 0.01
    assert float(jnp.abs(params["params"]["mean_net"]["kernel"]).max()) <= limit
    far = {"params": {**params["params"], "log_stds": jnp.full((ACTION_DIM,), -9.0)}}
    np.testing.assert_allclose(stats(far, 1.0)[0], math.exp(-5.0), rtol=1e-6)  # log-std clipped at -5
    _, mode, sample = stats(params, 0.0)
    np.testing.assert_array_equal(sample, mode)


def test_vector_field_with_and_without_time():
    obs, x, t = jnp.ones((3, OBS_DIM)), jnp.zeros((3, ACTION_DIM)), jnp.full((3, 1), 0.5)
    field = ActorVectorField((16,), ACTION_DIM)
    params, velocity = jax.eval_shape(lambda: init_and_apply(field, obs, x, t))
    assert params["params"]["mlp"]["Dense_0"]["kernel"].shape[0] == OBS_DIM + ACTION_DIM + 1
    assert velocity.shape == (3, ACTION_DIM)
    map_params, residual = jax.eval_shape(lambda: init_and_apply(field, obs, x))
    assert map_params["params"]["mlp"]["Dense_0"]["kernel"].shape[0] == OBS_DIM + ACTION_DIM
    assert residual.shape == (3, ACTION_DIM)


def test_impala_small_encoder_output_and_block_count():
    images = jnp.zeros((2, 64, 64, 9), dtype=jnp.uint8)
    encoder = ENCODERS["impala_small"]()
    params, features = jax.eval_shape(lambda: init_and_apply(encoder, images))
    assert features.shape == (2, 512)
    assert set(params["params"]["ResnetStack_0"]) == {"Conv_0", "ResidualBlock_0"}
    assert params["params"]["MLP_0"]["Dense_0"]["kernel"].shape == (8 * 8 * 32, 512)
    large, _ = jax.eval_shape(lambda: init_and_apply(ENCODERS["impala"](), images))
    assert set(large["params"]["ResnetStack_2"]) == {"Conv_0", "ResidualBlock_0", "ResidualBlock_1"}
    with pytest.raises(ValueError, match="encoder=None"):
        jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.zeros((2, OBS_DIM)))


# ---- optimiser, targets, config -----------------------------------------------------------------------------


def test_global_norm_clip_formula():
    grads = {"a": jnp.array([6.0, 0.0]), "b": jnp.array([[8.0]])}  # global norm 10
    clipped, _ = clip_by_global_norm(5.0).update(grads, clip_by_global_norm(5.0).init(grads))
    np.testing.assert_allclose(clipped["a"], np.array([6.0, 0.0]) * 5.0 / (10.0 + 1e-6), rtol=1e-7)
    small = {"a": jnp.array([0.3, 0.4])}
    unchanged, _ = clip_by_global_norm(5.0).update(small, ())
    np.testing.assert_array_equal(unchanged["a"], small["a"])


def test_adam_first_step_is_lr_times_sign():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    tx = make_optimizer(0.1)
    updates, _ = tx.update({"w": jnp.array([0.5, -4.0, 0.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0], atol=1e-6)
    assert make_optimizer(0.1) is tx  # equal settings share one optimiser (no recompiles)


def test_polyak_update_formula():
    target, source = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(polyak_update(target, source, 0.25)["w"], [1.5, 1.0])


def test_frozen_config_is_hashable_and_reads_like_a_dict():
    config = FrozenConfig({"dims": [64, 64], "lr": 1e-3})
    assert config["dims"] == (64, 64) and hash(config) == hash(FrozenConfig({"lr": 1e-3, "dims": (64, 64)}))
    assert config.to_dict() == {"dims": [64, 64], "lr": 1e-3}
    assert config == {"dims": (64, 64), "lr": 1e-3}


def test_unknown_config_key_and_agent_list_the_valid_ones():
    with pytest.raises(KeyError, match="valid keys: .*actor_hidden_dims"):
        agents.make_config("bc", {"actor_hiden_dims": (8,)})
    with pytest.raises(KeyError, match=r"valid agents: \['bc'.*'iql'.*'rebrac'"):
        agents.make_agent("bcq", 0, random_batch(0))
    assert agents.get_config("iql")["expectile"] == 0.9


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": "x"}, "bc config batch_size='x': expected a whole number like 256"),
        ({"lr": float("nan")}, "bc config lr=nan: must be finite"),
        ({"actor_hidden_dims": [0]}, "bc config actor_hidden_dims=[0]: expected a list of positive whole numbers"),
    ],
)
def test_the_python_api_checks_config_values_as_the_command_line_does(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        agents.make_agent("bc", 0, random_batch(0), {**SMALL, **overrides})


def test_an_example_batch_that_is_not_a_dict_of_arrays_is_named():
    with pytest.raises(ConfigError, match="example_batch must be a dict with 'observations' and 'actions'.*got list"):
        agents.make_agent("bc", 0, [1, 2])


def test_a_seed_or_overrides_of_the_wrong_type_are_named():
    with pytest.raises(ConfigError, match="seed must be a whole number .an int., got str 'abc'"):
        agents.make_agent("bc", "abc", random_batch(0))
    with pytest.raises(ConfigError, match="config overrides must be a mapping .* got list"):
        agents.make_agent("bc", 0, random_batch(0), [("lr", 1e-3)])


def test_pixel_observations_without_encoder_are_rejected():
    batch = {"observations": np.zeros((2, 8, 8, 3), np.uint8), "actions": np.zeros((2, ACTION_DIM), np.float32)}
    with pytest.raises(ValueError, match="encoder='impala_small'"):
        BCAgent.create(0, batch, SMALL)


def test_module_dict_init_needs_every_module():
    modules = ModuleDict({"a": MLP((3,)), "b": MLP((2,))})
    with pytest.raises(ValueError, match="every module"):
        modules.init(jax.random.PRNGKey(0), a=(jnp.ones((1, 2)),))
    params = modules.init(jax.random.PRNGKey(0), a=(jnp.ones((1, 2)),), b=jnp.ones((1, 4)))["params"]
    state = TrainState.create(modules, params, make_optimizer())
    assert int(state.step) == 1
    assert state.select("b")(jnp.ones((5, 4))).shape == (5, 2)


# ---- updates ------------------------------------------------------------------------------------------------


def test_update_shapes_info_and_step(bc_agent):
    new_agent, info = bc_agent.update(random_batch(1))
    assert int(new_agent.network.step) == 2
    assert info["nonfinite"] == 0.0 and info["grad/norm"] > 0
    actions = new_agent.sample_actions(random_batch(2)["observations"], jax.random.PRNGKey(0), 1.0)
    assert actions.shape == (BATCH, ACTION_DIM) and float(jnp.abs(actions).max()) <= 1.0
    val = new_agent.validation_info(random_batch(3))
    assert set(val) == {f"val/{key}" for key in ("actor/loss", "actor/bc_log_prob", "actor/mse")}
    assert max_abs_diff(new_agent.validation_info(random_batch(3)), val) == 0.0  # no state change


def test_update_n_equals_repeated_updates(bc_agent):
    batches = [random_batch(10 + i) for i in range(3)]
    stepped = bc_agent
    for batch in batches:
        stepped, info = stepped.update(batch)
    fused, fused_info = bc_agent.update_n(jax.tree.map(lambda *xs: np.stack(xs), *batches))
    assert int(fused.network.step) == int(stepped.network.step) == 4
    assert max_abs_diff(fused.network.params, stepped.network.params) < 1e-6
    np.testing.assert_allclose(fused_info["actor/loss"], info["actor/loss"], rtol=1e-5)


def test_vmapped_seeds_equal_separate_runs():
    shared, per_seed = random_batch(20), [random_batch(21), random_batch(22)]
    stacked = create_vmapped(BCAgent, [3, 4], shared, SMALL)
    after_shared, _ = vmapped_update(stacked, shared)
    after_own, _ = vmapped_update(after_shared, jax.tree.map(lambda *xs: np.stack(xs), *per_seed))
    fused, _ = vmapped_update_n(stacked, jax.tree.map(lambda x: np.stack([x, x]), shared))
    # Separate runs go through the same per-agent code path as ``agent.update``.
    for index, seed in enumerate([3, 4]):
        single = BCAgent.create(seed, shared, SMALL)
        single, _ = single.update(shared)
        assert max_abs_diff(unstack_agents(after_shared)[index].network.params, single.network.params) < 1e-6
        single, _ = single.update(per_seed[index])
        assert max_abs_diff(unstack_agents(after_own)[index].network.params, single.network.params) < 1e-6
    assert int(fused.network.step[0]) == 3
    observations = jax.tree.map(lambda *xs: np.stack(xs), *per_seed)["observations"]
    greedy = vmapped_sample_actions(after_shared, observations, jax.random.PRNGKey(0), 0.0)
    assert greedy.shape == (2, BATCH, ACTION_DIM)
    single_greedy = unstack_agents(after_shared)[1].sample_actions(observations[1], jax.random.PRNGKey(0), 0.0)
    np.testing.assert_allclose(greedy[1], single_greedy, atol=1e-6)
    with pytest.raises(ValueError, match="leading axis of 2 seeds"):
        vmapped_update(stacked, jax.tree.map(lambda *xs: np.stack(xs), *per_seed, per_seed[0]))


def test_nan_in_batch_is_flagged(bc_agent):
    batch = random_batch(30)
    batch["actions"][3, 1] = np.nan
    _, info = bc_agent.update(batch)
    assert float(info["nonfinite"]) == 1.0


class ScaledLossBC(BCAgent):
    """A research-style subclass: same networks and config, another loss."""

    def total_loss(self, batch, grad_params, rng):
        loss, info = super().total_loss(batch, grad_params, rng)
        return 2.0 * loss, info


def test_a_subclass_never_shares_its_parents_compiled_update(bc_agent):
    # JAX compares pytree structures without the dataclass type; the agent's class name in its static data
    # makes parent and subclass structures differ, so no compiled-function cache can hand one the other's update.
    child = ScaledLossBC.create(0, random_batch(0), SMALL)
    assert child.config == bc_agent.config
    assert jax.tree_util.tree_structure(child) != jax.tree_util.tree_structure(bc_agent)
    assert child.agent_type.endswith("ScaledLossBC") and bc_agent.agent_type == "fidec_gym.agents.bc.BCAgent"
    batch = random_batch(32)
    _, parent_info = bc_agent.update(batch)
    _, child_info = child.update(batch)
    # Same parameters and batch: the doubled loss doubles the gradient.
    np.testing.assert_allclose(float(child_info["grad/norm"]), 2.0 * float(parent_info["grad/norm"]), rtol=1e-5)


def test_wrong_batch_shape_names_the_key(bc_agent):
    batch = random_batch(31)
    batch["observations"] = batch["observations"][:, :3]
    with pytest.raises(ValueError, match="observations"):
        bc_agent.update(batch)


# ---- checkpoints --------------------------------------------------------------------------------------------


def test_save_load_update_equals_uninterrupted(bc_agent, tmp_path):
    trained, _ = bc_agent.update(random_batch(40))
    trained.save(tmp_path / "bc.msgpack")
    restored = agents.load_agent(str(tmp_path / "bc.msgpack"))
    assert isinstance(restored, BCAgent) and restored.config == trained.config
    continued, _ = trained.update(random_batch(41))
    resumed, _ = restored.update(random_batch(41))
    assert max_abs_diff(continued.network.params, resumed.network.params) == 0.0
    assert max_abs_diff(continued.network.opt_state, resumed.network.opt_state) == 0.0
    assert int(resumed.network.step) == 3 and np.array_equal(resumed.rng, continued.rng)
    assert [p.name for p in tmp_path.iterdir()] == ["bc.msgpack"]  # no temp files left behind


def test_vmapped_checkpoint_round_trip(tmp_path):
    stacked = create_vmapped(BCAgent, [0, 1], random_batch(0), SMALL)
    stacked.save(tmp_path / "seeds.msgpack")
    restored = agents.load_agent(str(tmp_path / "seeds.msgpack"))
    assert restored.rng.shape == (2, 2) and max_abs_diff(restored.network.params, stacked.network.params) == 0.0


def test_loading_into_a_different_config_or_agent_fails_clearly(bc_agent, tmp_path):
    path = tmp_path / "bc.msgpack"
    bc_agent.save(path)
    other = BCAgent.create(0, random_batch(0), {"actor_hidden_dims": (32, 16), "lr": 1e-3})
    with pytest.raises(ValueError, match=r"differs .* in \['actor_hidden_dims', 'lr'\]"):
        other.load(path)
    iql_shapes = jax.eval_shape(lambda: IQLAgent.create(0, {**random_batch(0)}, {"actor_hidden_dims": (32, 32)}))
    with pytest.raises(ValueError, match="holds a 'bc' agent, not 'iql'"):
        iql_shapes.load(path)
    with pytest.raises(FileNotFoundError, match="no agent checkpoint"):
        agents.load_agent(str(tmp_path / "missing.msgpack"))
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        agents.load_agent(str(corrupt))


# ---- module structure and default configs ------------------------------------------------------------------------

AGENT_MODULES = ("bc", "iql", "rebrac", "fql", "deflow", "fidec")


def imported_modules(tree: ast.Module, package: str = "fidec_gym.agents") -> set[str]:
    """Every module (and ``module.name`` for ``from module import name``) an agent file imports, made absolute."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from .x import y / from . import x (agents/ is the package fidec_gym.agents)
                module = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], module]))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_agent_file_imports_another_agent():
    """Agents share code through base.py, flow.py, networks.py (and fisher.py), never through another agent file."""
    agents_dir = Path(agents.__file__).parent
    for name in AGENT_MODULES:
        imported = imported_modules(ast.parse((agents_dir / f"{name}.py").read_text()))
        for other in AGENT_MODULES:
            if other == name:
                continue
            offending = sorted(
                module
                for module in imported
                for prefix in (f"fidec_gym.agents.{other}", f"agents.{other}")
                if module == prefix or module.startswith(prefix + ".")
            )
            assert not offending, f"agents/{name}.py imports agent {other!r}: {offending}"


def test_the_import_check_sees_every_import_form():
    source = "import fidec_gym.agents.fql\nfrom fidec_gym.agents import deflow\nfrom .iql import IQLAgent\n"
    imported = imported_modules(ast.parse(source))
    assert {"fidec_gym.agents.fql", "fidec_gym.agents.deflow", "fidec_gym.agents.iql"} <= imported


@pytest.mark.parametrize("name", AGENT_MODULES)
def test_class_and_registry_defaults_are_the_module_get_config(name):
    module = importlib.import_module(f"fidec_gym.agents.{name}")
    cls = agents.AGENTS[name]
    assert cls.get_config() == module.get_config() == agents.get_config(name)
    assert cls.get_config()["agent_name"] == name
    # A fresh dict on every call: editing a returned config never changes the defaults.
    cls.get_config()["lr"] = -1.0
    assert cls.get_config()["lr"] == module.get_config()["lr"] != -1.0


@pytest.mark.parametrize("name", AGENT_MODULES)
def test_every_default_config_key_is_commented(name):
    """Each key of ``get_config()`` says what it means and where its default comes from (same line or just above)."""
    path = Path(agents.__file__).parent / f"{name}.py"
    lines = path.read_text().splitlines()
    function = next(
        node
        for node in ast.parse("\n".join(lines)).body
        if isinstance(node, ast.FunctionDef) and node.name == "get_config"
    )
    returned = next(node.value for node in ast.walk(function) if isinstance(node, ast.Return))
    assert isinstance(returned, ast.Dict)
    uncommented = [
        key.value
        for key in returned.keys
        if isinstance(key, ast.Constant)
        and "#" not in lines[key.lineno - 1]
        and not lines[key.lineno - 2].lstrip().startswith("#")
    ]
    assert not uncommented, f"agents/{name}.py get_config keys without a comment: {uncommented}"
