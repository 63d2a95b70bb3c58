"""The online phase of an offline-to-online run (docs/algorithms.md §3.4): act once in a training environment at
temperature 1, append the transition to a replay buffer that holds the dataset, and draw the next batch from it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class OnlinePhase:
    """One training environment and the replay buffer; ``replay`` and ``rng`` are saved with every checkpoint."""

    def __init__(self, spec, seed: int, dataset: Any, env_kwargs: dict):
        self.spec, self.seed, self.dataset, self.env_kwargs = spec, seed, dataset, env_kwargs
        self.replay: Any = None
        self.rng = np.random.default_rng(seed + 2)
        self.env: Any = None
        self.observation: Any = None
        import jax

        self.key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x0A11CE)

    def state(self) -> tuple[Any, dict | None]:
        return self.rng.bit_generator.state, (self.replay.online_state() if self.replay is not None else None)

    def restore(self, rng_state: dict, replay_state: dict | None) -> None:
        from fidec_gym.envs.replay_buffer import ReplayBuffer

        self.rng.bit_generator.state = rng_state
        if replay_state is not None:
            self.replay = ReplayBuffer.from_dataset(self.dataset)
            self.replay.load_online_state(replay_state)

    def _start(self, step: int) -> None:
        import gymnasium as gym

        from fidec_gym.envs.replay_buffer import ReplayBuffer

        if self.replay is None:
            self.replay = ReplayBuffer.from_dataset(self.dataset)
        self.env = gym.make(self.spec.env_id, **self.env_kwargs)
        # A resumed run cannot restore the simulator, so the episode in progress restarts from a fresh reset and its
        # last stored row becomes a trajectory end.
        self.replay.end_episode()
        self.observation, _ = self.env.reset(seed=self.seed * 1_000_003 + step)

    def act(self, agent: Any, step: int) -> dict:
        """One environment step with ``agent``; returns the episode's metrics when it ended, else {}."""
        import jax

        if self.env is None:
            self._start(step)
        action_key = jax.random.fold_in(self.key, step)
        action = np.asarray(agent.sample_actions(self.observation[None], seed=action_key, temperature=1.0))[0]
        action = np.clip(action, -1.0, 1.0)
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        if self.spec.category == "d4rl-antmaze":
            reward = float(reward) - 1.0  # same r - 1 shift as the dataset (docs/algorithms.md §3.3)
        self.replay.add(self.observation, action, float(reward), next_observation, terminated, truncated)
        if not (terminated or truncated):
            self.observation = next_observation
            return {}
        episode = info.get("episode", {})
        self.observation, _ = self.env.reset()
        return {
            "online/return": episode.get("r", math.nan),
            "online/length": episode.get("l", math.nan),
            "online/success": episode.get("success", math.nan),
        }

    def batch(self, batch_size: int) -> dict:
        return self.replay.sample(batch_size, self.rng)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
