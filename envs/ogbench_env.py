"""OGBench single-task environments (state and pixel) behind fidec-gym IDs.

The environment comes from ``ogbench.make_env_and_datasets(name, env_only=True, ...)`` — never the dataset path,
so nothing is downloaded — and keeps OGBench's own time limit (the catalogue horizon). On top of it:

* :class:`~envs.wrappers.SeededGlobalRandom`, because OGBench's maze resets draw from NumPy's global generator;
* :class:`~envs.wrappers.ClipAction`, so out-of-box actions are clipped rather than passed to the simulator;
* :class:`~envs.wrappers.Float32Observation` for state tasks (locomotion returns float64, datasets are float32);
* :class:`~envs.wrappers.EpisodeScore`, which reports success and ``100 x success`` at the end of an episode.

``info["success"]`` is a float on every step (OGBench's manipulation environments report a bool).
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import gymnasium as gym

from fidec_gym.envs.catalogue import TaskSpec, task_info
from fidec_gym.envs.wrappers import (
    ClipAction,
    EpisodeScore,
    Float32Observation,
    SeededGlobalRandom,
    SuccessAsFloat,
    naming_unknown_keywords,
)
from fidec_gym.errors import ConfigError, FidecError

# Two harmless gymnasium warnings about OGBench's environments, filtered here at their source: OGBench builds its
# action Box from float64 bounds on every access (the float32 cast loses nothing in [-1, 1]), and its environments
# render rgb_array frames without declaring render_modes.
warnings.filterwarnings(
    "ignore", message=r".*Box (low|high)'s precision lowered by casting to float32", category=UserWarning
)
warnings.filterwarnings(
    "ignore", message=r".*initialised with render_mode='rgb_array' that is not in the possible render_modes \(\[\]\)"
)

SUCCESS_TIMINGS = ("pre", "post")
GL_HELP = (
    "MuJoCo offscreen rendering needs a GL backend. Set MUJOCO_GL=egl before importing mujoco/ogbench and install "
    "the EGL libraries (Debian/Ubuntu: apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 "
    "libglx-mesa0), or use MUJOCO_GL=osmesa with libosmesa6."
)
# Substrings of the errors MuJoCo/PyOpenGL raise when no usable GL platform is available.
_GL_ERROR_MARKERS = ("opengl", "egl", "osmesa", "glfw", "gladload", "platform library", "gl context")


class RenderBackendError(FidecError, RuntimeError):
    """No working GL backend for MuJoCo's offscreen renderer."""


def _looks_like_gl_error(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _GL_ERROR_MARKERS)


def _check_gl_backend() -> None:
    backend = os.environ.get("MUJOCO_GL", "")
    if backend not in ("egl", "osmesa", "glfw", "glx", "cgl", "wgl"):
        raise RenderBackendError(f"MUJOCO_GL={backend!r} cannot render offscreen. {GL_HELP}")


def make_ogbench_env(
    task: str,
    success_timing: str = "pre",
    render_mode: Optional[str] = None,
    width: int = 64,
    height: int = 64,
    horizon: Optional[int] = None,
    **kwargs,
) -> gym.Env:
    """Make the OGBench single-task environment of catalogue task ``task``.

    Args:
        task: catalogue name (with or without ``fidec/``), e.g. ``"cube-single-play-singletask-task2-v0"``.
        success_timing: ``"pre"`` (OGBench >= 1.2: reward/success/termination from the state before the action,
            matching the dataset labels) or ``"post"`` (OGBench 1.1, the FQL-era numbers: the state after it).
            Recorded in ``env.get_wrapper_attr("task_metadata")`` so results can store it.
        render_mode: ``"rgb_array"`` to allow ``env.render()`` (state tasks too, e.g. for videos).
        width, height: render size; pixel tasks observe 64 x 64 frames.
        horizon: episode length; None keeps the catalogue horizon. (``gym.make(id, max_episode_steps=...)`` adds a
            time limit *outside* the episode statistics, which then never see the cut; pass ``horizon=`` instead.)
        **kwargs: passed to the OGBench environment constructor (e.g. ``terminate_at_goal``).

    Pixel (``visual-*``) tasks render while they are built, so they need a GL backend (``MUJOCO_GL=egl``).
    """
    spec: TaskSpec = task_info(task)
    if spec.suite not in ("ogbench", "visual"):
        raise ConfigError(f"{spec.env_id} is a {spec.suite!r} task, not an OGBench one; make it with gym.make(...)")
    if success_timing not in SUCCESS_TIMINGS:
        raise ConfigError(f"success_timing must be one of {SUCCESS_TIMINGS}, got {success_timing!r}")
    if render_mode not in (None, "rgb_array"):
        raise ConfigError(f"render_mode must be None or 'rgb_array' (offscreen), got {render_mode!r}")
    if spec.suite == "visual" and (width, height) != (64, 64):
        raise ConfigError(f"{spec.env_id} observes 64x64 frames (the datasets' size); width/height must be 64")

    needs_gl = spec.suite == "visual" or render_mode is not None
    if needs_gl:
        _check_gl_backend()

    import ogbench  # heavy (MuJoCo, dm_control): imported only when an environment is made

    horizon = spec.horizon if horizon is None else int(horizon)
    if horizon < 1:
        raise ConfigError(f"horizon must be a positive number of steps, got {horizon}")
    env_kwargs = dict(success_timing=success_timing, width=width, height=height, max_episode_steps=horizon, **kwargs)
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    try:
        # The outer gym.make already adds Gymnasium's passive checker; a second one only costs time.
        with naming_unknown_keywords(spec.env_id, kwargs):
            env = ogbench.make_env_and_datasets(spec.source_name, env_only=True, disable_env_checker=True, **env_kwargs)
    except Exception as error:  # translate a missing GL platform into an actionable message
        if needs_gl and _looks_like_gl_error(error):
            raise RenderBackendError(f"could not build {spec.env_id}: {error}. {GL_HELP}") from error
        raise

    registered = gym.spec(env.spec.id).max_episode_steps if env.spec is not None else spec.horizon
    if registered != spec.horizon:
        raise RuntimeError(
            f"OGBench registers {spec.source_name} with {registered} steps, the catalogue says {spec.horizon}; the "
            "installed ogbench differs from the version the catalogue was written for (ogbench 1.2.x)"
        )
    env = SeededGlobalRandom(env)
    env = SuccessAsFloat(env)
    env = ClipAction(env)
    if spec.suite == "ogbench":
        env = Float32Observation(env)
    metadata = {"success_timing": success_timing, "suite": spec.suite, "horizon": horizon}
    return EpisodeScore(env, spec, metadata=metadata)
