"""Gymnasium wrappers shared by every fidec-gym environment.

* :class:`EpisodeScore` reports the episode's return, length, success and normalised score in
  ``info["episode"]`` when an episode ends, in the shape Gymnasium's vector environments know how to batch.
* :class:`FrameStack` stacks the last ``k`` RGB frames on the channel axis, as the pixel datasets do.
* :class:`ClipAction` clips actions into the action box without widening the advertised action space.
* :class:`Float32Observation` casts float64 state observations to the float32 of the datasets.
* :class:`SeededGlobalRandom` makes resets of environments that draw from NumPy's global generator reproducible.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import deque
from typing import Any, Iterator, Optional, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import ClipAction as _GymClipAction

from fidec_gym.envs.catalogue import TaskSpec
from fidec_gym.errors import ConfigError

__all__ = ["ClipAction", "EpisodeScore", "Float32Observation", "FrameStack", "SeededGlobalRandom"]


@contextlib.contextmanager
def naming_unknown_keywords(env_id: str, kwargs: dict) -> Iterator[None]:
    """Around an environment's constructor: a TypeError about a keyword of ``gym.make(env_id, **kwargs)`` that the
    constructor does not take becomes a :class:`ConfigError` naming it; any other TypeError (a bug) is re-raised."""
    try:
        yield
    except TypeError as error:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if match is None or match.group(1) not in kwargs:
            raise
        raise ConfigError(
            f"gym.make({env_id!r}): unknown keyword argument {match.group(1)!r}; the environment takes no such "
            "option (check its spelling)"
        ) from None


class EpisodeScore(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Accumulate return and length; at the end of an episode report its score in ``info["episode"]``.

    The dict holds ``r`` (return), ``l`` (length), ``success`` (the last step's ``info["success"]`` as a float),
    ``metric`` (the value that ``spec.metric`` names: success, return, or the toy Q value, which is the one-step
    return) and ``normalized_score`` = ``spec.normalized_score(metric)`` (OGBench: 100 x success; D4RL:
    100 (R - min) / (max - min); toy: the toy normaliser applied to Q(a)). ``info["episode_end"]`` is set to True on
    the same step.

    A value that is not known is left out rather than set to NaN (NaN never equals itself, so infos holding it are
    never equal, e.g. in Gymnasium's determinism check): ``success`` is absent for tasks without a success signal
    (the toy bandits), and where the metric is success, ``metric`` and ``normalized_score`` are absent with it.
    Readers treat an absent value as NaN (``info["episode"].get("success", nan)``; the vector env's
    ``_success`` mask is False), so evaluation aggregates are those of a NaN entry.

    Every value is a plain number so that ``SyncVectorEnv``/``AsyncVectorEnv`` batch it into arrays with an
    ``_episode`` mask, like :class:`gymnasium.wrappers.RecordEpisodeStatistics`.

    Args:
        env: the environment to wrap (it must enforce its own time limit).
        spec: the task's catalogue entry.
        metadata: facts about how the environment was made that results should store (e.g. ``success_timing``);
            read them with ``env.get_wrapper_attr("task_metadata")``.
    """

    def __init__(self, env: gym.Env, spec: TaskSpec, metadata: Optional[dict] = None):
        gym.utils.RecordConstructorArgs.__init__(self, spec=spec, metadata=metadata)
        gym.Wrapper.__init__(self, env)
        if spec.metric not in ("success", "normalized_return", "value"):
            raise ConfigError(f"task {spec.env_id} has unknown metric {spec.metric!r}; fix its catalogue entry")
        self.task_spec = spec
        self.task_metadata = {"env_id": spec.env_id, **(metadata or {})}
        self._episode_return = 0.0
        self._episode_length = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        self._episode_return = 0.0
        self._episode_length = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._episode_return += float(reward)
        self._episode_length += 1
        if terminated or truncated:
            info = dict(info)
            info["episode"] = self.episode_summary(info.get("success"))
            info["episode_end"] = True
        return observation, reward, terminated, truncated, info

    def episode_summary(self, success: Any = None) -> dict:
        """The ``info["episode"]`` dict for the episode so far, given the last step's success flag (or None).

        Unknown values are omitted, never NaN: no ``success`` without a success flag, and no ``metric`` or
        ``normalized_score`` either when the task's metric is success.
        """
        summary: dict[str, Any] = {"r": self._episode_return, "l": self._episode_length}
        if success is not None and not math.isnan(float(success)):
            summary["success"] = float(success)
        if self.task_spec.metric == "success":
            metric = summary.get("success")
        else:  # "normalized_return" (D4RL) and "value" (toy: the return of the single step is Q(a))
            metric = self._episode_return
        if metric is not None:
            summary["metric"] = metric
            summary["normalized_score"] = self.task_spec.normalized_score(metric)
        return summary


