"""Metrics M1–M12 of docs/toy_landscapes.md §3: what a policy's action samples do on a toy landscape.

Every metric uses the analytic behaviour density and value of :mod:`envs.toy`. :func:`toy_metrics` returns the same
keys for every landscape; a metric that docs/toy_landscapes.md §3 does not define for a landscape is NaN there.

==================  =====  ==========================================================================================
key                 id     meaning
==================  =====  ==========================================================================================
sf1, sf01           M1     fraction with log π_β >= τ₁ (resp. τ₀.₁)
mq, ni              M2     mean Q; (mq - Q̄_β) / (Q*_supp - Q̄_β)
sv, mq_in           M3     mean Q with off-support samples counted at min Q; mean Q of in-support samples
coverage, balance,  M4     modes with mass >= 0.25 w_k (fraction of K); normalised entropy of the mode masses;
mode_mass_k                (T1, T2, T5) in-support samples assigned to mode k by responsibility, over N
g_mid               M5     off-support samples with |a_x| < 0.3 (T1, T2)
shift_left/right,   M6     distance of each mode's assigned samples' mean from μ_k, and their ratio (T1)
shift_ratio
favourable_share    M7     m_left / (m_left + m_right) (T2)
dip_mass            M8     fraction with Q < 0 (T2, T5)
dist_mean, dist_p95 M9     distance to the nearest of 100,000 reference behaviour samples
analytic_dist_*     M9     closed-form distance from the support (T3 curve, T4 arc, T6 crescent)
progress,           M10    T3: mean u* of in-support samples, fraction in support with u* > 0.6;
progress_far               T4: mean (0.85π - θ)/0.7π of in-support samples, fraction in support with θ < 0.3π
tip_mass,           M10    T6: fraction inside S within 0.15 of a tip; min/max of the two tips' masses
tip_balance
lure                M11    T3: Q > Q*_supp; T4: within 0.12 of the hot-spot; T6: within 0.15 of (0.1, 0)
loglik_clipped      M12    mean of max(log π_β, τ₀.₁ - 10)
q_at_mean                  Q at the sample mean (low when a policy averages modes)
==================  =====  ==========================================================================================

The "far" masses of M10 are fractions of all N samples, like the mode masses, so that off-support samples cannot
inflate them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from fidec_gym.envs.toy import get_landscape, reference_samples, reference_statistics
from fidec_gym.errors import ConfigError

NUM_POLICY_SAMPLES = 10_000
NUM_NEIGHBOUR_REFERENCE = 100_000
BEHAVIOUR_ROW_SEED = 2024  # differs from the reference (12345) and dataset (0, 1) seeds
MAX_MODES = 5
_OUTSIDE_TOLERANCE = 1e-5  # float32 policies may round a clipped action just past ±1

METRIC_KEYS = (
    "num_samples", "sf1", "sf01", "mq", "ni", "sv", "mq_in",
    "coverage", "balance", *(f"mode_mass_{k}" for k in range(MAX_MODES)),
    "g_mid", "shift_left", "shift_right", "shift_ratio", "favourable_share", "dip_mass",
    "dist_mean", "dist_p95", "analytic_dist_mean", "analytic_dist_p95",
    "progress", "progress_far", "tip_mass", "tip_balance", "lure", "loglik_clipped", "q_at_mean",
)  # fmt: skip


@dataclass(frozen=True)
class ToyReference:
    """Everything the metrics compare against: thresholds, reference values and a k-d tree of behaviour samples."""

    key: str
    tau_1: float
    tau_01: float
    behaviour_mean_q: float
    best_supported_q: float
    min_q: float
    tree: cKDTree


def toy_reference(key) -> ToyReference:
    """The shared reference of a landscape (cached): docs/toy_landscapes.md §2.7 statistics and 100,000 reference
    samples."""
    return _toy_reference(get_landscape(key).key)


@functools.lru_cache(maxsize=8)
def _toy_reference(key: str) -> ToyReference:
    land = get_landscape(key)
    stats = reference_statistics(land.key)
    return ToyReference(
        key=land.key,
        tau_1=stats.tau_1,
        tau_01=stats.tau_01,
        behaviour_mean_q=stats.behaviour_mean_q,
        best_supported_q=stats.best_supported_q,
        min_q=stats.min_q,
        tree=cKDTree(reference_samples(land.key)[:NUM_NEIGHBOUR_REFERENCE]),
    )


def _check_actions(actions) -> np.ndarray:
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or len(a) == 0:
        raise ConfigError(f"actions must have shape (N, 2) with N >= 1, got {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ConfigError(f"{int(bad.sum())} of {len(a)} actions are NaN or inf; the policy diverged (check training)")
    worst = float(np.abs(a).max())
    if worst > 1.0 + _OUTSIDE_TOLERANCE:
        raise ConfigError(
            f"actions must lie in [-1, 1]² (max |a| = {worst:.4g}); clip them as the agents do: np.clip(a, -1, 1)"
        )
    return np.clip(a, -1.0, 1.0)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 and math.isfinite(num) else math.nan


def _mode_metrics(land, a: np.ndarray, in_support: np.ndarray) -> dict:
    """M4, M5 (T1, T2), M6 (T1) and M7 (T2) from the mixture responsibilities."""
    mix = land.components
    n, num_modes = len(a), len(mix.weights)
    assigned = np.argmax(mix.component_log_joint(a), axis=1)  # argmax_k r_k = argmax_k log w_k N_k
    masses = np.bincount(assigned[in_support], minlength=num_modes) / n
    out = {f"mode_mass_{k}": float(masses[k]) for k in range(num_modes)}
    out["coverage"] = float(np.mean(masses >= 0.25 * mix.weights))
    share = masses / masses.sum() if masses.sum() > 0 else None
    if share is not None:
        nonzero = share[share > 0]
        out["balance"] = float(-(nonzero * np.log(nonzero)).sum() / math.log(num_modes))
    if land.key in ("T1", "T2"):
        out["g_mid"] = float(np.mean(~in_support & (np.abs(a[:, 0]) < 0.3)))
    if land.key == "T1":
        shifts = [
            float(np.linalg.norm(a[assigned == k].mean(axis=0) - mix.means[k])) if np.any(assigned == k) else math.nan
            for k in range(2)
        ]
        out["shift_left"], out["shift_right"] = shifts
        out["shift_ratio"] = _ratio(shifts[0], shifts[1])
    if land.key == "T2":
        out["favourable_share"] = _ratio(float(masses[0]), float(masses[0] + masses[1]))
    return out


def _geometry_metrics(land, a: np.ndarray, in_support: np.ndarray, q: np.ndarray, ref: ToyReference) -> dict:
    """M10 and M11 for the landscapes with a curved support (T3, T4, T6)."""
    out = {}
    if land.key == "T3":
        _, u_star = land.project(a)
        out["progress"] = _mean_or_nan(u_star[in_support])
        out["progress_far"] = float(np.mean(in_support & (u_star > 0.6)))
        out["lure"] = float(np.mean(q > ref.best_supported_q))
    elif land.key == "T4":
        _, theta = land.polar(a)
        lo, hi = land.theta_range
        out["progress"] = _mean_or_nan((hi - theta[in_support]) / (hi - lo))
        out["progress_far"] = float(np.mean(in_support & (theta < 0.3 * math.pi)))
        out["lure"] = float(np.mean(np.linalg.norm(a - np.asarray(land.hotspot), axis=1) < land.hotspot_width))
    elif land.key == "T6":
        inside = land.contains(a)
        tips = [float(np.mean(inside & (np.linalg.norm(a - np.asarray(tip), axis=1) <= 0.15))) for tip in land.tips]
        out["tip_mass"] = sum(tips)
        out["tip_balance"] = _ratio(min(tips), max(tips))
        out["lure"] = float(np.mean(np.linalg.norm(a - np.asarray(land.lure), axis=1) <= land.lure_radius))
    return out


def toy_metrics(key, actions, reference: Optional[ToyReference] = None) -> dict[str, float]:
    """Metrics M1–M12 of policy ``actions`` (N, 2) (normally N = 10,000, after the agent's clip to A).

    Args:
        key: landscape key ("T1" ... "T6") or toy task ID.
        actions: the policy's samples; NaN/inf or points outside [-1, 1]² raise ``ValueError``.
        reference: a :class:`ToyReference` to reuse (default: the cached reference of ``key``).

    Returns:
        A dict with every key of :data:`METRIC_KEYS`; NaN where a metric does not apply to the landscape.
    """
    land = get_landscape(key)
    ref = toy_reference(land.key) if reference is None else reference
    if ref.key != land.key:
        raise ConfigError(f"reference is for landscape {ref.key}, metrics were asked for {land.key}")
    a = _check_actions(actions)

    log_density = land.log_density(a)
    q = land.q_value(a)
    # T6's log-density is constant on S and equal to τ₁; the slack keeps float rounding from deciding membership.
    in_support = log_density >= ref.tau_1 - 1e-9
    out = dict.fromkeys(METRIC_KEYS, math.nan)
    out["num_samples"] = float(len(a))
    out["sf1"] = float(in_support.mean())
    out["sf01"] = float(np.mean(log_density >= ref.tau_01 - 1e-9))
    out["mq"] = float(q.mean())
    out["ni"] = (out["mq"] - ref.behaviour_mean_q) / (ref.best_supported_q - ref.behaviour_mean_q)
    out["sv"] = float(np.where(in_support, q, ref.min_q).mean())
    out["mq_in"] = _mean_or_nan(q[in_support])
    if land.components is not None:
        out.update(_mode_metrics(land, a, in_support))
    if land.key in ("T2", "T5"):
        out["dip_mass"] = float(np.mean(q < 0.0))

    distance, _ = ref.tree.query(a)
    out["dist_mean"], out["dist_p95"] = float(distance.mean()), float(np.percentile(distance, 95))
    analytic = land.support_distance(a)
    if analytic is not None:
        out["analytic_dist_mean"], out["analytic_dist_p95"] = float(analytic.mean()), float(np.percentile(analytic, 95))
    out.update(_geometry_metrics(land, a, in_support, q, ref))

    out["loglik_clipped"] = float(np.maximum(log_density, ref.tau_01 - 10.0).mean())
    out["q_at_mean"] = float(land.q_value(a.mean(axis=0)))
    return out


def behaviour_reference_row(
    key, num_samples: int = NUM_POLICY_SAMPLES, seed: int = BEHAVIOUR_ROW_SEED
) -> dict[str, float]:
    """The metrics of fresh behaviour samples: the baseline row of the toy study (SF₁ ≈ 0.99, NI ≈ 0, C = 1)."""
    land = get_landscape(key)
    return toy_metrics(land.key, land.sample(int(num_samples), np.random.default_rng(seed)))
