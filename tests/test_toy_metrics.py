"""Toy metrics M1–M12 (docs/toy_landscapes.md §3) on behaviour samples and on clouds with known answers."""

import math

import numpy as np
import pytest

from fidec_gym.envs.toy import LANDSCAPES, reference_statistics
from fidec_gym.eval.toy.metrics import METRIC_KEYS, behaviour_reference_row, toy_metrics, toy_reference

KEYS = ("T1", "T2", "T3", "T4", "T5", "T6")
# Which optional metrics each landscape defines (all others must be NaN there).
DEFINED = {
    "T1": {"coverage", "balance", "mode_mass_0", "mode_mass_1", "g_mid", "shift_left", "shift_right", "shift_ratio"},
    "T2": {"coverage", "balance", "mode_mass_0", "mode_mass_1", "g_mid", "favourable_share", "dip_mass"},
    "T3": {"analytic_dist_mean", "analytic_dist_p95", "progress", "progress_far", "lure"},
    "T4": {"analytic_dist_mean", "analytic_dist_p95", "progress", "progress_far", "lure"},
    "T5": {"coverage", "balance", *(f"mode_mass_{k}" for k in range(5)), "dip_mass"},
    "T6": {"analytic_dist_mean", "analytic_dist_p95", "tip_mass", "tip_balance", "lure"},
}
ALWAYS = {"num_samples", "sf1", "sf01", "mq", "ni", "sv", "mq_in", "dist_mean", "dist_p95", "loglik_clipped",
          "q_at_mean"}  # fmt: skip


def _cloud(centre, n=2_000, spread=0.01, seed=0):
    return np.asarray(centre) + spread * np.random.default_rng(seed).standard_normal((n, 2))


@pytest.mark.parametrize("key", KEYS)
def test_behaviour_row_scores_like_the_behaviour(key):
    row = behaviour_reference_row(key)
    assert set(row) == set(METRIC_KEYS)
    for name in METRIC_KEYS:
        assert math.isfinite(row[name]) == (name in ALWAYS | DEFINED[key]), name
    assert row["sf1"] == pytest.approx(1.0 if key == "T6" else 0.99, abs=0.005)
    assert row["sf01"] == pytest.approx(1.0 if key == "T6" else 0.999, abs=0.002)
    assert row["ni"] == pytest.approx(0.0, abs=0.03)
    assert row["dist_mean"] < 0.005
    if LANDSCAPES[key].components is not None:
        assert row["coverage"] == 1.0
        assert row["balance"] > 0.95
        masses = [row[f"mode_mass_{k}"] for k in range(len(LANDSCAPES[key].components.weights))]
        np.testing.assert_allclose(masses, 0.99 * LANDSCAPES[key].components.weights, atol=0.02)
    if key == "T2":
        assert row["favourable_share"] == pytest.approx(0.6, abs=0.02)
    if key == "T3":  # u is uniform on [-0.85, 0.85]
        assert row["progress"] == pytest.approx(0.0, abs=0.02)
        assert row["progress_far"] == pytest.approx(0.99 * 0.25 / 1.7, abs=0.01)
    if key == "T4":  # θ uniform over 0.7π
        assert row["progress"] == pytest.approx(0.5, abs=0.01)
        assert row["progress_far"] == pytest.approx(0.99 * 0.15 / 0.7, abs=0.01)


@pytest.mark.parametrize(
    "key, centre",
    [("T1", (0.1, 0.8)), ("T2", (0.0, -0.6)), ("T3", (0.5, -0.6)), ("T4", (0.0, -0.05)), ("T5", (0.0, 0.0)),
     ("T6", (0.1, 0.0))],
)  # fmt: skip
def test_off_support_cloud_scores_zero_support(key, centre):
    actions = _cloud(centre)
    row = toy_metrics(key, actions)
    stats = reference_statistics(key)
    assert row["sf1"] == 0.0 and row["sf01"] == 0.0
    assert row["sv"] == pytest.approx(stats.min_q)  # every sample counts at the worst value
    assert math.isnan(row["mq_in"])
    assert row["dist_mean"] > 0.05  # T5: the lobes' radial tails reach within about 0.07 of the origin
    if LANDSCAPES[key].components is not None:
        assert row["coverage"] == 0.0 and math.isnan(row["balance"])
    assert row["loglik_clipped"] <= stats.tau_01


def test_support_fraction_sv_and_ni_known_answers():
    stats = reference_statistics("T1")
    peak = np.tile([-0.45, 0.35], (100, 1))  # the best supported action: Q = 1, inside the 1 % support
    off = np.tile([0.1, 0.8], (100, 1))
    row = toy_metrics("T1", np.concatenate([peak, off]))
    q_off = float(LANDSCAPES["T1"].q_value(np.array([0.1, 0.8])))
    assert row["sf1"] == 0.5
    assert row["mq"] == pytest.approx(0.5 * (1.0 + q_off))
    assert row["sv"] == pytest.approx(0.5 * (1.0 + stats.min_q))
    assert row["mq_in"] == pytest.approx(1.0)
    assert toy_metrics("T1", peak)["ni"] == pytest.approx(1.0, abs=1e-6)


