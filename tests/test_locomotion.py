"""Locomotion data made here: SAC experts (train, resume, provenance), the OGBench navigate and D4RL antmaze
generators (seeding, format, frames) and their errors. Tiny runs only; needs stable-baselines3 (the `experts` extra)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from fidec_gym.cli import main as cli  # noqa: E402
from fidec_gym.errors import FidecError  # noqa: E402

warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
    """A 120-step expert: useless as a controller, but a real stable-baselines3 SAC zip with provenance."""
    from fidec_gym.envs.locomotion.expert_training import train_expert

    out = tmp_path_factory.mktemp("expert") / "ant"
    train_expert(
        "ant",
        steps=120,
        seed=3,
        out=out,
        eval_every=60,
        eval_episodes=1,
        checkpoint_every=60,
        learning_starts=40,
        max_episode_steps=30,
        progress=False,
        command="pytest",
    )
    return out


def test_training_saves_resumes_and_records_provenance(expert_dir):
    from fidec_gym.envs.locomotion.expert_training import train_expert

    info = json.loads((expert_dir / "expert.json").read_text())
    assert info["steps"] == 120 and info["seed"] == 3 and info["name"] == "ant"
    assert info["ogbench_id"] == "online-ant-xy-v0" and info["library"]["stable-baselines3"]
    assert [e["step"] for e in info["evaluations"]] == [60, 120]
    assert info["final_evaluation"]["episodes"] == 1 and np.isfinite(info["final_evaluation"]["mean_return"])
    assert info["sessions"][0]["command"] == "pytest" and info["wall_seconds"] > 0
    assert (expert_dir / "checkpoint" / "replay_buffer.pkl").is_file()
    with pytest.raises(FidecError, match="--resume"):
        train_expert("ant", steps=150, out=expert_dir, progress=False)
    resumed = expert_dir.parent / "resumed"
    import shutil

    shutil.copytree(expert_dir, resumed)
    train_expert(
        "ant",
        steps=150,
        seed=3,
        out=resumed,
        eval_every=1000,
        eval_episodes=1,
        checkpoint_every=1000,
        learning_starts=40,
        max_episode_steps=30,
        progress=False,
        resume=True,
        command="pytest resume",
    )
    info = json.loads((resumed / "expert.json").read_text())
    assert info["steps"] == 150 and len(info["sessions"]) == 2 and info["sessions"][1]["from_step"] == 120
    assert info["evaluations"][-1]["step"] == 150
    assert info["wall_seconds"] >= json.loads((expert_dir / "expert.json").read_text())["wall_seconds"]


def test_numpy_policy_matches_stable_baselines3(expert_dir):
    from stable_baselines3 import SAC

    from fidec_gym.envs.locomotion.experts import load_expert

    policy = load_expert(expert_dir, "ant", observation_dim=29, action_dim=8)
    model = SAC.load(str(expert_dir / "expert.zip"), device="cpu")
    observations = np.random.default_rng(0).normal(size=(16, 29)).astype(np.float32)
    expected, _ = model.predict(observations, deterministic=True)
    np.testing.assert_allclose(policy(observations), expected, atol=1e-5)


def test_online_task_is_seeded():
    from fidec_gym.envs.locomotion.online import make_online_env

    def run():
        env = make_online_env("ant")
        ob, _ = env.reset(seed=5)
        total = 0.0
        for _ in range(150):  # crosses a direction resample at step 100
            ob, reward, *_ = env.step(np.full(8, 0.3, dtype=np.float32))
            total += reward
        return ob, total

    (a, ra), (b, rb) = run(), run()
    assert np.array_equal(a, b) and ra == rb and a.shape == (29,) and abs(np.linalg.norm(a[-2:]) - 1) < 1e-6


def test_subgoal_oracle_matches_ogbench_and_q_iteration_is_shortest():
    from fidec_gym.envs.locomotion.mazes import bfs_distances, free_cells, oracle_subgoal_cell, q_iteration_path
    from fidec_gym.envs.locomotion.navigate import _make_maze_env

    env = _make_maze_env("antmaze-large-v0", 10)
    maze, grid = env.unwrapped, np.asarray(env.unwrapped.maze_map)
    cells, rng = free_cells(grid), np.random.default_rng(0)
    for _ in range(100):
        start, goal = cells[rng.integers(len(cells))], cells[rng.integers(len(cells))]
        xy = np.array(maze.ij_to_xy(start)) + rng.uniform(-1.9, 1.9, 2)
        reference, _ = maze.get_oracle_subgoal(xy, np.array(maze.ij_to_xy(goal)))
        ours = maze.ij_to_xy(oracle_subgoal_cell(grid, maze.xy_to_ij(xy), goal))
        np.testing.assert_allclose(reference, ours)
        path = q_iteration_path(grid, start, goal)
        assert path[0] == start and path[-1] == goal and len(path) - 1 == bfs_distances(grid, goal)[start]
    env.close()


def _arrays(path):
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def test_navigate_same_data_for_one_and_two_workers_and_sound_format(expert_dir, tmp_path):
    import fidec_gym
    from fidec_gym.envs.locomotion.navigate import generate_navigate_dataset

    one = generate_navigate_dataset(
        "antmaze-large-navigate",
        2,
        tmp_path / "w1",
        workers=1,
        seed=7,
        expert=expert_dir,
        max_episode_steps=20,
        progress=False,
    )
    two = generate_navigate_dataset(
        "antmaze-large-navigate-v0",
        2,
        tmp_path / "w2",
        workers=2,
        seed=7,
        expert=expert_dir / "expert.zip",
        max_episode_steps=20,
        progress=False,
    )
    for a, b in zip(one, two):
        arrays_a, arrays_b = _arrays(a), _arrays(b)
        assert arrays_a.keys() == arrays_b.keys()
        for key in arrays_a:
            np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    other_seed = generate_navigate_dataset(
        "antmaze-large-navigate", 2, tmp_path / "s8", seed=8, expert=expert_dir, max_episode_steps=20, progress=False
    )
    assert not np.array_equal(_arrays(other_seed[0])["qpos"], _arrays(one[0])["qpos"])

    train = _arrays(one[0])
    spec = fidec_gym.task_info("fidec/antmaze-large-navigate-singletask-v0")
    assert set(train) == {"observations", "actions", "terminals", "qpos", "qvel"}
    assert train["observations"].dtype == np.float32 and train["observations"].shape == (40,) + tuple(
        spec.observation_shape
    )
    assert train["actions"].shape == (40,) + tuple(spec.action_shape) and np.abs(train["actions"]).max() <= 1
    assert train["terminals"].dtype == bool and np.flatnonzero(train["terminals"]).tolist() == [19, 39]
    assert train["qpos"].shape == (40, 15) and train["qvel"].shape == (40, 14)
    np.testing.assert_allclose(train["observations"][:, :15], train["qpos"], atol=1e-6)
    assert len(_arrays(one[1])["terminals"]) == 20  # one validation episode

    sidecar = json.loads((tmp_path / "w1" / "antmaze-large-navigate-v0.meta.json").read_text())
    assert sidecar["provenance"] == "generated" and sidecar["expert"]["sha256"]
    data = fidec_gym.load_dataset("fidec/antmaze-large-navigate-singletask-v0", path=tmp_path / "w1")
    assert data.metadata["provenance"] == "generated" and len(data["observations"]) == 38
    assert cli(["data", "check", str(one[0])]) == 0


def test_d4rl_antmaze_file_in_the_d4rl_frame(expert_dir, tmp_path):
    import fidec_gym
    from fidec_gym.envs.d4rl_env import D4RLAntMazeEnv
    from fidec_gym.envs.locomotion.d4rl_antmaze import (
        D4RLAntmazeEpisodes,
        generate_d4rl_antmaze_dataset,
        layout_map,
        start_and_goal_cells,
    )
    from fidec_gym.envs.locomotion.experts import load_expert

    path = generate_d4rl_antmaze_dataset(
        "antmaze-large-diverse", 2, tmp_path, workers=1, seed=1, expert=expert_dir, max_episode_steps=25, progress=False
    )
    again = generate_d4rl_antmaze_dataset(
        "antmaze-large-diverse-v2",
        2,
        tmp_path / "w2",
        workers=2,
        seed=1,
        expert=expert_dir,
        max_episode_steps=25,
        progress=False,
    )
    import h5py

    with h5py.File(path, "r") as f, h5py.File(again, "r") as g:
        assert {"observations", "actions", "rewards", "terminals", "timeouts", "infos"} <= set(f)
        assert set(f["infos"]) == {"goal", "qpos", "qvel"}
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", "infos/goal"):
            np.testing.assert_array_equal(f[key][()], g[key][()])
        observations, timeouts, goals = f["observations"][()], f["timeouts"][()], f["infos/goal"][()]
    assert observations.shape == (50, 29) and np.flatnonzero(timeouts).tolist() == [24, 49]

    data = fidec_gym.load_dataset("fidec/antmaze-large-diverse-v2", path=tmp_path)
    assert data.metadata["provenance"] == "generated" and data.metadata["source_format"] == "d4rl-hdf5"
    assert len(data["observations"]) == 48  # the time-out row of each episode has no next state
    driver = D4RLAntmazeEpisodes("antmaze-large-diverse-v2", load_expert(expert_dir, "ant"), horizon=5)
    grid = layout_map("large")
    cells = [driver.xy_to_cell(xy) for xy in data["observations"][:, :2]]
    assert all(grid[cell] == 0 for cell in cells), "positions must lie in the maze's free cells"
    starts, goal_cells = start_and_goal_cells("antmaze-large-diverse-v2")
    assert {driver.xy_to_cell(g) for g in goals} <= set(goal_cells)
    assert driver.xy_to_cell(observations[0, :2]) in starts
    env = D4RLAntMazeEnv("large", frame="d4rl")  # the frame the loader's default environment uses
    np.testing.assert_allclose(env.cell_xy((1, 1)), [0.0, 0.0])
    assert driver.xy_to_cell(env.cell_xy((7, 9))) == (7, 9)
    env.close()
    driver.close()
    assert cli(["data", "check", str(path)]) == 0


def test_bad_expert_paths(expert_dir, tmp_path, capsys):
    from fidec_gym.envs.locomotion.experts import ExpertError, ExpertNotFoundError, load_expert

    with pytest.raises(ExpertNotFoundError, match="fidec experts train ant"):
        load_expert(tmp_path / "missing.zip", "ant")
    with pytest.raises(ExpertNotFoundError, match="fidec experts train ant"):
        load_expert(tmp_path, "ant")  # a directory without expert.zip
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(ExpertError, match="not a readable stable-baselines3"):
        load_expert(corrupt, "ant")
    with pytest.raises(ExpertError, match="69-d observations"):
        load_expert(expert_dir, "humanoid", observation_dim=69, action_dim=21)
    code = cli(
        [
            "data",
            "generate",
            "antmaze-large-navigate",
            "--episodes",
            "1",
            "--out",
            str(tmp_path),
            "--expert",
            str(corrupt),
            "--no-progress",
        ]
    )
    assert code == 2 and "not a readable stable-baselines3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experts", "train", "ant", "--learning-starts", "-1"], "learning_starts (--learning-starts) must be >= 0"),
        (["experts", "train", "ant", "--max-episode-steps", "0"], "max_episode_steps (--max-episode-steps) must be"),
        (["experts", "train", "ant", "--out", "{file}"], "is a file, not a directory"),
        (["experts", "export", "{run}"], "the checkpoint cannot be read"),
        (["experts", "list", "--dir", "{tmp}/missing"], "--dir {tmp}/missing does not exist"),
        (["experts", "list", "--dir", "{file}"], "is a file, not a directory"),
        (["experts", "evaluate", "antmaze-large-navigate", "--noise", "-1"], "noise must be a finite number >= 0"),
        (["data", "generate", "antmaze-large-navigate", "--noise", "nan", "--out", "{tmp}"], "got nan"),
        (["data", "generate", "antmaze-umaze", "--seed", "-1", "--out", "{tmp}"], "seed must be a whole number >= 0"),
    ],
)
def test_bad_settings_are_named_before_any_work(tmp_path, capsys, argv, message):
    file, run = tmp_path / "a-file", tmp_path / "run"
    file.write_text("")
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "model.zip").write_bytes(b"not a zip")  # and no state.json
    fill = {"file": str(file), "run": str(run), "tmp": str(tmp_path)}
    assert cli([arg.format(**fill) for arg in argv]) == 2
    error = capsys.readouterr().err
    assert message.format(**fill) in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "run"]  # nothing was written


def test_missing_humanoid_expert_names_the_training_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIDEC_EXPERTS_DIR", str(tmp_path / "none"))
    code = cli(["data", "generate", "humanoidmaze-medium-navigate", "--episodes", "1", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2 and "fidec experts train humanoid" in error
    assert not list(tmp_path.glob("*.npz"))


def test_experts_list_shows_shipped_and_user_experts(expert_dir, monkeypatch, capsys):
    from fidec_gym.envs.locomotion.experts import SHIPPED_DIR, list_experts

    monkeypatch.setenv("FIDEC_EXPERTS_DIR", str(expert_dir.parent))
    rows = list_experts()
    user = [r for r in rows if r["origin"] == "user"]
    assert user and user[0]["steps"] == 120 and user[0]["status"] == "ready"
    shipped = [r for r in rows if r["origin"] == "shipped"]
    assert shipped == [] or shipped[0]["path"].startswith(str(SHIPPED_DIR))
    assert cli(["experts", "list"]) == 0
    assert "user" in capsys.readouterr().out


def test_shipped_ant_expert_loads():
    from fidec_gym.envs.locomotion.experts import SHIPPED_DIR, load_expert

    if not (SHIPPED_DIR / "ant" / "expert.zip").is_file():
        pytest.skip("no shipped ant expert in this checkout")
    policy = load_expert(None, "ant", observation_dim=29, action_dim=8)
    info = json.loads((SHIPPED_DIR / "ant" / "expert.json").read_text())
    assert policy.sha256 == info["sha256"] and info["steps"] > 0
    assert policy(np.zeros(29)).shape == (8,)
