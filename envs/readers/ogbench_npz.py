"""OGBench datasets (``<dataset>.npz`` + ``<dataset>-val.npz``), official or generated locally.

Loading and relabelling are OGBench's own (``ogbench.utils.load_dataset`` and ``ogbench.relabel_utils``), so the
rewards and masks are exactly the benchmark's: r = r(s) and mask = 1 - success(s) for the row's own state s
(docs/datasets.md §1.5). This module adds the file search, clear errors for bad files, the fidec conventions (clipped
actions, next actions) and provenance: a ``<dataset>.meta.json`` sidecar written by ``envs.generate`` marks
locally generated data, everything else is reported as official.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import socket
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from fidec_gym.envs.readers import (
    DATASET_FORMAT_VERSION,
    DatasetError,
    clip_actions,
    find_file,
    next_actions_within_trajectories,
    search_dirs,
    sha256_file,
)

DEFAULT_OGBENCH_DIR = "~/.ogbench/data"
OGBENCH_URL = "https://rail.eecs.berkeley.edu/datasets/ogbench"
RAW_KEYS = ("observations", "actions", "terminals", "qpos", "qvel")
# Manipulation "play" data can be regenerated with OGBench's oracles; locomotion data needs expert checkpoints.
GENERATABLE_PREFIXES = ("cube-", "scene-", "puzzle-")

REWARD_CONVENTION = (
    "OGBench single-task relabelling of each row's own state s (success timing 'pre'): locomotion r = success - 1, "
    "manipulation r = #satisfied sub-goals - #sub-goals; masks = 1 - success(s); terminals mark trajectory ends "
    "(time limits), never task success; actions clipped to +-(1 - 1e-5)"
)


def ogbench_version() -> str:
    return importlib.metadata.version("ogbench")


def success_timing() -> str:
    """Dataset labels use the row's state s; environments from ogbench >= 1.2 agree by default
    (docs/datasets.md §1.5)."""
    major, minor = (int(part) for part in ogbench_version().split(".")[:2])
    return "pre" if (major, minor) >= (1, 2) else "post"


def sidecar_path(npz_path: Path) -> Path:
    """``<dataset>.meta.json`` beside the train file, shared by the train and val files."""
    stem = npz_path.name[: -len(".npz")]
    if stem.endswith("-val"):
        stem = stem[: -len("-val")]
    return npz_path.with_name(f"{stem}.meta.json")


def missing_data_message(dataset: str, tried: list[Path]) -> str:
    looked = "\n".join(f"  - {p}" for p in tried) or "  (no directory given)"
    base = dataset[len("visual-") :] if dataset.startswith("visual-") else dataset
    fetch = (
        f"fetch the official files with `fidec data download {dataset} --out $FIDEC_DATA_DIR` (needs network), "
        f"or download {OGBENCH_URL}/{dataset}.npz and {OGBENCH_URL}/{dataset}-val.npz into $FIDEC_DATA_DIR, "
        "or call load_dataset(..., allow_download=True)"
    )
    if base.startswith(GENERATABLE_PREFIXES):
        name = base[: -len("-v0")]
        visual = " --visual" if dataset.startswith("visual-") else ""
        how = (
            f"Make it locally with `fidec data generate {name} --episodes 1000{visual} --out $FIDEC_DATA_DIR` "
            f"(fewer episodes for a quick run"
            + ("; pixel data takes ~100 h on CPU" if visual else "")
            + f"), or {fetch}."
        )
    else:
        name = base[: -len("-v0")]
        how = (
            f"Make a locally generated stand-in with `fidec data generate {name} --out $FIDEC_DATA_DIR` (driven by "
            "a self-trained expert, not OGBench's, so scores are not comparable to published ones; "
            f"docs/datasets.md §2.3), or {fetch}."
        )
    return f"no OGBench dataset file {dataset}.npz found. Looked in:\n{looked}\n{how}"


def locate(dataset: str, split: str, path=None, data_dir=None) -> tuple[Optional[Path], list[Path]]:
    """The npz file of ``dataset``/``split`` (``path`` may be the train file itself or a directory)."""
    filename = f"{dataset}-val.npz" if split == "val" else f"{dataset}.npz"
    if path is not None and str(path).endswith(".npz"):
        file = Path(path).expanduser()
        if split == "val" and not file.name.endswith("-val.npz"):
            file = file.with_name(file.name[: -len(".npz")] + "-val.npz")
        return (file if file.is_file() else None), [file]
    return find_file([filename], search_dirs(path, data_dir, DEFAULT_OGBENCH_DIR))


def download(dataset: str, directory: os.PathLike | str, timeout: float = 10.0) -> tuple[Path, Path]:
    """Fetch ``dataset`` (train + val) from the OGBench server with OGBench's own downloader.

    A short socket timeout turns a missing network into an error within ``timeout`` seconds instead of a hang;
    partial ``.tmp`` files are removed so nothing half-written is left behind.
    """
    import ogbench

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise DatasetError(f"the download timeout must be a number of seconds > 0, got {timeout!r} (--timeout)")
    directory = Path(directory).expanduser()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        ogbench.download_datasets([dataset], dataset_dir=str(directory))
    except (OSError, ValueError) as error:  # URLError, timeouts and HTTP errors are OSErrors
        for leftover in directory.glob(f"{dataset}*.npz.tmp"):
            leftover.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {dataset} from {OGBENCH_URL} into {directory}: {error}. Check the network "
            f"connection (or copy {dataset}.npz and {dataset}-val.npz there by hand)."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)
    return directory / f"{dataset}.npz", directory / f"{dataset}-val.npz"


def npz_keys(file: Path) -> list[str]:
    """Array names in an npz file, reading only the zip directory; corrupt files raise DatasetError."""
    try:
        with np.load(file) as archive:
            return list(archive.files)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        # numpy reads a file without a zip header as a pickle and suggests allow_pickle=True: never advise that.
        detail = "no zip header" if "pickle" in str(error) else f"{type(error).__name__}: {error}"
        raise DatasetError(
            f"{file}: not a readable npz archive ({detail}); the file is corrupt or "
            "truncated. Delete it and generate or download it again."
        ) from error


def _not_an_array(file: Path, key: str) -> DatasetError:
    return DatasetError(
        f"{file}: the entry {key!r} is not a numpy array (no .npy header); the file was not written by numpy.savez. "
        "Delete it and generate or download it again."
    )


def _pickled(file: Path, key: str | None) -> DatasetError:
    return DatasetError(
        f"{file}: the array {key!r} holds Python objects (stored with pickle), which fidec-gym never loads; an "
        "OGBench file holds only numeric arrays. Generate or download it again."
    )


def npz_headers(file: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array in an npz file, read from the .npy headers only (no array data is read);
    a corrupt file or an entry that is not a .npy array raises DatasetError."""
    npz_keys(file)
    headers = {}
    try:
        with zipfile.ZipFile(file) as archive:
            for member in archive.namelist():
                key = member[: -len(".npy")] if member.endswith(".npy") else member
                with archive.open(member) as stream:
                    try:
                        version = np.lib.format.read_magic(stream)
                    except ValueError:
                        raise _not_an_array(file, key) from None
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                    else:  # a newer .npy version: numpy checks it when the array is read
                        continue
                headers[key] = (tuple(shape), np.dtype(dtype))
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as error:
        raise DatasetError(
            f"{file}: an array header could not be read ({type(error).__name__}: {error}); the file is corrupt or "
            "truncated. Delete it and generate or download it again."
        ) from error
    return headers


