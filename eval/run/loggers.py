"""Experiment loggers: CSV (always), TensorBoard and Weights & Biases (on request).

All loggers take ``log(step, metrics)`` with a flat dict of scalars and can pick up a resumed run: rows (or
events) logged after the checkpoint a run resumes from are dropped, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping, cast

from fidec_gym.errors import MissingDependencyError
from fidec_gym.files import atomic_path

LOGGING_EXTRA = 'pip install "fidec-gym[logging]"'


def require_logging_packages(tensorboard: bool = False, wandb: bool = False) -> None:
    """Fail early, before a run writes anything, when a requested logger's package is missing."""
    import importlib.util
    import sys

    for wanted, module, flag in ((tensorboard, "tensorboardX", "--tensorboard"), (wandb, "wandb", "--wandb")):
        if wanted and (sys.modules.get(module, False) is None or importlib.util.find_spec(module) is None):
            raise MissingDependencyError(
                f"{flag} needs the {module} package; install it with {LOGGING_EXTRA} (or drop {flag})"
            )


def _scalar(value: Any) -> float | int | str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    return value


class CsvLogger:
    """Append rows to a wide CSV file (``step`` first, then every metric key seen so far).

    When a new key appears the file is rewritten once with the wider header (atomically), so every row always
    has the file's columns. ``resume_step`` drops rows with ``step > resume_step`` from an existing file: those
    steps are about to be logged again by the resumed run. ``resume_step=None`` starts a fresh file.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] = ["step"]
        rows: list[dict] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as stream:
                reader = csv.DictReader(stream)
                self.fields = list(reader.fieldnames or ["step"])
                rows = [row for row in reader if row.get("step") and int(float(row["step"])) <= resume_step]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.fields, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def _read_rows(self) -> list[dict]:
        with open(self.path, newline="") as stream:
            return list(csv.DictReader(stream))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{key: _scalar(value) for key, value in metrics.items()}}
        new_keys = [key for key in row if key not in self.fields]
        if new_keys:
            rows = self._read_rows()
            self.fields.extend(new_keys)
            self._rewrite(rows)
        with open(self.path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=self.fields, restval="").writerow(row)

    def close(self) -> None:
        pass


def read_metrics_csv(path: str | Path) -> list[dict[str, float | str]]:
    """Rows of a metrics CSV with numbers parsed (empty cells omitted; cells that are not numbers stay strings)."""
    rows = []
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            parsed: dict[str, float | str] = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    parsed[key] = value
            rows.append(parsed)
    return rows


class TensorBoardLogger:
    """Scalars to TensorBoard event files via tensorboardX (no PyTorch needed)."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MissingDependencyError(
                f"TensorBoard logging needs the tensorboardX package; install it with {LOGGING_EXTRA} "
                "(or drop --tensorboard)"
            ) from None
        # purge_step hides events after the checkpoint we resume from, so curves do not double back.
        self.writer = SummaryWriter(str(log_dir), purge_step=None if not resume_step else resume_step + 1)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            value = _scalar(value)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, global_step=int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Weights & Biases run; offline unless ``WANDB_MODE`` says otherwise (sync later with ``wandb sync``)."""

    def __init__(
        self, run_dir: str | Path, name: str, config: Mapping[str, Any], run_id: str, project: str = "fidec-gym"
    ):
        try:
            import wandb
        except ImportError:
            raise MissingDependencyError(
                f"Weights & Biases logging needs the wandb package; install it with {LOGGING_EXTRA} (or drop --wandb)"
            ) from None
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            name=name,
            id=run_id,
            dir=str(run_dir),
            config=dict(config),
            resume="allow",
            # A plain string from the environment; wandb checks it against its modes itself.
            mode=cast(Any, os.environ.get("WANDB_MODE", "offline")),
            reinit="finish_previous",
        )

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = {key: _scalar(value) for key, value in metrics.items()}
        self.run.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=int(step))

    def close(self) -> None:
        self.run.finish()


class MetricLogger:
    """Fan out ``log(step, metrics)`` to several loggers."""

    def __init__(self, *loggers: Any):
        self.loggers = [logger for logger in loggers if logger is not None]

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def is_finite(value: Any) -> bool:
    """True for a finite real number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
