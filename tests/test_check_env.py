"""Every registered ID passes Gymnasium's environment checker as ``gym.make`` returns it (wrappers included).

Checking ``env.unwrapped`` instead would miss what the registration and the wrappers add: a one-step ``TimeLimit``
on the toy bandits (every step both terminated and truncated) and a NaN ``success`` in ``info["episode"]`` (NaN never
equals itself, so the step-determinism check failed). The test also fails on any checker warning other than the
known upstream ones below.

One test per ID, so ``pytest -n 2`` spreads them. Building an OGBench manipulation environment takes one to two
seconds (OGBench compiles its MJCF model on the first reset), so the close check (which builds the environment a
second time, just to close it twice) runs once per category; the class it exercises is the same for every ID of a
category. The two pixel IDs render every observation (~0.1-0.3 s a frame on a CPU, ~60-110 frames per check) and are
marked slow.
"""

import re
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from fidec_gym.envs.catalogue import task_info
from fidec_gym.envs.registration import register_all

register_all()
FIDEC_IDS = sorted(key for key in gym.registry if key.startswith("fidec/"))
STATE_IDS = [env_id for env_id in FIDEC_IDS if not env_id.startswith("fidec/visual-")]
# Pixel observations are rendered on every reset and step (~0.3 s a frame on a CPU): a locomotion and a manipulation
# sample only.
VISUAL_IDS = ["fidec/visual-antmaze-large-navigate-singletask-v0", "fidec/visual-cube-single-play-singletask-v0"]


def _first_of_each_category(env_ids):
    seen, first = set(), set()
    for env_id in env_ids:
        category = task_info(env_id).category
        if category not in seen:
            seen.add(category)
            first.add(env_id)
    return first


# The pixel variants share their state twin's class (closing is the same), so they skip the close check too.
CLOSE_CHECKED = _first_of_each_category(STATE_IDS)

# Warnings that are not ours to fix:
# * the checker always notes that a made environment is wrapped (gym.make adds OrderEnforcing and PassiveEnvChecker;
#   checking the wrapped environment is the point of this test);
# * MuJoCo observations (OGBench, Gymnasium-Robotics) are unbounded by design: their Box is (-inf, inf), as in
#   Gymnasium's own MuJoCo environments.
ALLOWED_WARNINGS = (
    "is different from the unwrapped version",
    "observation space maximum value is infinity",
    "observation space minimum value is -infinity",
)
# * OGBench's manipulation environments build a new float32 action Box from float64 bounds on every read of
#   ``action_space`` (a property), including the random settling steps of each reset. Elsewhere this warning would be
#   ours (Float32Observation once raised it on every state task), so it is allowed for these categories only.
MANIPULATION_WARNINGS = ("Box low's precision lowered by casting", "Box high's precision lowered by casting")
MANIPULATION_CATEGORIES = ("cube-single", "cube-double", "scene", "puzzle-3x3", "puzzle-4x4")
# Warnings that always point at a real problem of ours (truncation, NaN in infos, non-determinism).
FORBIDDEN = re.compile(r"truncat|\bnan\b|determinis|not equal although similar", re.IGNORECASE)
# Library deprecation notices are not about our environments.
IGNORED_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _check(env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id)
        try:
            check_env(env, skip_render_check=True, skip_close_check=env_id not in CLOSE_CHECKED)
        finally:
            env.close()
    messages = [str(w.message) for w in caught if not issubclass(w.category, IGNORED_CATEGORIES)]
    bad = sorted({m for m in messages if FORBIDDEN.search(m)})
    assert not bad, f"{env_id}: the checker warns about a real problem: {bad}"
    allowed = ALLOWED_WARNINGS
    if task_info(env_id).category.removeprefix("visual-") in MANIPULATION_CATEGORIES:
        allowed += MANIPULATION_WARNINGS
    unexpected = sorted({m for m in messages if not any(text in m for text in allowed)})
    assert not unexpected, f"{env_id}: unexpected checker warnings: {unexpected}"


def test_ids_cover_the_catalogue():
    assert len(STATE_IDS) == 84 and all(env_id in FIDEC_IDS for env_id in VISUAL_IDS)
    assert {task_info(env_id).suite for env_id in STATE_IDS} == {"ogbench", "d4rl", "toy"}


# The slow pixel sample comes first, so that under ``pytest -n 2`` it starts early instead of running last, alone.
@pytest.mark.slow
@pytest.mark.parametrize("env_id", VISUAL_IDS)
def test_check_env_visual_sample(env_id):
    _check(env_id)


@pytest.mark.parametrize("env_id", STATE_IDS)
def test_check_env_as_made(env_id):
    _check(env_id)


def test_toy_step_terminates_without_truncation_or_nan():
    env = gym.make("fidec/toy-saddle-v0")
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated is True and truncated is False
    episode = info["episode"]
    assert "success" not in episode and "success" not in info  # toy tasks define no success: absent, not NaN
    assert episode["l"] == 1 and episode["r"] == episode["metric"] == reward
    assert episode["normalized_score"] == pytest.approx(task_info("fidec/toy-saddle-v0").normalized_score(reward))
    env.close()
