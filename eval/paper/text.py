"""Text rendering of the comparison: ``mean ± std`` and interval cells, GitHub-flavoured Markdown tables, the rows
of the per-task, per-category and aggregate tables as `fidec leaderboard compare` prints them and the report shows
them, and the published cells of the paper as Markdown.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import pandas as pd

from fidec_gym.eval.paper.compare import published_cells
from fidec_gym.eval.paper.published import PublishedResults, method_name
from fidec_gym.eval.paper.statistics import AGGREGATE_METRICS


def format_mean_std(mean, std, digits: int = 1, n_seeds: Optional[int] = None) -> str:
    """``mean ± std``; with one seed there is no spread to show, so it says so instead of a certain-looking ± 0.0."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n_seeds == 1:
        return f"{mean:.{digits}f} (1 seed)"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_interval(low, high, n_seeds: Optional[int] = None, digits: int = 1) -> str:
    """A confidence interval, or n/a where one seed gives no interval (its bootstrap would have zero width)."""
    if n_seeds == 1 or low is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a (1 seed)" if n_seeds == 1 else "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with str, pipes escaped)."""

    def clean(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(clean, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _paper(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:g}" if std is None or (isinstance(std, float) and math.isnan(std)) else f"{mean:g} ± {std:g}"


def _yes_no(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "no")


def _ours_beside_the_paper(r) -> list:
    """seeds, ours, 95% CI, paper, diff, paper in CI, flags: the columns task and category rows share."""
    return [
        r.n_seeds,
        format_mean_std(r.mean, r.std, n_seeds=r.n_seeds),
        format_interval(r.ci_low, r.ci_high, r.n_seeds),
        _paper(r.paper_mean, r.paper_std),
        "–" if r.diff is None or pd.isna(r.diff) else f"{r.diff:+.1f}",
        _yes_no(r.paper_in_ci),
        "; ".join(r.flags),
    ]


def task_rows(tasks: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["agent", "task", "seeds", "ours", "95% CI", "paper", "diff", "paper in CI", "flags"]
    rows = [
        [r.agent, r.env_id.removeprefix("fidec/"), *_ours_beside_the_paper(r)] for r in tasks.itertuples(index=False)
    ]
    return header, rows


def category_rows(categories: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["agent", "category", "tasks", "seeds", "ours", "95% CI", "paper", "diff", "paper in CI", "flags"]
    rows = [
        [
            r.agent,
            r.category,
            r.n_tasks if r.paper_n_tasks is None or pd.isna(r.paper_n_tasks) else f"{r.n_tasks}/{int(r.paper_n_tasks)}",
            *_ours_beside_the_paper(r),
        ]
        for r in categories.itertuples(index=False)
    ]
    return header, rows


def aggregate_rows(aggregates: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["agent", *AGGREGATE_METRICS]
    rows = []
    for agent, group in aggregates.groupby("agent", sort=False):
        cells = {r.metric: f"{r.estimate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in group.itertuples()}
        rows.append([agent, *(cells.get(metric, "–") for metric in AGGREGATE_METRICS)])
    return header, rows


def published_text(published: PublishedResults, method: str = "FiDec") -> str:
    """The paper's per-category table and one method's per-task cells, as Markdown."""
    tasks, _ = published_cells(published, method)
    methods = published.methods
    category_header = ["category", *methods]
    category_rows_ = []
    for category in published.categories:
        row = [category]
        for m in methods:
            cell = published.category_cell(m, category)
            row.append("–" if cell is None else str(cell))
        category_rows_.append(row)
    task_header = ["task", "category", f"{method_name(method)} (paper)"]
    task_rows_ = [
        [t.task, t.category, _paper(t.mean, None if pd.isna(t.std) else t.std)] for t in tasks.itertuples(index=False)
    ]
    return (
        f"Published results: {published.protocol.get('source', published.name)}\n\n"
        "Table 2 per category (DeFlow's ± is the std across tasks)\n\n"
        + markdown_table(category_header, category_rows_)
        + f"\n\nTable 2 per task, {method_name(method)}\n\n"
        + markdown_table(task_header, task_rows_)
    )
