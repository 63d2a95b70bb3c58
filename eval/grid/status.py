"""``fidec leaderboard status``: per-cell counts of done / running / interrupted / failed / pending runs, and the
updates trained of the cell's budget."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

from fidec_gym.processes import pid_alive


# ============================================================================ status
def _pid_alive(message: str) -> Optional[bool]:
    """For a ``running`` run marked "pid N [on HOST]": is that process alive (None when unknown or elsewhere)?

    A killed worker whose parent died too may linger as a zombie until it is reaped: that is not alive.
    """
    parts = message.split()
    if len(parts) < 2 or parts[0] != "pid" or not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[2] == "on" and parts[3] != socket.gethostname():
        return None
    return pid_alive(int(parts[1]))


def leaderboard_status(
    out_dir: str | Path, preset: Optional[str] = None, preset_cells: Optional[list] = None
) -> tuple[list[dict], dict]:
    """Per-cell counts of done / running / failed / pending runs, the updates trained and budgeted (``trained``,
    ``budget``: a done run counts its whole budget, any other its last checkpoint), and the totals.

    A ``running`` run whose process no longer exists (on this host) is reported as ``interrupted``; re-running the
    preset resumes it. ``preset_cells`` (the preset's cells, when it can be loaded) adds the runs no grid has
    registered yet as pending, so a preset run part by part shows what is left. Only reads: works on a read-only
    results directory.
    """
    from fidec_gym.errors import ResultsNotFoundError
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore, claim_alive

    out = Path(out_dir).expanduser()
    if not (out / DB_FILENAME).is_file():
        raise ResultsNotFoundError(
            f"no results in {out} (no {DB_FILENAME}); start a grid with "
            f"`fidec leaderboard run --preset NAME --out {out}`"
        )
    store = ResultsStore.open_for_reading(out)
    filters = {} if preset is None else {"preset": preset}
    runs = store.runs(**filters)
    if preset is not None and not runs and not preset_cells:
        presets = sorted({run["preset"] for run in store.runs() if run["preset"]})
        store.close()
        raise ResultsNotFoundError(
            f"{out} has no runs of preset {preset!r}; presets with runs there: {presets or 'none'}"
        )
    cells: dict[str, dict] = {}

    def entry_of(name: str, agent: str, env_id: str) -> dict:
        counts = dict.fromkeys(("done", "running", "interrupted", "failed", "pending", "trained", "budget"), 0)
        return cells.setdefault(
            name, {"cell": name, "agent": agent, "env_id": env_id, **counts, "seeds": set(), "messages": []}
        )

    for run in runs:
        entry = entry_of(run["cell"] or f"{run['agent']}/{run['env_id']}", run["agent"], run["env_id"])
        entry["seeds"].add(run["seed"])
        config = run["config"] or {}
        budget = int(config.get("offline_steps") or 0) + int(config.get("online_steps") or 0)
        entry["budget"] += budget
        # A finished run extended to a larger budget is pending again, at the step of its last checkpoint.
        entry["trained"] += budget if run["status"] == "done" else min(int(run["last_good_step"] or 0), budget)
        status = run["status"]
        if status == "running":
            claimed = bool(run.get("claim_pid"))
            if (claimed and not claim_alive(run)) or (not claimed and _pid_alive(run["message"]) is False):
                status = "interrupted"
        entry[status] += 1
        if status == "failed" and run["message"]:
            entry["messages"].append(f"seed {run['seed']}: {run['message'].splitlines()[0]}")
    for cell in preset_cells or []:
        entry = entry_of(cell.name, cell.agent, cell.env_id)
        unregistered = [seed for seed in cell.seeds if seed not in entry["seeds"]]
        entry["pending"] += len(unregistered)
        entry["budget"] += len(unregistered) * (cell.settings["offline_steps"] + cell.settings["online_steps"])
    rows = list(cells.values())
    for row in rows:
        del row["seeds"]
        if row["failed"]:
            row["state"] = "failed"
        elif row["running"]:
            row["state"] = "running"
        elif row["interrupted"]:
            row["state"] = "interrupted"
        elif row["pending"]:
            row["state"] = "pending" if not row["done"] else "partial"
        else:
            row["state"] = "done"
    keys = ("done", "running", "interrupted", "failed", "pending", "trained", "budget")
    totals = {key: sum(row[key] for row in rows) for key in keys}
    totals["cells"] = len(rows)
    totals["cells_done"] = sum(row["state"] == "done" for row in rows)
    store.close()
    return rows, totals
