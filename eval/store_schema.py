"""What the results store is made of below its API: the SQLite schema, JSON encoding of stored values, and the
claims that tell which live process trains a run (:class:`~fidec_gym.eval.store.ResultsStore` uses them)."""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
from pathlib import Path
from typing import Any

from fidec_gym.errors import ConfigError, ResultsError
from fidec_gym.processes import pid_alive

DB_FILENAME = "results.sqlite"
RUN_STATUSES = ("pending", "running", "done", "failed")
ARTEFACT_KINDS = ("checkpoint", "video", "log", "figure", "metrics")
RUN_FILTERS = ("id", "agent", "env_id", "seed", "cell", "preset", "status", "code_version")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SchemaError(ResultsError):
    """The results database was written by a newer fidec-gym (or is not a fidec-gym database).

    It is also a ``ValueError`` so that the command line reports it as bad input, without a traceback.
    """


def _json_default(value: Any) -> Any:
    # numpy scalars/arrays and paths appear in configs and metrics; store them as plain JSON values.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def to_json(value: Any) -> str:
    """JSON text of ``value`` with sorted keys (numpy values and paths converted)."""
    return json.dumps(value, sort_keys=True, default=_json_default)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _scalar(value: Any) -> Any:
    """A value SQLite can hold directly, or a ValueError naming the fix."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar / 0-d array
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(
        f"extra-table values must be numbers, strings or None, got {type(value).__name__} ({value!r}); "
        "encode structured values yourself, e.g. json.dumps(value)"
    )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    env_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    cell TEXT,
    preset TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    message TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    data_provenance TEXT NOT NULL,
    code_version TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    last_good_step INTEGER,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
-- One run per (agent, task, seed, cell), NULL cells counting as one value.
CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs (agent, env_id, seed, IFNULL(cell, ''));
CREATE TABLE IF NOT EXISTS evaluations (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS artefacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    step INTEGER,
    created TEXT NOT NULL,
    UNIQUE (run_id, kind, path)
);
"""
_CORE_TABLES = frozenset({"meta", "runs", "evaluations", "artefacts"})
# Who is training a run right now (a leaderboard worker): pid, host, the process's start token (tells it from a later
# process with the same pid) and a heartbeat (liveness of holders on other hosts). Added to older files in place.
_CLAIM_COLUMNS = {"claim_pid": "INTEGER", "claim_host": "TEXT", "claim_start": "TEXT", "claim_heartbeat": "TEXT"}
# A holder on another host whose heartbeat is older than this is taken to be gone.
CLAIM_STALE_SECONDS = 90.0


def claim_alive(claim: dict) -> bool:
    """Is the holder of a claim (``claim_pid``, ``claim_host``, ``claim_start``, ``claim_heartbeat``) alive?

    On this host: its pid exists and is the same process (start token). On another host: its heartbeat is recent.
    """
    if not claim.get("claim_pid"):
        return False
    if claim.get("claim_host") == socket.gethostname():
        return pid_alive(int(claim["claim_pid"]), claim.get("claim_start"))
    beat = claim.get("claim_heartbeat")
    if not beat:
        return False
    age = _dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(beat)
    return age.total_seconds() < CLAIM_STALE_SECONDS


def describe_claim(claim: dict) -> str:
    return (
        f"pid {claim.get('claim_pid')} on {claim.get('claim_host')} "
        f"(since {str(claim.get('claim_heartbeat') or '?')[:19].replace('T', ' ')} UTC)"
    )
