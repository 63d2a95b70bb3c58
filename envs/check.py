"""Validate a dataset file or a task's dataset: format, dtypes, shapes, values and episode structure.

``check_dataset`` accepts an OGBench ``.npz`` file, a legacy D4RL ``.hdf5`` file or a task ID. Files are checked as
stored (keys, dtypes, shapes against the task's spaces, NaN/Inf, terminals at episode ends, regular OGBench episode
lengths) and then as loaded through ``load_dataset`` (the data contract, and that every next observation is the
following row's observation wherever the trajectory continues). Nothing is raised for a bad dataset: every problem
goes into the report, and ``report.ok`` is True only when there is none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fidec_gym.envs.catalogue import TaskSpec, all_tasks, task_info
from fidec_gym.envs.datasets import Dataset, DatasetError, dataset_problems, load_dataset
from fidec_gym.envs.readers import trajectory_starts
from fidec_gym.errors import DataError, DataNotFoundError

# Physics state sizes stored with OGBench data (nq, nv), from the environments (docs/datasets.md §1.2).
OGBENCH_QPOS_QVEL = {
    "antmaze-large-navigate": (15, 14),
    "antmaze-giant-navigate": (15, 14),
    "humanoidmaze-medium-navigate": (28, 27),
    "humanoidmaze-large-navigate": (28, 27),
    "antsoccer-arena-navigate": (22, 20),
    "cube-single-play": (21, 20),
    "cube-double-play": (28, 26),
    "scene-play": (25, 24),
    "puzzle-3x3-play": (23, 23),
    "puzzle-4x4-play": (30, 30),
}
# Two observations closer than this count as the same state.
CONTINUITY_TOLERANCE = 1e-6


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`: ``problems`` make the dataset unusable, ``warnings`` are worth a look."""

    target: str
    kind: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"{self.target} ({self.kind}): {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        for key, value in self.summary.items():
            lines.append(f"  {key:<24} {json.dumps(value) if isinstance(value, (list, dict)) else value}")
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def episode_lengths(terminals: np.ndarray) -> np.ndarray:
    """Lengths of the trajectories delimited by 0/1 ``terminals`` (a trailing open trajectory counts too)."""
    if len(terminals) == 0:
        return np.zeros(0, dtype=int)
    starts = np.unique(trajectory_starts(terminals))
    return np.diff(np.append(starts, len(terminals)))


def describe(dataset: Dataset) -> dict[str, Any]:
    """A short JSON-able summary of a loaded dataset."""
    summary = {
        key: dataset.metadata.get(key)
        for key in ("env_id", "split", "provenance", "path", "sha256", "num_transitions", "success_timing")
    }
    summary.update(
        keys=sorted(dataset.keys()),
        observations=f"{dataset['observations'].dtype}{list(dataset.observation_shape)}",
        action_dim=dataset.action_dim,
        reward_range=[float(dataset["rewards"].min()), float(dataset["rewards"].max())],
        reward_mean=round(float(dataset["rewards"].mean()), 6),
        mask_zero_fraction=round(float(1.0 - dataset["masks"].mean()), 6),
    )
    if not dataset.is_compact:
        lengths = episode_lengths(dataset["terminals"])
        summary.update(trajectories=int(len(lengths)), trajectory_lengths=sorted({int(x) for x in lengths})[:5])
    return summary


def _spec_for_file(stem: str, suffix: str) -> Optional[TaskSpec]:
    """The default task whose dataset is stored in ``<stem><suffix>`` (``-val`` stripped), if any."""
    stem = stem[: -len("-val")] if stem.endswith("-val") else stem
    suites = ("ogbench", "visual") if suffix == ".npz" else ("d4rl",)
    matches = [s for s in all_tasks().values() if s.dataset == stem and s.suite in suites]
    defaults = [s for s in matches if s.is_default_task] or matches
    return defaults[0] if defaults else None


def _check_structure(terminals: np.ndarray, report: CheckReport, regular: bool) -> None:
    if len(terminals) == 0:
        report.problems.append("no rows")
        return
    if not terminals[-1]:
        report.problems.append("the last row is not marked as an episode end (terminals[-1] == 0)")
    lengths = episode_lengths(terminals)
    report.summary["episodes"] = int(len(lengths))
    report.summary["episode_lengths"] = sorted({int(x) for x in lengths})[:5]
    if (lengths < 2).any():
        report.problems.append(f"{int((lengths < 2).sum())} episodes have fewer than 2 rows (no transition)")
    if regular and len(set(lengths.tolist())) > 1:
        report.problems.append(
            f"irregular episode lengths {sorted(set(lengths.tolist()))[:5]}: OGBench episodes all have H + 1 rows; "
            "terminals are probably misplaced"
        )


