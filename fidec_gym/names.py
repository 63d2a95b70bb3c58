"""The one list of agent names (importable without JAX: run settings and presets are checked before it loads).

``fidec-official`` is FiDec with the released code's metric estimator (preset ``official``) as its default: a name of
its own, so that a leaderboard runs both presets side by side and the store, comparison and report keep them apart.
It uses FiDec's per-task hyperparameters and is compared with the paper's FiDec cells.
"""

from __future__ import annotations

AGENT_NAMES = ("bc", "iql", "rebrac", "fql", "deflow", "fidec", "fidec-official")
# Named variants: registered name -> the agent whose per-task hyperparameters and published cells it shares.
BASE_AGENT = {"fidec-official": "fidec"}


def base_agent(name: str) -> str:
    return BASE_AGENT.get(name, name)
