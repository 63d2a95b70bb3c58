"""The paper's toy-landscape claims under the acceptance rule, and the written finding computed from them.

A claim is a predicted sign of a paired difference over seeds (docs/toy_landscapes.md §3); it holds when the 95 %
percentile-bootstrap interval of the mean difference excludes zero on the predicted side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from fidec_gym.eval.toy.design import LANDSCAPE_KEYS

FIDEC_MAIN = ("fidec-paper", "fidec-official", "fidec-local", "fidec-isotropic")
BOOTSTRAP_REPS = 10_000


@dataclass(frozen=True)
class Claim:
    """A prediction about ``metric(agent) - metric(baseline)`` (paired by seed) or ``metric(agent) - constant``.

    ``kind``: ``"greater"`` (the difference is positive), ``"equals"`` (zero in every seed, e.g. full mode
    coverage) or ``"differs"`` (a two-sided question: is there any difference?).
    """

    landscape: str
    text: str
    metric: str
    agent: str
    baseline: Optional[str] = None
    constant: Optional[float] = None
    kind: str = "greater"


def paper_claims(fidec: str) -> list[Claim]:
    """docs/toy_landscapes.md §3, with ``fidec`` standing for the FiDec variant under test."""
    claims = [
        Claim("T1", "FQL averages the modes (more inter-mode mass)", "g_mid", "fql", fidec),
        Claim("T1", "DeFlow interpolates (more inter-mode mass)", "g_mid", "deflow", fidec),
        Claim("T1", "DeFlow's sample mean sits lower in Q", "q_at_mean", fidec, "deflow"),
        Claim("T1", "FiDec keeps both modes (coverage = 1)", "coverage", fidec, constant=1.0, kind="equals"),
        Claim("T1", "weak-score mode moves farther (shift_left/shift_right > 1)", "shift_ratio", fidec, constant=1.0),
        Claim("T1", "FiDec improves more than FQL (NI)", "ni", fidec, "fql"),
        Claim("T1", "FiDec improves more than DeFlow (NI)", "ni", fidec, "deflow"),
        Claim("T2", "FQL crosses the saddle (more dip mass)", "dip_mass", "fql", fidec),
        Claim("T2", "DeFlow crosses the saddle (more dip mass)", "dip_mass", "deflow", fidec),
        Claim("T2", "FiDec concentrates on the favourable mode (share > 0.6)", "favourable_share", fidec, constant=0.6),
    ]
    for landscape, baselines in (
        ("T2", ("fql", "deflow")),
        ("T3", ("fql", "deflow")),
        ("T4", ("fql", "deflow")),
        ("T5", ("fql", "deflow")),
        ("T6", ("fql", "deflow")),
    ):
        claims += [
            Claim(
                landscape,
                f"FiDec has higher supported value than {b.upper() if b == 'fql' else 'DeFlow'}",
                "sv",
                fidec,
                b,
            )
            for b in baselines
        ]
    claims += [
        Claim("T3", "FQL drifts off support (lower SF1)", "sf1", fidec, "fql"),
        Claim("T3", "FQL drifts farther from support (M9)", "dist_mean", "fql", fidec),
        Claim("T3", "FQL reaches off-support value (M11)", "lure", "fql", fidec),
        Claim("T3", "FiDec moves farther along the manifold than DeFlow", "progress", fidec, "deflow"),
        Claim("T4", "FQL is pulled to the hot-spot (M11)", "lure", "fql", fidec),
        Claim("T4", "FiDec advances farther along the arc than DeFlow", "progress", fidec, "deflow"),
        Claim("T5", "FiDec has the least basin/valley mass vs FQL", "dip_mass", "fql", fidec),
        Claim("T5", "FiDec has the least basin/valley mass vs DeFlow", "dip_mass", "deflow", fidec),
        Claim("T6", "FQL is attracted by the lure (M11)", "lure", "fql", fidec),
        Claim("T6", "FQL leaves the crescent (lower SF1)", "sf1", fidec, "fql"),
        Claim("T6", "DeFlow under-exploits the tips (tip mass)", "tip_mass", fidec, "deflow"),
    ]
    return claims


def geometry_questions() -> list[Claim]:
    """Two-sided questions: does the metric change anything (vs isotropic), do paper and official differ?"""
    questions = []
    for landscape in LANDSCAPE_KEYS:
        questions += [
            Claim(
                landscape,
                "paper vs isotropic (supported value)",
                "sv",
                "fidec-paper",
                "fidec-isotropic",
                kind="differs",
            ),
            Claim(
                landscape,
                "local vs isotropic (supported value)",
                "sv",
                "fidec-local",
                "fidec-isotropic",
                kind="differs",
            ),
            Claim(
                landscape, "paper vs official (supported value)", "sv", "fidec-paper", "fidec-official", kind="differs"
            ),
            Claim(
                landscape,
                "paper vs official (support fraction)",
                "sf1",
                "fidec-paper",
                "fidec-official",
                kind="differs",
            ),
        ]
    return questions


def bootstrap_interval(values: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean over seeds (NaN with fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def verdict(differences: np.ndarray, low: float, high: float, kind: str) -> str:
    """The acceptance rule: the predicted sign and a 95 % interval over seeds that excludes zero."""
    differences = np.asarray(differences, dtype=np.float64)
    if len(differences) == 0:
        return "no data"
    if kind == "equals":
        misses = int(np.sum(np.abs(differences) > 1e-9))
        return "holds in every seed" if misses == 0 else f"fails in {misses} of {len(differences)} seeds"
    mean = float(differences.mean())
    if len(differences) < 2 or not (math.isfinite(low) and math.isfinite(high)):
        if kind == "differs":
            return "one seed: no interval"
        return f"one seed: {'sign as predicted' if mean > 0 else 'sign not as predicted'}"
    excludes_zero = low > 0 or high < 0
    if kind == "differs":
        return "differs" if excludes_zero else "no detectable difference"
    if not excludes_zero:
        return "inconclusive"
    return "holds" if mean > 0 else "opposite"


def evaluate_claims(frame, claims: Sequence[Claim], critic: str) -> list[dict]:
    """Paired differences over seeds for every claim whose agents were run with this critic."""
    rows = []
    for claim in claims:

        def values(agent: str, claim=claim):
            rows_ = frame[
                (frame["landscape"] == claim.landscape)
                & (frame["agent"] == agent)
                & frame["critic"].isin([critic, "none"])
            ]
            if claim.metric not in rows_:
                return None
            return rows_.set_index("seed")[claim.metric].astype(float)

        ours = values(claim.agent)
        if ours is None or ours.empty:
            continue
        if claim.baseline is not None:
            theirs = values(claim.baseline)
            if theirs is None or theirs.empty:
                continue
            diff = (ours - theirs).dropna()
            reference = claim.baseline
        else:
            diff = (ours - claim.constant).dropna()
            reference = f"{claim.constant:g}"
        mean = float(diff.mean()) if len(diff) else math.nan
        low, high = bootstrap_interval(diff.to_numpy())
        rows.append(
            {
                "critic": critic,
                "landscape": claim.landscape,
                "claim": claim.text,
                "metric": claim.metric,
                "agent": claim.agent,
                "reference": reference,
                "seeds": int(len(diff)),
                "mean_difference": mean,
                "ci_low": low,
                "ci_high": high,
                "prediction": {"greater": "> 0", "equals": "= 0", "differs": "≠ 0?"}[claim.kind],
                "verdict": verdict(diff.to_numpy(), low, high, claim.kind),
            }
        )
    return rows


def claims_frame(frame):
    import pandas as pd

    if frame.empty:
        return pd.DataFrame()
    rows = []
    for critic in sorted(set(frame["critic"]) - {"none"}) or ["none"]:
        for fidec in FIDEC_MAIN:
            rows += [{**row, "fidec_variant": fidec} for row in evaluate_claims(frame, paper_claims(fidec), critic)]
        rows += [{**row, "fidec_variant": row["agent"]} for row in evaluate_claims(frame, geometry_questions(), critic)]
    return pd.DataFrame(rows)


GEOMETRY_FINDINGS = (
    "paper vs isotropic (supported value)",
    "local vs isotropic (supported value)",
    "paper vs official (supported value)",
    "paper vs official (support fraction)",
)


def _verdict_class(verdict_text: str) -> str:
    if verdict_text.startswith("holds") or verdict_text.endswith("sign as predicted"):
        return "hold"
    if verdict_text.startswith(("opposite", "fails")) or verdict_text.endswith("not as predicted"):
        return "fail"
    return "open"


def study_findings(claims) -> list[str]:
    """The written finding, computed from the claims table: one paragraph per critic mode.

    It tallies the paper's claims per FiDec preset and names the landscapes where the two-sided geometry questions
    (does the metric matter against ``isotropic``; do the ``paper`` and ``official`` estimators differ) found a
    difference, with its interval.
    """
    paragraphs: list[str] = []
    if claims is None or claims.empty:
        return paragraphs
    for critic in sorted(set(claims["critic"])):
        rows = claims[claims["critic"] == critic]
        seeds = int(rows["seeds"].max())
        tallies = []
        for fidec in FIDEC_MAIN:
            part = rows[(rows["fidec_variant"] == fidec) & (rows["prediction"] != "≠ 0?")]
            if part.empty:
                continue
            counts = part["verdict"].map(_verdict_class).value_counts()
            if seeds < 2:  # no interval: only the sign of each difference is known
                tallies.append(
                    f"{fidec} {counts.get('hold', 0)} with the predicted sign, {counts.get('fail', 0)} without"
                )
            else:
                tallies.append(
                    f"{fidec} {counts.get('hold', 0)} hold, {counts.get('fail', 0)} fail, "
                    f"{counts.get('open', 0)} inconclusive"
                )
        sentences = [
            f"Critic `{critic}`, up to {seeds} seed(s) per agent. Of the paper's {len(paper_claims('x'))} "
            f"claims: " + "; ".join(tallies) + "."
        ]
        for question in GEOMETRY_FINDINGS:
            part = rows[rows["claim"] == question]
            if part.empty:
                continue
            if seeds < 2:
                listed = ", ".join(f"{r.landscape} {r.mean_difference:+.2f}" for r in part.itertuples())
                sentences.append(f"{question}: one seed, differences only: {listed}.")
                continue
            differs = part[part["verdict"] == "differs"]
            if differs.empty:
                sentences.append(f"{question}: no detectable difference on any landscape.")
                continue
            listed = ", ".join(
                f"{r.landscape} {r.mean_difference:+.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                for r in differs.itertuples()
            )
            rest = sorted(set(part["landscape"]) - set(differs["landscape"]))
            tail = f"; no detectable difference on {', '.join(rest)}" if rest else ""
            sentences.append(f"{question}: differs on {listed}{tail}.")
        paragraphs.append(" ".join(sentences))
    return paragraphs
