"""Dataset readers: OGBench npz files, legacy D4RL hdf5 files and local Minari datasets.

Every reader returns ``(arrays, metadata)``: a dict of numpy arrays in the fidec-gym layout (observations, actions,
rewards, masks, terminals, next_observations, next_actions) with the suite's reward and mask conventions already
applied, and a metadata dict describing where the arrays came from. ``envs.datasets`` wraps them in a ``Dataset``.

This module holds what all readers share: the error type, checksums, the directory search order and the two
conventions every suite gets (clipped actions and the dataset's next action).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from fidec_gym.errors import DataError

# The fidec Dataset layout version; bump when keys or conventions change.
DATASET_FORMAT_VERSION = 1

# Dataset actions are clipped just inside the box so that tanh-squashed and flow policies see no boundary values
# (official FQL convention, docs/algorithms.md §3.3).
ACTION_CLIP = 1.0 - 1e-5

DATA_DIR_ENV = "FIDEC_DATA_DIR"


class DatasetError(DataError):
    """A dataset file or array that is missing, corrupt or inconsistent; the message names the file and the fix."""


def sha256_file(path: os.PathLike | str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large datasets do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Hex SHA-256 over key names, dtypes, shapes and bytes of ``arrays`` (order-independent in the keys)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def search_dirs(path: Optional[os.PathLike | str], data_dir: Optional[os.PathLike | str], *defaults: str) -> list[Path]:
    """Directories to look in, in order: ``path`` (if a directory), ``data_dir``, ``$FIDEC_DATA_DIR``, ``defaults``."""
    candidates: list[Path] = []
    if path is not None and not str(path).endswith((".npz", ".hdf5", ".h5")):
        candidates.append(Path(path).expanduser())
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    candidates.extend(Path(d).expanduser() for d in defaults)
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def find_file(names: Sequence[str], directories: Iterable[Path]) -> tuple[Optional[Path], list[Path]]:
    """First existing ``directory / name``; also returns every path that was tried (for error messages)."""
    tried = []
    for directory in directories:
        for name in names:
            candidate = directory / name
            tried.append(candidate)
            if candidate.is_file():
                return candidate, tried
    return None, tried


def clip_actions(actions: np.ndarray) -> np.ndarray:
    return np.clip(actions, -ACTION_CLIP, ACTION_CLIP).astype(np.float32, copy=False)


def next_actions_within_trajectories(actions: np.ndarray, trajectory_ends: np.ndarray) -> np.ndarray:
    """The dataset's next action a'_D: the following row's action, or the row's own action where a trajectory ends.

    ReBRAC regularises the target action towards a'_D; at a trajectory end the following row belongs to another
    episode, so the official FiDec/DeFlow dataset code falls back to the current action there (docs/algorithms.md §3.3).
    """
    ends = np.asarray(trajectory_ends).astype(bool)
    following = np.concatenate([actions[1:], actions[-1:]], axis=0)
    return np.where(ends[:, None], actions, following).astype(actions.dtype, copy=False)


def trajectory_starts(trajectory_ends: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's trajectory, given 0/1 trajectory-end flags."""
    ends = np.asarray(trajectory_ends).astype(bool)
    n = len(ends)
    is_start = np.zeros(n, dtype=bool)
    if n:
        is_start[0] = True
        is_start[1:] = ends[:-1]
    start_positions = np.flatnonzero(is_start)
    return start_positions[np.searchsorted(start_positions, np.arange(n), side="right") - 1]


__all__ = [
    "ACTION_CLIP",
    "DATASET_FORMAT_VERSION",
    "DATA_DIR_ENV",
    "DatasetError",
    "clip_actions",
    "find_file",
    "next_actions_within_trajectories",
    "search_dirs",
    "sha256_arrays",
    "sha256_file",
    "trajectory_starts",
]
