"""Published results: the FiDec paper's tables as data, with their protocol and consistency checks.

The CSV files under ``leaderboards/published/`` hold the paper's numbers (decoded from a flattened text extraction;
see the README there); ``protocol.yaml`` beside them says how each number was produced (metric, scale, training
steps, which evaluations were averaged, seeds, dataset version, OGBench success timing, whether a value was quoted
from prior work). :func:`load_published` returns both, checked for internal consistency::

    paper = load_published("fidec-paper")
    paper.task_cell("fidec", "fidec/cube-single-play-singletask-task2-v0")   # 96 ± 1
    paper.category_cell("DeFlow", "scene")                                   # 51 ± 40 (std across tasks)
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from fidec_gym.errors import DataError, UnknownNameError

PUBLISHED_ROOT = Path(str(resources.files("fidec_gym.leaderboards") / "published"))
PUBLISHED_SETS = {"fidec-paper": PUBLISHED_ROOT}

# fidec-gym agent names -> the paper's column names.
AGENT_TO_METHOD = {"bc": "BC", "iql": "IQL", "rebrac": "ReBRAC", "fql": "FQL", "deflow": "DeFlow", "fidec": "FiDec"}
METHOD_TO_AGENT = {method: agent for agent, method in AGENT_TO_METHOD.items()}
# Named variants are compared with their base agent's published cells (fidec_gym/names.py).
AGENT_TO_METHOD["fidec-official"] = "FiDec"

TABLE_FILES = {
    "per_task": "table2_per_task.csv",
    "per_category": "table2_per_category.csv",
    "offline_to_online": "table3_offline_to_online.csv",
    "fisher_vs_isotropic": "table4_fisher_vs_isotropic.csv",
    "fisher_time": "table10_fisher_time.csv",
    "timing": "table5_timing.csv",
    "hyperparameters": "hyperparameters_per_task.csv",
}

# A printed category mean may differ from the mean of the rounded per-task means by rounding alone: the worst case
# is 0.5 from the category itself plus 0.5 from the per-task values; the paper's worst leftover is 0.8.
ROUNDING_TOLERANCE = 0.5
ROUNDING_LIMIT = 1.0


class PublishedDataError(DataError):
    """The published tables are missing, malformed or fail their consistency checks."""


@dataclass(frozen=True)
class PublishedCell:
    """One printed number: mean ± std (std None where the paper printed a single value)."""

    method: str
    key: str  # task ID (``fidec/...``) or category id
    mean: float
    std: Optional[float]
    suite: str
    quoted: bool  # quoted from prior work rather than run by the paper's authors
    std_kind: str  # "seeds" (std across seeds), "tasks" (std across tasks: DeFlow categories), "none"
    protocol: dict = field(default_factory=dict, compare=False)
    note: str = ""

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:g}"
        return f"{self.mean:g} ± {self.std:g}"


@dataclass
class CheckReport:
    """Result of :meth:`PublishedResults.check`: hard problems and explained (known) leftovers."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def method_name(agent_or_method: str) -> str:
    """The paper's column name for a fidec-gym agent name or a paper method name (case-insensitive)."""
    lowered = agent_or_method.strip().lower()
    if lowered in AGENT_TO_METHOD:
        return AGENT_TO_METHOD[lowered]
    known = {
        "bc",
        "iql",
        "rebrac",
        "idql",
        "srpo",
        "cac",
        "fawac",
        "fbrac",
        "ifql",
        "fql",
        "deflow",
        "fidec",
        "cal-ql",
        "rlpd",
    }
    if lowered in known:
        # Keep the paper's spelling for methods that are not fidec-gym agents.
        return {
            "idql": "IDQL",
            "srpo": "SRPO",
            "cac": "CAC",
            "fawac": "FAWAC",
            "fbrac": "FBRAC",
            "ifql": "IFQL",
            "cal-ql": "Cal-QL",
            "rlpd": "RLPD",
        }[lowered]
    raise UnknownNameError(
        f"unknown method {agent_or_method!r}; valid: {sorted(AGENT_TO_METHOD)} (agents) or the paper's "
        f"names {sorted(METHOD_TO_AGENT)} and IDQL, SRPO, CAC, FAWAC, FBRAC, IFQL"
    )


def _task_key(task: str) -> str:
    return task if task.startswith("fidec/") else f"fidec/{task}"


