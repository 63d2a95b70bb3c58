"""Roll-out videos: MuJoCo frames rendered offscreen and written as mp4 with imageio's ffmpeg plugin.

Toy landscapes are one-step bandits without a simulator, so they have no frames to record; asking for a toy video
raises :class:`VideoUnavailableError` (the toy study draws its own figures instead).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence, cast

import gymnasium as gym
import numpy as np

from fidec_gym.envs.catalogue import task_info
from fidec_gym.errors import ConfigError, FidecError
from fidec_gym.files import atomic_path


class VideoUnavailableError(FidecError, ValueError):
    """The task has no rendered frames (toy landscapes)."""


def whole_number(name: str, value, minimum: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int (not a bool) >= ``minimum``; ``name`` is the setting
    as the user wrote it (e.g. ``"frame_skip (--frame-skip)"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_recording_settings(
    num_episodes: int, frame_skip: int = 1, max_episode_steps: int | None = None, size: int = 256
) -> None:
    """The settings of :func:`record_episodes`, checked before a checkpoint is loaded or an environment made."""
    whole_number("num_episodes (--episodes)", num_episodes, 1)
    whole_number("frame_skip (--frame-skip)", frame_skip, 1)
    if max_episode_steps is not None:
        whole_number("max_episode_steps (--max-steps)", max_episode_steps, 1)
    whole_number("size (--size)", size, 1)


def video_name(env_id: str, agent: str, seed: int, step: int, episode: int) -> str:
    """``{task}_{agent}_seed{S}_step{N}_ep{i}.mp4`` with the task name without the ``fidec/`` namespace."""
    task = env_id.split("/")[-1]
    return f"{task}_{agent}_seed{seed}_step{step}_ep{episode}.mp4"


def check_video_support(env_id: str) -> None:
    """Raise :class:`VideoUnavailableError` for tasks that cannot be rendered."""
    try:
        spec = task_info(env_id)
    except KeyError:
        return  # not a catalogue task: whether it renders is up to the environment
    if spec.suite == "toy":
        raise VideoUnavailableError(
            f"{spec.env_id} is a one-step toy landscape without rendered frames, so no video can be recorded; "
            "drop --videos for toy tasks (the toy study plots policy samples over the landscape instead)"
        )


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 30.0) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) to ``path`` atomically (temporary file, then rename)."""
    import imageio.v2 as imageio

    path = Path(path)
    if len(frames) == 0:
        raise ConfigError(f"no frames to write to {path}")
    # The temporary file keeps the .mp4 suffix: imageio picks its ffmpeg writer by it.
    with atomic_path(path, suffix=".mp4") as tmp, warnings.catch_warnings():
        # imageio starts ffmpeg with subprocess (fork, then exec at once), which JAX warns about; the child runs
        # no Python, so the deadlock JAX warns of cannot happen.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        # macro_block_size=1 keeps small frames (e.g. 64x64) at their size instead of padding them to 16.
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=7)
        # Not `with ... as writer`: imageio's stub types Writer.__enter__ as returning the base class, which has no
        # append_data (at run time it returns the writer itself).
        with writer:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))
    return path


def _rgb_frame(env: gym.Env) -> np.ndarray:
    # The env was made with render_mode="rgb_array", so render() returns one RGB frame; gymnasium's annotation
    # covers every render mode (lists of frames, None).
    return cast(np.ndarray, env.render())


def _without_shadows(env: gym.Env) -> None:
    """Render a state task's video frames without shadows: on a CPU (software OpenGL) the shadow map is about 60 %
    of a frame's cost (0.19 s -> 0.07 s per 256 x 256 cube-single frame). Pixel tasks are left alone: their frames
    are the observations the policy acts on."""
    model = getattr(env.unwrapped, "model", None)
    if model is not None and hasattr(model, "light_castshadow"):
        model.light_castshadow[:] = 0


