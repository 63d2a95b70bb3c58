"""The results report: ``DIR/report/report.md`` and a static ``DIR/report/index.html``.

Built entirely from the results store: comparison tables (ours beside the paper, with protocol flags), rliable
aggregates, matplotlib figures (learning curves, aggregate intervals, performance profiles, per-category bars beside
the paper's) and the recorded videos (copied into the report folder, so the folder can be moved or served as is).

The report is written into a temporary folder and swapped in at the end, so an interrupted build never leaves a
half-written report behind.

Extension point: more sections can be added with :func:`register_section`. The toy-study section below is the hook
used by the toy study; it shows every artefact of kind ``"figure"`` and the rows of the store's ``toy_metrics``
table, whichever exist.

The figures are drawn in :mod:`fidec_gym.eval.paper.figures`; the sections' building blocks and their Markdown and
HTML rendering live in :mod:`fidec_gym.eval.paper.render`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from fidec_gym.errors import ResultsPermissionError
from fidec_gym.eval.paper.compare import Comparison, compare
from fidec_gym.eval.paper.figures import aggregate_figure, category_bars, learning_curve_figure, profile_figure
from fidec_gym.eval.paper.published import PublishedResults
from fidec_gym.eval.paper.render import Figure, Section, Table, Video, render_html, render_markdown
from fidec_gym.eval.paper.text import aggregate_rows, category_rows, task_rows
from fidec_gym.files import current_umask

if TYPE_CHECKING:
    from fidec_gym.eval.store import ResultsStore

REPORT_DIRNAME = "report"
CURVE_METRIC = "normalized_score"


@dataclass
class ReportContext:
    """What a section builder gets: the store, the comparison, and the folder it may write files into."""

    store: ResultsStore
    comparison: Comparison
    published: Optional[PublishedResults]
    report_dir: Path
    preset: Optional[str]

    def runs(self) -> list[dict]:
        return self.store.runs(**({} if self.preset is None else {"preset": self.preset}))


SectionBuilder = Callable[[ReportContext], Optional[Section]]
_EXTRA_SECTIONS: list[SectionBuilder] = []


def register_section(builder: SectionBuilder) -> SectionBuilder:
    """Add a section builder (called after the built-in sections); usable as a decorator."""
    if builder not in _EXTRA_SECTIONS:
        _EXTRA_SECTIONS.append(builder)
    return builder


# ============================================================================ built-in sections
def overview_section(ctx: ReportContext) -> Section:
    runs = ctx.runs()
    counts = {
        status: sum(run["status"] == status for run in runs) for status in ("done", "running", "failed", "pending")
    }
    presets = sorted({run["preset"] for run in runs if run["preset"]})
    versions = sorted({run["code_version"] for run in runs})
    section = Section("Overview")
    section.paragraphs.append(
        f"Results directory `{ctx.store.root}`; preset(s): {', '.join(presets) or '–'}; code version(s): "
        f"{', '.join(versions) or '–'}. Runs: {counts['done']} done, {counts['running']} running, "
        f"{counts['failed']} failed, {counts['pending']} pending. Published reference: "
        f"{ctx.published.protocol.get('source', ctx.published.name) if ctx.published else 'none'}."
    )
    failed = [run for run in runs if run["status"] == "failed"]
    if failed:
        section.tables.append(
            Table(
                ["agent", "task", "seed", "message"],
                [
                    [
                        r["agent"],
                        r["env_id"],
                        r["seed"],
                        (r["message"] or "").splitlines()[0][:200] if r["message"] else "",
                    ]
                    for r in failed
                ],
                "Failed runs (re-run with `fidec leaderboard run --retry-failed`)",
            )
        )
    return section


def comparison_section(ctx: ReportContext) -> Optional[Section]:
    comparison = ctx.comparison
    if comparison.empty:
        return Section("Comparison with the paper", ["No finished runs yet."])
    section = Section("Comparison with the paper")
    section.paragraphs.append(
        "Ours: mean ± std across seeds (population std, as the paper's summarisers) and a percentile-bootstrap 95% "
        "interval of the mean. Category: mean of per-task means; std across seeds of the per-seed category means. "
        "Flags list every way our protocol differs from the one behind the published number."
    )
    header, rows = category_rows(comparison.categories)
    section.tables.append(Table(header, rows, caption="Per category"))
    header, rows = task_rows(comparison.tasks)
    section.tables.append(Table(header, rows, caption="Per task"))
    figure = category_bars(comparison, ctx.report_dir / "figures" / "categories.png")
    if figure is not None:
        section.figures.append(Figure("figures/categories.png", figure))
    return section


def aggregates_section(ctx: ReportContext) -> Optional[Section]:
    comparison = ctx.comparison
    if comparison.aggregates.empty:
        return None
    section = Section("Aggregate performance (rliable)")
    section.paragraphs.append(
        f"Over the {len(comparison.aggregate_tasks)} {comparison.aggregate_scale} that every agent ran, scores "
        "divided by 100; stratified bootstrap 95% intervals. Probability of improvement P(X > Y) is over tasks and "
        "runs. Only one score scale is pooled: toy-landscape scores are never mixed with success rates."
    )
    header, rows = aggregate_rows(comparison.aggregates)
    section.tables.append(Table(header, rows, caption="IQM, mean, median, optimality gap"))
    if not comparison.improvement.empty:
        section.tables.append(
            Table(
                ["X", "Y", "P(X > Y)", "95% CI"],
                [
                    [r.agent_x, r.agent_y, f"{r.probability:.3f}", f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"]
                    for r in comparison.improvement.itertuples(index=False)
                ],
                "Probability of improvement",
            )
        )
    aggregate_figure(comparison, ctx.report_dir / "figures" / "aggregates.png")
    section.figures.append(Figure("figures/aggregates.png", "Aggregate metrics with 95% stratified-bootstrap CIs"))
    profile_figure(comparison, ctx.report_dir / "figures" / "profiles.png")
    section.figures.append(Figure("figures/profiles.png", "Performance profiles (fraction of runs with score > τ)"))
    return section


def learning_curves_section(ctx: ReportContext) -> Optional[Section]:
    runs = [run for run in ctx.runs() if run["status"] in ("done", "running", "failed")]
    evaluations: dict[int, list[dict]] = {}
    for evaluation in ctx.store.evaluations():
        evaluations.setdefault(evaluation["run_id"], []).append(evaluation)
    curves: dict[str, dict[str, list]] = {}
    for run in runs:
        points = [(e["step"], e["metrics"].get(CURVE_METRIC)) for e in evaluations.get(run["id"], [])]
        points = [(s, float(v)) for s, v in points if v is not None and math.isfinite(float(v))]
        if points:
            curves.setdefault(run["env_id"], {}).setdefault(run["agent"], []).append(points)
    if not curves:
        return None
    section = Section("Learning curves")
    section.paragraphs.append(
        f"`{CURVE_METRIC}` (success × 100 on OGBench, D4RL normalised return, toy normalised value) at each "
        "evaluation; line = mean over seeds, band = min–max over seeds."
    )
    path = ctx.report_dir / "figures" / "learning_curves.png"
    learning_curve_figure(curves, path)
    section.figures.append(Figure("figures/learning_curves.png", "Learning curves per task"))
    return section


def videos_section(ctx: ReportContext) -> Optional[Section]:
    runs = {run["id"]: run for run in ctx.runs()}
    videos = [a for a in ctx.store.artefacts(kind="video") if a["run_id"] in runs]
    if not videos:
        return None
    section = Section("Videos")
    target = ctx.report_dir / "videos"
    for artefact in videos:
        source = _resolve(ctx.store.root, artefact["path"])
        if not source.is_file():
            section.paragraphs.append(f"Missing video file `{artefact['path']}` (moved or deleted).")
            continue
        target.mkdir(parents=True, exist_ok=True)
        run = runs[artefact["run_id"]]
        name = f"run{run['id']}_{source.name}"
        shutil.copy2(source, target / name)
        step = "" if artefact["step"] is None else f", step {artefact['step']}"
        section.videos.append(Video(f"videos/{name}", f"{run['agent']} on {run['env_id']}, seed {run['seed']}{step}"))
    return section


def toy_study_section(ctx: ReportContext) -> Optional[Section]:
    """HOOK for the toy study: figure artefacts and ``toy_metrics`` rows of the store, whichever are present.

    The toy study registers its plots with ``store.add_artefact(run_id, "figure", path)`` and its metrics with
    ``store.add_rows("toy_metrics", rows)``; nothing else is needed for them to appear here.
    """
    runs = {run["id"]: run for run in ctx.runs()}
    figures = [a for a in ctx.store.artefacts(kind="figure") if a["run_id"] in runs]
    rows = ctx.store.rows("toy_metrics")
    if not figures and not rows:
        return None
    section = Section("Toy study")
    target = ctx.report_dir / "figures" / "registered"
    for artefact in figures:
        source = _resolve(ctx.store.root, artefact["path"])
        if not source.is_file():
            section.paragraphs.append(f"Missing figure file `{artefact['path']}` (moved or deleted).")
            continue
        target.mkdir(parents=True, exist_ok=True)
        name = f"run{artefact['run_id']}_{source.name}"
        shutil.copy2(source, target / name)
        run = runs[artefact["run_id"]]
        section.figures.append(
            Figure(
                f"figures/registered/{name}", f"{run['agent']} on {run['env_id']}, seed {run['seed']}: {source.stem}"
            )
        )
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        section.tables.append(
            Table(columns, [[_fmt(row.get(c)) for c in columns] for row in rows], "Toy metrics (table `toy_metrics`)")
        )
    return section


BUILTIN_SECTIONS: tuple[SectionBuilder, ...] = (
    overview_section,
    comparison_section,
    aggregates_section,
    learning_curves_section,
    videos_section,
    toy_study_section,
)


def _resolve(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(root) / candidate


def _fmt(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


# ============================================================================ entry point
def build_report(
    store,
    published=None,
    preset: Optional[str] = None,
    reps: int = 1000,
    title: Optional[str] = None,
    report_dir: Optional[Path] = None,
    comparison: Optional[Comparison] = None,
) -> Path:
    """Write ``<results dir>/report/{report.md,index.html}`` with figures and videos; returns index.html's path.

    ``report_dir`` writes the report there instead (the results directory is then only read, so it may be
    read-only). The report is assembled in a temporary folder next to the final one and swapped in at the end.
    ``comparison`` is :func:`compare`'s result for the same store, published tables, preset and ``reps`` when the
    caller already has it (its bootstrap aggregates take seconds); default: computed here.
    """
    import matplotlib

    matplotlib.use("Agg")
    root = Path(store.root)
    final = Path(report_dir).expanduser().resolve() if report_dir is not None else root / REPORT_DIRNAME
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResultsPermissionError(
            f"cannot create {final.parent} for the report ({error.strerror or error}); pass a writable --report-dir"
        ) from None
    if not os.access(final.parent, os.W_OK) or (getattr(store, "read_only", False) and report_dir is None):
        raise ResultsPermissionError(
            f"{final.parent} is not writable, so the report cannot be written there; pass --report-dir DIR to "
            "write it elsewhere (the results are only read), or fix the directory's permissions"
        )
    if comparison is None:
        comparison = compare(store, published, preset=preset, reps=reps)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=final.parent))
    try:
        ctx = ReportContext(store=store, comparison=comparison, published=published, report_dir=staging, preset=preset)
        sections = [
            s
            for s in (builder(ctx) for builder in (*BUILTIN_SECTIONS, *_EXTRA_SECTIONS))
            if s is not None and not s.empty
        ]
        title = title or f"fidec-gym results: {root.name}"
        comparison.write(staging / "tables")
        (staging / "report.md").write_text(render_markdown(title, sections))
        (staging / "index.html").write_text(render_html(title, sections))
        # mkdtemp makes a private (0700) folder; the report follows the user's umask like any other folder.
        os.chmod(staging, 0o777 & ~current_umask())
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".report-old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / "index.html"
