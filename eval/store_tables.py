"""Extra tables: free-form rows (e.g. toy metrics) in tables created on first use, beside a store's core tables."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager

from fidec_gym.errors import ConfigError
from fidec_gym.eval.store_schema import _CORE_TABLES, _IDENTIFIER, _scalar


class ExtraTables:
    """The extra-table methods of :class:`~fidec_gym.eval.store.ResultsStore`, which provides the two below."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # one BEGIN IMMEDIATE transaction
        raise NotImplementedError

    def _connection(self) -> sqlite3.Connection:
        raise NotImplementedError

    @staticmethod
    def _check_table(table: str) -> None:
        if not _IDENTIFIER.match(table) or table in _CORE_TABLES or table.startswith("sqlite_"):
            raise ConfigError(
                f"invalid extra table name {table!r}: use letters, digits and underscores, not starting with a "
                f"digit, and not one of {sorted(_CORE_TABLES)}"
            )

    def add_rows(self, table: str, rows: list[dict]) -> None:
        """Append rows to an extra table, created on first use with the rows' keys as columns.

        New keys in later rows add columns; missing keys are stored as NULL. Values must be numbers, strings or None.
        """
        self._check_table(table)
        rows = list(rows)
        if not rows:
            return
        columns: list[str] = []
        for row in rows:
            for key in row:
                if not _IDENTIFIER.match(str(key)):
                    raise ConfigError(f"invalid column name {key!r} for table {table!r}: use letters, digits, _")
                if key not in columns:
                    columns.append(key)
        values = [[_scalar(row.get(key)) for key in columns] for row in rows]
        with self._write() as conn:
            existing = [info["name"] for info in conn.execute(f'PRAGMA table_info("{table}")')]
            if not existing:
                conn.execute(f'CREATE TABLE "{table}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)})')
            else:
                for column in columns:
                    if column not in existing:
                        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}"')
            placeholders = ", ".join("?" * len(columns))
            quoted = ", ".join(f'"{c}"' for c in columns)
            conn.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', values)

    def rows(self, table: str) -> list[dict]:
        """All rows of an extra table in insertion order ([] if the table does not exist yet)."""
        self._check_table(table)
        conn = self._connection()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
            return []
        return [dict(row) for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')]

    def tables(self) -> list[str]:
        """Names of the extra tables present."""
        names = (
            self._connection()
            .execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetchall()
        )
        return [row["name"] for row in names if row["name"] not in _CORE_TABLES]
