"""Our results beside the published ones: per task and per category, with protocol flags.

Aggregation follows the paper (docs/algorithms.md §11): per task, mean ± population std across seeds; per category,
the mean of the per-task means and the std across seeds of the per-seed category means. Each of our cells also gets
a percentile-bootstrap confidence interval of its mean over seeds, the published mean ± std, the difference, whether
the published mean lies inside our interval, and flags wherever our protocol differs from the published one (data
provenance, steps, network sizes and batch, seeds, evaluation episodes, OGBench success timing, quoted baselines,
no published entry).
:func:`compare` builds every table at once, rliable aggregates across tasks included, into a :class:`Comparison`.

The statistics live in :mod:`fidec_gym.eval.paper.statistics`, the Markdown rendering in
:mod:`fidec_gym.eval.paper.text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from fidec_gym.envs.catalogue import numbered_task_id, task_info
from fidec_gym.eval.paper.published import PublishedResults, method_name
from fidec_gym.eval.paper.statistics import (
    DEFAULT_REPS,
    aggregate_table,
    bootstrap_ci,
    cell_stats,
    improvement_table,
    performance_profiles,
    population_std,
    score_matrices,
)
from fidec_gym.text import format_steps


# ============================================================================ collecting our scores
def collect_scores(store, preset: Optional[str] = None, statuses: Sequence[str] = ("done",)) -> pd.DataFrame:
    """One row per finished run: agent, env_id, seed, score (table scale, 0–100) and its protocol facts.

    Reads ``summary["score"]`` (the reported score by the paper's rule, computed by the trainer) and what the run
    recorded about its protocol: offline steps, evaluation episodes, the averaged evaluation steps, the data
    provenance and the OGBench success timing. Runs without a score are skipped.
    """
    filters: dict[str, Any] = {"status": list(statuses)}
    if preset is not None:
        filters["preset"] = preset
    rows = []
    for run in store.runs(**filters):
        summary = run.get("summary") or {}
        score = summary.get("score")
        if score is None or not math.isfinite(float(score)):
            continue
        config = run.get("config") or {}
        provenance = run.get("data_provenance") or {}
        spec = task_info(run["env_id"])
        rows.append(
            {
                "run_id": run["id"],
                "agent": run["agent"],
                "env_id": spec.env_id,
                "seed": int(run["seed"]),
                "score": float(score),
                "suite": spec.suite,
                "category": spec.table_category,
                "offline_steps": _first(summary, config, ("offline_steps", "steps")),
                "eval_episodes": _first(summary, config, ("eval_episodes",)),
                "score_rule": summary.get("score_rule", ""),
                "provenance": provenance.get("provenance") or summary.get("provenance"),
                # The evaluation environment's timing (summary) decides the score; the dataset's is a fallback.
                "success_timing": summary.get("success_timing") or provenance.get("success_timing"),
                "networks": _network_differences(
                    run["agent"], summary.get("agent_overrides", config.get("agent_overrides"))
                ),
                "updated": run.get("updated", ""),
            }
        )
    columns = [
        "run_id",
        "agent",
        "env_id",
        "seed",
        "score",
        "suite",
        "category",
        "offline_steps",
        "eval_episodes",
        "score_rule",
        "provenance",
        "success_timing",
        "networks",
        "updated",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    # The same (agent, task, seed) may exist in several cells of one results directory: keep the latest.
    frame = frame.sort_values("updated").drop_duplicates(["agent", "env_id", "seed"], keep="last")
    return frame.sort_values(["agent", "env_id", "seed"]).reset_index(drop=True)


def _network_differences(agent: str, overrides: Optional[dict]) -> Optional[str]:
    """How a run's hidden layers and batch differ from its agent's defaults, which are the paper's (4 × 512 networks,
    batch 256; docs/algorithms.md), e.g. "2 × 256 networks (paper: 4 × 512)"; None where they are the same."""
    from fidec_gym.agents import get_config

    if not overrides:
        return None
    defaults = get_config(agent)

    def layers(dims) -> str:
        dims = list(dims)
        return f"{len(dims)} × {dims[0]}" if dims and len(set(dims)) == 1 else " × ".join(map(str, dims)) or "none"

    differences = []
    for key, what in (("actor_hidden_dims", "actor"), ("value_hidden_dims", "critic")):
        if key in overrides and defaults.get(key) is not None and list(overrides[key]) != list(defaults[key]):
            differences.append((what, layers(overrides[key]), layers(defaults[key])))
    if len({(ours, theirs) for _, ours, theirs in differences}) == 1:  # actor and critic alike: one phrase
        differences = [("", differences[0][1], differences[0][2])]
    words = [f"{what + ' ' if what else ''}{ours} networks (paper: {theirs})" for what, ours, theirs in differences]
    if "batch_size" in overrides and int(overrides["batch_size"]) != int(defaults["batch_size"]):
        words.append(f"batch {overrides['batch_size']} (paper: {defaults['batch_size']})")
    return "; ".join(words) or None


def _first(summary: dict, config: dict, keys: Iterable[str]):
    for key in keys:
        for source in (summary, config):
            if source.get(key) is not None:
                return source[key]
    return None


# ============================================================================ protocol flags
def protocol_flags(runs: pd.DataFrame, published_cell, n_seeds: int) -> list[str]:
    """Ways in which our runs of one cell differ from the protocol behind the published number."""
    flags: list[str] = []
    suite = runs["suite"].iloc[0]
    if suite == "toy":
        return ["toy task: no published entry"]
    if published_cell is None:
        return ["no published entry"]
    protocol = published_cell.protocol
    provenances = sorted({str(p) for p in runs["provenance"].dropna()})
    if any(p != "official" for p in provenances) and provenances:
        flags.append(f"{'/'.join(provenances)} data (paper: official)")
    steps = [int(s) for s in runs["offline_steps"].dropna()]
    if steps and protocol.get("offline_steps") and min(steps) < int(protocol["offline_steps"]):
        flags.append(f"fewer steps ({format_steps(min(steps))} vs {format_steps(protocol['offline_steps'])})")
    flags += sorted({str(n) for n in runs["networks"].dropna()})
    episodes = [int(e) for e in runs["eval_episodes"].dropna()]
    if episodes and protocol.get("eval_episodes") and min(episodes) < int(protocol["eval_episodes"]):
        flags.append(f"fewer evaluation episodes ({min(episodes)} vs {protocol['eval_episodes']})")
    paper_seeds = protocol.get("seeds")
    if paper_seeds is None:
        flags.append("paper's seed count unknown")
    elif n_seeds < int(paper_seeds):
        flags.append(f"fewer seeds ({n_seeds} vs {paper_seeds})")
    if suite in ("ogbench", "visual"):
        ours = sorted({str(t) for t in runs["success_timing"].dropna()})
        theirs = protocol.get("success_timing")
        if theirs is None:
            flags.append(f"paper's success timing unknown (ours: {'/'.join(ours) or 'unrecorded'})")
        elif ours and ours != [theirs]:
            flags.append(f"different success timing ({'/'.join(ours)} vs {theirs})")
    if published_cell.quoted:
        flags.append("paper value quoted from prior work")
    if published_cell.std is None:
        flags.append("paper printed no std")
    return flags


# A run shorter than this share of the paper's updates is not compared with the published number: the scores of
# a budget that small say nothing about the method at the paper's budget (the report says so instead of a "diff").
COMPARABLE_BUDGET = 0.1
TOO_SMALL = "budget too small to compare"


def budget_too_small(runs: pd.DataFrame, published_cell) -> Optional[str]:
    """Why our runs cannot be set against the published cell (their updates are a small share of the paper's), or
    None when they can."""
    if published_cell is None or not published_cell.protocol.get("offline_steps"):
        return None
    steps = [int(s) for s in runs["offline_steps"].dropna()]
    paper = int(published_cell.protocol["offline_steps"])
    if steps and min(steps) < COMPARABLE_BUDGET * paper:
        return f"{TOO_SMALL} ({format_steps(min(steps))} of the paper's {format_steps(paper)} updates)"
    return None


def _in_interval(value: Optional[float], interval: tuple[float, float]) -> Optional[bool]:
    if value is None or any(math.isnan(x) for x in interval):
        return None
    # Published means are rounded to integers, so allow half a unit of rounding on each side.
    return bool(interval[0] - 0.5 <= value <= interval[1] + 0.5)


# ============================================================================ tables
TASK_COLUMNS = [
    "agent",
    "env_id",
    "category",
    "n_seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "paper_mean",
    "paper_std",
    "diff",
    "paper_in_ci",
    "flags",
]
CATEGORY_COLUMNS = [
    "agent",
    "category",
    "n_tasks",
    "paper_n_tasks",
    "n_seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "paper_mean",
    "paper_std",
    "paper_std_kind",
    "diff",
    "paper_in_ci",
    "flags",
]


def task_table(
    scores: pd.DataFrame, published: Optional[PublishedResults] = None, reps: int = DEFAULT_REPS, seed: int = 0
) -> pd.DataFrame:
    """Per (agent, task): ours (mean ± std over seeds, bootstrap CI) beside the published cell, with flags."""
    rows = []
    for (agent, env_id), runs in scores.groupby(["agent", "env_id"], sort=True):
        stats = cell_stats(runs["score"], runs["seed"], reps=reps, seed=seed)
        cell = _published_task_cell(published, agent, env_id)
        too_small = budget_too_small(runs, cell)
        flags = protocol_flags(runs, cell, stats.n_seeds)
        if too_small:
            flags.insert(0, too_small)
        comparable = cell is not None and not too_small
        rows.append(
            {
                "agent": agent,
                "env_id": env_id,
                "category": runs["category"].iloc[0],
                "n_seeds": stats.n_seeds,
                "mean": stats.mean,
                "std": stats.std,
                "ci_low": stats.ci[0],
                "ci_high": stats.ci[1],
                "paper_mean": None if cell is None else cell.mean,
                "paper_std": None if cell is None else cell.std,
                "diff": stats.mean - cell.mean if comparable else None,
                "paper_in_ci": _in_interval(cell.mean, stats.ci) if comparable else None,
                "flags": flags,
            }
        )
    return pd.DataFrame(rows, columns=TASK_COLUMNS)


def category_table(
    scores: pd.DataFrame, published: Optional[PublishedResults] = None, reps: int = DEFAULT_REPS, seed: int = 0
) -> pd.DataFrame:
    """Per (agent, category): mean of per-task means; std across seeds of the per-seed category means
    (docs/algorithms.md §11).

    The per-seed category mean needs every task of the category for that seed, so only seeds present in all of the
    category's tasks enter the std and the interval; the mean always uses every run.
    """
    rows = []
    for (agent, category), runs in scores.groupby(["agent", "category"], sort=True):
        per_task_means = runs.groupby("env_id")["score"].mean()
        by_seed = runs.pivot_table(index="seed", columns="env_id", values="score", aggfunc="mean")
        complete = by_seed.dropna(axis=0, how="any")
        seed_means = complete.mean(axis=1).to_numpy()
        ci = bootstrap_ci(seed_means, reps=reps, seed=seed)
        cell = None
        if published is not None and category != "toy":
            cell = _safe(lambda: published.category_cell(agent, category))  # noqa: B023  (called at once)
        paper_tasks = len(published.tasks(category)) if (published is not None and cell is not None) else None
        flags = protocol_flags(runs, cell, len(complete))
        too_small = budget_too_small(runs, cell)
        if too_small:
            flags.insert(0, too_small)
        if paper_tasks is not None and len(per_task_means) < paper_tasks:
            flags.insert(0, f"partial category ({len(per_task_means)}/{paper_tasks} tasks)")
        compared = None if too_small else cell  # the published cell our numbers are set against, if any
        if cell is not None and cell.std_kind == "tasks":
            flags.append("paper's ± is the std across tasks")
        if len(complete) < len(by_seed):
            flags.append(f"std over {len(complete)} seeds present in every task")
        rows.append(
            {
                "agent": agent,
                "category": category,
                "n_tasks": int(len(per_task_means)),
                "paper_n_tasks": paper_tasks,
                "n_seeds": int(len(complete)),
                "mean": float(per_task_means.mean()),
                "std": population_std(seed_means),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "paper_mean": None if cell is None else cell.mean,
                "paper_std": None if cell is None else cell.std,
                "paper_std_kind": None if cell is None else cell.std_kind,
                "diff": None if compared is None else float(per_task_means.mean()) - compared.mean,
                "paper_in_ci": None if compared is None else _in_interval(compared.mean, ci),
                "flags": flags,
            }
        )
    return pd.DataFrame(rows, columns=CATEGORY_COLUMNS)


def _safe(fn):
    try:
        return fn()
    except KeyError:  # an agent that is not one of the paper's methods
        return None


def _published_task_cell(published, agent, env_id):
    if published is None:
        return None
    cell = _safe(lambda: published.task_cell(agent, env_id))
    resolved = numbered_task_id(env_id)  # the un-suffixed "-singletask-v0" alias is the category's default task
    if cell is None and resolved != env_id:
        cell = _safe(lambda: published.task_cell(agent, resolved))
    return cell


def published_cells(published: PublishedResults, method: str = "FiDec") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's cells for one method: (per-task frame, per-category frame), for printing without results."""
    method = method_name(method)
    tasks = published.per_task[published.per_task["method"] == method][["task", "category", "mean", "std"]]
    categories = published.per_category[published.per_category["method"] == method][
        ["category", "n_tasks", "mean", "std"]
    ]
    return tasks.reset_index(drop=True), categories.reset_index(drop=True)


# ============================================================================ rliable aggregates


# ============================================================================ one call for everything
@dataclass
class Comparison:
    """Everything `fidec leaderboard compare` prints and writes."""

    scores: pd.DataFrame
    tasks: pd.DataFrame
    categories: pd.DataFrame
    aggregates: pd.DataFrame
    profiles: pd.DataFrame
    improvement: pd.DataFrame
    aggregate_tasks: list[str]
    aggregate_scale: str = ""  # which score scale the aggregates pool (benchmark scores or toy scores, never both)

    @property
    def empty(self) -> bool:
        return self.scores.empty

    def write(self, directory) -> list:
        """Write every table as CSV (atomically) under ``directory``; returns the paths."""
        from pathlib import Path

        from fidec_gym.files import atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("scores", "tasks", "categories", "aggregates", "profiles", "improvement"):
            frame = getattr(self, name).copy()
            if "flags" in frame:
                frame["flags"] = frame["flags"].map(lambda flags: "; ".join(flags))
            path = directory / f"{name}.csv"
            atomic_write_text(path, frame.to_csv(index=False))
            paths.append(path)
        return paths


def compare(
    store,
    published: Optional[PublishedResults] = None,
    preset: Optional[str] = None,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> Comparison:
    """Build every comparison table from a results store (``published=None`` compares without the paper)."""
    scores = collect_scores(store, preset=preset)
    # Aggregates pool one score scale: success rates and D4RL returns (0-100) when there are any, else the toy
    # landscapes' normalised improvement, whose range (about -110 to 200) is not commensurate with them.
    benchmark = scores[scores["suite"] != "toy"] if not scores.empty else scores
    pooled, scale = (
        (benchmark, "benchmark tasks (success rate or D4RL normalised return)")
        if len(benchmark)
        else (scores, "toy landscapes (normalised improvement)")
    )
    matrices, tasks = score_matrices(pooled) if not pooled.empty else ({}, [])
    return Comparison(
        scores=scores,
        tasks=task_table(scores, published, reps=reps, seed=seed),
        categories=category_table(scores, published, reps=reps, seed=seed),
        aggregates=aggregate_table(matrices, reps=reps, seed=seed),
        profiles=performance_profiles(matrices, reps=reps, seed=seed),
        improvement=improvement_table(matrices, reps=reps, seed=seed),
        aggregate_tasks=tasks,
        aggregate_scale=scale if tasks else "",
    )
