"""The toy study on a tiny configuration: CSV and store rows, resume, the oracle critic, preset-metric estimates."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from fidec_gym.envs.toy import get_landscape, state_metric
from fidec_gym.eval.store import ResultsStore
from fidec_gym.eval.toy.claims import bootstrap_interval, study_findings, verdict
from fidec_gym.eval.toy.preset_metrics import estimate_state_metric, ideal_velocity, local_metric_summary
from fidec_gym.eval.toy.study import METRICS_TABLE, PRESET_TABLE, ToyStudyConfig, oracle_q_fn, run_toy_study

TINY = dict(
    landscapes=("T1",),
    variants=("bc", "fidec-paper"),
    critics=("oracle",),
    seeds=1,
    steps=200,
    hidden_dims=(32, 32),
    batch_size=64,
    num_policy_samples=2_000,
    figure_samples=500,
    preset_metric_samples=2_000,
    eval_episodes=2,
    workers=1,
    progress=False,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-study")
    config = ToyStudyConfig(**TINY)
    result = run_toy_study(config, out, compile_cache=None)
    return config, out, result


def test_study_writes_one_row_per_agent_landscape_seed(study):
    config, out, result = study
    assert result.ran == 2 and result.skipped == 0 and not result.failures
    with open(out / "toy_metrics.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted((r["agent"], r["landscape"], r["seed"]) for r in rows) == [
        ("bc", "T1", "0"),
        ("fidec-paper", "T1", "0"),
    ]
    required = {
        "agent",
        "landscape",
        "seed",
        "critic",
        "final_divergence",
        "final_alpha",
        "q_at_mean",
        "mean_action_x",
        "mean_action_y",
    }
    assert required <= set(rows[0])
    by_agent = {r["agent"]: r for r in rows}
    assert by_agent["bc"]["critic"] == "none" and by_agent["fidec-paper"]["critic"] == "oracle"
    # BC has no trust region; FiDec reports its realised D and a positive multiplier.
    assert by_agent["bc"]["final_divergence"] in ("", "nan")
    assert float(by_agent["fidec-paper"]["final_divergence"]) >= 0.0
    assert float(by_agent["fidec-paper"]["final_alpha"]) > 0.0
    assert 0.0 <= float(by_agent["fidec-paper"]["bc_flow_sf1"]) <= 1.0  # the agent's own BC flow, scored alike
    # BC evaluates with its mean: Q at the mean equals the value of that (single) action.
    mean_action = np.array([[float(by_agent["bc"]["mean_action_x"]), float(by_agent["bc"]["mean_action_y"])]])
    assert float(by_agent["bc"]["q_at_mean"]) == pytest.approx(float(get_landscape("T1").q_value(mean_action)[0]))


def test_rows_and_runs_land_in_the_store(study):
    _, out, _ = study
    store = ResultsStore(out)
    rows = store.rows(METRICS_TABLE)
    assert len(rows) == 2
    runs = store.runs(preset="toy-study")
    assert {run["status"] for run in runs} == {"done"} and len(runs) == 2
    assert {row["run_id"] for row in rows} == {run["id"] for run in runs}
    # The trained BC flow's preset metrics sit beside the analytic ones, and the figures are report artefacts.
    sources = {row["source"] for row in store.rows(PRESET_TABLE)}
    assert sources == {"trained", "analytic"}
    figures = store.artefacts(kind="figure")
    assert figures and all(Path(artefact["path"]).is_file() for artefact in figures)
    # The written finding is computed from the claims: one seed gives signs only.
    findings = (out / "toy_findings.md").read_text()
    assert findings.startswith("# Toy study: findings") and "Critic `oracle`, up to 1 seed(s)" in findings
    # Without FQL and DeFlow only the two T1 claims against a constant apply (coverage = 1, shift ratio > 1).
    signs = re.search(r"fidec-paper (\d+) with the predicted sign, (\d+) without", findings)
    assert signs and int(signs[1]) + int(signs[2]) == 2


def test_rerun_skips_finished_rows_and_rejects_other_settings(study):
    config, out, _ = study
    again = run_toy_study(config, out, compile_cache=None, build_outputs=False)
    assert again.ran == 0 and again.skipped == 2
    assert len(ResultsStore(out).rows(METRICS_TABLE)) == 2
    with pytest.raises(ValueError, match="other settings"):
        run_toy_study(ToyStudyConfig(**{**TINY, "steps": 300}), out, compile_cache=None)


def test_oracle_mode_trains_no_critic(study):
    from fidec_gym.agents import AGENTS, example_batch_from_config, read_checkpoint
    from fidec_gym.eval.run.checkpoint import latest_checkpoint

    _, out, _ = study
    run = ResultsStore(out).runs(agent="fidec")[0]
    run_dir = next((out / "runs").glob("fidec__*"))
    checkpoint = latest_checkpoint(run_dir) / "agent.msgpack"
    config = read_checkpoint(checkpoint)["config"]
    example = example_batch_from_config(config)
    fresh = AGENTS["fidec"].create(run["seed"], example, config, q_fn=oracle_q_fn("T1"))
    trained = fresh.load(checkpoint)
    assert int(trained.network.step) > 200  # it did train
    same = jax.tree_util.tree_map(
        np.array_equal, fresh.network.params["modules_critic"], trained.network.params["modules_critic"]
    )
    assert all(jax.tree_util.tree_leaves(same))
    # The target is still Polyak-averaged towards the (unchanged) critic: tau*w + (1 - tau)*w is w up to rounding.
    close = jax.tree_util.tree_map(
        lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-7),
        fresh.network.params["modules_target_critic"],
        trained.network.params["modules_target_critic"],
    )
    assert all(jax.tree_util.tree_leaves(close))
    changed = jax.tree_util.tree_map(
        np.array_equal, fresh.network.params["modules_actor_bc_flow"], trained.network.params["modules_actor_bc_flow"]
    )
    assert not all(jax.tree_util.tree_leaves(changed))


@pytest.mark.parametrize("estimator", ["marginal", "velocity"])
def test_state_metric_from_ideal_velocity_matches_envs_toy(estimator):
    # Same samples and noise as envs.toy.state_metric: the estimate must reproduce it (float32 score arithmetic).
    n, t = 5_000, 0.8
    rng = np.random.default_rng(3)
    actions = get_landscape("T2").sample(n, rng)
    estimate = estimate_state_metric(ideal_velocity("T2"), actions, t, estimator, rng)
    expected = state_metric("T2", t, estimator=estimator, n=n, seed=3)
    np.testing.assert_allclose(estimate, expected, atol=1e-4)
    assert np.trace(estimate) == pytest.approx(2.0)


def test_local_metric_follows_the_smoothed_score_direction():
    # Behaviour N(0, diag(0.3², 0.01²)): the marginal at time t is N(0, C) with C = t²Σ + (1 - t)²I, so the score
    # -C⁻¹x is dominated by the thin y axis only while the blur (1 - t) is below the thin width. At t = 0.99 every
    # row constrains y; at t = 0.8 the blur (0.2) swamps the 0.01 width and the stiff axis flips to x.
    def velocity(x, t):  # the ideal velocity u = (E[x1 | x] - x) / (1 - t) of that Gaussian
        s2 = np.array([0.3**2, 0.01**2])
        gain = t * s2 / (t**2 * s2 + (1 - t) ** 2)
        return (gain * x - x) / (1 - t)

    actions = np.random.default_rng(0).normal(size=(4_000, 2)) * [0.3, 0.01]
    sharp = local_metric_summary(velocity, actions, 0.99, "scaled")
    assert sharp["m22"] > 1.8 and sharp["axial_concentration"] > 0.8
    assert sharp["stiff_axis_deg"] == pytest.approx(90.0, abs=2.0)
    blurred = local_metric_summary(velocity, actions, 0.8, "scaled")
    assert blurred["m11"] > 1.8 and min(blurred["stiff_axis_deg"], 180 - blurred["stiff_axis_deg"]) < 2.0
    # Each row is rank one plus damping after trace normalisation: far more anisotropic than the mean.
    assert sharp["median_row_eig_ratio"] > 100 * sharp["eig_ratio"]


def test_acceptance_rule():
    low, high = bootstrap_interval(np.array([0.2, 0.3, 0.25, 0.22, 0.28]))
    assert 0.2 <= low < high <= 0.3
    assert all(np.isnan(bootstrap_interval(np.array([1.0]))))  # one seed: no interval
    assert verdict(np.array([0.2, 0.3, 0.25]), 0.2, 0.3, "greater") == "holds"
    assert verdict(np.array([-0.2, -0.3, -0.25]), -0.3, -0.2, "greater") == "opposite"
    assert verdict(np.array([-0.2, 0.3, 0.1]), -0.2, 0.3, "greater") == "inconclusive"
    assert verdict(np.zeros(3), 0.0, 0.0, "equals") == "holds in every seed"
    assert verdict(np.array([0.0, -0.5]), -0.5, 0.0, "equals") == "fails in 1 of 2 seeds"


def test_written_findings_tally_the_claims_table():
    import pandas as pd

    def row(claim, variant, verdict_text, landscape="T1", mean=0.1, low=0.05, high=0.15, prediction="> 0"):
        return {
            "critic": "learned",
            "landscape": landscape,
            "claim": claim,
            "fidec_variant": variant,
            "seeds": 3,
            "mean_difference": mean,
            "ci_low": low,
            "ci_high": high,
            "prediction": prediction,
            "verdict": verdict_text,
        }

    claims = pd.DataFrame(
        [
            row("a", "fidec-paper", "holds"),
            row("b", "fidec-paper", "holds in every seed"),
            row("c", "fidec-paper", "opposite"),
            row("d", "fidec-paper", "inconclusive"),
            row("a", "fidec-local", "fails in 1 of 3 seeds"),
            row("paper vs isotropic (supported value)", "fidec-paper", "differs", "T3", 0.24, 0.11, 0.38, "≠ 0?"),
            row(
                "paper vs isotropic (supported value)",
                "fidec-paper",
                "no detectable difference",
                "T5",
                -0.05,
                -0.1,
                0.02,
                "≠ 0?",
            ),
            row(
                "paper vs official (supported value)",
                "fidec-paper",
                "no detectable difference",
                "T2",
                0.0,
                -0.1,
                0.1,
                "≠ 0?",
            ),
        ]
    )
    (paragraph,) = study_findings(claims)
    assert paragraph.startswith("Critic `learned`, up to 3 seed(s)")
    assert "fidec-paper 2 hold, 1 fail, 1 inconclusive" in paragraph
    assert "fidec-local 0 hold, 1 fail, 0 inconclusive" in paragraph
    assert (
        "paper vs isotropic (supported value): differs on T3 +0.24 [0.11, 0.38]; no detectable difference on T5"
        in paragraph
    )
    assert "paper vs official (supported value): no detectable difference on any landscape" in paragraph
    assert study_findings(pd.DataFrame()) == []


def test_command_rejects_bad_input(tmp_path, capsys):
    from fidec_gym.cli import main

    assert main(["toy-study", "--out", str(tmp_path), "--landscapes", "T9"]) == 2
    assert "unknown toy landscape" in capsys.readouterr().err
    assert main(["toy-study", "--out", str(tmp_path), "--agents", "fidec-nope"]) == 2
    assert "fidec-paper" in capsys.readouterr().err
    assert main(["toy-study", "--out", str(tmp_path / "empty"), "--outputs-only"]) == 2
    assert "no toy-study results" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()  # --outputs-only only reads: no store is made
