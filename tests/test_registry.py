"""The task catalogue, its Gymnasium registration, per-task hyperparameters and the `fidec tasks` command."""

import json
import subprocess
import sys

import gymnasium as gym
import pytest

import fidec_gym
from fidec_gym.cli import main
from fidec_gym.envs.catalogue import all_tasks
from fidec_gym.errors import ConfigError


def test_counts_per_suite():
    fidec_ids = [key for key in gym.registry if key.startswith("fidec/")]
    assert len(fidec_ids) >= 138
    assert set(all_tasks()) <= set(fidec_ids)
    counts = {suite: len(fidec_gym.list_tasks(suite=suite)) for suite in ("ogbench", "visual", "d4rl", "toy")}
    assert counts == {"ogbench": 60, "visual": 54, "d4rl": 18, "toy": 6}


def test_registered_entry_points_and_horizons():
    for env_id, spec in all_tasks().items():
        registered = gym.spec(env_id)
        # Toy bandits end by termination after their one step: no TimeLimit, which would also truncate that step.
        assert registered.max_episode_steps == (None if spec.suite == "toy" else spec.horizon)
        assert registered.kwargs == {"task": spec.name}
        module = {
            "ogbench": "fidec_gym.envs.ogbench_env",
            "visual": "fidec_gym.envs.ogbench_env",
            "d4rl": "fidec_gym.envs.d4rl_env",
            "toy": "fidec_gym.envs.toy",
        }
        assert registered.entry_point.startswith(module[spec.suite] + ":")


@pytest.mark.parametrize(
    "env_id, task_index, is_default, horizon, category",
    [
        ("cube-single-play-singletask-v0", 2, True, 200, "cube-single"),
        ("fidec/cube-single-play-singletask-task2-v0", 2, True, 200, "cube-single"),
        ("fidec/cube-single-play-singletask-task3-v0", 3, False, 200, "cube-single"),
        ("fidec/antsoccer-arena-navigate-singletask-v0", 4, True, 1000, "antsoccer-arena"),
        ("fidec/puzzle-3x3-play-singletask-v0", 4, True, 500, "puzzle-3x3"),
        ("fidec/puzzle-4x4-play-singletask-v0", 4, True, 500, "puzzle-4x4"),
        ("fidec/humanoidmaze-large-navigate-singletask-task5-v0", 5, False, 2000, "humanoidmaze-large"),
        ("fidec/scene-play-singletask-v0", 2, True, 750, "scene"),
        ("fidec/visual-cube-double-play-singletask-task1-v0", 1, False, 500, "visual-cube-double"),
    ],
)
def test_task_info_ogbench(env_id, task_index, is_default, horizon, category):
    spec = fidec_gym.task_info(env_id)
    assert (spec.task_index, spec.is_default_task, spec.horizon, spec.category) == (
        task_index,
        is_default,
        horizon,
        category,
    )
    assert spec.metric == "success" and spec.normalizer == (0.0, 1.0)
    assert spec.normalized_score(1.0) == 100.0


def test_task_info_d4rl_and_toy():
    umaze = fidec_gym.task_info("antmaze-umaze-v2")
    assert (umaze.horizon, umaze.observation_shape, umaze.action_shape) == (700, (29,), (8,))
    assert fidec_gym.task_info("antmaze-large-diverse-v2").horizon == 1000
    pen = fidec_gym.task_info("pen-cloned-v1")
    assert (pen.horizon, pen.metric, pen.observation_shape, pen.action_shape) == (
        100,
        "normalized_return",
        (45,),
        (24,),
    )
    assert pen.normalized_score(96.262799) == pytest.approx(0.0)
    assert pen.normalized_score(3076.8331017826877) == pytest.approx(100.0)
    assert {fidec_gym.task_info(f"{hand}-human-v1").horizon for hand in ("door", "hammer", "relocate")} == {200}
    toy = fidec_gym.task_info("toy-bimodal-v0")
    assert (toy.source_name, toy.metric, toy.horizon) == ("T1", "value", 1)
    assert toy.normalized_score(toy.normalizer[1]) == pytest.approx(100.0)