def test_mode_metrics_on_constructed_t1_clouds():
    land = LANDSCAPES["T1"]
    samples = land.sample(4_000, np.random.default_rng(0))
    left = samples[samples[:, 0] < 0][:1_000]
    right = samples[samples[:, 0] > 0][:1_000]
    only_left = toy_metrics("T1", left)
    assert only_left["coverage"] == 0.5 and only_left["mode_mass_1"] == 0.0 and only_left["balance"] == 0.0
    # Move the narrow right mode up by 0.08 (still assigned to it), leave the left mode in place.
    moved = toy_metrics("T1", np.concatenate([left, right + [0.0, 0.08]]))
    assert moved["shift_right"] == pytest.approx(0.08, abs=0.01)
    assert moved["shift_left"] < 0.02
    assert moved["shift_ratio"] < 0.3
    gap = toy_metrics("T1", _cloud((0.15, -0.1), spread=0.005))  # between the modes, off support
    assert gap["g_mid"] == 1.0
    assert gap["q_at_mean"] == pytest.approx(float(land.q_value(np.array([0.15, -0.1]))), abs=1e-3)


def test_t2_saddle_and_t5_basin_masses():
    saddle = toy_metrics("T2", _cloud((0.2, -0.05), spread=0.005))
    assert saddle["dip_mass"] == 1.0
    land = LANDSCAPES["T5"]
    lobes = toy_metrics("T5", np.repeat(land.components.means, 200, axis=0))  # 200 actions at every lobe centre
    assert lobes["coverage"] == 1.0 and lobes["balance"] == pytest.approx(1.0)
    assert lobes["dip_mass"] == 0.0  # every lobe centre has Q > 0
    assert toy_metrics("T5", _cloud((0.0, 0.0), spread=0.02))["dip_mass"] == 1.0


def test_t3_progress_distance_and_lure():
    land = LANDSCAPES["T3"]
    on_curve = land.curve(np.full(500, 0.7))
    row = toy_metrics("T3", on_curve)
    assert row["progress"] == pytest.approx(0.7, abs=1e-3)
    assert row["progress_far"] == 1.0 and row["analytic_dist_mean"] < 1e-3
    corner = toy_metrics("T3", _cloud((0.95, 0.95), spread=0.01))
    assert corner["lure"] == 1.0 and corner["sf1"] == 0.0  # Q ≈ 1.7 > Q*_supp only off support
    assert corner["analytic_dist_mean"] == pytest.approx(float(land.project(np.array([0.95, 0.95]))[0]), abs=0.01)


def test_t4_progress_and_hotspot():
    land = LANDSCAPES["T4"]
    theta = np.full(500, 0.2 * math.pi)
    arc = np.stack([0.65 * np.cos(theta), 0.65 * np.sin(theta) - 0.35], axis=-1)
    row = toy_metrics("T4", arc)
    assert row["progress"] == pytest.approx((0.85 - 0.2) / 0.7)
    assert row["progress_far"] == 1.0 and row["lure"] == 0.0
    hotspot = toy_metrics("T4", _cloud(land.hotspot, spread=0.02))
    assert hotspot["lure"] == 1.0 and hotspot["sf1"] == 0.0
    assert hotspot["analytic_dist_mean"] == pytest.approx(0.35, abs=0.02)  # the hot-spot sits 0.35 inside the arc


def test_t6_tips_lure_and_distances():
    land = LANDSCAPES["T6"]
    upper_tip = np.tile([0.35, 0.6], (300, 1))
    assert land.contains(upper_tip).all()
    row = toy_metrics("T6", upper_tip)
    assert row["tip_mass"] == 1.0 and row["tip_balance"] == 0.0
    both = toy_metrics("T6", np.concatenate([upper_tip, upper_tip * [1, -1]]))
    assert both["tip_balance"] == 1.0
    lure = toy_metrics("T6", np.tile(land.lure, (50, 1)))
    assert lure["lure"] == 1.0 and lure["sf1"] == 0.0
    # (0.1, 0) lies 0.15 from the inner centre, so 0.45 inside the inner circle; the nearest point of S is (-0.35, 0).
    assert lure["analytic_dist_mean"] == pytest.approx(0.45, abs=1e-9)
    assert lure["dist_mean"] == pytest.approx(0.45, abs=0.01)
    assert lure["loglik_clipped"] == pytest.approx(reference_statistics("T6").tau_01 - 10.0)


def test_analytic_crescent_distance_agrees_with_nearest_reference_sample():
    land = LANDSCAPES["T6"]
    points = np.random.default_rng(9).uniform(-1, 1, size=(400, 2))
    analytic = land.support_distance(points)
    nearest, _ = toy_reference("T6").tree.query(points)
    assert np.all(analytic <= nearest + 1e-12)  # the reference samples lie in S
    np.testing.assert_allclose(analytic, nearest, atol=0.01)


def test_bad_actions_are_rejected_with_a_fix():
    with pytest.raises(ValueError, match="NaN"):
        toy_metrics("T1", np.array([[0.0, np.nan], [0.1, 0.2]]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        toy_metrics("T1", np.zeros((10, 3)))
    with pytest.raises(ValueError, match="np.clip"):
        toy_metrics("T1", np.array([[1.5, 0.0]]))
    with pytest.raises(ValueError, match="reference is for landscape T2"):
        toy_metrics("T1", np.zeros((4, 2)), reference=toy_reference("T2"))
    with pytest.raises(KeyError, match="unknown toy landscape"):
        toy_metrics("T7", np.zeros((4, 2)))