class PublishedResults:
    """The published tables of one paper, indexed for lookup, with their protocol metadata."""

    def __init__(self, name: str, directory: Path, tables: dict[str, pd.DataFrame], protocol: dict):
        self.name = name
        self.directory = directory
        self.tables = tables
        self.protocol = protocol
        self.per_task = tables["per_task"]
        self.per_category = tables["per_category"]
        self._task_index = {(row.method, _task_key(row.task)): row for row in self.per_task.itertuples(index=False)}
        self._category_index = {(row.method, row.category): row for row in self.per_category.itertuples(index=False)}

    # ---------------------------------------------------------------- lookup
    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.per_category["method"]))

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(self.per_category["category"]))

    def tasks(self, category: Optional[str] = None) -> list[str]:
        frame = self.per_task if category is None else self.per_task[self.per_task["category"] == category]
        return [_task_key(task) for task in dict.fromkeys(frame["task"])]

    def task_category(self, task: str) -> Optional[str]:
        rows = self.per_task[self.per_task["task"] == _task_key(task).removeprefix("fidec/")]
        return None if rows.empty else str(rows["category"].iloc[0])

    def protocol_for(self, method: str, suite: str) -> dict:
        """Protocol of Table 2 for ``method`` on ``suite``: the suite's defaults with the method's overrides."""
        table = self.protocol["tables"]["table2"]
        merged = dict(table["suites"][suite])
        overrides = table.get("methods", {}).get(method_name(method), {})
        merged.update(overrides.get("all", {}))
        merged.update(overrides.get(suite, {}))
        return merged

    def task_cell(self, method: str, task: str) -> Optional[PublishedCell]:
        """Table 2 per-task cell, or None where the paper has no entry (e.g. BC on visual tasks, toy tasks)."""
        method = method_name(method)
        row = self._task_index.get((method, _task_key(task)))
        if row is None:
            return None
        return self._cell(row, method, _task_key(task), category_level=False)

    def category_cell(self, method: str, category: str) -> Optional[PublishedCell]:
        """Table 2 per-category cell (``std_kind`` "tasks" for the DeFlow column, whose ± is across tasks)."""
        method = method_name(method)
        row = self._category_index.get((method, category))
        if row is None:
            return None
        return self._cell(row, method, category, category_level=True)

    def _cell(self, row, method: str, key: str, category_level: bool) -> PublishedCell:
        std = None if pd.isna(row.std) else float(row.std)
        protocol = self.protocol_for(method, row.suite)
        if std is None:
            std_kind = "none"
        elif category_level and protocol.get("category_std") == "across_tasks":
            std_kind = "tasks"
        else:
            std_kind = "seeds"
        note = "" if pd.isna(row.decode_note) else str(row.decode_note)
        return PublishedCell(
            method=method,
            key=key,
            mean=float(row.mean),
            std=std,
            suite=str(row.suite),
            quoted=bool(protocol.get("quoted_from_prior_work", False)),
            std_kind=std_kind,
            protocol=protocol,
            note=note,
        )

    # ---------------------------------------------------------------- checks
    def check(self) -> CheckReport:
        """Consistency checks of the decoded tables (README "How the cells were decoded").

        * every category mean equals the mean of its per-task means within rounding (leftovers above 0.5 must be
          flagged in ``decode_note``);
        * the DeFlow category "±" equals the population std across tasks of its per-task means;
        * per-category task counts match ``n_tasks``;
        * Table 4 equals Table 10's t3 and DeFlow columns; Tables 4/10 averages match their per-task values.
        """
        report = CheckReport()
        per_task = self.per_task
        for row in self.per_category.itertuples(index=False):
            tasks = per_task[(per_task["category"] == row.category) & (per_task["method"] == row.method)]
            report.checked += 1
            if len(tasks) != row.n_tasks:
                report.problems.append(
                    f"{row.method} {row.category}: {len(tasks)} per-task rows, the category says {row.n_tasks}"
                )
                continue
            task_mean = float(tasks["mean"].mean())
            gap = abs(task_mean - float(row.mean))
            note = "" if pd.isna(row.decode_note) else str(row.decode_note)
            if gap > ROUNDING_LIMIT:
                report.problems.append(
                    f"{row.method} {row.category}: printed mean {row.mean:g} but the per-task means average "
                    f"{task_mean:.2f}"
                )
            elif gap > ROUNDING_TOLERANCE:
                if "rounding" not in note:
                    report.problems.append(
                        f"{row.method} {row.category}: rounding leftover {gap:.2f} not flagged in decode_note"
                    )
                else:
                    report.notes.append(
                        f"{row.method} {row.category}: printed {row.mean:g}, per-task average {task_mean:.2f} "
                        "(rounding leftover, flagged)"
                    )
            if self.protocol_for(row.method, row.suite).get("category_std") == "across_tasks":
                across = float(np.std(tasks["mean"].to_numpy(dtype=float)))  # population std, divisor n
                if pd.isna(row.std) or abs(across - float(row.std)) > ROUNDING_TOLERANCE + 0.1:
                    report.problems.append(
                        f"{row.method} {row.category}: printed ± {row.std} but the across-task std is {across:.2f}"
                    )
        self._check_ablation_tables(report)
        return report

    def _check_ablation_tables(self, report: CheckReport) -> None:
        table4 = self.tables["fisher_vs_isotropic"]
        table10 = self.tables["fisher_time"]
        matching = {"anisotropic_fisher": ("FiDec", 3), "isotropic_l2": ("DeFlow", None)}
        for row in table4.itertuples(index=False):
            method, t_index = matching[row.variant]
            same = table10[(table10["task"] == row.task) & (table10["method"] == method)]
            if t_index is not None:
                same = same[same["t_index"] == t_index]
            report.checked += 1
            if len(same) != 1 or (same["mean"].iloc[0], same["std"].iloc[0]) != (row.mean, row.std):
                report.problems.append(f"Table 4 {row.task} {row.variant} does not match its Table 10 column")
        for (method, t_index), group in table10.groupby(["method", table10["t_index"].fillna(0)]):
            tasks = group[group["task"] != "average"]
            average = group[group["task"] == "average"]
            report.checked += 1
            if average.empty:
                report.problems.append(f"Table 10 {method} t{int(t_index)}: no 'average' row")
                continue
            # The printed averages sit up to 0.01 below the per-task mean (truncation, README caveat 8).
            if abs(tasks["mean"].mean() - average["mean"].iloc[0]) > 0.011:
                report.problems.append(
                    f"Table 10 {method} t{int(t_index)}: Avg {average['mean'].iloc[0]} vs per-task mean "
                    f"{tasks['mean'].mean():.3f}"
                )


