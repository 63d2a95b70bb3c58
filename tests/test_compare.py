"""Comparison statistics: per-task and per-category aggregation, bootstrap intervals, protocol flags, rliable."""

import numpy as np
import pandas as pd
import pytest
from rliable import metrics

from fidec_gym.cli import main
from fidec_gym.eval.paper import compare as C
from fidec_gym.eval.paper import statistics as S
from fidec_gym.eval.paper import text as T
from fidec_gym.eval.paper.published import load_published
from fidec_gym.eval.store import ResultsStore

CUBE = "fidec/cube-single-play-singletask-task{}-v0"
# Hand-made seeds with known statistics: FiDec on cube-single task1/task2, three seeds each.
SCORES = {
    ("fidec", CUBE.format(1)): [94.0, 96.0, 98.0],
    ("fidec", CUBE.format(2)): [80.0, 90.0, 100.0],
    ("fql", CUBE.format(1)): [60.0, 70.0, 80.0],
    ("fql", CUBE.format(2)): [50.0, 50.0, 50.0],
    ("bc", "fidec/toy-bimodal-v0"): [10.0, 20.0, 30.0],
}


def _add_run(
    store, agent, env_id, seed, score, provenance="official", timing="post", steps=1_000_000, episodes=50, status="done"
):
    run_id = store.create_run(
        agent=agent,
        env_id=env_id,
        seed=seed,
        config={"offline_steps": steps},
        data_provenance={"provenance": provenance},
        code_version="test",
        cell=f"t:{agent}",
    )
    summary = {"score": score, "offline_steps": steps, "eval_episodes": episodes, "score_rule": "hand-made"}
    if "toy" not in env_id:
        summary["success_timing"] = timing
    store.set_summary(run_id, summary)
    store.set_status(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def paper():
    return load_published("fidec-paper")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ResultsStore(tmp_path_factory.mktemp("results"))
    for (agent, env_id), values in SCORES.items():
        for seed, score in enumerate(values):
            # FQL's runs follow the paper's protocol; FiDec's use generated data, fewer steps and 'pre' timing.
            if agent == "fidec":
                _add_run(
                    store, agent, env_id, seed, score, provenance="generated", timing="pre", steps=200_000, episodes=10
                )
            else:
                _add_run(store, agent, env_id, seed, score)
    _add_run(store, "iql", CUBE.format(1), 0, 50.0, status="failed")  # not finished: ignored
    return store


@pytest.fixture(scope="module")
def comparison(store, paper):
    return C.compare(store, paper, reps=500)


def _row(frame, **keys):
    mask = np.logical_and.reduce([frame[k] == v for k, v in keys.items()])
    rows = frame[mask]
    assert len(rows) == 1
    return rows.iloc[0]


def test_collect_scores_keeps_finished_runs(comparison):
    scores = comparison.scores
    assert len(scores) == 15 and set(scores["agent"]) == {"fidec", "fql", "bc"}
    assert set(scores[scores["agent"] == "fidec"]["provenance"]) == {"generated"}


def test_task_statistics(comparison):
    row = _row(comparison.tasks, agent="fidec", env_id=CUBE.format(2))
    assert row["mean"] == pytest.approx(90.0)
    assert row["std"] == pytest.approx(np.sqrt(200 / 3))  # population std (divisor n), as in the paper
    assert 80.0 <= row["ci_low"] < 90.0 < row["ci_high"] <= 100.0
    assert (row["paper_mean"], row["paper_std"]) == (96, 1)
    assert row["diff"] == pytest.approx(-6.0)
    assert row["paper_in_ci"]  # 96 lies inside the wide interval of three spread-out seeds
    constant = _row(comparison.tasks, agent="fql", env_id=CUBE.format(2))
    assert (constant["std"], constant["ci_low"], constant["ci_high"]) == (0.0, 50.0, 50.0)
    assert not constant["paper_in_ci"]  # 97 is far outside [50, 50]


def test_category_statistics(comparison):
    row = _row(comparison.categories, agent="fidec", category="cube-single")
    assert row["mean"] == pytest.approx((96.0 + 90.0) / 2)  # mean of the per-task means
    seed_means = np.array([(94 + 80) / 2, (96 + 90) / 2, (98 + 100) / 2])
    assert row["std"] == pytest.approx(seed_means.std())  # std across seeds of the per-seed category means
    assert (row["n_tasks"], row["paper_n_tasks"], row["paper_mean"]) == (2, 5, 94)
    assert row["flags"][0] == "partial category (2/5 tasks)"
    deflow_like = C.category_table(comparison.scores.assign(agent="deflow"), load_published())
    assert "paper's ± is the std across tasks" in _row(deflow_like, agent="deflow", category="cube-single")["flags"]


def test_protocol_flags(comparison):
    fidec = _row(comparison.tasks, agent="fidec", env_id=CUBE.format(1))["flags"]
    assert "generated data (paper: official)" in fidec
    assert "fewer steps (200K vs 1M)" in fidec
    assert "fewer evaluation episodes (10 vs 50)" in fidec
    assert "paper's seed count unknown" in fidec
    assert "paper's success timing unknown (ours: pre)" in fidec
    fql = _row(comparison.tasks, agent="fql", env_id=CUBE.format(1))["flags"]
    assert fql == ["fewer seeds (3 vs 8)"]  # same data, steps, episodes and timing as the paper's FQL column
    toy = _row(comparison.tasks, agent="bc", env_id="fidec/toy-bimodal-v0")
    assert toy["flags"] == ["toy task: no published entry"] and pd.isna(toy["paper_mean"])


def test_smaller_networks_and_batches_are_flagged(tmp_path, paper):
    store = ResultsStore(tmp_path)
    small = {"actor_hidden_dims": [256, 256], "value_hidden_dims": [256, 256], "batch_size": 256, "alpha": 300}
    for agent, overrides in [
        ("fql", small),
        ("fidec", {"alpha": 1}),
        ("bc", {"actor_hidden_dims": [64], "batch_size": 64}),
    ]:
        for seed in range(8):
            run_id = _add_run(store, agent, CUBE.format(2), seed, 90.0)
            store.set_summary(run_id, {**store.get_run(run_id)["summary"], "agent_overrides": overrides})
    flags = {row["agent"]: row["flags"] for _, row in C.compare(store, paper, reps=100).tasks.iterrows()}
    assert flags["fql"] == ["2 × 256 networks (paper: 4 × 512)"]  # the agent's defaults are the paper's sizes
    assert flags["bc"] == ["1 × 64 networks (paper: 4 × 512); batch 64 (paper: 256)"]
    assert "networks" not in " ".join(flags["fidec"])  # a per-task hyperparameter is not a network change


def test_timing_mismatch_is_flagged(tmp_path, paper):
    store = ResultsStore(tmp_path)
    for seed in range(8):
        _add_run(store, "fql", CUBE.format(3), seed, 90.0, timing="pre")
    row = C.compare(store, paper, reps=100).tasks.iloc[0]
    assert row["flags"] == ["different success timing (pre vs post)"]


def test_bootstrap_interval_known_answer():
    # Two seeds 0 and 100: resampled means are 0, 50, 100 with probabilities 1/4, 1/2, 1/4.
    assert S.bootstrap_ci([0.0, 100.0], reps=4000) == (0.0, 100.0)
    assert S.bootstrap_ci([7.0]) == (7.0, 7.0)
    low, high = S.bootstrap_ci(np.arange(100.0), reps=4000)
    assert low == pytest.approx(49.5 - 1.96 * np.arange(100.0).std() / 10, abs=1.5)
    assert high == pytest.approx(49.5 + 1.96 * np.arange(100.0).std() / 10, abs=1.5)


def test_rliable_aggregates_known_matrices():
    constant = np.full((5, 4), 0.5)
    ramp = np.tile(np.linspace(0.0, 1.0, 10)[:, None], (1, 3))  # 10 runs x 3 tasks
    table = S.aggregate_table({"constant": constant, "ramp": ramp}, reps=200)
    const = table[table["agent"] == "constant"].set_index("metric")
    for metric in ("IQM", "Mean", "Median"):
        assert const.loc[metric, "estimate"] == pytest.approx(0.5)
        assert const.loc[metric, "ci_low"] == pytest.approx(0.5) and const.loc[metric, "ci_high"] == pytest.approx(0.5)
    assert const.loc["Optimality Gap", "estimate"] == pytest.approx(0.5)
    ramp_rows = table[table["agent"] == "ramp"].set_index("metric")
    assert ramp_rows.loc["Mean", "estimate"] == pytest.approx(0.5)
    assert ramp_rows.loc["IQM", "estimate"] == pytest.approx(metrics.aggregate_iqm(ramp))
    assert ramp_rows.loc["Mean", "ci_low"] < 0.5 < ramp_rows.loc["Mean", "ci_high"]


def test_probability_of_improvement_and_profiles():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (6, 3)).astype(float), rng.integers(0, 4, (5, 3)).astype(float)
    assert S.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    better, worse = np.full((4, 2), 0.9), np.full((4, 2), 0.1)
    table = S.improvement_table({"fidec": better, "fql": worse, "bc": worse}, reps=100)
    assert list(zip(table["agent_x"], table["agent_y"])) == [("fidec", "fql"), ("fidec", "bc")]
    assert list(table["probability"]) == [1.0, 1.0]
    ties = S.improvement_table({"a": worse, "b": worse}, reps=100, reference=None)
    assert list(ties["probability"]) == [0.5, 0.5]
    profiles = S.performance_profiles({"fidec": better}, taus=np.array([0.0, 0.5, 0.95]), reps=100)
    assert list(profiles["fraction"]) == [1.0, 1.0, 0.0]


