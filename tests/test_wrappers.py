"""Wrappers: episode scoring in single and vector environments, frame stacking, action clipping, dtype casting."""

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AddRenderObservation, TimeLimit

import fidec_gym
from fidec_gym.envs.d4rl_env import D4RLAntMazeEnv, make_d4rl_env
from fidec_gym.envs.wrappers import ClipAction, EpisodeScore, Float32Observation, FrameStack, SeededGlobalRandom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

GOAL = np.array([20.0, 20.0])
AT_GOAL = {"goal_xy": GOAL, "start_xy": GOAL}  # reset options: the first step reaches the goal


def _antmaze(horizon: int = 1000) -> gym.Env:
    return gym.make("fidec/antmaze-medium-play-v2", horizon=horizon)


def test_episode_score_counts_and_resets():
    env = _antmaze(horizon=3)
    for _ in range(2):  # the second episode must not carry the first one's counters
        env.reset(seed=0)
        infos = [env.step(np.zeros(8, np.float32))[4] for _ in range(3)]
        assert "episode" not in infos[0] and "episode" not in infos[1]
        assert infos[2]["episode"] == {"r": 0.0, "l": 3, "success": 0.0, "metric": 0.0, "normalized_score": 0.0}
        assert infos[2]["episode_end"] is True


def test_episode_score_formulas_per_metric():
    d4rl = EpisodeScore(TimeLimit(D4RLAntMazeEnv("umaze"), 2), fidec_gym.task_info("pen-human-v1"))
    d4rl.reset(seed=0)
    d4rl._episode_return = 1586.548  # halfway between pen's references (96.26, 3076.83) after the last step adds 0
    summary = d4rl.episode_summary(success=None)
    assert "success" not in summary and summary["metric"] == pytest.approx(1586.548)  # unknown: absent, never NaN
    assert summary["normalized_score"] == pytest.approx(100 * (1586.548 - 96.262799) / (3076.8331017826877 - 96.262799))

    toy_spec = fidec_gym.task_info("toy-saddle-v0")  # normaliser (behaviour mean Q, best in-support Q)
    toy = EpisodeScore(TimeLimit(D4RLAntMazeEnv("umaze"), 1), toy_spec)
    toy.reset(seed=0)
    toy._episode_return = 1.0
    assert toy.episode_summary()["normalized_score"] == pytest.approx(100.0)
    toy._episode_return = toy_spec.normalizer[0]
    assert toy.episode_summary()["normalized_score"] == pytest.approx(0.0)

    ogbench = EpisodeScore(TimeLimit(D4RLAntMazeEnv("umaze"), 2), fidec_gym.task_info("cube-single-play-singletask-v0"))
    ogbench.reset(seed=0)
    assert ogbench.episode_summary(success=True) == {
        "r": 0.0,
        "l": 0,
        "success": 1.0,
        "metric": 1.0,
        "normalized_score": 100.0,
    }
    # A success metric without a success flag: the metric and the score are unknown too, so all three are absent.
    assert ogbench.episode_summary(success=None) == {"r": 0.0, "l": 0}
    assert ogbench.episode_summary(success=float("nan")) == {"r": 0.0, "l": 0}

    with pytest.raises(ValueError, match="unknown metric"):
        EpisodeScore(D4RLAntMazeEnv("umaze"), toy_spec.__class__(**{**toy_spec.__dict__, "metric": "reward"}))


