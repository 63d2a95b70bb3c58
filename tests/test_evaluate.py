"""Vector-env evaluation (fixed per-sub-env quotas, batching, determinism) and mp4 videos."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

# Keep this module's imports light: async workers import it (spawn) to rebuild CountdownEnv.
from fidec_gym.eval.run.evaluate import episode_quotas, evaluate


class CountdownEnv(gym.Env):
    """Episodes of a fixed length set by the seed of the first reset: seeds 0, 1, 2 give lengths 1, 5, 9.

    Reward 1 per step (return = length); success only in the length-1 variant. The vector env seeds sub-env i with
    ``seed + i``, so sub-envs differ in episode length: the case where counting "the first N episodes to finish"
    would over-count the short ones.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.length, self.t = 1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.length = 1 + (seed % 3) * 4
        self.t = 0
        return np.array([self.length], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        info = {"success": float(self.length == 1)} if done else {}
        return np.array([self.length], np.float32), 1.0, done, False, info


class RecordingPolicy:
    def __init__(self):
        self.shapes = []

    def __call__(self, observations):
        self.shapes.append(observations.shape)
        return np.zeros((len(observations), 1), np.float32)


def test_quota_split():
    assert episode_quotas(50, 16).tolist() == [4, 4] + [3] * 14
    assert episode_quotas(5, 2).tolist() == [3, 2] and episode_quotas(4, 4).sum() == 4


def test_each_sub_env_runs_exactly_its_quota():
    policy = RecordingPolicy()
    result = evaluate(policy, CountdownEnv, num_episodes=12, seed=0, num_workers=3, vectorization="sync")
    assert result["quotas"] == [4, 4, 4]
    assert [result["episode_env_index"].count(i) for i in range(3)] == [4, 4, 4]
    # Equal weight per sub-env: mean length (1 + 5 + 9) / 3, not biased towards the short episodes.
    assert result["length"] == pytest.approx(5.0) and result["return"] == pytest.approx(5.0)
    assert result["success"] == pytest.approx(1 / 3)
    assert sorted(set(result["episode_length"])) == [1.0, 5.0, 9.0]
    # One batched policy call per vector step, until the slowest sub-env finished its quota (4 x 9 steps).
    assert len(policy.shapes) == 36 and set(policy.shapes) == {(3, 1)}


def test_async_workers_with_uneven_quotas():
    result = evaluate(RecordingPolicy(), CountdownEnv, num_episodes=5, seed=0, num_workers=2)
    assert result["quotas"] == [3, 2]
    assert result["episode_length"] == [1.0, 1.0, 1.0, 5.0, 5.0]
    assert result["length"] == pytest.approx(13 / 5)


@pytest.fixture(scope="module")
def toy_agent():
    from fidec_gym.agents import make_agent
    from fidec_gym.envs.toy import toy_dataset_arrays

    arrays = toy_dataset_arrays("T1", 64, seed=0)
    return make_agent("bc", 0, {k: arrays[k][:4] for k in arrays}, {"actor_hidden_dims": (64, 64)})


def test_agent_evaluation_is_deterministic_given_the_seed(toy_agent):
    first = evaluate(toy_agent, "fidec/toy-bimodal-v0", 6, seed=3, temperature=1.0)
    again = evaluate(toy_agent, "fidec/toy-bimodal-v0", 6, seed=3, temperature=1.0)
    other = evaluate(toy_agent, "fidec/toy-bimodal-v0", 6, seed=4, temperature=1.0)
    assert first["episode_return"] == again["episode_return"]
    assert first["episode_return"] != other["episode_return"]
    # The toy score is the catalogue normaliser applied to Q(a) = the one-step return.
    low, high = (0.217, 1.0)
    expected = [100 * (r - low) / (high - low) for r in first["episode_return"]]
    np.testing.assert_allclose(first["episode_normalized_score"], expected, rtol=1e-6)


def test_toy_tasks_have_no_video(tmp_path, toy_agent):
    from fidec_gym.eval.run.video import VideoUnavailableError

    with pytest.raises(VideoUnavailableError, match="toy"):
        evaluate(toy_agent, "fidec/toy-bimodal-v0", 1, seed=0, video_dir=tmp_path, video_episodes=1)


def test_bad_settings_are_named_before_any_worker_starts(tmp_path, toy_agent, capsys):
    from fidec_gym.cli import main
    from fidec_gym.errors import ConfigError

    for kwargs, message in [
        ({"num_episodes": 0}, r"num_episodes \(--episodes\) must be a whole number >= 1, got 0"),
        ({"num_workers": 0}, r"num_workers \(--workers\) must be a whole number >= 1"),
        ({"temperature": float("nan")}, r"temperature \(--temperature\) must be a finite number >= 0, got nan"),
        ({"video_episodes": -1}, r"video_episodes \(--videos\) must be a whole number >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            evaluate(toy_agent, "fidec/toy-bimodal-v0", **{"num_episodes": 2, "seed": 0, **kwargs})
    assert main(["bench", "eval", "--repeats", "0", "--out", str(tmp_path / "bench")]) == 2
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err
    assert main(["bench", "eval", "--agent", "nope", "--out", str(tmp_path / "bench")]) == 2
    assert "unknown agent 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_bench_eval_times_the_three_layouts_on_the_same_episodes():
    from fidec_gym.eval.bench.evaluation import measure

    rows = measure("fidec/toy-bimodal-v0", episodes=5, workers=2, repeats=1, agent="bc")
    assert [(r["layout"], r["processes"], r["sub_envs"]) for r in rows] == [
        ("one env", 1, 1),
        ("processes", 2, 2),
        ("side by side", 1, 5),
    ]
    assert {r["env_steps"] for r in rows} == {5}  # one-step bandit episodes: every layout played the same five
    assert all(r["policy"] == "bc" and r["episodes_per_s"] == pytest.approx(5 / r["seconds"]) for r in rows)


def test_mujoco_evaluation_and_mp4(tmp_path):
    import imageio.v2 as imageio

    from fidec_gym.eval.run.video import video_name

    env_id = "fidec/cube-single-play-singletask-task2-v0"
    policy = lambda observations: np.zeros((len(observations), 5), np.float32)  # noqa: E731
    result = evaluate(
        policy,
        env_id,
        2,
        seed=0,
        num_workers=1,
        env_kwargs={"max_episode_steps": 3},
        video_dir=tmp_path,
        video_episodes=1,
        frame_skip=2,
        agent_name="zero",
        step=7,
    )
    assert result["episode_length"] == [3.0, 3.0] and result["success"] == 0.0
    assert result["normalized_score"] == 0.0  # OGBench: 100 x success
    assert result["videos"] == [str(tmp_path / video_name(env_id, "zero", 0, 7, 0))]
    assert result["videos"][0].endswith("cube-single-play-singletask-task2-v0_zero_seed0_step7_ep0.mp4")
    frames = imageio.mimread(result["videos"][0])
    # frame_skip 2 keeps the reset frame, every 2nd step and the last step: t = 0, 2, 3.
    assert len(frames) == 3 and frames[0].ndim == 3 and frames[0].shape[-1] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [video_name(env_id, "zero", 0, 7, 0)]  # no temp files


def test_writing_a_video_after_jax_started_gives_no_fork_warning(tmp_path):
    import warnings

    import jax.numpy as jnp

    from fidec_gym.eval.run.video import write_mp4

    jnp.ones(3).block_until_ready()  # JAX's threads run, so a plain fork would warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = write_mp4([np.zeros((16, 16, 3), np.uint8)] * 3, tmp_path / "v.mp4")
    assert path.stat().st_size > 0
    assert not [w for w in caught if "os.fork" in str(w.message)]


def test_state_task_videos_render_without_shadows_and_leave_the_physics_alone():
    from fidec_gym.envs.registration import register_all
    from fidec_gym.eval.run.video import _without_shadows

    register_all()
    env_id = "fidec/cube-single-play-singletask-task2-v0"
    plain, shadowless = gym.make(env_id), gym.make(env_id)
    assert plain.unwrapped.model.light_castshadow.any()  # the scene has shadow-casting lights to switch off
    _without_shadows(shadowless)
    assert not shadowless.unwrapped.model.light_castshadow.any()
    assert plain.unwrapped.model.light_castshadow.any()  # each environment has its own model
    action = np.full(5, 0.3, np.float32)
    observations = [env.reset(seed=3)[0] for env in (plain, shadowless)]
    observations += [env.step(action)[0] for env in (plain, shadowless)]
    np.testing.assert_array_equal(observations[0], observations[1])
    np.testing.assert_array_equal(observations[2], observations[3])
    plain.close()
    shadowless.close()


def test_a_kept_recorder_is_reused_and_renders_the_frames_of_a_fresh_one(tmp_path):
    """A grid worker keeps its video environment for its next cell, like its evaluators: a recording in the reused
    environment must show exactly what a fresh environment would."""
    import imageio.v2 as imageio

    from fidec_gym.eval.run import video
    from fidec_gym.eval.run.evaluate import keep_evaluators

    weights = np.random.default_rng(0).normal(size=(28, 5)) * 0.3
    policy = lambda observations: np.tanh(observations @ weights)  # noqa: E731

    def record(folder, seed):
        env_id = "fidec/cube-single-play-singletask-task2-v0"
        [path] = video.record_episodes(policy, env_id, 1, tmp_path / folder, seed=seed, max_episode_steps=4, size=48)
        return np.stack(imageio.mimread(path))

    expected = record("fresh", seed=5)
    assert video._kept_recorder is None  # keeping is off by default: closed after the recording
    keep_evaluators()
    try:
        record("other", seed=3)  # another run's episode leaves the environment elsewhere
        kept = video._kept_recorder[1]
        frames = record("kept", seed=5)
        assert video._kept_recorder[1] is kept  # the second recording reused it
        np.testing.assert_array_equal(frames, expected)
    finally:
        keep_evaluators(False)
    assert video._kept_recorder is None  # turning keeping off closes it


def test_a_kept_evaluator_is_reused_and_gives_the_results_of_a_fresh_one():
    """A grid worker keeps its evaluators for its next cell: the reused environments must play exactly the episodes
    a fresh evaluator would (each evaluation resets every sub-environment with its own seed)."""
    from fidec_gym.eval.run import evaluate as evaluation
    from fidec_gym.eval.run.evaluate import keep_evaluators, open_evaluator, release_evaluator

    env_id, kwargs = "fidec/cube-single-play-singletask-task2-v0", {"max_episode_steps": 15}
    weights = np.random.default_rng(0).normal(size=(28, 5)) * 0.3

    def play(evaluator, seed):
        seen = []

        def policy(observations):
            seen.append(np.array(observations))
            return np.tanh(observations @ weights)  # depends on the state: any drift in the physics shows

        result = evaluator.run(policy, 2, seed)
        return result["episode_return"], np.stack(seen)

    fresh = open_evaluator(env_id, 2, "sync", kwargs)
    expected = play(fresh, seed=5)
    release_evaluator(fresh)  # keeping is off by default: closed
    assert fresh.envs.closed and evaluation._kept is None

    keep_evaluators()
    try:
        first = open_evaluator(env_id, 2, "sync", kwargs)
        play(first, seed=3)  # another run's episodes leave the environments elsewhere
        release_evaluator(first)
        again = open_evaluator(env_id, 2, "sync", kwargs)
        assert again is first
        returns, observations = play(again, seed=5)
        assert returns == expected[0]
        np.testing.assert_array_equal(observations, expected[1])
        other = open_evaluator(env_id, 1, "sync", kwargs)  # another layout: its own environments
        assert other is not again
        release_evaluator(other)
        release_evaluator(again)
        assert not again.envs.closed
    finally:
        keep_evaluators(False)
    assert again.envs.closed and other.envs.closed  # turning keeping off closes what was kept


def test_an_interrupted_evaluator_is_not_kept():
    from fidec_gym.eval.run import evaluate as evaluation

    evaluation.keep_evaluators()
    try:
        evaluator = evaluation.open_evaluator("fidec/toy-bimodal-v0", 1, "sync")

        def broken(observations):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            evaluator.run(broken, 1, seed=0)
        evaluation.release_evaluator(evaluator)
        assert evaluation.open_evaluator("fidec/toy-bimodal-v0", 1, "sync") is not evaluator
        for n in range(1, evaluation.KEPT_EVALUATORS_MAX + 2):  # only the newest few stay open
            evaluation.release_evaluator(evaluation.open_evaluator("fidec/toy-bimodal-v0", n, "sync"))
        assert len(evaluation._kept) == evaluation.KEPT_EVALUATORS_MAX
    finally:
        evaluation.keep_evaluators(False)
    assert evaluation._kept is None


def test_a_kept_evaluator_whose_worker_died_is_replaced():
    from fidec_gym.eval.run import evaluate as evaluation

    evaluation.keep_evaluators()
    try:
        evaluator = evaluation.open_evaluator("fidec/toy-bimodal-v0", 2, "async")
        evaluation.release_evaluator(evaluator)
        evaluator.envs.processes[1].kill()  # e.g. the OOM killer
        evaluator.envs.processes[1].join(5)
        fresh = evaluation.open_evaluator("fidec/toy-bimodal-v0", 2, "async")
        assert fresh is not evaluator and evaluator.envs.closed
        result = fresh.run(lambda observations: np.zeros((len(observations), 2)), 4, seed=0)
        assert result["num_episodes"] == 4
        evaluation.release_evaluator(fresh)
    finally:
        evaluation.keep_evaluators(False)
