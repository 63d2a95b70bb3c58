"""D4RL tasks on Gymnasium-Robotics: env checker, observation layout, maze geometry, goal radius, scoring."""

import warnings

import gymnasium as gym
import gymnasium_robotics
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import fidec_gym
from fidec_gym.envs.d4rl_env import D4RL_MAZES, GOAL_RADIUS, D4RLAntMazeEnv, make_d4rl_env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
gym.register_envs(gymnasium_robotics)


@pytest.mark.parametrize("env_id", fidec_gym.list_tasks(suite="d4rl"))
def test_env_checker(env_id):
    spec = fidec_gym.task_info(env_id)
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    assert observation.shape == spec.observation_shape and observation.dtype == np.float32
    assert env.action_space.shape == spec.action_shape
    _, _, _, _, info = env.step(env.action_space.sample())
    assert isinstance(info["success"], float)
    assert env.get_wrapper_attr("task_metadata")["horizon"] == spec.horizon
    env.close()


def test_gymnasium_robotics_dict_observation_is_qpos_then_qvel():
    """Minari's antmaze data: concat(achieved_goal, observation) is D4RL's qpos[:15] + qvel[:14] layout."""
    env = gym.make("AntMaze_UMaze-v4")
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    ant = env.unwrapped.ant_env
    flat = np.concatenate([obs["achieved_goal"], obs["observation"]])
    np.testing.assert_allclose(flat, np.concatenate([ant.data.qpos[:15], ant.data.qvel[:14]]))


@pytest.mark.parametrize("frame", ["d4rl", "minari"])
def test_antmaze_observation_layout(frame):
    env = D4RLAntMazeEnv("medium", frame=frame)
    observation, _ = env.reset(seed=1)
    observation, *_ = env.step(env.action_space.sample())
    ant = env._ant
    np.testing.assert_allclose(observation[2:15], ant.data.qpos[2:15])  # z, quaternion, 8 joint angles
    np.testing.assert_allclose(observation[15:], ant.data.qvel[:14])
    np.testing.assert_allclose(observation[:2], env.agent_xy)
    assert np.linalg.norm(observation[3:7]) == pytest.approx(1.0)  # the torso quaternion


@pytest.mark.parametrize("maze", sorted(D4RL_MAZES))
def test_d4rl_frame_matches_d4rl_geometry(maze):
    """Every wall of D4RL's map sits at D4RL's xy = 4 (col - col_start, row - row_start); start at the origin."""
    env = D4RLAntMazeEnv(maze, frame="d4rl")
    layout = D4RL_MAZES[maze]
    start_row, start_col = next((r, line.index("r")) for r, line in enumerate(layout) if "r" in line)
    model = env._ant.model
    walls = {
        tuple(np.round(model.geom_pos[g][:2] + env._xy_offset, 6))
        for g in range(model.ngeom)
        if model.geom(g).name.startswith("block_")
    }
    expected = {
        (4.0 * (col - start_col), 4.0 * (row - start_row))
        for row, line in enumerate(layout)
        for col, symbol in enumerate(line)
        if symbol == "#"
    }
    assert walls == expected
    observation, info = env.reset(seed=0)
    assert np.all(np.abs(observation[:2]) <= 0.1)  # D4RL's U(-0.1, 0.1) reset noise around the origin
    goal_row, goal_col = next((r, line.index("g")) for r, line in enumerate(layout) if "g" in line)
    goal_centre = 4.0 * np.array([goal_col - start_col, goal_row - start_row])
    # D4RL's goal noise is U(0, 1) + U(0, 0.5) per axis, clipped at 0.
    assert np.all(info["goal"] >= goal_centre) and np.all(info["goal"] <= goal_centre + 1.5)
    # D4RL's ant: 10 Hz control and torque 30 x action.
    assert env._ant.dt == pytest.approx(0.1) and np.all(env._ant.model.actuator_gear[:, 0] == 30.0)
    np.testing.assert_allclose(env._ant.model.geom_solimp[:, :3], np.tile([0.8, 0.8, 0.01], (env._ant.model.ngeom, 1)))


def test_known_d4rl_goals():
    goals = {maze: D4RLAntMazeEnv(maze).cell_xy(D4RLAntMazeEnv(maze)._goal_cell) for maze in D4RL_MAZES}
    np.testing.assert_allclose(goals["umaze"], [0.0, 8.0], atol=1e-9)
    np.testing.assert_allclose(goals["medium"], [20.0, 20.0], atol=1e-9)
    np.testing.assert_allclose(goals["large"], [32.0, 24.0], atol=1e-9)


