"""Offline datasets in memory: ``Dataset``, ``load_dataset`` and ``BatchSampler``.

The online replay buffer that extends a dataset lives in ``envs.replay_buffer``.

A dataset is a mapping of numpy arrays with a shared first dimension (one row per transition)::

    observations, actions, rewards, masks, terminals, next_observations, next_actions   (+ valids when compact)

``masks`` decide bootstrapping (0 where the state is terminal for the task), ``terminals`` mark trajectory ends (the
row's successor belongs to another trajectory), and ``next_actions`` hold the dataset's next action a'_D that ReBRAC
needs. All reward, mask and terminal conventions are applied by the readers in ``envs.readers``; agents use the
arrays as they are. Every dataset carries ``metadata``: env_id, dataset, provenance, path, sha256, format_version,
split, success_timing, reward_convention and num_transitions.
"""

from __future__ import annotations

import os
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from fidec_gym.envs.catalogue import TaskSpec, all_tasks, task_info
from fidec_gym.envs.readers import (
    DATA_DIR_ENV,
    DATASET_FORMAT_VERSION,
    DatasetError,
    clip_actions,
    next_actions_within_trajectories,
    sha256_arrays,
    trajectory_starts,
)
from fidec_gym.errors import DataError, DataNotFoundError, UnknownNameError

__all__ = ["BatchSampler", "Dataset", "DatasetError", "DatasetNotFoundError", "load_dataset"]

CORE_KEYS = ("observations", "actions", "rewards", "masks", "terminals", "next_actions")
OPTIONAL_KEYS = ("next_observations", "valids", "qpos", "qvel", "button_states")
BINARY_KEYS = ("masks", "terminals", "valids")
TOY_TRAIN_SAMPLES, TOY_TRAIN_SEED = 50_000, 0
TOY_VAL_SAMPLES, TOY_VAL_SEED = 5_000, 1


class DatasetNotFoundError(DatasetError, DataNotFoundError):
    """No data for the task was found; the message lists every place looked at and how to make or fetch it."""


