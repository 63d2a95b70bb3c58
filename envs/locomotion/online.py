"""Online locomotion environments that the experts are trained on (OGBench's ``online_locomotion`` package).

OGBench trains its low-level experts on ``online-<agent>-xy-v0``: the plain locomotion environment plus a
directional task. Every ``resample_interval`` steps a unit direction z is drawn; the observation is the robot's
state without its xy position followed by z, and the reward is the displacement of the torso's xy along z (the ant)
or the humanoid's stand reward times ``1 + 100 * displacement . z``. A generator later feeds the direction to the
next maze subgoal in place of z, so the expert becomes a goal-reaching controller (docs/datasets.md §2.3).

OGBench's own wrapper draws z from NumPy's global generator and is never seeded; the wrapper here draws it from the
environment's generator, so a seeded reset gives the same episode. The rewards are the same.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import gymnasium as gym
import numpy as np

from fidec_gym.errors import ConfigError


@dataclass(frozen=True)
class OnlineTask:
    """An expert's training environment and OGBench's recipe for it."""

    name: str  # registry key: "ant", "ant-ball", "humanoid"
    ogbench_id: str  # OGBench's name of the online task
    gym_id: str  # the registered Gymnasium environment
    directional: bool  # wrap with the xy-direction task
    resample_interval: int = 100
    reward: str = "displacement"  # "displacement" (ant) or "stand-bonus" (humanoid)
    make_kwargs: dict = field(default_factory=dict)
    terminate_at_end: bool = False  # OGBench's --terminate_at_end (ant-ball)
    ogbench_steps: int = 400_000  # OGBench's training budget
    train_freq: int = 1  # environment steps per gradient step (OGBench's --train_interval)
    net_arch: dict = field(default_factory=lambda: {"pi": [256, 256], "qf": [256, 256]})
    note: str = ""


ONLINE_TASKS: dict[str, OnlineTask] = {
    "ant": OnlineTask(
        name="ant",
        ogbench_id="online-ant-xy-v0",
        gym_id="online-ant-v0",
        directional=True,
        resample_interval=100,
        ogbench_steps=400_000,
        note="drives antmaze (OGBench navigate and D4RL antmaze generators)",
    ),
    "ant-ball": OnlineTask(
        name="ant-ball",
        ogbench_id="online-antball-v0",
        gym_id="online-antball-v0",
        directional=False,
        make_kwargs={"render_mode": "rgb_array", "width": 64, "height": 64},  # its constructor renders
        terminate_at_end=True,
        ogbench_steps=12_000_000,
        train_freq=4,
        note="dribbles the ball in antsoccer (OGBench used layer norm in both networks)",
    ),
    "humanoid": OnlineTask(
        name="humanoid",
        ogbench_id="online-humanoid-xy-v0",
        gym_id="online-humanoid-v0",
        directional=True,
        resample_interval=200,
        reward="stand-bonus",
        ogbench_steps=40_000_000,
        train_freq=4,
        net_arch={"pi": [256, 256], "qf": [1024, 1024, 1024]},
        note="drives humanoidmaze (OGBench used layer norm and mean-Q targets)",
    ),
}


def online_task(name: str) -> OnlineTask:
    key = name.strip().lower()
    aliases = {task.ogbench_id: task.name for task in ONLINE_TASKS.values()}
    key = aliases.get(key, key)
    if key not in ONLINE_TASKS:
        raise ConfigError(f"unknown expert environment {name!r}; valid: {', '.join(ONLINE_TASKS)}")
    return ONLINE_TASKS[key]


def _tolerance_stand_reward(env) -> float:
    from ogbench.online_locomotion.humanoid import tolerance

    data = env.unwrapped.data
    standing = tolerance(data.xpos[2, 2], bounds=(1.4, float("inf")), margin=1.4 / 4)
    upright = tolerance(data.xmat[1, 8], bounds=(0.9, float("inf")), margin=1.9, sigmoid="linear", value_at_margin=0)
    return float(standing * upright)


class DirectionalTask(gym.Wrapper):
    """Append a unit direction z to the observation and reward motion along it; z is resampled every
    ``resample_interval`` steps from the environment's own (seeded) generator."""

    def __init__(self, env: gym.Env, resample_interval: int = 100, reward: str = "displacement"):
        super().__init__(env)
        self.resample_interval = int(resample_interval)
        self.reward_kind = reward
        low = np.full(int(np.prod(env.observation_space.shape or (0,))) + 2, -np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(low, -low, dtype=np.float32)
        self.direction = np.array([1.0, 0.0])
        self.steps = 0

    def _new_direction(self) -> None:
        z = self.env.unwrapped.np_random.standard_normal(2)
        self.direction = z / np.linalg.norm(z)

    def _observation(self, ob) -> np.ndarray:
        return np.concatenate([ob, self.direction]).astype(np.float32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        ob, info = self.env.reset(seed=seed, options=options)
        self._new_direction()
        self.steps = 0
        return self._observation(ob), info

    def step(self, action):
        data = self.env.unwrapped.data
        before = data.qpos[:2].copy()
        ob, _, terminated, truncated, info = self.env.step(action)
        displacement = float((data.qpos[:2] - before) @ self.direction)
        if self.reward_kind == "stand-bonus":
            reward = _tolerance_stand_reward(self.env) * (1.0 + 100.0 * displacement)
        else:
            reward = displacement
        info["xy"] = data.qpos[:2].copy()
        info["direction"] = self.direction.copy()
        self.steps += 1
        if self.steps % self.resample_interval == 0:
            self._new_direction()
        return self._observation(ob), reward, terminated, truncated, info


class Float32Observations(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32)


class TerminateAtEnd(gym.Wrapper):
    """OGBench's --terminate_at_end: a time-limit truncation counts as termination (no bootstrap)."""

    def step(self, action):
        ob, reward, terminated, truncated, info = self.env.step(action)
        return ob, reward, bool(terminated or truncated), truncated, info


def make_online_env(task: str | OnlineTask, max_episode_steps: Optional[int] = None) -> gym.Env:
    """The training environment of ``task`` (a registry name, an OGBench ID or an :class:`OnlineTask`)."""
    import ogbench.online_locomotion  # noqa: F401  (registers online-ant-v0, online-antball-v0, online-humanoid-v0)

    spec = task if isinstance(task, OnlineTask) else online_task(task)
    if spec.gym_id not in gym.registry:
        raise ConfigError(
            f"the installed ogbench has no {spec.gym_id!r} environment; upgrade it with `pip install -U ogbench`"
        )
    kwargs = dict(spec.make_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        env = gym.make(spec.gym_id, disable_env_checker=True, **kwargs)
    if spec.directional:
        env = DirectionalTask(env, spec.resample_interval, spec.reward)
    else:
        env = Float32Observations(env)
    if spec.terminate_at_end:
        env = TerminateAtEnd(env)
    return env
