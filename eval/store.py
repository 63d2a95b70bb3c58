"""The results store: one SQLite file per results directory (``DIR/results.sqlite``).

Runs, their evaluation history, artefacts (checkpoints, videos, logs, figures) and free-form extra tables (e.g. toy
metrics) live in one embedded database so that a leaderboard, a report or a resumed run can read everything back
without parsing log files. The database runs in WAL mode with a generous busy timeout, and every write is a single
``BEGIN IMMEDIATE`` transaction, so several processes of a leaderboard can write to the same directory at once.

Example::

    store = ResultsStore("results/quick")
    run_id = store.create_run(agent="fidec", env_id="fidec/toy-bimodal-v0", seed=0, config={...},
                              data_provenance={"provenance": "synthetic"}, code_version="0.1.0")
    store.add_evaluation(run_id, step=1, metrics={"normalized_score": 12.5})
    store.set_status(run_id, "done")
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from fidec_gym.errors import ConfigError, ResultsError, ResultsPermissionError, UnknownNameError
from fidec_gym.eval.store_claims import RunClaims
from fidec_gym.eval.store_schema import (  # noqa: F401  (DB_FILENAME, to_json, the claim helpers: the store's API)
    _CLAIM_COLUMNS,
    _SCHEMA,
    ARTEFACT_KINDS,
    CLAIM_STALE_SECONDS,
    DB_FILENAME,
    RUN_FILTERS,
    RUN_STATUSES,
    SchemaError,
    _now,
    claim_alive,
    describe_claim,
    to_json,
)
from fidec_gym.eval.store_tables import ExtraTables


def is_snapshot(db: Path) -> bool:
    """A database in rollback-journal mode is an export (``fidec leaderboard export``): grids always write in WAL
    mode. Reading it read-only keeps a committed file byte for byte (opening it for writing would switch it to WAL)."""
    try:
        with open(db, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 1  # 1 legacy, 2 WAL


class ResultsStore(RunClaims, ExtraTables):
    """Runs, evaluations, artefacts and extra tables of one results directory.

    Args:
        path: the results directory; created if missing. The database is ``path/results.sqlite``.
        read_only: open an existing database for reading only (SQLite ``mode=ro``; ``immutable`` where even that
            needs a write, e.g. a WAL database without its ``-shm`` file in a read-only directory). Nothing is
            created or written; a write raises :class:`ResultsPermissionError`. See :meth:`open_for_reading`.

    Raises:
        PermissionError: the directory cannot be created or written.
        SchemaError: the database was made by a newer schema version (or is not a results database).
    """

    SCHEMA_VERSION: int = 1

    def __init__(self, path: str | Path, read_only: bool = False):
        self.root = Path(path).expanduser()
        self.db_path = self.root / DB_FILENAME
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self.read_only = read_only
        if read_only:
            if not self.db_path.is_file():
                from fidec_gym.errors import ResultsNotFoundError

                raise ResultsNotFoundError(
                    f"no results in {self.root} (no {DB_FILENAME}); start a grid with "
                    f"`fidec leaderboard run --preset NAME --out {self.root}`"
                )
            self._check_schema()
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ResultsPermissionError(
                f"cannot create the results directory {self.root}: {error.strerror or error}; "
                "choose a writable directory with --out (or fix its permissions)"
            ) from None
        if self.root.is_dir() and not os.access(self.root, os.W_OK | os.X_OK):
            raise ResultsPermissionError(self._read_only_message())
        self._initialise()

    @classmethod
    def open_for_reading(cls, path: str | Path) -> ResultsStore:
        """The store of ``path`` for commands that only read (status, compare, report): read-only when the
        directory or the database file is not writable (a read-only mount, ``chmod -R a-w``), else as usual."""
        root = Path(path).expanduser()
        db = root / DB_FILENAME
        writable = os.access(root, os.W_OK | os.X_OK) and (not db.exists() or os.access(db, os.W_OK))
        return cls(root, read_only=not writable or is_snapshot(db))

    # ------------------------------------------------------------------ connection handling
    def _read_only_message(self, detail: str = "") -> str:
        detail = f" ({detail})" if detail else ""
        return (
            f"the results directory {self.root} is not writable{detail}; choose a writable directory with --out "
            "or fix its permissions (e.g. chmod u+w)"
        )

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork; reconnect in a child process (and after unpickling).
        if self._conn is None or self._pid != os.getpid():
            if self.read_only:
                conn = self._connect_read_only()
                conn.row_factory = sqlite3.Row
                self._conn, self._pid = conn, os.getpid()
                return conn
            try:
                conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 60000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.OperationalError as error:
                raise ResultsPermissionError(self._read_only_message(str(error))) from None
            except sqlite3.DatabaseError as error:
                raise SchemaError(
                    f"{self.db_path} is not a fidec-gym results database ({error}); "
                    "point --out at another directory or move the file away"
                ) from None
            conn.row_factory = sqlite3.Row
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(str(self.db_path.resolve()))
        error: sqlite3.Error | None = None
        # mode=ro reads a live database (and its WAL); a WAL database whose -shm file cannot be created (read-only
        # directory, nobody writing) opens only as immutable.
        for options in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=60.0, isolation_level=None)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.DatabaseError as failure:
                error = failure
        raise SchemaError(
            f"{self.db_path} cannot be read ({error}); check that it is a fidec-gym results database and readable"
        )

    def _check_schema(self) -> None:
        try:
            row = self._connection().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as error:
            raise SchemaError(
                f"{self.db_path} is not a readable fidec-gym results database ({error}); "
                "point --out at another directory or move the file away"
            ) from None
        found = int(row["value"]) if row is not None else self.SCHEMA_VERSION
        if found > self.SCHEMA_VERSION:
            raise SchemaError(
                f"{self.db_path} uses results schema version {found}, but this fidec-gym only understands "
                f"version {self.SCHEMA_VERSION} or older; upgrade fidec-gym (pip install -U fidec-gym)"
            )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front so readers never deadlock."""
        if self.read_only:
            raise ResultsPermissionError(
                f"the results directory {self.root} is read-only and this needs to write to it; make it writable, "
                "or copy it somewhere writable (commands that only read, such as `fidec leaderboard status`, work "
                "as is, and compare/report take --report-dir DIR to write elsewhere)"
            )
        conn = self._connection()
        if conn.in_transaction:  # an interrupt (SIGTERM) between an earlier BEGIN and its try left it open
            conn.execute("ROLLBACK")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "readonly" in str(error) or "read-only" in str(error) or "unable to open" in str(error):
                raise ResultsPermissionError(self._read_only_message(str(error))) from None
            raise
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # Also when the interrupt came just before COMMIT: an open transaction would make every later write
            # on this connection fail, among them the one that marks the run resumable.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _initialise(self) -> None:
        try:
            with self._write() as conn:
                # executescript() would commit the open transaction, so run the statements one by one.
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                columns = {info["name"] for info in conn.execute("PRAGMA table_info(runs)")}
                for name, kind in _CLAIM_COLUMNS.items():
                    if name not in columns:
                        conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(self.SCHEMA_VERSION),)
                    )
                    found = self.SCHEMA_VERSION
                else:
                    found = int(row["value"])
                if found > self.SCHEMA_VERSION:
                    raise SchemaError(
                        f"{self.db_path} uses results schema version {found}, but this fidec-gym only understands "
                        f"version {self.SCHEMA_VERSION} or older; upgrade fidec-gym (pip install -U fidec-gym) or "
                        "use a different results directory (--out)"
                    )
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "readonly" in str(error):
                raise ResultsPermissionError(self._read_only_message(str(error))) from None
            raise SchemaError(
                f"{self.db_path} is not a readable fidec-gym results database ({error}); "
                "point --out at another directory or move the file away"
            ) from None

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict:
        # Picklable for process pools: the child opens its own connection.
        return {"root": self.root, "db_path": self.db_path, "read_only": self.read_only}

    def __setstate__(self, state: dict) -> None:
        self.root, self.db_path = state["root"], state["db_path"]
        self.read_only = state.get("read_only", False)
        self._conn, self._pid = None, None

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    @property
    def schema_version(self) -> int:
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row["value"])

    # ------------------------------------------------------------------ runs
    def create_run(
        self,
        *,
        agent: str,
        env_id: str,
        seed: int,
        config: dict,
        data_provenance: dict,
        code_version: str,
        cell: str | None = None,
        preset: str | None = None,
    ) -> int:
        """Register a run (status ``pending``) and return its id.

        Idempotent: a run with the same (agent, env_id, seed, cell) is returned as is when its stored config equals
        ``config``; a different config raises ``ValueError`` (use another ``cell`` name or results directory).
        """
        config_text = to_json(config)
        now = _now()
        with self._write() as conn:
            existing = conn.execute(
                "SELECT id, config FROM runs WHERE agent = ? AND env_id = ? AND seed = ? AND IFNULL(cell, '') = ?",
                (agent, env_id, int(seed), cell or ""),
            ).fetchone()
            if existing is not None:
                if existing["config"] != config_text:
                    old, new = json.loads(existing["config"]), json.loads(config_text)
                    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                    raise ConfigError(
                        f"run {existing['id']} ({agent}, {env_id}, seed {seed}, cell {cell!r}) already exists in "
                        f"{self.root} with a different config (keys {differing}); use another results directory "
                        "(--out) or cell name to keep both"
                    )
                return int(existing["id"])
            cursor = conn.execute(
                "INSERT INTO runs (agent, env_id, seed, cell, preset, config, data_provenance, code_version, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (agent, env_id, int(seed), cell, preset, config_text, to_json(data_provenance), code_version, now, now),
            )
            assert cursor.lastrowid is not None  # an INSERT always sets it
            return int(cursor.lastrowid)

    def find_run(self, *, agent: str, env_id: str, seed: int, cell: str | None = None) -> dict | None:
        """The run with this key, or None."""
        row = (
            self._connection()
            .execute(
                "SELECT * FROM runs WHERE agent = ? AND env_id = ? AND seed = ? AND IFNULL(cell, '') = ?",
                (agent, env_id, int(seed), cell or ""),
            )
            .fetchone()
        )
        return None if row is None else self._run_dict(row)

    def get_run(self, run_id: int) -> dict:
        """The run with id ``run_id``; KeyError if there is none."""
        row = self._connection().execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise UnknownNameError(f"no run with id {run_id} in {self.db_path}; list runs with ResultsStore.runs()")
        return self._run_dict(row)

    def _update_run(self, run_id: int, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE runs SET {assignments}, updated = ? WHERE id = ?", (*columns.values(), _now(), int(run_id))
            )
            if cursor.rowcount == 0:
                raise UnknownNameError(f"no run with id {run_id} in {self.db_path}; create it with create_run()")

    def set_status(self, run_id: int, status: str, message: str = "", last_good_step: int | None = None) -> None:
        """Set a run's status (pending/running/done/failed), its message and, if given, its last good step."""
        if status not in RUN_STATUSES:
            raise ConfigError(f"unknown run status {status!r}; valid: {list(RUN_STATUSES)}")
        columns: dict[str, Any] = {"status": status, "message": str(message)}
        if last_good_step is not None:
            columns["last_good_step"] = int(last_good_step)
        self._update_run(run_id, **columns)

    def set_summary(self, run_id: int, summary: dict) -> None:
        """Replace a run's summary (reported score, score rule, final metrics, provenance...)."""
        self._update_run(run_id, summary=to_json(summary))

    def update_config(self, run_id: int, config: dict, data_provenance: dict | None = None) -> None:
        """Replace a run's stored config (and provenance), e.g. when a run is restarted from scratch."""
        columns: dict[str, Any] = {"config": to_json(config)}
        if data_provenance is not None:
            columns["data_provenance"] = to_json(data_provenance)
        self._update_run(run_id, **columns)

    def reset_run(self, run_id: int) -> None:
        """Forget a run's history (evaluations, artefacts, summary) and mark it pending, in one transaction."""
        with self._write() as conn:
            conn.execute("DELETE FROM evaluations WHERE run_id = ?", (int(run_id),))
            conn.execute("DELETE FROM artefacts WHERE run_id = ?", (int(run_id),))
            conn.execute(
                "UPDATE runs SET status = 'pending', message = '', summary = '{}', last_good_step = NULL, "
                "updated = ? WHERE id = ?",
                (_now(), int(run_id)),
            )

    def copy_to(self, path: str | Path) -> None:
        """Write one consistent, compact copy of the database to ``path`` (``VACUUM INTO``), even while a grid
        is still writing to it."""
        self._connection().execute("VACUUM INTO ?", (str(path),))

    def extend_run(self, run_id: int, config: dict, message: str) -> None:
        """Give a run a config with a larger step budget, keeping its history, and mark it interrupted so that the
        next ``leaderboard run`` resumes it from its last checkpoint; refused while a live process trains it."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise UnknownNameError(f"no run with id {run_id} in {self.db_path}")
            if claim_alive(dict(row)) and row["claim_pid"] != os.getpid():
                raise ResultsError(f"run {run_id} in {self.root} is being trained by {describe_claim(dict(row))}")
            status = "interrupted" if row["status"] in ("done", "interrupted", "running") else row["status"]
            conn.execute(
                "UPDATE runs SET config = ?, status = ?, message = ?, updated = ? WHERE id = ?",
                (to_json(config), status, message, _now(), int(run_id)),
            )

    def replace_run_config(self, run_id: int, config: dict) -> None:
        """Give a run that is not done a new config and forget its history (evaluations, artefacts, summary), in one
        transaction; refused for a finished run or one that a live process is training."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise UnknownNameError(f"no run with id {run_id} in {self.db_path}")
            if row["status"] == "done":
                raise ResultsError(f"run {run_id} in {self.root} is done; its config is not replaced")
            if claim_alive(dict(row)) and row["claim_pid"] != os.getpid():
                raise ResultsError(f"run {run_id} in {self.root} is being trained by {describe_claim(dict(row))}")
            conn.execute("DELETE FROM evaluations WHERE run_id = ?", (int(run_id),))
            conn.execute("DELETE FROM artefacts WHERE run_id = ?", (int(run_id),))
            conn.execute(
                "UPDATE runs SET config = ?, status = 'pending', message = '', summary = '{}', last_good_step = NULL, "
                "updated = ? WHERE id = ?",
                (to_json(config), _now(), int(run_id)),
            )

    def runs(self, **filters: Any) -> list[dict]:
        """Runs matching ``filters`` (column=value or column=[values]), oldest first.

        Valid filters: id, agent, env_id, seed, cell, preset, status, code_version.
        """
        unknown = sorted(set(filters) - set(RUN_FILTERS))
        if unknown:
            raise ConfigError(f"unknown run filter(s) {unknown}; valid: {list(RUN_FILTERS)}")
        clauses, params = [], []
        for name, value in filters.items():
            if isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                if not values:
                    return []
                clauses.append(f"{name} IN ({', '.join('?' * len(values))})")
                params.extend(values)
            elif value is None:
                clauses.append(f"{name} IS NULL")
            else:
                clauses.append(f"{name} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection().execute(f"SELECT * FROM runs{where} ORDER BY id", params).fetchall()
        return [self._run_dict(row) for row in rows]

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict:
        run = dict(row)
        for key in ("config", "data_provenance", "summary"):
            run[key] = json.loads(run[key])
        return run

    # ------------------------------------------------------------------ evaluations and artefacts
    def add_evaluation(self, run_id: int, step: int, metrics: dict[str, float]) -> None:
        """Store the metrics of the evaluation at ``step`` (replacing an earlier one at the same step)."""
        clean = {}
        for key, value in metrics.items():
            if hasattr(value, "item") and not isinstance(value, (list, dict)):
                value = value.item()
            clean[str(key)] = value
        with self._write() as conn:
            conn.execute(
                "INSERT INTO evaluations (run_id, step, metrics, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, step) DO UPDATE SET metrics = excluded.metrics, created = excluded.created",
                (int(run_id), int(step), to_json(clean), _now()),
            )

    def evaluations(self, run_id: int | None = None) -> list[dict]:
        """Evaluations (run_id, step, metrics, created), ordered by run and step."""
        if run_id is None:
            rows = self._connection().execute("SELECT * FROM evaluations ORDER BY run_id, step").fetchall()
        else:
            rows = (
                self._connection()
                .execute("SELECT * FROM evaluations WHERE run_id = ? ORDER BY step", (int(run_id),))
                .fetchall()
            )
        return [{**dict(row), "metrics": json.loads(row["metrics"])} for row in rows]

    def delete_evaluations_after(self, run_id: int, step: int) -> None:
        """Drop evaluations later than ``step`` (they belong to a future the resumed run will redo)."""
        with self._write() as conn:
            conn.execute("DELETE FROM evaluations WHERE run_id = ? AND step > ?", (int(run_id), int(step)))

    def add_artefact(self, run_id: int, kind: str, path: str, step: int | None = None) -> None:
        """Record a file that belongs to a run (registering the same path twice updates its step)."""
        if kind not in ARTEFACT_KINDS:
            raise ConfigError(f"unknown artefact kind {kind!r}; valid: {list(ARTEFACT_KINDS)}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO artefacts (run_id, kind, path, step, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, kind, path) DO UPDATE SET step = excluded.step, created = excluded.created",
                (int(run_id), kind, str(path), None if step is None else int(step), _now()),
            )

    def artefacts(self, run_id: int | None = None, kind: str | None = None) -> list[dict]:
        """Artefacts (id, run_id, kind, path, step, created), optionally of one run and/or kind."""
        clauses: list[str] = []
        params: list[int | str] = []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(int(run_id))
        if kind is not None:
            if kind not in ARTEFACT_KINDS:
                raise ConfigError(f"unknown artefact kind {kind!r}; valid: {list(ARTEFACT_KINDS)}")
            clauses.append("kind = ?")
            params.append(kind)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection().execute(f"SELECT * FROM artefacts{where} ORDER BY id", params).fetchall()
        return [dict(row) for row in rows]
