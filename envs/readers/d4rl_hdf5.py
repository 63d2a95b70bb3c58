"""Legacy D4RL hdf5 files (``<name>.hdf5``) in the q-learning view used by the official FQL code.

The view (docs/datasets.md §4.5): next observations come from shifting the stored observations; the last transition of a
time-out episode has no stored next state and is dropped; ``terminals`` of the file is the done flag. On top of it
the FQL conventions: mask = 1 - done, antmaze rewards r - 1, and a trajectory-end flag wherever the next row does not
continue the transition (obs[i + 1] != next_obs[i]); for Adroit also where the episode terminated. The flag is what
fidec-gym calls ``terminals``: it marks trajectory ends, while ``masks`` decides bootstrapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from fidec_gym.envs.readers import (
    DATASET_FORMAT_VERSION,
    DatasetError,
    clip_actions,
    next_actions_within_trajectories,
    sha256_file,
)

DEFAULT_D4RL_DIR = "~/.d4rl/datasets"
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
# Two stored observations closer than this are "the same state" (the threshold of the FQL code).
CONTINUITY_TOLERANCE = 1e-6


def reward_convention(antmaze: bool) -> str:
    if antmaze:
        return (
            "D4RL antmaze q-learning view: rewards r - 1 (0 at the goal, -1 elsewhere), masks = 1 - terminal, "
            "terminals = trajectory end where obs[i+1] != next_obs[i]; actions clipped to +-(1 - 1e-5)"
        )
    return (
        "D4RL Adroit q-learning view: raw rewards, masks = 1 - terminal, terminals = trajectory end where "
        "obs[i+1] != next_obs[i] or the episode terminated; actions clipped to +-(1 - 1e-5)"
    )


def _final_timesteps(terminals: np.ndarray, timeouts: Optional[np.ndarray], horizon: int) -> np.ndarray:
    """Rows that end an episode by time limit. Files without ``timeouts`` are split every ``horizon`` steps."""
    if timeouts is not None:
        return timeouts.astype(bool)
    final = np.zeros(len(terminals), dtype=bool)
    episode_step = 0
    for i, done in enumerate(terminals.astype(bool)):
        final[i] = episode_step == horizon - 1
        episode_step = 0 if (done or final[i]) else episode_step + 1
    return final


def qlearning_view(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: Optional[np.ndarray],
    horizon: int,
    antmaze: bool,
) -> dict[str, np.ndarray]:
    """The fidec arrays of a flat D4RL dataset (see the module docstring for the conventions)."""
    n = len(observations)
    final = _final_timesteps(terminals, timeouts, horizon)
    # Row i becomes transition (o_i, a_i, r_i, o_{i+1}); the last row has no successor and time-out rows have none
    # inside their episode.
    keep = ~final[: n - 1]
    index = np.flatnonzero(keep)
    obs = observations[index].astype(np.float32)
    next_obs = observations[index + 1].astype(np.float32)
    done = terminals[index].astype(np.float32)
    reward = rewards[index].astype(np.float32)
    if antmaze:
        reward = reward - 1.0

    ends = np.zeros(len(index), dtype=bool)
    if len(index):
        gap = np.linalg.norm(obs[1:] - next_obs[:-1], axis=-1) > CONTINUITY_TOLERANCE
        ends[:-1] = gap
        ends[-1] = True
        if not antmaze:
            ends |= done.astype(bool)
    acts = clip_actions(actions[index])
    return {
        "observations": obs,
        "actions": acts,
        "rewards": reward,
        "masks": 1.0 - done,
        "terminals": ends.astype(np.float32),
        "next_observations": next_obs,
        "next_actions": next_actions_within_trajectories(acts, ends),
    }


def read_raw_hdf5(file: Path) -> dict[str, np.ndarray]:
    """Top-level arrays of a D4RL file (plus ``timeouts`` when present); corrupt or incomplete files raise."""
    import h5py

    try:
        with h5py.File(file, "r") as handle:
            missing = [key for key in REQUIRED_KEYS if key not in handle]
            if missing:
                raise DatasetError(
                    f"{file}: missing datasets {missing} (found {sorted(handle.keys())}); a D4RL file needs "
                    f"{list(REQUIRED_KEYS)}. Use the original D4RL file for this task."
                )
            keys = [key for key in REQUIRED_KEYS + ("timeouts",) if key in handle]
            problems = _layout_problems(handle, keys)
            if problems:
                raise DatasetError(
                    f"{file}: not a D4RL dataset file: {'; '.join(problems)}. A D4RL file holds one numeric array "
                    f"per key ({', '.join(REQUIRED_KEYS)}) with one row per step; use the original D4RL file."
                )
            return {key: handle[key][()] for key in keys}
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(
            f"{file}: not a readable hdf5 file ({type(error).__name__}: {error}); the file is corrupt or truncated. "
            "Download the D4RL file again."
        ) from error


def _layout_problems(handle, keys: list[str]) -> list[str]:
    """What keeps the named entries of an open hdf5 file from being D4RL arrays (a group, text, a scalar)."""
    import h5py

    problems = []
    for key in keys:
        entry = handle[key]
        if not isinstance(entry, h5py.Dataset):
            problems.append(f"{key!r} is a {type(entry).__name__.lower()}, not an array")
        elif entry.dtype.kind not in "biuf":
            problems.append(f"{key!r} holds {entry.dtype} values, not numbers")
        elif entry.ndim == 0:
            problems.append(f"{key!r} is a single value, not one row per step")
    return problems


def read_d4rl_hdf5(spec, file: Path) -> tuple[dict, dict]:
    """Arrays and metadata of the D4RL task ``spec`` (a catalogue TaskSpec) from a legacy hdf5 file."""
    raw = read_raw_hdf5(file)
    n = len(raw["observations"])
    if n < 2:
        raise DatasetError(
            f"{file}: not a valid D4RL {spec.dataset} file: it holds {n} rows (at least 2 are needed to form a "
            "transition). Download the D4RL file again."
        )
    problems = []
    for key in ("actions", "rewards", "terminals", "timeouts"):
        if key in raw and len(raw[key]) != n:
            problems.append(f"{key} has {len(raw[key])} rows but observations have {n}")
    if raw["observations"].shape[1:] != tuple(spec.observation_shape):
        problems.append(f"observations have shape {raw['observations'].shape[1:]}, expected {spec.observation_shape}")
    if raw["actions"].shape[1:] != tuple(spec.action_shape):
        problems.append(f"actions have shape {raw['actions'].shape[1:]}, expected {spec.action_shape}")
    rewards = raw["rewards"].reshape(len(raw["rewards"]), -1)
    if rewards.shape[1] != 1:
        problems.append(f"rewards have shape {raw['rewards'].shape}, expected ({n},)")
    for key in ("observations", "actions", "rewards"):
        if raw[key].size and not np.isfinite(raw[key]).all():
            problems.append(f"{key} contain NaN or Inf")
    if problems:
        raise DatasetError(
            f"{file}: not a valid D4RL {spec.dataset} file: "
            + "; ".join(problems)
            + ". Check that the file belongs to this task, or download it again."
        )

    antmaze = spec.category == "d4rl-antmaze"
    arrays = qlearning_view(
        raw["observations"],
        raw["actions"],
        rewards[:, 0],
        raw["terminals"].reshape(-1),
        raw.get("timeouts", None),
        spec.horizon,
        antmaze,
    )
    if len(arrays["observations"]) == 0:
        raise DatasetError(f"{file}: no transitions are left after dropping time-out rows; the file is unusable.")
    checksum = sha256_file(file)
    generator = _generator_sidecar(file, checksum)
    metadata = {
        "env_id": spec.env_id,
        "dataset": spec.dataset,
        "provenance": generator.get("provenance", "generated") if generator else "d4rl-hdf5",
        "path": str(file),
        "sha256": checksum,
        "format_version": DATASET_FORMAT_VERSION,
        "source_format": "d4rl-hdf5",
        "split": "train",
        "compact": False,
        "success_timing": None,
        "reward_convention": reward_convention(antmaze),
        "split_by_timeouts": "timeouts" in raw,
    }
    if generator:
        metadata["generator"] = {k: v for k, v in generator.items() if k != "files"}
    return arrays, metadata


def _generator_sidecar(file: Path, checksum: str) -> Optional[dict]:
    """The ``<task>.meta.json`` written by a local generator (envs/locomotion/d4rl_antmaze.py) when it describes
    this very file (same checksum); such data is reported as ``generated``, never as D4RL's."""
    import json

    sidecar = file.with_name(f"{file.stem}.meta.json")
    if not sidecar.is_file():
        return None
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if info.get("files", {}).get(file.name, {}).get("sha256") == checksum else None
