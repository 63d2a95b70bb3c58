"""The paper's reporting rule (docs/algorithms.md §11): which evaluations of a run make its reported score.

* OGBench state tasks: the mean of the last three evaluations (800K, 900K and 1M in the paper);
* OGBench pixel tasks: the same rule (300K, 400K and 500K in the paper);
* D4RL and toy tasks: the last evaluation (500K for D4RL in the paper);
* offline-to-online runs: the evaluation at the end of the offline phase and the one at the end of the online phase
  (the reported ``score`` is the latter).

The score is ``normalized_score``: success rate x 100 on OGBench, D4RL's normalised return, and on toy tasks the
normalised improvement x 100. Runs shorter than the paper's apply the same rule to their own evaluations, and the
summary says which steps were used. The evaluation at step 1 is a sanity check of the untrained agent and only
counts when it is the sole evaluation.
"""

from __future__ import annotations

import math
from typing import Sequence

from fidec_gym.envs.catalogue import TaskSpec
from fidec_gym.text import format_steps

EVAL_METRICS = (
    "success",
    "normalized_score",
    "return",
    "length",
    "success_std",
    "normalized_score_std",
    "return_std",
    "length_std",
    "num_episodes",
)
PAPER_STEPS = {"ogbench": (800_000, 900_000, 1_000_000), "visual": (300_000, 400_000, 500_000), "d4rl": (500_000,)}
UNITS = {
    "success": "success rate x 100",
    "normalized_return": "D4RL normalised return (x 100)",
    "value": "toy normalised improvement x 100 (0 = behaviour mean, 100 = best supported action)",
}


def _fmt(steps: Sequence[int]) -> str:
    return "/".join(format_steps(s) for s in steps)


def reported_score(evaluations: Sequence[dict], spec: TaskSpec, offline_steps: int, online_steps: int = 0) -> dict:
    """The reported score of a run from its evaluation history.

    Args:
        evaluations: dicts with ``step`` and ``normalized_score`` (any order).
        spec: the task's catalogue entry (its suite picks the rule).
        offline_steps, online_steps: the run's schedule.

    Returns:
        ``score``, ``score_rule`` (the rule in words with the steps used), ``score_steps``, ``paper_rule``,
        ``protocol_matches_paper`` and ``unit``; offline-to-online runs add ``score_offline``/``score_online``.
    """
    history = sorted((e for e in evaluations if "step" in e), key=lambda e: e["step"])
    result: dict = {"unit": UNITS[spec.metric]}
    if not history:
        return {
            **result,
            "score": math.nan,
            "score_rule": "no evaluations",
            "score_steps": [],
            "paper_rule": "",
            "protocol_matches_paper": False,
        }
    scores = {int(e["step"]): float(e["normalized_score"]) for e in history}

    if online_steps > 0:
        offline_end = max((s for s in scores if s <= offline_steps), default=min(scores))
        online_end = max(scores)
        return {
            **result,
            "score": scores[online_end],
            "score_offline": scores[offline_end],
            "score_online": scores[online_end],
            "score_steps": [offline_end, online_end],
            "score_rule": (
                f"offline-to-online: evaluation at the end of offline training (step {offline_end}) and "
                f"at the end of online training (step {online_end}); score = the latter"
            ),
            "paper_rule": "evaluations at 1M (end of offline) and 2M (end of online)",
            "protocol_matches_paper": (offline_end, online_end) == (1_000_000, 2_000_000),
        }

    candidates = [s for s in scores if s != 1] or list(scores)
    if spec.suite in ("ogbench", "visual"):
        used = candidates[-3:]
        rule = f"mean of the last {len(used)} evaluation(s), at steps {_fmt(used)}"
        paper = f"mean of the evaluations at {_fmt(PAPER_STEPS[spec.suite])}"
    else:
        used = candidates[-1:]
        rule = f"the last evaluation, at step {_fmt(used)}"
        paper = (
            "the evaluation at 500K"
            if spec.suite == "d4rl"
            else "the last evaluation (toy tasks have no published protocol)"
        )
    score = sum(scores[s] for s in used) / len(used)
    return {
        **result,
        "score": score,
        "score_rule": rule,
        "score_steps": used,
        "paper_rule": paper,
        "protocol_matches_paper": tuple(used) == PAPER_STEPS.get(spec.suite, ()),
    }
