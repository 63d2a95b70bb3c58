"""The statistics behind the comparison: population std, percentile-bootstrap intervals and per-cell summaries of
one (agent, task) or (agent, category) cell, and the rliable summaries across tasks (score matrices; IQM, mean,
median and optimality gap with stratified-bootstrap intervals; performance profiles; probability of improvement), on
scores scaled to [0, 1]. Pure functions of score arrays and frames: nothing here reads the results store or the
published tables.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
DEFAULT_REPS = 1000
AGGREGATE_METRICS = ("IQM", "Mean", "Median", "Optimality Gap")


# ============================================================================ statistics of one cell
def population_std(values: ArrayLike) -> float:
    """Standard deviation with divisor n, as the paper's summarisers compute it."""
    array = np.asarray(values, dtype=float)
    return float(array.std(ddof=0)) if array.size else math.nan


def bootstrap_ci(
    values: ArrayLike, confidence: float = CONFIDENCE, reps: int = DEFAULT_REPS, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean over seeds (degenerate [x, x] for a single seed)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    if array.size == 1 or np.all(array == array[0]):
        return float(array[0]), float(array[0])
    rng = np.random.default_rng(seed)
    # Resample seeds with replacement; means of each resample form the bootstrap distribution.
    means = array[rng.integers(0, array.size, size=(reps, array.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class CellStats:
    """Our numbers for one (agent, task) or (agent, category) cell."""

    n_seeds: int
    mean: float
    std: float
    ci: tuple[float, float]
    seeds: list[int] = field(default_factory=list)


def cell_stats(values: ArrayLike, seeds: Sequence[int] = (), reps: int = DEFAULT_REPS, seed: int = 0) -> CellStats:
    array = np.asarray(values, dtype=float)
    return CellStats(
        int(array.size),
        float(array.mean()) if array.size else math.nan,
        population_std(array),
        bootstrap_ci(array, reps=reps, seed=seed),
        list(seeds),
    )


def score_matrices(
    scores: pd.DataFrame, agents: Optional[Sequence[str]] = None, scale: float = 100.0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """{agent: (num_seeds, num_tasks)} on the tasks every agent ran, scores divided by ``scale``.

    Each agent keeps the seeds it has on every one of those tasks (rliable bootstraps runs within each task).
    """
    agents = list(agents) if agents is not None else sorted(scores["agent"].unique())
    task_sets = [set(scores.loc[scores["agent"] == agent, "env_id"]) for agent in agents]
    tasks = sorted(set.intersection(*task_sets)) if task_sets else []
    matrices = {}
    for agent in agents:
        runs = scores[(scores["agent"] == agent) & scores["env_id"].isin(tasks)]
        table = runs.pivot_table(index="seed", columns="env_id", values="score", aggfunc="mean")
        table = table.reindex(columns=tasks).dropna(axis=0, how="any")
        if len(table) and tasks:
            matrices[agent] = table.to_numpy(dtype=float) / scale
    return matrices, tasks


def aggregate_table(matrices: dict[str, np.ndarray], reps: int = DEFAULT_REPS, seed: int = 0) -> pd.DataFrame:
    """IQM, mean, median and optimality gap with stratified-bootstrap 95 % intervals (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    if not matrices:
        return pd.DataFrame(columns=["agent", "metric", "estimate", "ci_low", "ci_high"])

    def aggregate(scores):
        return np.array(
            [
                metrics.aggregate_iqm(scores),
                metrics.aggregate_mean(scores),
                metrics.aggregate_median(scores),
                metrics.aggregate_optimality_gap(scores),
            ]
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's notice about RandomState, passed on by rliable
        # arch's stratified bootstrap also draws from NumPy's global generator: seed it too, so the intervals of a
        # report are reproducible.
        np.random.seed(seed)
        estimates, intervals = rly.get_interval_estimates(
            matrices, aggregate, reps=reps, random_state=np.random.RandomState(seed)
        )
    rows = []
    for agent in matrices:
        for index, name in enumerate(AGGREGATE_METRICS):
            rows.append(
                {
                    "agent": agent,
                    "metric": name,
                    "estimate": float(estimates[agent][index]),
                    "ci_low": float(intervals[agent][0, index]),
                    "ci_high": float(intervals[agent][1, index]),
                }
            )
    return pd.DataFrame(rows)


def performance_profiles(
    matrices: dict[str, np.ndarray], taus: Optional[np.ndarray] = None, reps: int = DEFAULT_REPS, seed: int = 0
) -> pd.DataFrame:
    """Score-distribution performance profiles: fraction of runs with score > τ, with bootstrap bands."""
    from rliable import library as rly

    taus = np.linspace(0.0, 1.0, 51) if taus is None else np.asarray(taus, dtype=float)
    if not matrices:
        return pd.DataFrame(columns=["agent", "tau", "fraction", "ci_low", "ci_high"])
    np.random.seed(seed)  # create_performance_profile draws from numpy's global generator
    profiles, bands = rly.create_performance_profile(matrices, taus, reps=reps)
    rows = []
    for agent in matrices:
        for i, tau in enumerate(taus):
            rows.append(
                {
                    "agent": agent,
                    "tau": float(tau),
                    "fraction": float(profiles[agent][i]),
                    "ci_low": float(bands[agent][0, i]),
                    "ci_high": float(bands[agent][1, i]),
                }
            )
    return pd.DataFrame(rows)


def improvement_table(
    matrices: dict[str, np.ndarray], reps: int = DEFAULT_REPS, seed: int = 0, reference: Optional[str] = "fidec"
) -> pd.DataFrame:
    """P(X > Y) with stratified-bootstrap intervals (rliable): ``reference`` against every other agent, or every
    ordered pair when ``reference`` is None or was not run."""
    from rliable import library as rly
    from rliable import metrics

    columns = ["agent_x", "agent_y", "probability", "ci_low", "ci_high"]
    if reference is not None and reference in matrices:
        ordered = [(reference, other) for other in matrices if other != reference]
    else:
        ordered = list(itertools.permutations(matrices, 2))
    pairs = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in ordered}
    if not pairs:
        return pd.DataFrame(columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's notice about RandomState, passed on by rliable
        # arch's stratified bootstrap also draws from NumPy's global generator: seed it too, so the intervals of a
        # report are reproducible.
        np.random.seed(seed)
        estimates, intervals = rly.get_interval_estimates(
            pairs, probability_of_improvement, reps=reps, random_state=np.random.RandomState(seed)
        )
    rows = []
    for key, (x_scores, y_scores) in pairs.items():
        x, y = key.split(",")
        rows.append(
            {
                "agent_x": x,
                "agent_y": y,
                # The point estimate comes from rliable's own (Mann-Whitney based) implementation.
                "probability": float(metrics.probability_of_improvement(x_scores, y_scores)),
                "ci_low": float(np.ravel(intervals[key])[0]),
                "ci_high": float(np.ravel(intervals[key])[1]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks: the normalised Mann-Whitney U statistic, ties counting one half.

    Equal to ``rliable.metrics.probability_of_improvement`` but vectorised over run pairs, which makes the thousands
    of bootstrap evaluations cheap. Inputs are (num_runs, num_tasks) matrices.
    """
    x = np.asarray(scores_x, dtype=float)[:, None, :]
    y = np.asarray(scores_y, dtype=float)[None, :, :]
    wins = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(wins.mean())