def layout_problems(headers: dict[str, tuple[tuple, np.dtype]], visual: bool = False) -> list[str]:
    """What keeps the arrays described by ``headers`` (see :func:`npz_headers`) from being an OGBench dataset:
    missing, non-numeric or scalar arrays, wrong numbers of dimensions, different or zero lengths."""
    problems = []
    missing = [key for key in RAW_KEYS if key not in headers]
    if missing:
        problems.append(f"missing arrays {missing} (found {sorted(headers)})")
    dims = {"observations": (4,) if visual else (2,), "actions": (2,), "terminals": (1,), "qpos": (2,), "qvel": (2,)}
    for key, (shape, dtype) in headers.items():
        if key not in dims:
            continue
        if dtype.kind not in "biuf":
            problems.append(f"{key} holds {dtype} values, not numbers")
        elif len(shape) not in dims[key]:
            problems.append(f"{key} has shape {shape}, expected {dims[key][0]} dimensions (one row per step)")
    lengths = {key: shape[0] for key, (shape, _) in headers.items() if key in dims and shape}
    if len(set(lengths.values())) > 1:
        problems.append(f"arrays have different numbers of rows {lengths}")
    elif lengths and not next(iter(lengths.values())):
        problems.append("the arrays hold no rows (the dataset is empty)")
    return problems