def _check_array(report: CheckReport, name: str, array: np.ndarray, dtype, shape: Optional[tuple]) -> None:
    if array.dtype != np.dtype(dtype):
        report.problems.append(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype).name}")
    if shape is not None and array.shape[1:] != tuple(shape):
        report.problems.append(f"{name} has per-row shape {array.shape[1:]}, expected {tuple(shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        report.problems.append(f"{name} contains {int((~np.isfinite(array)).sum())} NaN/Inf values")


def _unusable_arrays(raw: dict[str, np.ndarray]) -> list[str]:
    """Arrays that the numeric checks cannot look at: text or Python objects, or a single value instead of rows."""
    problems = []
    for key, array in raw.items():
        if array.dtype.kind not in "biuf":
            problems.append(f"{key} holds {array.dtype} values, not numbers")
        elif array.ndim == 0:
            problems.append(f"{key} is a single value, not one row per step")
    return problems


def _check_ogbench_file(file: Path, report: CheckReport) -> Optional[TaskSpec]:
    from fidec_gym.envs.readers import sha256_file
    from fidec_gym.envs.readers.ogbench_npz import RAW_KEYS, read_raw_npz, sidecar_path

    spec = _spec_for_file(file.name[: -len(".npz")], ".npz")
    if spec is None:
        report.warnings.append("file name matches no catalogue dataset: shapes are not checked against a task")
    raw = read_raw_npz(file)
    unusable = _unusable_arrays(raw)
    if unusable:
        report.problems += unusable
        return spec
    missing = [k for k in RAW_KEYS if k not in raw]
    base = spec.dataset[len("visual-") if spec and spec.suite == "visual" else 0 : -len("-v0")] if spec else None
    if base and base.startswith(("scene", "puzzle")) and "button_states" not in raw:
        missing.append("button_states")
    if missing:
        report.problems.append(f"missing arrays {missing}")
    lengths = {k: len(v) for k, v in raw.items()}
    if len(set(lengths.values())) > 1:
        report.problems.append(f"arrays have different lengths {lengths}")
        return spec
    nq_nv = OGBENCH_QPOS_QVEL.get(base) if base else None
    expected = {
        "observations": (
            np.uint8 if spec and spec.suite == "visual" else np.float32,
            spec.observation_shape if spec else None,
        ),
        "actions": (np.float32, spec.action_shape if spec else None),
        "terminals": (bool, ()),
        "qpos": (np.float32, (nq_nv[0],) if nq_nv else None),
        "qvel": (np.float32, (nq_nv[1],) if nq_nv else None),
        "button_states": (np.int64, None),
    }
    for key, (dtype, shape) in expected.items():
        if key in raw:
            _check_array(report, key, raw[key], dtype, shape)
    if "actions" in raw and raw["actions"].size and np.abs(raw["actions"]).max() > 1.0:
        report.problems.append("actions leave [-1, 1]")
    if "terminals" in raw:
        _check_structure(raw["terminals"].astype(bool), report, regular=True)
    report.summary["rows"] = int(lengths.get("observations", 0))
    sidecar = sidecar_path(file)
    if sidecar.is_file():
        info = json.loads(sidecar.read_text())
        recorded = info.get("files", {}).get(file.name, {}).get("sha256")
        report.summary["provenance"] = info.get("provenance", "generated") if recorded else "unknown"
        if recorded and recorded != sha256_file(file):
            report.problems.append(f"checksum differs from the one recorded in {sidecar.name}: the file was changed")
    else:
        report.summary["provenance"] = "official (no sidecar)"
    other = file.with_name(
        file.name.replace("-val.npz", ".npz")
        if file.name.endswith("-val.npz")
        else file.name[: -len(".npz")] + "-val.npz"
    )
    if not other.is_file():
        report.warnings.append(f"{other.name} is missing: OGBench loads train and val files together")
    return spec


def _check_d4rl_file(file: Path, report: CheckReport) -> Optional[TaskSpec]:
    from fidec_gym.envs.readers.d4rl_hdf5 import read_raw_hdf5

    spec = _spec_for_file(file.stem, ".hdf5")
    if spec is None:
        report.warnings.append("file name matches no D4RL task: shapes are not checked against a task")
    raw = read_raw_hdf5(file)
    lengths = {k: len(v) for k, v in raw.items()}
    if len(set(lengths.values())) > 1:
        report.problems.append(f"arrays have different lengths {lengths}")
        return spec
    if not lengths["observations"]:
        report.problems.append("no rows")
        return spec
    for key in ("observations", "actions", "rewards"):
        dtype = raw[key].dtype if raw[key].dtype.kind == "f" else np.float32
        _check_array(report, key, raw[key], dtype, None)
    if spec is not None:
        _check_array(report, "observations", raw["observations"], raw["observations"].dtype, spec.observation_shape)
        _check_array(report, "actions", raw["actions"], raw["actions"].dtype, spec.action_shape)
    for key in ("terminals", "timeouts"):
        if key in raw and not np.isin(raw[key], (0, 1)).all():
            report.problems.append(f"{key} must hold only 0 and 1")
    if "timeouts" not in raw:
        report.warnings.append("no 'timeouts' array: episodes are split every <horizon> steps as D4RL does")
    else:
        ends = raw["terminals"].astype(bool) | raw["timeouts"].astype(bool)
        if spec is not None and spec.category == "d4rl-antmaze":
            # Antmaze terminals mark arrival at the goal while the episode goes on; only time-outs end episodes.
            ends = raw["timeouts"].astype(bool).copy()
            ends[-1] = True
        _check_structure(ends, report, regular=False)
    report.summary["rows"] = int(lengths["observations"])
    sidecar = file.with_name(f"{file.stem}.meta.json")
    if sidecar.is_file():
        from fidec_gym.envs.readers import sha256_file

        info = json.loads(sidecar.read_text())
        recorded = info.get("files", {}).get(file.name, {}).get("sha256")
        report.summary["provenance"] = info.get("provenance", "generated") if recorded else "unknown"
        if recorded and recorded != sha256_file(file):
            report.problems.append(f"checksum differs from the one recorded in {sidecar.name}: the file was changed")
    return spec


def check_loaded(dataset: Dataset, report: Optional[CheckReport] = None) -> CheckReport:
    """Checks of an in-memory dataset: the data contract, and that next observations continue the trajectory."""
    if report is None:
        report = CheckReport(str(dataset.metadata.get("env_id") or "dataset"), "in-memory dataset")
    report.problems += [f"loaded: {p}" for p in dataset_problems(dict(dataset.items()), dataset.metadata.get("env_id"))]
    if not dataset.is_compact and dataset.num_transitions > 1:
        observations, next_observations = dataset["observations"], dataset["next_observations"]
        continues = dataset["terminals"][:-1] == 0
        gap = np.abs(observations[1:].astype(np.float64) - next_observations[:-1]).reshape(len(continues), -1)
        broken = int((gap.max(axis=1) > CONTINUITY_TOLERANCE)[continues].sum())
        if broken:
            report.problems.append(
                f"loaded: {broken} next observations differ from the following row although the trajectory "
                "continues (terminals == 0): trajectory ends are mislabelled"
            )
    report.summary.update({f"loaded_{k}" if k in report.summary else k: v for k, v in describe(dataset).items()})
    return report


def _check_file(path: Path, report: CheckReport) -> Optional[TaskSpec]:
    """File-level checks; a file that cannot be read at all becomes one problem."""
    try:
        return (_check_ogbench_file if path.suffix == ".npz" else _check_d4rl_file)(path, report)
    except DatasetError as error:
        report.problems.append(str(error))
        return None


def _load_and_check(env_id: str, report: CheckReport, path=None, split: str = "train") -> Optional[Dataset]:
    try:
        dataset = load_dataset(env_id, path=path, split=split)
    except (DatasetError, FileNotFoundError) as error:
        report.problems.append(str(error))
        return None
    check_loaded(dataset, report)
    return dataset


def check_dataset(path_or_id: str, split: str = "train") -> CheckReport:
    """Check a dataset file (``.npz`` OGBench, ``.hdf5`` D4RL) or the dataset of a task ID (``split`` applies to
    IDs). Never raises for a bad dataset; raises FileNotFoundError for a missing file and UnknownTaskError for an
    unknown ID."""
    target = str(path_or_id)
    path = Path(target).expanduser()
    if target.endswith((".npz", ".hdf5", ".h5")):
        if not path.is_file():
            raise DataNotFoundError(f"{path} does not exist; pass an existing dataset file or a task ID")
        report = CheckReport(target, "ogbench-npz" if path.suffix == ".npz" else "d4rl-hdf5")
        spec = _check_file(path, report)
        if spec is not None and report.ok:
            _load_and_check(spec.env_id, report, path=path, split="val" if path.name.endswith("-val.npz") else "train")
        return report
    if path.is_dir() or (path.is_file() and not target.startswith("fidec/")):
        what = "a directory" if path.is_dir() else "not a dataset file"
        raise DataError(
            f"{path} is {what}; pass a dataset file (an OGBench .npz or a D4RL .hdf5) or a task ID such as "
            "fidec/cube-single-play-singletask-task2-v0 (its dataset is looked up in $FIDEC_DATA_DIR and the "
            "standard places)"
        )
    spec = task_info(target)
    report = CheckReport(spec.env_id, f"{spec.suite} task, {split} split")
    dataset = _load_and_check(spec.env_id, report, split=split)
    source = dataset.metadata.get("path") if dataset is not None else None
    if source and str(source).endswith((".npz", ".hdf5", ".h5")):
        file_report = CheckReport(source, "file")
        _check_file(Path(source), file_report)
        report.problems += [f"file: {p}" for p in file_report.problems]
        report.warnings += [f"file: {w}" for w in file_report.warnings]
    return report
