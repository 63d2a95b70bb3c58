"""The report's matplotlib figures, drawn headless (Agg) into PNG files: per-category bars of ours beside the paper's,
rliable's interval plot of the aggregate metrics, performance profiles and learning curves per task, with one colour
per agent that stays the same across figures (agents in :data:`AGENT_ORDER` first).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from fidec_gym.eval.paper.compare import Comparison
from fidec_gym.eval.paper.statistics import AGGREGATE_METRICS

AGENT_ORDER = ("bc", "iql", "rebrac", "fql", "deflow", "fidec")


def _agent_key(agent: str) -> tuple:
    return (AGENT_ORDER.index(agent) if agent in AGENT_ORDER else len(AGENT_ORDER), agent)


def _colour(agent: str):
    """The agent's colour in every figure and every report: tab20's dark shades for the agents of
    :data:`AGENT_ORDER` (tab10's colours), the light shade of the same hue for a variant such as ``fidec-official``,
    and one of the four pairs left over for any other name, picked by a checksum (not ``hash``, which changes from one
    process to the next)."""
    import matplotlib

    palette = matplotlib.colormaps["tab20"]
    base, _, variant = agent.partition("-")
    if base in AGENT_ORDER:
        return palette(2 * AGENT_ORDER.index(base) + (1 if variant else 0))
    return palette(2 * len(AGENT_ORDER) + zlib.crc32(agent.encode()) % (20 - 2 * len(AGENT_ORDER)))


def _line_style(agent: str) -> str:
    """Dashed for a variant of a known agent, so that it reads apart from its base in the learning curves."""
    base, _, variant = agent.partition("-")
    return "--" if base in AGENT_ORDER and variant else "-"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ============================================================================ figures
def category_bars(comparison: Comparison, path: Path) -> Optional[str]:
    """Grouped bars per category: ours (mean with bootstrap CI) beside the paper's (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = comparison.categories
    if frame.empty:
        return None
    categories = list(dict.fromkeys(frame["category"]))
    agents = sorted(frame["agent"].unique(), key=_agent_key)
    columns = min(4, len(categories))
    rows_count = math.ceil(len(categories) / columns)
    panel_width = max(3.2, 0.7 * len(agents) + 1.2)
    fig, axes = plt.subplots(rows_count, columns, figsize=(panel_width * columns, 3.4 * rows_count), squeeze=False)
    width = 0.38
    for ax, category in zip(axes.flat, categories):
        rows = frame[frame["category"] == category].set_index("agent")
        xs = np.arange(len(agents))
        for i, agent in enumerate(agents):
            if agent not in rows.index:
                continue
            row = rows.loc[agent]
            err = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
            ax.bar(
                xs[i] - width / 2,
                row["mean"],
                width,
                yerr=err,
                color=_colour(agent),
                capsize=3,
                label="ours" if i == 0 else None,
            )
            if row["paper_mean"] is not None and not _isnan(row["paper_mean"]):
                paper_std = 0.0 if row["paper_std"] is None or _isnan(row["paper_std"]) else row["paper_std"]
                ax.bar(
                    xs[i] + width / 2,
                    row["paper_mean"],
                    width,
                    yerr=paper_std,
                    color=_colour(agent),
                    alpha=0.35,
                    hatch="//",
                    capsize=3,
                    label="paper" if i == 0 else None,
                )
        ax.set_xticks(xs, agents, rotation=45, ha="right")
        ax.set_title(category)
        ax.set_ylabel("score")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(categories) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Per category: ours (solid, 95% CI) beside the paper (hatched, ± std)")
    fig.tight_layout()
    _save(fig, path)
    return "Per-category scores beside the paper's"


def _isnan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def aggregate_figure(comparison: Comparison, path: Path) -> None:
    """Interval plot of IQM / mean / median / optimality gap per agent (rliable's plot_utils layout)."""
    import matplotlib

    matplotlib.use("Agg")
    from rliable import plot_utils

    frame = comparison.aggregates
    agents = sorted(frame["agent"].unique(), key=_agent_key)
    estimates, intervals = {}, {}
    for agent in agents:
        rows = frame[frame["agent"] == agent].set_index("metric").loc[list(AGGREGATE_METRICS)]
        estimates[agent] = rows["estimate"].to_numpy()
        intervals[agent] = np.stack([rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()])
    fig, _ = plot_utils.plot_interval_estimates(
        estimates,
        intervals,
        metric_names=list(AGGREGATE_METRICS),
        algorithms=agents,
        colors={agent: _colour(agent) for agent in agents},
        xlabel="normalised score",
        subfigure_width=3.2,
        row_height=0.5,
        xlabel_y_coordinate=-0.35,
    )
    _save(fig, path)


def profile_figure(comparison: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    frame = comparison.profiles
    agents = sorted(frame["agent"].unique(), key=_agent_key)
    taus = np.sort(frame["tau"].unique())
    profiles, bands = {}, {}
    for agent in agents:
        rows = frame[frame["agent"] == agent].sort_values("tau")
        profiles[agent] = rows["fraction"].to_numpy()
        bands[agent] = np.stack([rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=bands,
        colors={agent: _colour(agent) for agent in agents},
        xlabel=r"normalised score $\tau$",
        ax=ax,
    )
    ax.legend([plt.Line2D([0], [0], color=_colour(a), lw=2) for a in agents], agents, fontsize=8, loc="lower left")
    _save(fig, path)


def learning_curve_figure(curves: dict[str, dict[str, list]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(curves)
    columns = min(3, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for agent in sorted(curves[task], key=_agent_key):
            seeds = curves[task][agent]
            steps = sorted({s for points in seeds for s, _ in points})
            # Seeds may stop at different steps (an unfinished run); aggregate those present at each step.
            values = [[v for points in seeds for s, v in points if s == step] for step in steps]
            mean = np.array([np.mean(v) for v in values])
            ax.plot(steps, mean, color=_colour(agent), linestyle=_line_style(agent), label=agent, marker="o", ms=3)
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=_colour(agent), alpha=0.15)
        ax.set_title(task.removeprefix("fidec/"), fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
