"""Local Minari datasets (the maintained D4RL ports) converted to the fidec D4RL arrays.

Minari stores whole episodes with T + 1 observations, so every transition has its true next observation and no
time-out transition needs to be dropped. Antmaze observations are dicts; ``concat(achieved_goal, observation)`` gives
D4RL's 29-d order (x, y, then the rest of qpos, then qvel; docs/datasets.md §4.3). Conventions match the hdf5 reader:
antmaze rewards r - 1, mask = 1 - termination, ``terminals`` = trajectory end (last step of each episode, and any
termination).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fidec_gym.envs.readers import (
    DATASET_FORMAT_VERSION,
    DatasetError,
    clip_actions,
    next_actions_within_trajectories,
    sha256_file,
)
from fidec_gym.envs.readers.d4rl_hdf5 import reward_convention


def dataset_path(dataset_id: str) -> Path:
    """Where Minari keeps ``dataset_id`` locally (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path(dataset_id))


def is_available(dataset_id: str) -> bool:
    return (dataset_path(dataset_id) / "data").is_dir()


def _checksum(data_dir: Path) -> str:
    """One SHA-256 over every file of the dataset (hdf5 or arrow storage alike)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(data_dir)}|{sha256_file(file)}|".encode())
    return digest.hexdigest()


def _flat_observations(observations, antmaze: bool, dataset_id: str) -> np.ndarray:
    if isinstance(observations, dict):
        if not antmaze or not {"achieved_goal", "observation"} <= set(observations):
            raise DatasetError(
                f"Minari dataset {dataset_id}: dict observations with keys {sorted(observations)} cannot be "
                "flattened; expected an antmaze dataset with 'achieved_goal' and 'observation'."
            )
        return np.concatenate([observations["achieved_goal"], observations["observation"]], axis=-1)
    return np.asarray(observations)


def read_minari(spec, dataset_id: str) -> tuple[dict, dict]:
    """Arrays and metadata of the D4RL task ``spec`` from the local Minari dataset ``dataset_id``."""
    import minari

    location = dataset_path(dataset_id)
    if not (location / "data").is_dir():
        raise DatasetError(f"Minari dataset {dataset_id} is not stored locally (looked in {location}).")
    try:
        dataset = minari.load_dataset(dataset_id)
        episodes = list(dataset.iterate_episodes())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"Minari dataset {dataset_id} at {location} could not be read ({type(error).__name__}: {error}); it is "
            "corrupt or incomplete. Delete the directory and create or download it again."
        ) from error
    if not episodes:
        raise DatasetError(f"Minari dataset {dataset_id} at {location} holds no episodes.")

    antmaze = spec.category == "d4rl-antmaze"
    keys = ("observations", "next_observations", "actions", "rewards", "done", "ends")
    columns: dict[str, list] = {key: [] for key in keys}
    for episode in episodes:
        observations = _flat_observations(episode.observations, antmaze, dataset_id).astype(np.float32)
        steps = len(episode.rewards)
        if len(observations) != steps + 1 or len(episode.actions) != steps:
            raise DatasetError(
                f"Minari dataset {dataset_id}: episode {episode.id} has {len(observations)} observations and "
                f"{len(episode.actions)} actions for {steps} steps (expected T + 1 and T); it is corrupt."
            )
        terminations = np.asarray(episode.terminations, dtype=bool)
        ends = terminations.copy()
        ends[-1] = True
        columns["observations"].append(observations[:-1])
        columns["next_observations"].append(observations[1:])
        columns["actions"].append(np.asarray(episode.actions, dtype=np.float32))
        columns["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        columns["done"].append(terminations)
        columns["ends"].append(ends)
    merged = {key: np.concatenate(parts) for key, parts in columns.items()}

    problems = []
    if merged["observations"].shape[1:] != tuple(spec.observation_shape):
        problems.append(
            f"observations have shape {merged['observations'].shape[1:]}, expected {spec.observation_shape}"
        )
    if merged["actions"].shape[1:] != tuple(spec.action_shape):
        problems.append(f"actions have shape {merged['actions'].shape[1:]}, expected {spec.action_shape}")
    for key in ("observations", "next_observations", "actions", "rewards"):
        if not np.isfinite(merged[key]).all():
            problems.append(f"{key} contain NaN or Inf")
    if problems:
        raise DatasetError(
            f"Minari dataset {dataset_id} at {location} does not fit {spec.env_id}: " + "; ".join(problems) + "."
        )

    actions = clip_actions(merged["actions"])
    rewards = merged["rewards"] - 1.0 if antmaze else merged["rewards"]
    arrays = {
        "observations": merged["observations"],
        "actions": actions,
        "rewards": rewards.astype(np.float32),
        "masks": 1.0 - merged["done"].astype(np.float32),
        "terminals": merged["ends"].astype(np.float32),
        "next_observations": merged["next_observations"],
        "next_actions": next_actions_within_trajectories(actions, merged["ends"]),
    }
    metadata = {
        "env_id": spec.env_id,
        "dataset": spec.dataset,
        "provenance": "minari",
        "path": str(location),
        "sha256": _checksum(location / "data"),
        "format_version": DATASET_FORMAT_VERSION,
        "source_format": "minari",
        "minari_id": dataset_id,
        "minari_version": getattr(minari, "__version__", None),
        "split": "train",
        "compact": False,
        "success_timing": None,
        "reward_convention": reward_convention(antmaze),
        "num_episodes": len(episodes),
    }
    return arrays, metadata