class FrameStack(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Stack the last ``num_frames`` uint8 frames on the channel axis: (H, W, C) -> (H, W, C * num_frames).

    Frames are ordered oldest first and the reset frame is repeated to fill the stack, which is how the pixel
    datasets are stacked (docs/algorithms.md §3.3). Gymnasium's FrameStackObservation stacks on a new leading axis
    instead, (k, H, W, C); the channel layout is what the image encoders take.
    """

    def __init__(self, env: gym.Env, num_frames: int = 3):
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 3:
            raise ConfigError(
                f"FrameStack needs (H, W, C) image observations, got {space}; use it only on pixel (visual-*) tasks"
            )
        if num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
        gym.utils.RecordConstructorArgs.__init__(self, num_frames=num_frames)
        gym.Wrapper.__init__(self, env)
        self.num_frames = num_frames
        height, width, channels = space.shape
        self.observation_space = spaces.Box(
            low=0, high=255, shape=(height, width, channels * num_frames), dtype=space.dtype
        )
        self._frames: deque = deque(maxlen=num_frames)

    def _stacked(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=-1)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self._frames.extend([observation] * self.num_frames)
        return self._stacked(), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(observation)
        return self._stacked(), reward, terminated, truncated, info


class ClipAction(_GymClipAction):
    """Clip actions into the action box, keeping the finite box as the advertised action space.

    Gymnasium >= 1.0 widens the space of its ClipAction to (-inf, inf); agents and samplers here read the
    [-1, 1] box from ``env.action_space``, so the original bounds are kept.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = env.action_space
        # Bounds read once: Gymnasium's clip reads them through every wrapper on each step, and OGBench's
        # manipulation tasks build a new Box on each read (a quarter of a cube-single step's time).
        box = env.action_space
        assert isinstance(box, spaces.Box)  # checked by Gymnasium's ClipAction above
        self._low, self._high = box.low, box.high

    def action(self, action):
        return np.clip(action, self._low, self._high)


class Float32Observation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Cast float64 state observations to float32 (the datasets' dtype), with the observation space to match.

    Gymnasium's ``DtypeObservation`` builds the float32 box from the float64 bounds, which warns "Box low's precision
    lowered by casting to float32" on every ``gym.make``; the bounds are cast here first, which is the same box
    without the warning. Each observation is a new array (``np.float32(x)`` would return ``x`` itself when it is
    already float32, sharing the inner environment's buffer).
    """

    def __init__(self, env: gym.Env):
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise ConfigError(f"Float32Observation needs a Box observation space, got {space}")
        # Record no constructor arguments: the dtype is fixed, so the wrapper is recreated from ``env`` alone.
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self.observation_space = spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), shape=space.shape, dtype=np.float32
        )

    def observation(self, observation) -> np.ndarray:
        return np.array(observation, dtype=np.float32)


class SeededGlobalRandom(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Give an environment that draws from NumPy's *global* generator its own, seedable stream.

    OGBench's maze environments draw start/goal noise with ``np.random`` and take random warm-up actions with
    ``action_space.sample()`` during reset, so ``reset(seed=s)`` alone is not reproducible. This wrapper keeps a
    private global-generator state, swaps it in around ``reset``/``step`` and swaps the caller's state back, so the
    environment is reproducible under ``reset(seed=...)`` and does not disturb the caller's ``np.random``.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        # None: share the caller's global stream until the first seeded reset.
        self._generator: Optional[np.random.MT19937] = None

    def _call_with_private_state(self, fn, *args, **kwargs):
        if self._generator is None:
            return fn(*args, **kwargs)
        # Swap the global generator's bit generator (an O(1) exchange) rather than copying its 2.5 KB state out and
        # in with get_state/set_state, which cost 0.2 ms per step, a tenth of a cube-single step. A cached Gaussian
        # of the legacy normal sampler does not survive a swap; the environments here draw uniforms.
        caller = np.random.get_bit_generator()
        np.random.set_bit_generator(self._generator)
        try:
            return fn(*args, **kwargs)
        finally:
            np.random.set_bit_generator(caller)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            # Two independent child streams: the global generator and the warm-up action sampler.
            global_seed, action_seed = np.random.SeedSequence(seed).generate_state(2)
            self._generator = np.random.MT19937()
            # The stream np.random.seed(global_seed) gives (MT19937's legacy seeding), as before the swap existed.
            legacy = np.random.RandomState(int(global_seed)).get_state(legacy=False)
            self._generator.state = {"bit_generator": "MT19937", "state": legacy["state"]}
            self.env.unwrapped.action_space.seed(int(action_seed))
        return self._call_with_private_state(self.env.reset, seed=seed, options=options)

    def step(self, action) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        return self._call_with_private_state(self.env.step, action)


class SuccessAsFloat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Report ``info["success"]`` as a float: Adroit and OGBench manipulation give a bool, the mazes a float."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if "success" in info:
            info["success"] = float(info["success"])
        return observation, reward, terminated, truncated, info