def test_minari_frame_uses_gymnasium_robotics_conventions():
    env = D4RLAntMazeEnv("large", frame="minari")
    assert env._ant.dt == pytest.approx(0.05) and np.all(env._ant.model.actuator_gear[:, 0] == 150.0)
    # Gymnasium-Robotics centres the map: cell (row, col) -> ((col + 0.5) 4 - 24, 18 - (row + 0.5) 4).
    np.testing.assert_allclose(env.cell_xy((7, 9)), [14.0, -12.0])
    _, info = env.reset(seed=0)
    assert np.all(np.abs(info["goal"] - [14.0, -12.0]) <= 0.25)


def test_goal_radius_is_half_a_metre():
    env = gym.make("fidec/antmaze-medium-play-v2")
    goal = np.array([20.0, 20.0])
    for offset, reached in [(GOAL_RADIUS - 0.02, True), (GOAL_RADIUS + 0.05, False)]:
        env.reset(seed=0, options={"goal_xy": goal, "start_xy": goal + [offset, 0.0]})
        # Stand still (zero torque) for one step; the ant barely moves in 0.1 s.
        _, reward, terminated, truncated, info = env.step(np.zeros(8, np.float32))
        moved = np.linalg.norm(env.unwrapped.agent_xy - goal) - offset
        assert abs(moved) < 0.02
        assert (reward, terminated, info["success"]) == ((1.0, True, 1.0) if reached else (0.0, False, 0.0))
    # Reaching the goal ends the episode with return 1 = normalised score 100.
    assert info.get("episode") is None
    env.reset(seed=0, options={"goal_xy": goal, "start_xy": goal})
    _, _, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert terminated and info["episode"] == {
        "r": 1.0,
        "l": 1,
        "success": 1.0,
        "metric": 1.0,
        "normalized_score": 100.0,
    }


def test_antmaze_timeout_scores_zero():
    env = make_d4rl_env("antmaze-umaze-v2", horizon=5)
    env.reset(seed=0)
    for _ in range(5):
        _, _, terminated, truncated, info = env.step(np.zeros(8, np.float32))
    assert truncated and not terminated
    assert info["episode"]["r"] == 0.0 and info["episode"]["normalized_score"] == 0.0 and info["episode"]["l"] == 5


def test_adroit_normalized_return():
    env = gym.make("fidec/door-cloned-v1", horizon=4)
    env.reset(seed=0)
    total = 0.0
    for _ in range(4):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
    assert truncated and info["episode_end"]
    low, high = -56.512833, 2880.5693087298737
    assert info["episode"]["r"] == pytest.approx(total)
    assert info["episode"]["normalized_score"] == pytest.approx(100 * (total - low) / (high - low))


def _drop_pen(env) -> None:
    """Move the pen's slide joint so that the pen lies below D4RL's 0.075 m drop height."""
    pen = env.unwrapped
    model, data = pen.model, pen.data
    # The pen's slide joints are in its rotated body frame: use the one that moves it vertically in the world.
    body_rotation = data.xmat[pen.obj_body_id].reshape(3, 3)
    slides = [model.joint(name) for name in ("OBJTx", "OBJTy", "OBJTz")]
    vertical_part = {joint.name: (body_rotation @ model.jnt_axis[joint.id])[2] for joint in slides}
    vertical = max(slides, key=lambda joint: abs(vertical_part[joint.name]))
    qpos = data.qpos.copy()
    qpos[vertical.qposadr[0]] -= 0.2 / vertical_part[vertical.name]  # 0.2 m down from its z = 0.25 on reset
    pen.set_state(qpos, data.qvel.copy())


def test_pen_drop_ends_episode():
    env = gym.make("fidec/pen-expert-v1")
    env.reset(seed=0)
    assert env.get_wrapper_attr("task_metadata")["pen_drop_termination"]
    _, _, terminated, _, _ = env.step(np.zeros(24, np.float32))
    assert not terminated  # a held pen does not end the episode
    _drop_pen(env)
    _, _, terminated, truncated, info = env.step(np.zeros(24, np.float32))
    pen = env.unwrapped
    assert pen.data.xpos[pen.obj_body_id][2] < 0.075
    assert terminated and not truncated and info["episode"]["l"] == 2

    kept = gym.make("fidec/pen-expert-v1", pen_drop_termination=False)
    kept.reset(seed=0)
    _drop_pen(kept)
    _, _, terminated, _, _ = kept.step(np.zeros(24, np.float32))
    assert not terminated


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="frame"):
        make_d4rl_env("antmaze-umaze-v2", frame="gym")
    with pytest.raises(ValueError, match="not a D4RL one"):
        make_d4rl_env("cube-single-play-singletask-v0")
    with pytest.raises(ValueError, match="horizon"):
        make_d4rl_env("pen-human-v1", horizon=0)


def test_antmaze_leaves_no_model_file_in_the_temp_directory():
    import tempfile
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).glob("ant_maze*.xml"))
    env = gym.make("fidec/antmaze-umaze-v2")
    env.reset(seed=0)
    env.close()
    assert set(Path(tempfile.gettempdir()).glob("ant_maze*.xml")) <= before