def record_episodes(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    num_episodes: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    agent_name: str = "agent",
    step: int = 0,
    frame_skip: int = 1,
    env_kwargs: dict | None = None,
    fps: float | None = None,
    max_episode_steps: int | None = None,
    size: int = 256,
) -> list[Path]:
    """Roll out ``policy`` for ``num_episodes`` episodes in one rendering environment and save one mp4 each.

    ``policy`` maps a batch of observations (1, ...) to a batch of actions. Every ``frame_skip``-th frame is kept
    (the first and last frames always are); ``max_episode_steps`` cuts episodes short (previews). Returns the
    written paths, named by :func:`video_name`. State OGBench tasks render at ``size`` x ``size`` pixels and state
    tasks without shadows (pixel tasks keep the 64 x 64 frames they observe).
    """
    check_video_support(env_id)
    check_recording_settings(num_episodes, frame_skip, max_episode_steps, size)
    kwargs = dict(env_kwargs or {})
    kwargs["render_mode"] = "rgb_array"
    try:
        suite = task_info(env_id).suite
    except KeyError:
        suite = None
    if suite == "ogbench":
        kwargs.setdefault("width", size)
        kwargs.setdefault("height", size)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)  # gym.make adds a TimeLimit with this horizon
    key = (env_id, repr(sorted(kwargs.items())))
    env = _open_recorder(key, env_id, kwargs, shadows=suite not in ("ogbench", "d4rl"))
    paths = []
    finished = False
    try:
        render_fps = fps or env.metadata.get("render_fps") or 30
        for episode in range(num_episodes):
            observation, _ = env.reset(seed=seed + episode)
            frames = [_rgb_frame(env)]
            done, t = False, 0
            while not done:
                action = np.asarray(policy(np.asarray(observation)[None]))[0]
                observation, _, terminated, truncated, _ = env.step(np.clip(action, -1.0, 1.0))
                done = terminated or truncated
                t += 1
                if t % frame_skip == 0 or done:
                    frames.append(_rgb_frame(env))
            path = Path(out_dir) / video_name(env_id, agent_name, seed, step, episode)
            paths.append(write_mp4(frames, path, fps=max(1.0, float(render_fps) / frame_skip)))
        finished = True
    finally:
        _release_recorder(key, env, keep=finished)
    return paths


# A grid worker records the videos of cell after cell on the same task. While it keeps its evaluators
# (:func:`fidec_gym.eval.run.evaluate.keep_evaluators`) it keeps its newest recording environment too: building one
# costs about 2 s on a CPU (OGBench compiles its model twice and starts a renderer). Every episode resets it with its
# own seed, so it renders the frames a fresh environment would.
_kept_recorder: tuple[tuple, gym.Env] | None = None


def _open_recorder(key: tuple, env_id: str, kwargs: dict, shadows: bool) -> gym.Env:
    global _kept_recorder
    if _kept_recorder is not None and _kept_recorder[0] == key:
        env, _kept_recorder = _kept_recorder[1], None  # one user at a time
        return env
    env = gym.make(env_id, **kwargs)
    if not shadows:
        _without_shadows(env)
    return env


def _release_recorder(key: tuple, env: gym.Env, keep: bool) -> None:
    """Keep ``env`` for the next recording when the process keeps its evaluators and the recording finished (one
    cut off may be mid-episode); close it otherwise."""
    from fidec_gym.eval.run.evaluate import evaluators_kept

    global _kept_recorder
    if not (keep and evaluators_kept()):
        env.close()
        return
    close_kept_recorder()
    _kept_recorder = (key, env)


def close_kept_recorder() -> None:
    """Close the recording environment this process kept, if any."""
    global _kept_recorder
    if _kept_recorder is not None:
        _kept_recorder[1].close()
        _kept_recorder = None


def record_run_videos(policy, cfg, env_id: str, run_dir: Path, store, run_id: int, seed: int, env_kwargs=None) -> list:
    """The end-of-run videos of one seed (``cfg.video_episodes`` episodes at the last step), registered as artefacts
    of ``run_id``; a toy task gives ``["skipped: ..."]`` (no frames), which is no failure of the run."""
    step = cfg.total_steps
    try:
        paths = record_episodes(
            policy,
            env_id,
            cfg.video_episodes,
            Path(run_dir) / "videos",
            seed=seed,
            agent_name=cfg.agent,
            step=step,
            frame_skip=cfg.video_frame_skip,
            env_kwargs=env_kwargs,
        )
    except VideoUnavailableError as error:
        return [f"skipped: {error}"]
    for path in paths:
        store.add_artefact(run_id, "video", str(path), step=step)
    return [str(path) for path in paths]