# -------------------------------------------------------------------- loading
_REQUIRED_COLUMNS = {
    "per_task": ["task", "category", "suite", "is_default_task", "method", "mean", "std", "decode_note"],
    "per_category": ["category", "suite", "n_tasks", "method", "mean", "std", "decode_note"],
    "offline_to_online": ["task", "method", "offline_mean", "offline_std", "online_mean", "online_std"],
    "fisher_vs_isotropic": ["task", "variant", "mean", "std"],
    "fisher_time": ["task", "method", "t_index", "mean", "std"],
    "timing": ["method", "ms_per_step_mean", "ms_per_step_std"],
    "hyperparameters": ["task_pattern", "method", "parameter", "value"],
}


def _read_table(directory: Path, key: str) -> pd.DataFrame:
    path = directory / TABLE_FILES[key]
    if not path.is_file():
        raise PublishedDataError(
            f"missing published table {path}; restore the folder from the repository "
            "(`git checkout -- leaderboards/published`) or point `directory=` at a complete copy"
        )
    try:
        frame = pd.read_csv(path, dtype={"decode_note": str, "is_default_task": str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise PublishedDataError(f"cannot parse {path}: {error}") from error
    missing = [column for column in _REQUIRED_COLUMNS[key] if column not in frame.columns]
    if missing:
        raise PublishedDataError(f"{path} lacks columns {missing}; expected {_REQUIRED_COLUMNS[key]}")
    numeric = [c for c in frame.columns if c.endswith(("mean", "std"))]
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            raise PublishedDataError(f"{path}: non-numeric {column} in row(s) {list(frame.index[bad][:5])}")
        frame[column] = values
    return frame


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, directory: str) -> PublishedResults:
    root = Path(directory)
    tables = {key: _read_table(root, key) for key in TABLE_FILES}
    protocol_path = root / "protocol.yaml"
    if not protocol_path.is_file():
        raise PublishedDataError(f"missing {protocol_path}: the protocol metadata of the published tables")
    with open(protocol_path) as f:
        protocol = yaml.safe_load(f)
    if not isinstance(protocol, dict) or "tables" not in protocol or "table2" not in protocol["tables"]:
        raise PublishedDataError(f"{protocol_path} has no tables.table2 section")
    return PublishedResults(name, root, tables, protocol)


def load_published(
    name: str = "fidec-paper", directory: str | Path | None = None, validate: bool = True
) -> PublishedResults:
    """Load a published result set (``"fidec-paper"``) and, by default, verify its internal consistency.

    ``directory`` reads the same file layout from elsewhere (e.g. an edited copy). Raises
    :class:`PublishedDataError` when a file is missing or malformed or a consistency check fails.
    """
    if directory is None:
        if name not in PUBLISHED_SETS:
            close = difflib.get_close_matches(name, list(PUBLISHED_SETS), n=3)
            raise UnknownNameError(
                f"unknown published result set {name!r}; valid: {sorted(PUBLISHED_SETS)}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        directory = PUBLISHED_SETS[name]
    results = _load_cached(name, str(Path(directory).resolve()))
    if validate:
        report = results.check()
        if not report.ok:
            raise PublishedDataError(
                f"published set {name!r} in {directory} fails its consistency checks:\n  - "
                + "\n  - ".join(report.problems)
            )
    return results
