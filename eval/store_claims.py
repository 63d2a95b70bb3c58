"""Claims: which live process trains a run now, so two grids on one results directory never train a run twice.

A claim is the (pid, host, process start time, heartbeat) of its holder, stored on the run's row; it is taken in one
``BEGIN IMMEDIATE`` transaction and judged alive by :func:`~fidec_gym.eval.store_schema.claim_alive`.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager

from fidec_gym.eval.store_schema import _now, claim_alive
from fidec_gym.processes import identity


class RunClaims:
    """The claim methods of :class:`~fidec_gym.eval.store.ResultsStore`, which provides the two below."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # one BEGIN IMMEDIATE transaction
        raise NotImplementedError

    def get_run(self, run_id: int) -> dict:
        raise NotImplementedError

    def claim_runs(self, run_ids: list[int]) -> dict | None:
        """Claim ``run_ids`` for this process in one ``BEGIN IMMEDIATE`` transaction.

        Returns None when claimed (runs held by a dead process, or by nobody, are taken over), or the claim of the
        live process that holds one of them (nothing is changed then).
        """
        me = identity()
        ids = [int(i) for i in run_ids]
        if not ids:
            return None
        marks = ", ".join("?" * len(ids))
        with self._write() as conn:
            rows = conn.execute(f"SELECT * FROM runs WHERE id IN ({marks})", ids).fetchall()
            for row in rows:
                claim = dict(row)
                mine = claim["claim_pid"] == me["pid"] and claim["claim_host"] == me["host"]
                if not mine and claim_alive(claim):
                    return claim
            conn.execute(
                f"UPDATE runs SET claim_pid = ?, claim_host = ?, claim_start = ?, claim_heartbeat = ? "
                f"WHERE id IN ({marks})",
                (me["pid"], me["host"], me["start"], _now(), *ids),
            )
        return None

    def heartbeat(self, run_ids: list[int]) -> None:
        """Refresh this process's claim on ``run_ids`` (holders on other hosts are judged by it)."""
        me = identity()
        ids = [int(i) for i in run_ids]
        marks = ", ".join("?" * len(ids))
        with self._write() as conn:
            conn.execute(
                f"UPDATE runs SET claim_heartbeat = ? WHERE id IN ({marks}) AND claim_pid = ? AND claim_host = ?",
                (_now(), *ids, me["pid"], me["host"]),
            )

    def release_runs(self, run_ids: list[int]) -> None:
        """Drop this process's claim on ``run_ids`` (claims of other processes stay)."""
        me = identity()
        ids = [int(i) for i in run_ids]
        marks = ", ".join("?" * len(ids))
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET claim_pid = NULL, claim_host = NULL, claim_start = NULL, claim_heartbeat = NULL "
                f"WHERE id IN ({marks}) AND claim_pid = ? AND claim_host = ?",
                (*ids, me["pid"], me["host"]),
            )

    def live_claim(self, run_ids: list[int]) -> dict | None:
        """The claim of a live process other than this one on any of ``run_ids``, or None."""
        me = identity()
        for run_id in run_ids:
            run = self.get_run(run_id)
            mine = run.get("claim_pid") == me["pid"] and run.get("claim_host") == me["host"]
            if not mine and claim_alive(run):
                return run
        return None