@pytest.mark.parametrize("vector_class", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_episode_score_in_vector_envs(vector_class):
    """Gymnasium batches info["episode"] into arrays with an ``_episode`` mask; a finished and a running env."""
    # The entry point itself (not gym.make) so that spawned workers need no registration.
    fns = [functools.partial(make_d4rl_env, "antmaze-medium-play-v2", horizon=h) for h in (1000, 2)]
    kwargs = {"context": "spawn"} if vector_class is gym.vector.AsyncVectorEnv else {}
    envs = vector_class(fns, **kwargs)
    try:
        envs.reset(seed=0, options=AT_GOAL)
        _, rewards, terminated, truncated, infos = envs.step(np.zeros((2, 8), np.float32))
        # Both start on the goal: both terminate with return 1 and score 100.
        assert terminated.tolist() == [True, True] and rewards.tolist() == [1.0, 1.0]
        assert infos["_episode"].tolist() == [True, True]
        np.testing.assert_array_equal(infos["episode"]["normalized_score"], [100.0, 100.0])
        np.testing.assert_array_equal(infos["episode"]["l"], [1, 1])

        envs.reset(seed=1, options={"goal_xy": GOAL, "start_xy": GOAL + 3.0})  # far from the goal
        _, _, _, truncated, infos = envs.step(np.zeros((2, 8), np.float32))
        assert "episode" not in infos or not infos["_episode"].any()
        _, _, terminated, truncated, infos = envs.step(np.zeros((2, 8), np.float32))
        assert truncated.tolist() == [False, True] and not terminated.any()
        assert infos["_episode"].tolist() == [False, True]
        assert infos["episode"]["l"][1] == 2 and infos["episode"]["normalized_score"][1] == 0.0
        assert infos["episode_end"][1] and not infos["_episode_end"][0]
    finally:
        envs.close()


def test_frame_stack_layout():
    env = AddRenderObservation(D4RLAntMazeEnv("umaze", render_mode="rgb_array", width=16, height=12), render_only=True)
    stacked = FrameStack(env, num_frames=3)
    assert stacked.observation_space.shape == (12, 16, 9) and stacked.observation_space.dtype == np.uint8
    observation, _ = stacked.reset(seed=0)
    first = observation[..., :3]
    # After reset the reset frame fills the stack.
    np.testing.assert_array_equal(observation, np.concatenate([first] * 3, axis=-1))
    frames = [first]
    for _ in range(3):
        observation, *_ = stacked.step(np.ones(8, np.float32))
        frames.append(observation[..., 6:])
        assert stacked.observation_space.contains(observation)
    # Oldest first: the stack holds the last three frames in order.
    np.testing.assert_array_equal(observation, np.concatenate(frames[-3:], axis=-1))
    assert not np.array_equal(frames[0], frames[-1])  # the ant moved
    with pytest.raises(ValueError, match="image observations"):
        FrameStack(D4RLAntMazeEnv("umaze"))


def test_clip_action_keeps_bounds_and_clips():
    env = ClipAction(D4RLAntMazeEnv("umaze"))
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    env.reset(seed=0)
    env.step(np.full(8, 5.0))
    np.testing.assert_array_equal(env.unwrapped._ant.data.ctrl, np.ones(8))


def test_float32_observation():
    env = Float32Observation(D4RLAntMazeEnv("umaze"))
    observation, _ = env.reset(seed=0)
    assert observation.dtype == np.float32 and env.observation_space.dtype == np.float32
    np.testing.assert_allclose(observation, env.unwrapped._observation(), rtol=1e-6)
    with pytest.raises(ValueError, match="Box observation space"):
        Float32Observation(gym.make("AntMaze_UMaze-v4"))


def test_seeded_global_random_isolates_the_callers_stream():
    class GlobalNoise(gym.Env):
        """An environment that, like OGBench's mazes, draws its reset noise from np.random."""

        observation_space = gym.spaces.Box(-np.inf, np.inf, (2,))
        action_space = gym.spaces.Box(-1.0, 1.0, (1,))

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.random.uniform(size=2).astype(np.float32), {}

        def step(self, action):
            return np.random.uniform(size=2).astype(np.float32), 0.0, False, False, {}

    env = SeededGlobalRandom(GlobalNoise())
    np.random.seed(0)
    expected = np.random.rand(3)
    np.random.seed(0)
    first, _ = env.reset(seed=7)
    step_first = env.step(np.zeros(1))[0]
    np.testing.assert_array_equal(np.random.rand(3), expected)
    second, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(env.step(np.zeros(1))[0], step_first)