class Dataset(Mapping):
    """An immutable mapping of equal-length numpy arrays plus ``metadata``.

    ``len(dataset)`` is the number of transitions (rows), not the number of keys; iterate over ``dataset.keys()``
    for the keys. Arrays are read-only views so that one dataset can be shared by samplers and buffers safely.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: Optional[dict] = None):
        if not arrays:
            raise DatasetError("a dataset needs at least one array")
        self._arrays: dict[str, np.ndarray] = {}
        lengths = {key: len(value) for key, value in arrays.items()}
        if len(set(lengths.values())) != 1:
            source = (metadata or {}).get("path")
            raise DatasetError(f"{source or 'dataset'}: arrays have different first dimensions {lengths}")
        for key, value in arrays.items():
            array = np.asarray(value)
            if array.flags.writeable:
                array = array.view()
                array.flags.writeable = False
            self._arrays[key] = array
        self.metadata: dict = dict(metadata or {})
        self.metadata["num_transitions"] = self.num_transitions

    # -- mapping protocol ---------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._arrays[key]
        except KeyError:
            raise UnknownNameError(f"dataset has no array {key!r}; available: {sorted(self._arrays)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return self.num_transitions

    def __contains__(self, key: object) -> bool:
        return key in self._arrays

    def keys(self) -> KeysView:
        return self._arrays.keys()

    def values(self) -> ValuesView:
        return self._arrays.values()

    def items(self) -> ItemsView:
        return self._arrays.items()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"Dataset({self.metadata.get('env_id')}, {self.metadata.get('split')}, {shapes})"

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def num_transitions(self) -> int:
        return len(next(iter(self._arrays.values())))

    @property
    def observation_shape(self) -> tuple:
        return tuple(self["observations"].shape[1:])

    @property
    def action_dim(self) -> int:
        return int(self["actions"].shape[-1])

    @property
    def is_compact(self) -> bool:
        return "valids" in self._arrays

    def subset(self, indices: np.ndarray | Sequence[int] | slice) -> Dataset:
        """A new dataset holding the selected rows (``next_actions`` keep their values from the full dataset)."""
        rows = np.arange(self.num_transitions)[indices] if isinstance(indices, slice) else np.asarray(indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_transitions):
            raise IndexError(f"subset indices must lie in [0, {self.num_transitions}); got {rows.min()}..{rows.max()}")
        metadata = dict(self.metadata, subset_of=self.metadata.get("sha256"))
        return Dataset({key: value[rows] for key, value in self._arrays.items()}, metadata)

    def validate(self) -> Dataset:
        """Check keys, dtypes, shapes (against the task), value ranges and finiteness; raise DatasetError listing
        every problem. Returns the dataset so that calls can be chained."""
        problems = dataset_problems(self._arrays, self.metadata.get("env_id"))
        if problems:
            source = self.metadata.get("path") or self.metadata.get("env_id") or "dataset"
            raise DatasetError(f"{source}: invalid dataset:\n" + "\n".join(f"  - {p}" for p in problems))
        return self


def dataset_problems(arrays: Mapping[str, np.ndarray], env_id: Optional[str] = None) -> list[str]:
    """Every way ``arrays`` breaks the data contract (empty list when sound)."""
    problems: list[str] = []
    spec = all_tasks().get(env_id) if env_id else None
    missing = [k for k in CORE_KEYS if k not in arrays]
    if "next_observations" not in arrays and "valids" not in arrays:
        missing.append("next_observations (or valids for a compact dataset)")
    if missing:
        problems.append(f"missing keys: {missing}")
    unknown = sorted(set(arrays) - set(CORE_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        problems.append(f"unknown keys: {unknown} (known: {sorted(CORE_KEYS + OPTIONAL_KEYS)})")
    n = len(next(iter(arrays.values()))) if arrays else 0
    if n == 0:
        problems.append("the dataset is empty (0 transitions)")
        return problems
    # Pixel observations are uint8 images; without a task, an image-shaped array (N, H, W, C) says so.
    pixel = spec.suite == "visual" if spec is not None else arrays.get("observations", np.zeros((0,))).ndim == 4
    for key, array in arrays.items():
        if key in ("qpos", "qvel", "button_states") or key not in CORE_KEYS + OPTIONAL_KEYS:
            continue
        expected = np.uint8 if (pixel and key in ("observations", "next_observations")) else np.float32
        if array.dtype != expected:
            problems.append(f"{key} has dtype {array.dtype}, expected {np.dtype(expected).name}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            problems.append(f"{key} contains NaN or Inf ({int((~np.isfinite(array)).sum())} values)")
    for key in ("rewards", "masks", "terminals", "valids"):
        if key in arrays and arrays[key].ndim != 1:
            problems.append(f"{key} has shape {arrays[key].shape}, expected ({n},)")
    for key in BINARY_KEYS:
        if key in arrays and not np.isin(arrays[key], (0.0, 1.0)).all():
            problems.append(f"{key} must hold only 0 and 1")
    if "terminals" in arrays and arrays["terminals"][-1] != 1:
        problems.append("the last row must end a trajectory (terminals[-1] == 1)")
    for key in ("actions", "next_actions"):
        if key in arrays and arrays[key].size and np.abs(arrays[key]).max() > 1.0:
            problems.append(f"{key} leave [-1, 1] (max |a| = {float(np.abs(arrays[key]).max()):.4g})")
    if "actions" in arrays and "next_actions" in arrays and arrays["actions"].shape != arrays["next_actions"].shape:
        problems.append(f"next_actions shape {arrays['next_actions'].shape} != actions shape {arrays['actions'].shape}")
    if spec is not None:
        for key in ("observations", "next_observations"):
            if key in arrays and arrays[key].shape[1:] != tuple(spec.observation_shape):
                problems.append(
                    f"{key} have shape {arrays[key].shape[1:]}, {spec.env_id} expects {spec.observation_shape}"
                )
        if "actions" in arrays and arrays["actions"].shape[1:] != tuple(spec.action_shape):
            problems.append(
                f"actions have shape {arrays['actions'].shape[1:]}, {spec.env_id} expects {spec.action_shape}"
            )
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def load_dataset(
    env_id: str,
    path: Optional[os.PathLike | str] = None,
    split: str = "train",
    data_dir: Optional[os.PathLike | str] = None,
    compact: bool = False,
    allow_download: bool = False,
    download_timeout: float = 10.0,
) -> Dataset:
    """The offline dataset of ``env_id`` with the suite's reward, mask and terminal conventions applied.

    Args:
        env_id: a catalogue ID, with or without the ``fidec/`` namespace.
        path: a dataset file (``.npz`` / ``.hdf5``) or a directory to look in first.
        split: ``"train"`` or ``"val"`` (OGBench ``-val.npz`` files; the toy validation draw).
        data_dir: another directory to look in before ``$FIDEC_DATA_DIR`` and the suite's default directory.
        compact: OGBench only: keep every stored row and add ``valids`` instead of ``next_observations``.
        allow_download: fetch missing OGBench files from the official server (off by default). D4RL data is
            never downloaded here; the error message says how to fetch the Minari port.
        download_timeout: socket timeout in seconds for that download, so a missing network fails fast.

    Raises:
        UnknownTaskError: ``env_id`` is not in the catalogue.
        DatasetNotFoundError: no data was found; the message lists where it looked and how to get the data.
        DatasetError: the data is corrupt, has wrong shapes, NaN/Inf values or breaks the data contract.
    """
    spec = task_info(env_id)
    if split not in ("train", "val"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'val'")
    if compact and spec.suite not in ("ogbench", "visual"):
        raise DataError(f"compact=True applies to OGBench datasets only; {spec.env_id} is a {spec.suite} task")
    suffixes = {"ogbench": (".npz",), "visual": (".npz",), "d4rl": (".hdf5", ".h5")}.get(spec.suite, ())
    if path is not None and Path(path).expanduser().is_file() and Path(path).suffix not in suffixes:
        raise DatasetError(
            f"{path}: {spec.env_id} reads {suffixes[0]} files; pass a {suffixes[0]} file or a directory"
            if suffixes
            else f"{path}: {spec.env_id} is generated in memory and reads no files; omit path"
        )
    if spec.suite in ("ogbench", "visual"):
        arrays, metadata = _load_ogbench(spec, path, split, data_dir, compact, allow_download, download_timeout)
    elif spec.suite == "d4rl":
        arrays, metadata = _load_d4rl(spec, path, split, data_dir)
    else:
        arrays, metadata = _load_toy(spec, split)
    return Dataset(arrays, metadata).validate()


def locate_dataset(env_id: str, path: Optional[os.PathLike | str] = None) -> tuple[Optional[str], str]:
    """Where ``load_dataset(env_id, path=path)`` would read its data from, without reading it, and how to get the
    data when it is missing: ``(file or Minari ID, or None; a command)``."""
    from fidec_gym.envs.locomotion.navigate import parse_navigate_dataset
    from fidec_gym.envs.readers import find_file, minari_reader, ogbench_npz, search_dirs
    from fidec_gym.envs.readers.d4rl_hdf5 import DEFAULT_D4RL_DIR

    spec = task_info(env_id)
    if spec.suite == "toy":
        return "sampled from the analytic law", ""
    if spec.suite in ("ogbench", "visual"):
        file, _ = ogbench_npz.locate(spec.dataset, "train", path)
        base = spec.dataset.removeprefix("visual-")
        if base.startswith(ogbench_npz.GENERATABLE_PREFIXES):
            visual = " --visual" if spec.suite == "visual" else ""
            how = (
                f"fidec data generate {base.removesuffix('-v0')}{visual} --out $FIDEC_DATA_DIR  (or fidec data "
                f"download {spec.dataset} --out $FIDEC_DATA_DIR, needs network)"
            )
        elif parse_navigate_dataset(base) is not None:
            how = (
                f"fidec data generate {base.removesuffix('-v0')} --out $FIDEC_DATA_DIR  (an expert drives OGBench's "
                f"navigate protocol; or fidec data download {spec.dataset} --out $FIDEC_DATA_DIR, needs network)"
            )
        else:
            how = f"fidec data download {spec.dataset} --out $FIDEC_DATA_DIR  (needs network)"
        return (str(file) if file else None), how
    file, _ = find_file([f"{spec.dataset}.hdf5"], search_dirs(path, None, DEFAULT_D4RL_DIR))
    minari_id = spec.extra["minari_id"]
    if file is not None:
        return str(file), ""
    if minari_reader.is_available(minari_id):
        return f"minari:{minari_id}", ""
    return (
        None,
        f"pip install 'minari[hf]' && minari download {minari_id}  (or copy {spec.dataset}.hdf5 into $FIDEC_DATA_DIR)",
    )


def _load_ogbench(spec: TaskSpec, path, split, data_dir, compact, allow_download, timeout):
    from fidec_gym.envs.readers import ogbench_npz

    file, tried = ogbench_npz.locate(spec.dataset, split, path, data_dir)
    if file is None and allow_download and not (path is not None and str(path).endswith(".npz")):
        target = Path(data_dir or os.environ.get(DATA_DIR_ENV) or ogbench_npz.DEFAULT_OGBENCH_DIR).expanduser()
        ogbench_npz.download(spec.dataset, target, timeout=timeout)
        file, more = ogbench_npz.locate(spec.dataset, split, target)
        tried += more
    if file is None:
        raise DatasetNotFoundError(ogbench_npz.missing_data_message(spec.dataset, tried))
    return ogbench_npz.read_ogbench(spec, file, split=split, compact=compact)


def _load_d4rl(spec: TaskSpec, path, split, data_dir):
    from fidec_gym.envs.readers import find_file, minari_reader, search_dirs
    from fidec_gym.envs.readers.d4rl_hdf5 import DEFAULT_D4RL_DIR, read_d4rl_hdf5

    if split != "train":
        raise DatasetError(
            f"{spec.env_id}: D4RL datasets have no validation split; load split='train' (and hold out rows with "
            "Dataset.subset if you need a validation set)."
        )
    if path is not None and str(path).endswith((".hdf5", ".h5")):
        file = Path(path).expanduser()
        if not file.is_file():
            raise DatasetNotFoundError(f"D4RL file {file} does not exist; check the path.")
        return read_d4rl_hdf5(spec, file)
    file, tried = find_file([f"{spec.dataset}.hdf5"], search_dirs(path, data_dir, DEFAULT_D4RL_DIR))
    if file is not None:
        return read_d4rl_hdf5(spec, file)
    minari_id = spec.extra["minari_id"]
    if minari_reader.is_available(minari_id):
        return minari_reader.read_minari(spec, minari_id)
    looked = "\n".join(f"  - {p}" for p in tried + [minari_reader.dataset_path(minari_id)])
    raise DatasetNotFoundError(
        f"no data for {spec.env_id}. Looked for {spec.dataset}.hdf5 and the Minari dataset {minari_id} in:\n{looked}\n"
        f"Copy the legacy D4RL file to $FIDEC_DATA_DIR/{spec.dataset}.hdf5 (or ~/.d4rl/datasets), or fetch the "
        f"Minari port with `pip install 'minari[hf]' && minari download {minari_id}` "
        "(set MINARI_DATASETS_PATH to choose where it is stored)."
    )


def _load_toy(spec: TaskSpec, split: str):
    from fidec_gym.envs.toy import toy_dataset_arrays

    num_samples, seed = (TOY_VAL_SAMPLES, TOY_VAL_SEED) if split == "val" else (TOY_TRAIN_SAMPLES, TOY_TRAIN_SEED)
    raw = toy_dataset_arrays(spec.source_name, num_samples, seed)
    arrays = {
        key: np.asarray(raw[key], dtype=np.float32)
        for key in ("observations", "actions", "rewards", "masks", "terminals", "next_observations")
    }
    arrays["actions"] = clip_actions(arrays["actions"])
    arrays["next_actions"] = next_actions_within_trajectories(arrays["actions"], arrays["terminals"])
    metadata = {
        "env_id": spec.env_id,
        "dataset": spec.dataset,
        "provenance": "synthetic",
        "path": None,
        "sha256": sha256_arrays(arrays),
        "format_version": DATASET_FORMAT_VERSION,
        "source_format": "toy",
        "split": split,
        "compact": False,
        "success_timing": None,
        "reward_convention": (
            "one-step bandit: reward = Q(a) of the landscape, masks 0, terminals 1 (every target is the reward); "
            "actions clipped to +-(1 - 1e-5)"
        ),
        "landscape": spec.source_name,
        "num_samples": num_samples,
        "seed": seed,
    }
    return arrays, metadata


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------
CROP_PADDING = 3  # edge-pad 3 pixels, then crop back to the original size (docs/algorithms.md §3.3)


def random_crop(images: np.ndarray, offsets: np.ndarray, padding: int = CROP_PADDING) -> np.ndarray:
    """Crop each (H, W, C) image of a batch from its edge-padded version at a per-sample (row, column) offset."""
    batch, height, width = images.shape[:3]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="edge")
    rows = offsets[:, 0, None] + np.arange(height)  # (B, H)
    cols = offsets[:, 1, None] + np.arange(width)  # (B, W)
    return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


class BatchSampler:
    """Uniform minibatches (with replacement) from a dataset, with optional pixel augmentation and frame stacking.

    All randomness comes from one numpy Generator whose state is saved by :meth:`state_dict`, so a resumed run
    draws exactly the batches the uninterrupted run would have drawn.

    Args:
        dataset: the dataset to sample from.
        batch_size: rows per batch.
        seed: seed of the sampler's generator.
        crop_augment_prob: probability that a batch gets random-crop augmentation (one coin flip per batch; offsets
            drawn per sample and shared by observations and next observations). Pixel datasets only.
        frame_stack: stack this many consecutive frames on the channel axis (repeating the first frame at a
            trajectory start); next observations are the same stack shifted by one frame.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        crop_augment_prob: float = 0.0,
        frame_stack: Optional[int] = None,
    ):
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= crop_augment_prob <= 1.0:
            raise DataError(f"crop_augment_prob must lie in [0, 1], got {crop_augment_prob}")
        pixel = dataset["observations"].ndim == 4
        if crop_augment_prob > 0 and not pixel:
            raise DataError(
                "crop augmentation needs image observations (N, H, W, C); this dataset has "
                f"observations of shape {dataset.observation_shape}"
            )
        if frame_stack is not None and (frame_stack < 1 or dataset.is_compact):
            raise DataError("frame_stack needs a positive stack size and a regular (non-compact) dataset")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.crop_augment_prob = float(crop_augment_prob)
        self.frame_stack = frame_stack
        self._rng = np.random.default_rng(seed)
        self._starts = trajectory_starts(dataset["terminals"]) if frame_stack else None

    def sample(self) -> dict[str, np.ndarray]:
        index = self._rng.integers(0, self.dataset.num_transitions, size=self.batch_size)
        batch = {key: value[index] for key, value in self.dataset.items()}
        if self.frame_stack:
            batch["observations"], batch["next_observations"] = self._stacked(index)
        if self.crop_augment_prob > 0 and self._rng.random() < self.crop_augment_prob:
            offsets = self._rng.integers(0, 2 * CROP_PADDING + 1, size=(self.batch_size, 2))
            for key in ("observations", "next_observations"):
                if key in batch:
                    batch[key] = random_crop(batch[key], offsets)
        return batch

    def _stacked(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.frame_stack is not None and self._starts is not None  # only called when stacking frames
        observations = self.dataset["observations"]
        starts = self._starts[index]
        # Frames t-k+1 .. t, clamped to the trajectory's first frame.
        frames = [observations[np.maximum(index - lag, starts)] for lag in range(self.frame_stack - 1, -1, -1)]
        next_frames = frames[1:] + [self.dataset["next_observations"][index]]
        return np.concatenate(frames, axis=-1), np.concatenate(next_frames, axis=-1)

    def state_dict(self) -> dict:
        return {
            "bit_generator": self._rng.bit_generator.state,
            "batch_size": self.batch_size,
            "num_transitions": self.dataset.num_transitions,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_transitions") != self.dataset.num_transitions:
            raise DataError(
                f"sampler state was saved for a dataset of {state.get('num_transitions')} transitions, this one has "
                f"{self.dataset.num_transitions}; resume with the same dataset"
            )
        self._rng.bit_generator.state = state["bit_generator"]
