"""Outputs of the toy study: CSV tables, the claims table (:mod:`fidec_gym.eval.toy.claims`), findings and
matplotlib figures.

Everything here reads the study's results store (tables ``toy_metrics`` and ``toy_preset_metrics``) and the saved
policy samples, so the outputs can be rebuilt at any time without training (``fidec toy-study --outputs-only``).
Figures are registered as artefacts of kind ``"figure"``, which is how ``fidec leaderboard report`` finds them.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fidec_gym.eval.toy.claims import claims_frame, study_findings
from fidec_gym.eval.toy.design import (
    LANDSCAPE_KEYS,
    METRICS_TABLE,
    PRESET_TABLE,
    TOY_ENV_IDS,
    VARIANTS,
    StudyTask,
    samples_path,
)
from fidec_gym.eval.toy.preset_metrics import analytic_preset_metric_rows
from fidec_gym.files import atomic_path, atomic_write_text

SUMMARY_COLUMNS = ("sf1", "mq", "sv", "ni", "final_divergence")


# ================================================================================================ CSV tables
def _write_csv(frame, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def metrics_frame(store):
    """The ``toy_metrics`` rows as a DataFrame sorted by landscape, critic, agent and seed."""
    import pandas as pd

    frame = pd.DataFrame(store.rows(METRICS_TABLE))
    if frame.empty:
        return frame
    order = {name: i for i, name in enumerate(VARIANTS)}
    frame["_order"] = frame["agent"].map(lambda name: order.get(name, len(order)))
    frame = frame.sort_values(["landscape", "critic", "_order", "seed"]).drop(columns="_order")
    return frame.reset_index(drop=True)


def preset_metrics_frame(store, landscapes: Sequence[str]):
    """Analytic rows are added to the store for landscapes that lack them (they need no training)."""
    import pandas as pd

    have = {row["landscape"] for row in store.rows(PRESET_TABLE) if row["source"] == "analytic"}
    for landscape in landscapes:
        if landscape not in have:
            store.add_rows(PRESET_TABLE, analytic_preset_metric_rows(landscape))
    frame = pd.DataFrame(store.rows(PRESET_TABLE))
    return frame.sort_values(["landscape", "preset", "fisher_t", "source"]).reset_index(drop=True)


def summary_frame(frame):
    """Mean and standard deviation over seeds of the headline metrics per (critic, landscape, agent)."""
    if frame.empty:
        return frame
    columns = [c for c in SUMMARY_COLUMNS if c in frame]
    grouped = frame.groupby(["critic", "landscape", "agent"], sort=False)[columns]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary["seeds"] = grouped.size()
    return summary.reset_index()


# ================================================================================================ figures
@functools.lru_cache(maxsize=8)
def _background_grids(landscape: str, grid_points: int = 201) -> tuple:
    """Q and log π_β on a grid over A and τ₁, computed once per landscape (T3's density is a quadrature)."""
    from fidec_gym.envs.toy import get_landscape, reference_statistics

    land = get_landscape(landscape)
    axis = np.linspace(-1.0, 1.0, grid_points)
    gx, gy = np.meshgrid(axis, axis, indexing="xy")
    points = np.stack([gx, gy], axis=-1).reshape(-1, 2)
    log_density = land.log_density(points).reshape(gx.shape)
    finite = np.where(np.isfinite(log_density), log_density, -1e3)
    return gx, gy, land.q_value(points).reshape(gx.shape), finite, reference_statistics(landscape).tau_1


def _landscape_background(ax, landscape: str) -> None:
    """Q heat-map over A with the 1 % support contour (log π_β = τ₁)."""
    gx, gy, q, log_density, tau_1 = _background_grids(landscape)
    ax.imshow(q, origin="lower", extent=(-1, 1, -1, 1), cmap="viridis", alpha=0.85)
    ax.contour(gx, gy, log_density, levels=[tau_1], colors="white", linewidths=0.9, linestyles="solid")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")


def _scatter(ax, actions: np.ndarray, colour: str) -> None:
    if np.ptp(actions, axis=0).max() < 1e-3:  # a deterministic policy (BC's mean): one point, drawn as a cross
        ax.scatter(actions[:1, 0], actions[:1, 1], s=60, c=colour, marker="x", linewidths=2)
        return
    ax.scatter(actions[:, 0], actions[:, 1], s=1.5, c=colour, alpha=0.35, linewidths=0)


def _load_samples(out_dir: Path, task: StudyTask) -> Optional[np.ndarray]:
    path = samples_path(out_dir, task)
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["actions"]


def landscape_figure(
    out_dir: Path,
    landscape: str,
    agents: Sequence[str],
    critics: Sequence[str],
    seed: int,
    path: Path,
    num_behaviour: int = 2_000,
) -> Path:
    """One row per critic mode: behaviour samples, then each agent's samples, over the Q map and support contour."""
    import matplotlib.pyplot as plt

    from fidec_gym.envs.toy import get_landscape

    behaviour = get_landscape(landscape).sample(num_behaviour, np.random.default_rng(1))
    columns = ["behaviour", *agents]
    fig, axes = plt.subplots(
        len(critics), len(columns), figsize=(1.9 * len(columns), 2.05 * len(critics)), squeeze=False
    )
    for row, critic in enumerate(critics):
        for col, name in enumerate(columns):
            ax = axes[row, col]
            _landscape_background(ax, landscape)
            if name == "behaviour":
                _scatter(ax, behaviour, "white")
                ax.set_title("behaviour", fontsize=8)
            else:
                mode = "none" if not VARIANTS[name].uses_critic else critic
                actions = _load_samples(out_dir, StudyTask(landscape, name, mode, seed))
                if actions is None:
                    ax.text(0, 0, "not run", ha="center", va="center", color="white", fontsize=8)
                else:
                    _scatter(ax, actions, "#ff5a36")
                ax.set_title(name, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"critic: {critic}", fontsize=8)
    fig.suptitle(
        f"{landscape} ({TOY_ENV_IDS[landscape]}), seed {seed}: 2,000 samples per panel; white line = 1 % "
        "support contour",
        fontsize=9,
    )
    return _save(fig, path)


def sweep_figure(out_dir: Path, landscapes: Sequence[str], critic: str, seed: int, path: Path) -> Optional[Path]:
    """Rows = landscapes, columns = paper at each Fisher time and local at both evaluation points."""
    import matplotlib.pyplot as plt

    names = [n for n in VARIANTS if n.startswith("fidec-paper")]
    names = sorted(names, key=lambda n: VARIANTS[n].overrides and dict(VARIANTS[n].overrides).get("fisher_t", 0.8))
    names += ["fidec-local", "fidec-local-scaled"]
    present = [
        n for n in names if any(_load_samples(out_dir, StudyTask(k, n, critic, seed)) is not None for k in landscapes)
    ]
    if not any(VARIANTS[name].sweep for name in present):
        return None  # nothing swept: the main figures already show paper and local
    fig, axes = plt.subplots(
        len(landscapes), len(present), figsize=(1.9 * len(present), 1.95 * len(landscapes)), squeeze=False
    )
    for row, landscape in enumerate(landscapes):
        for col, name in enumerate(present):
            ax = axes[row, col]
            _landscape_background(ax, landscape)
            actions = _load_samples(out_dir, StudyTask(landscape, name, critic, seed))
            if actions is not None:
                _scatter(ax, actions, "#ff5a36")
            t = dict(VARIANTS[name].overrides).get("fisher_t", 0.8)
            label = name.replace("fidec-", "") + (f" (t_f={t:g})" if name.startswith("fidec-paper") else "")
            ax.set_title(label if row == 0 else "", fontsize=8)
            if col == 0:
                ax.set_ylabel(landscape, fontsize=8)
    fig.suptitle(f"FiDec Fisher-time and evaluation-point sweep, critic {critic}, seed {seed}", fontsize=9)
    return _save(fig, path)


def table_figure(summary, path: Path, title: str) -> Optional[Path]:
    """A rendered table (so that the numbers travel with the figures into any report)."""
    import matplotlib.pyplot as plt

    if summary is None or len(summary) == 0:
        return None
    text = [[_cell(v) for v in row] for row in summary.itertuples(index=False)]
    height = 0.22 * (len(text) + 2)
    fig, ax = plt.subplots(figsize=(min(2.0 + 1.05 * len(summary.columns), 18), max(height, 1.5)))
    ax.axis("off")
    table = ax.table(cellText=text, colLabels=list(summary.columns), loc="center", cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.15)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# ================================================================================================ all outputs
def write_study_outputs(store, figures: bool = True) -> dict[str, Path]:
    """Write the CSVs, claims and figures of the study in ``store.root`` and register the figures as artefacts."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(store.root)
    frame = metrics_frame(store)
    files: dict[str, Path] = {}
    if frame.empty:
        return files
    landscapes = [k for k in LANDSCAPE_KEYS if k in set(frame["landscape"])]
    files["toy_metrics"] = _write_csv(frame, out / "toy_metrics.csv")
    preset = preset_metrics_frame(store, landscapes)
    files["toy_preset_metrics"] = _write_csv(preset, out / "toy_preset_metrics.csv")
    claims = claims_frame(frame)
    files["toy_claims"] = _write_csv(claims, out / "toy_claims.csv")
    findings = out / "toy_findings.md"
    atomic_write_text(findings, "# Toy study: findings\n\n" + "\n\n".join(study_findings(claims)) + "\n")
    files["toy_findings"] = findings
    summary = summary_frame(frame)
    files["toy_summary"] = _write_csv(summary, out / "toy_summary.csv")
    if not figures:
        return files

    critics = sorted(set(frame["critic"]) - {"none"}) or ["none"]
    seed = int(frame["seed"].min())
    agents = [name for name in VARIANTS if name in set(frame["agent"]) and not VARIANTS[name].sweep]
    figure_dir = out / "figures"
    anchor = {}  # figures are registered as artefacts of a run on the same landscape
    for landscape in landscapes:
        rows = frame[frame["landscape"] == landscape]
        anchor[landscape] = int(rows.sort_values("run_id")["run_id"].iloc[0])
        figure = landscape_figure(
            out, landscape, agents, critics, seed, figure_dir / f"toy_study_{landscape}_samples.png"
        )
        files[f"figure_{landscape}"] = figure
        store.add_artefact(anchor[landscape], "figure", str(figure))
    first = anchor[landscapes[0]]
    for critic in critics:
        path = sweep_figure(out, landscapes, critic, seed, figure_dir / f"toy_study_sweep_{critic}.png")
        if path is not None:
            files[f"figure_sweep_{critic}"] = path
            store.add_artefact(first, "figure", str(path))
    compact = summary[["critic", "landscape", "agent", "seeds", *[c for c in summary.columns if c.endswith("_mean")]]]
    for critic in sorted(set(compact["critic"])):
        part = compact[compact["critic"].isin([critic, "none"])] if critic != "none" else compact
        path = table_figure(
            part,
            figure_dir / f"toy_study_summary_{critic}.png",
            f"Toy study summary (mean over seeds), critic {critic}",
        )
        if path is not None and critic != "none":
            files[f"figure_summary_{critic}"] = path
            store.add_artefact(first, "figure", str(path))
    cols = [
        c
        for c in ("landscape", "preset", "fisher_t", "source", "m11", "m12", "m22", "eig_ratio", "axial_concentration")
        if c in preset
    ]
    path = table_figure(
        preset[cols],
        figure_dir / "toy_study_preset_metrics.png",
        "Metric applied by each FiDec preset: trained BC flow vs ideal velocity",
    )
    if path is not None:
        files["figure_preset_metrics"] = path
        store.add_artefact(first, "figure", str(path))
    return files


def report_section(ctx):
    """Extra report section (registered by ``fidec toy-study``): the claims and the preset metrics as tables.

    ``fidec leaderboard report`` shows the study's figures (summary and preset-metric tables included) through the
    report's figure artefacts even without this section.
    """
    from fidec_gym.eval.paper.render import Section, Table

    out = Path(ctx.store.root)
    claims_path, preset_path = out / "toy_claims.csv", out / "toy_preset_metrics.csv"
    if not claims_path.is_file():
        return None
    import pandas as pd

    section = Section("Toy study: claims and preset metrics")
    section.paragraphs.append(
        "Each claim of the paper (docs/toy_landscapes.md §3) as a paired difference over seeds with a 95 % "
        "bootstrap interval; it holds when the sign is as predicted and the interval excludes zero."
    )
    claims = pd.read_csv(claims_path)
    section.paragraphs += study_findings(claims)
    if not claims.empty:
        main = claims[claims["fidec_variant"].isin(["fidec-paper", "fidec-local"]) | (claims["prediction"] == "≠ 0?")]
        columns = [
            "critic",
            "landscape",
            "claim",
            "agent",
            "reference",
            "seeds",
            "mean_difference",
            "ci_low",
            "ci_high",
            "verdict",
        ]
        section.tables.append(
            Table(
                columns,
                [[_cell(v) for v in row] for row in main[columns].itertuples(index=False)],
                "Claims (fidec-paper and fidec-local; full table in toy_claims.csv)",
            )
        )
    if preset_path.is_file():
        preset = pd.read_csv(preset_path)
        columns = [
            c
            for c in (
                "landscape",
                "preset",
                "fisher_t",
                "source",
                "m11",
                "m12",
                "m22",
                "eig_ratio",
                "axial_concentration",
                "median_row_eig_ratio",
            )
            if c in preset
        ]
        section.tables.append(
            Table(
                columns,
                [[_cell(v) for v in row] for row in preset[columns].itertuples(index=False)],
                "Trace-normalised metric of each preset: trained BC flow vs ideal velocity",
            )
        )
    return section