def read_raw_npz(file: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file as stored (no conversion), with corrupt-file errors as DatasetError."""
    npz_keys(file)
    arrays: dict[str, np.ndarray] = {}
    key = None
    try:
        with np.load(file) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as error:
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise _pickled(file, key) from None
        raise DatasetError(
            f"{file}: the array {key!r} could not be decompressed ({type(error).__name__}: {error}); the file is "
            "corrupt or truncated. Delete it and generate or download it again."
        ) from error
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # numpy returns the raw bytes of an entry without a .npy header
            raise _not_an_array(file, key)
    return arrays


def _provenance(file: Path, checksum: str) -> tuple[str, dict]:
    sidecar = sidecar_path(file)
    if not sidecar.is_file():
        return "official", {}
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(
            f"{sidecar}: unreadable metadata sidecar ({error}); delete it or regenerate the data."
        ) from None
    recorded = info.get("files", {}).get(file.name, {}).get("sha256")
    if recorded != checksum:
        warnings.warn(
            f"{sidecar} does not describe {file.name} (checksum differs); treating the file as official data.",
            stacklevel=3,
        )
        return "official", {}
    return info.get("provenance", "generated"), info


@functools.lru_cache(maxsize=8)
def _task_environment(task_name: str):
    """The single-task environment that defines the goal for relabelling, kept so that loading the train and val
    splits (or several seeds) builds it once."""
    import ogbench

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        return ogbench.make_env_and_datasets(task_name, env_only=True)


def read_ogbench(spec, file: Path, split: str = "train", compact: bool = False) -> tuple[dict, dict]:
    """Arrays and metadata of one OGBench split, relabelled for the task of ``spec`` (a catalogue TaskSpec)."""
    import ogbench
    from ogbench.relabel_utils import relabel_dataset

    visual = spec.suite == "visual"
    problems = layout_problems(npz_headers(file), visual)
    if problems:
        raise DatasetError(
            f"{file}: not an OGBench dataset file: {'; '.join(problems)}. An OGBench single-task file holds the "
            f"arrays {list(RAW_KEYS)} with one row per step; regenerate it with `fidec data generate` or download "
            "the official file."
        )
    try:
        arrays = ogbench.load_dataset(
            str(file),
            ob_dtype=np.uint8 if visual else np.float32,
            action_dtype=np.float32,
            compact_dataset=compact,
            add_info=True,
        )
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, IndexError) as error:
        raise DatasetError(
            f"{file}: could not be read as an OGBench dataset ({type(error).__name__}: {error}); the file is corrupt "
            "or truncated. Delete it and generate or download it again."
        ) from error

    n = len(arrays["observations"])
    if n == 0:
        raise DatasetError(f"{file}: the dataset is empty (no complete transitions). Regenerate it with more episodes.")
    problems = []
    if arrays["observations"].shape[1:] != tuple(spec.observation_shape):
        problems.append(
            f"observations have shape {arrays['observations'].shape[1:]}, expected {spec.observation_shape}"
        )
    if arrays["actions"].shape[1:] != tuple(spec.action_shape):
        problems.append(f"actions have shape {arrays['actions'].shape[1:]}, expected {spec.action_shape}")
    for key in ("actions", "qpos") + (() if visual else ("observations",)):
        if key in arrays and not np.isfinite(arrays[key]).all():
            problems.append(f"{key} contain NaN or Inf")
    if problems:
        raise DatasetError(
            f"{file}: not a valid {spec.dataset} dataset for {spec.env_id}: "
            + "; ".join(problems)
            + ". Check that the file belongs to this task, or regenerate it."
        )

    # Relabel with OGBench's own function against the task's environment. The state environment is used for pixel
    # datasets too: the task goals are identical and it needs no renderer.
    state_name = spec.source_name[len("visual-") :] if visual else spec.source_name
    words = state_name.split("-")
    position = words.index("singletask")
    env_name = "-".join(words[: position - 1] + words[position:])
    with warnings.catch_warnings():
        # Gymnasium notes that the float64 Box bounds are cast to float32: harmless (docs/datasets.md §1.2).
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        relabel_dataset(env_name, _task_environment(state_name), arrays)

    for info_key in ("qpos", "qvel", "button_states"):
        arrays.pop(info_key, None)
    arrays["actions"] = clip_actions(arrays["actions"])
    arrays["next_actions"] = next_actions_within_trajectories(arrays["actions"], arrays["terminals"])

    checksum = sha256_file(file)
    provenance, generator_info = _provenance(file, checksum)
    metadata = {
        "env_id": spec.env_id,
        "dataset": spec.dataset,
        "provenance": provenance,
        "path": str(file),
        "sha256": checksum,
        "format_version": DATASET_FORMAT_VERSION,
        "source_format": "ogbench-npz",
        "split": split,
        "compact": compact,
        "success_timing": success_timing(),
        "reward_convention": REWARD_CONVENTION,
        "ogbench_version": ogbench_version(),
    }
    if generator_info:
        metadata["generator"] = {k: v for k, v in generator_info.items() if k != "files"}
    return arrays, metadata