def test_list_tasks_filters():
    antmaze = fidec_gym.list_tasks(category="d4rl-antmaze")
    assert len(antmaze) == 6 and all(env_id.startswith("fidec/antmaze-") for env_id in antmaze)
    assert len(fidec_gym.list_tasks(suite="ogbench", category="cube-single")) == 6
    visual_cube = fidec_gym.list_tasks(category="visual-cube-single")
    assert len(visual_cube) == 6 and all(fidec_gym.task_info(e).suite == "visual" for e in visual_cube)
    with pytest.raises(ValueError, match="unknown suite"):
        fidec_gym.list_tasks(suite="atari")
    with pytest.raises(ValueError, match="closest"):
        fidec_gym.list_tasks(category="cube-singel")


def test_unknown_id_suggests_close_names():
    with pytest.raises(fidec_gym.UnknownTaskError) as error:
        fidec_gym.task_info("fidec/cube-single-play-singletask-task9-v0")
    message = str(error.value)
    assert "Did you mean" in message and "cube-single-play-singletask-task" in message
    assert "fidec tasks" in message


def test_task_id_of_the_wrong_type_and_unknown_agent():
    with pytest.raises(fidec_gym.UnknownTaskError, match="a task ID is a string .* got int 42"):
        fidec_gym.task_info(42)
    with pytest.raises(fidec_gym.UnknownTaskError, match="unknown task ID ''"):
        fidec_gym.task_info("")
    with pytest.raises(KeyError, match="unknown agent 'fqll' .did you mean 'fql'"):
        fidec_gym.task_hyperparameters("fidec/toy-bimodal-v0", "fqll")
    assert fidec_gym.task_hyperparameters("fidec/toy-bimodal-v0", "fidec-official") == (
        fidec_gym.task_hyperparameters("fidec/toy-bimodal-v0", "fidec")
    )


@pytest.mark.parametrize(
    "env_id",
    [
        "fidec/toy-bimodal-v0",
        "fidec/antmaze-umaze-v2",
        "fidec/pen-human-v1",
        "fidec/cube-single-play-singletask-task2-v0",
    ],
)
def test_gym_make_names_an_unknown_keyword(env_id):
    with pytest.raises(ConfigError, match=f"gym.make\\('{env_id}'\\): unknown keyword argument 'colour'"):
        gym.make(env_id, colour="red")


def test_tasks_cli(capsys):
    assert main(["tasks", "--suite", "d4rl"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 18 and "fidec/pen-expert-v1" in lines

    assert main(["tasks", ""]) == 2  # an empty ID is an unknown task, not "list them all"
    assert "unknown task ID ''" in capsys.readouterr().err

    assert main(["tasks", "puzzle-4x4-play-singletask-v0"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["task_index"] == 4 and facts["horizon"] == 500 and facts["env_id"].startswith("fidec/")

    assert main(["tasks", "fidec/no-such-task-v0"]) == 2
    assert "unknown task ID" in capsys.readouterr().err


def test_task_hyperparameters_known_values():
    giant = fidec_gym.task_hyperparameters("fidec/antmaze-giant-navigate-singletask-task1-v0", "fidec")
    assert giant["discount"] == 0.995 and giant["q_agg"] == "min" and giant["target_divergence"] == 0.01

    puzzle = "fidec/puzzle-3x3-play-singletask-task4-v0"
    assert fidec_gym.task_hyperparameters(puzzle, "deflow")["target_divergence"] == 0.0005
    scripts = fidec_gym.task_hyperparameters(puzzle, "deflow", divergence_table="fidec_scripts")
    assert scripts["target_divergence"] == 0.005

    online = fidec_gym.task_hyperparameters("fidec/pen-cloned-v1", "fql", offline_to_online=True)
    assert online["alpha"] == 1000 and online["q_agg"] == "min"
    assert fidec_gym.task_hyperparameters("fidec/pen-cloned-v1", "fql")["alpha"] != 1000

    with pytest.raises(ValueError, match="divergence_table"):
        fidec_gym.task_hyperparameters(puzzle, "deflow", divergence_table="mine")


def test_import_is_light():
    """Registering the tasks must not import the simulators or JAX (string entry points)."""
    code = (
        "import sys, fidec_gym, gymnasium as gym\n"
        "assert sum(k.startswith('fidec/') for k in gym.registry) >= 138\n"
        "heavy = [m for m in ('mujoco', 'ogbench', 'jax', 'gymnasium_robotics', 'dm_control') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
