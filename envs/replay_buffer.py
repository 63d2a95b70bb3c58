"""The offline-to-online ``ReplayBuffer``: the offline dataset followed by online transitions in one ring buffer."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from fidec_gym.envs.datasets import Dataset
from fidec_gym.errors import DataError

BUFFER_KEYS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations", "next_actions")
DEFAULT_BUFFER_CAPACITY = 2_000_000


class ReplayBuffer:
    """The offline dataset followed by online transitions in one ring buffer, sampled uniformly.

    Storage grows geometrically up to ``capacity``, so a small test does not allocate millions of rows. Online
    transitions are appended after the dataset and wrap to the start only once the buffer is full. The training loop
    applies any online reward convention (e.g. the antmaze r - 1 shift) before calling :meth:`add`.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        action_dim: int,
        capacity: int,
        observation_dtype=np.float32,
        initial_rows: int = 1024,
    ):
        if capacity < 1:
            raise DataError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._shapes = {
            "observations": (tuple(observation_shape), np.dtype(observation_dtype)),
            "next_observations": (tuple(observation_shape), np.dtype(observation_dtype)),
            "actions": ((int(action_dim),), np.dtype(np.float32)),
            "next_actions": ((int(action_dim),), np.dtype(np.float32)),
            "rewards": ((), np.dtype(np.float32)),
            "masks": ((), np.dtype(np.float32)),
            "terminals": ((), np.dtype(np.float32)),
        }
        self._storage = {k: np.zeros((0, *shape), dtype) for k, (shape, dtype) in self._shapes.items()}
        self._reserve(min(self.capacity, initial_rows))
        self.size = 0
        self.pointer = 0
        self.num_offline = 0
        self.num_online = 0
        self.dataset_sha256: Optional[str] = None
        self._open_row: Optional[int] = None  # last online row whose next action is not known yet

    @classmethod
    def from_dataset(cls, dataset: Dataset, capacity: Optional[int] = None) -> ReplayBuffer:
        """A buffer holding ``dataset`` with room for online data: capacity max(2,000,000, N + 1) by default."""
        if dataset.is_compact:
            raise DataError("the replay buffer needs next_observations; load the dataset with compact=False")
        n = dataset.num_transitions
        capacity = max(DEFAULT_BUFFER_CAPACITY, n + 1) if capacity is None else int(capacity)
        if capacity < n + 1:
            raise DataError(f"capacity {capacity} cannot hold the {n} dataset transitions plus online data")
        buffer = cls(
            dataset.observation_shape,
            dataset.action_dim,
            capacity,
            observation_dtype=dataset["observations"].dtype,
            initial_rows=n + 1024,
        )
        for key in BUFFER_KEYS:
            buffer._storage[key][:n] = dataset[key]
        buffer.size = buffer.pointer = buffer.num_offline = n
        buffer.dataset_sha256 = dataset.metadata.get("sha256")
        return buffer

    def __len__(self) -> int:
        return self.size

    @property
    def allocated_rows(self) -> int:
        """Rows currently allocated (grows geometrically up to ``capacity``)."""
        return len(self._storage["rewards"])

    def _reserve(self, rows: int) -> None:
        rows = min(rows, self.capacity)
        allocated = len(self._storage["rewards"])
        if rows <= allocated:
            return
        new_rows = min(self.capacity, max(rows, 2 * allocated))
        for key, array in self._storage.items():
            grown = np.zeros((new_rows, *array.shape[1:]), array.dtype)
            grown[:allocated] = array
            self._storage[key] = grown

    def add(self, observation, action, reward: float, next_observation, terminated: bool, truncated: bool) -> None:
        """Append one online transition: terminal = terminated or truncated; mask = 1 - terminated (a truncated
        episode still bootstraps)."""
        row = self.pointer
        self._reserve(row + 1)
        action = np.asarray(action, dtype=np.float32)
        values = {
            "observations": observation,
            "next_observations": next_observation,
            "actions": action,
            "next_actions": action,
            "rewards": reward,
            "masks": 1.0 - float(terminated),
            "terminals": float(terminated or truncated),
        }
        for key, value in values.items():
            self._storage[key][row] = value
        # The previous online row of the same episode now learns its next action.
        if self._open_row is not None:
            self._storage["next_actions"][self._open_row] = action
        self._open_row = None if (terminated or truncated) else row
        self.pointer = (row + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.num_online += 1

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self.size == 0:
            raise DataError("cannot sample from an empty replay buffer")
        index = rng.integers(0, self.size, size=batch_size)
        return {key: array[index] for key, array in self._storage.items()}

    def _online_rows(self) -> np.ndarray:
        kept = min(self.num_online, self.capacity)
        writes = np.arange(self.num_online - kept, self.num_online)
        return (self.num_offline + writes) % self.capacity

    def online_state(self) -> dict:
        """What a checkpoint needs beyond the dataset: the online rows still in the buffer and the pointers."""
        rows = self._online_rows()
        return {
            "rows": {key: array[rows].copy() for key, array in self._storage.items()},
            "pointer": self.pointer,
            "size": self.size,
            "num_online": self.num_online,
            "num_offline": self.num_offline,
            "capacity": self.capacity,
            "dataset_sha256": self.dataset_sha256,
            "open_row": -1 if self._open_row is None else self._open_row,
        }

    def end_episode(self) -> None:
        """Close the episode in progress without a next step (e.g. a resumed run restarts its environment): its last
        row keeps its own action as next action, the trajectory-end convention of the offline data."""
        self._open_row = None

    def load_online_state(self, state: dict) -> None:
        """Restore :meth:`online_state` into a buffer freshly built from the same dataset and capacity."""
        for key in ("num_offline", "capacity", "dataset_sha256"):
            if state[key] != getattr(self, key):
                raise DataError(
                    f"replay state has {key}={state[key]!r} but this buffer has {getattr(self, key)!r}; rebuild the "
                    "buffer with ReplayBuffer.from_dataset on the same dataset and capacity before loading"
                )
        self.num_online = int(state["num_online"])
        rows = self._online_rows()
        if rows.size:
            self._reserve(int(rows.max()) + 1)
        for key, values in state["rows"].items():
            self._storage[key][rows] = values
        self.pointer, self.size = int(state["pointer"]), int(state["size"])
        self._open_row = None if int(state["open_row"]) < 0 else int(state["open_row"])