def test_compare_cli_prints_published_cells(capsys, tmp_path):
    assert main(["leaderboard", "compare", "--published", "fidec-paper"]) == 0
    out = capsys.readouterr().out
    assert "| cube-single-play-singletask-task2-v0 | cube-single | 96 ± 1 |" in out
    assert "51 ± 40" in out  # DeFlow scene category
    ResultsStore(tmp_path)  # an empty results directory: still the paper's cells
    assert main(["leaderboard", "compare", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no finished runs" in out and "96 ± 1" in out


def test_compare_cli_with_results(capsys, store):
    assert main(["leaderboard", "compare", "--out", str(store.root), "--reps", "100"]) == 0
    out = capsys.readouterr().out
    assert "| fidec | cube-single-play-singletask-task2-v0 | 3 | 90.0 ± 8.2 |" in out
    # The paper's FiDec cells follow our tables, also for tasks this directory did not run.
    assert "The published FiDec cells (fidec-paper)" in out
    assert "| puzzle-4x4-play-singletask-task4-v0 | puzzle-4x4 |" in out
    assert (store.root / "comparison" / "tasks.csv").is_file()


def test_compare_cli_bad_input(capsys, tmp_path):
    assert main(["leaderboard", "compare", "--out", str(tmp_path / "nothing")]) == 2
    assert "no results in" in capsys.readouterr().err
    assert main(["leaderboard", "compare", "--published", "fidec-papr"]) == 2
    assert "did you mean 'fidec-paper'" in capsys.readouterr().err
    for reps in ("0", "-5"):  # the bootstrap needs at least one repetition
        assert main(["leaderboard", "compare", "--out", str(tmp_path), "--reps", reps]) == 2
        assert f"--reps must be at least 1, got {reps}" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    assert main(["leaderboard", "compare", "--out", str(tmp_path), "--report-dir", str(blocker)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err and blocker.read_text() == "mine"


def test_a_budget_too_small_is_not_compared(tmp_path, paper):
    """A 2,000-update tour beside the paper's 1M-update cell: no diff, no 'paper in CI', a flag that says why."""
    store = ResultsStore(tmp_path)
    for seed in (0, 1):
        _add_run(store, "fql", CUBE.format(2), seed, 2.0, steps=2_000)
    _add_run(store, "fql", CUBE.format(1), 0, 4.0, steps=2_000)
    comparison = C.compare(store, paper, reps=100)
    row = _row(comparison.tasks, agent="fql", env_id=CUBE.format(2))
    assert row["flags"][0] == "budget too small to compare (2K of the paper's 1M updates)"
    assert pd.isna(row["diff"]) and pd.isna(row["paper_in_ci"])
    header, rows = T.task_rows(comparison.tasks)
    one_seed = [r for r in rows if r[1].endswith("task1-v0")][0]
    assert one_seed[3] == "4.0 (1 seed)" and one_seed[4] == "n/a (1 seed)"  # no certain-looking ± 0.0
    assert one_seed[6] == "–"  # no bare diff beside the published cell
    category = _row(comparison.categories, agent="fql", category="cube-single")  # the category says the same
    assert "budget too small to compare (2K of the paper's 1M updates)" in category["flags"]
    assert pd.isna(category["diff"]) and pd.isna(category["paper_in_ci"])
