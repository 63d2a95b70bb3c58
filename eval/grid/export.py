"""A results directory as a small, self-contained folder to commit or share: the SQLite store (one file, its
write-ahead log folded in) and the files its runs registered (training-metric CSVs, videos, figures), with the
store's paths made relative so that ``fidec leaderboard report --out FOLDER`` works wherever the folder lies.
Checkpoints and datasets are left behind: they are large, and the store already holds every evaluation.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Optional

from fidec_gym.errors import ConfigError, ResultsNotFoundError
from fidec_gym.eval.store import DB_FILENAME, ResultsStore, is_snapshot
from fidec_gym.files import current_umask


def export_results(out: Path, target: Path, preset: Optional[str] = None) -> dict[str, int]:
    """Copy the store of ``out`` (only ``preset``'s runs, if given) and its runs' artefacts into ``target``.

    ``target`` is replaced as a whole, and only once the copy is complete. Returns counts of runs, evaluations and
    artefact files exported.
    """
    out, target = Path(out).expanduser().resolve(), Path(target).expanduser().resolve()
    if out == target or out in target.parents:
        raise ConfigError(f"export into a folder outside the results directory {out}, not {target}")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--to {target} is a file, not a folder; pass a folder to write the export into")
    if target.is_dir() and any(target.iterdir()) and not is_snapshot(target / DB_FILENAME):
        raise ConfigError(
            f"--to {target} holds files that are not an earlier export, and an export replaces its folder as a whole; "
            "pass a new or empty folder (or an earlier export to refresh it)"
        )
    store = ResultsStore.open_for_reading(out)
    if not store.runs():
        raise ResultsNotFoundError(f"{out} has no runs to export; run `fidec leaderboard run --out {out}` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        counts = _export_into(store, staging, preset)
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the folder follows the user's umask
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _export_into(store: ResultsStore, staging: Path, preset: Optional[str]) -> dict[str, int]:
    database = staging / DB_FILENAME
    store.copy_to(database)
    copy = sqlite3.connect(database, isolation_level=None)
    try:
        copy.execute("PRAGMA foreign_keys = ON")
        if preset is not None:
            kept = copy.execute("SELECT COUNT(*) FROM runs WHERE preset = ?", (preset,)).fetchone()[0]
            if not kept:
                raise ResultsNotFoundError(f"{store.root} has no runs of preset {preset!r}")
            for table in ("evaluations", "artefacts"):
                copy.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT id FROM runs WHERE preset != ?)", (preset,))
            copy.execute("DELETE FROM runs WHERE preset != ?", (preset,))
        copy.execute("DELETE FROM artefacts WHERE kind = 'checkpoint'")  # left behind, so not listed either
        files = 0
        for artefact_id, run_id, path in copy.execute("SELECT id, run_id, path FROM artefacts").fetchall():
            source = Path(path) if Path(path).is_absolute() else store.root / path
            relative = _relative_to(source, store.root) or Path("runs", f"run{run_id}", source.name)
            relative = Path(*(part.replace(":", "_") for part in relative.parts))  # a name every file system takes
            if not source.is_file():  # moved or deleted since: the report says so, as it would for the original
                continue
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / relative)
            files += 1
            copy.execute("UPDATE artefacts SET path = ? WHERE id = ?", (relative.as_posix(), artefact_id))
        copy.execute("VACUUM")
        copy.execute("PRAGMA journal_mode = DELETE")  # one file, opened read-only by every command (a snapshot)
        runs = copy.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        evaluations = copy.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    finally:
        copy.close()
    return {"runs": runs, "evaluations": evaluations, "files": files}


def _relative_to(path: Path, root: Path) -> Optional[Path]:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
