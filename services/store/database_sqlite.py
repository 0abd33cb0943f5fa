"""The read side's SQL port on SQLite: in-process, so `executemany` is the bulk path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from services.store.database import Cursor, Database, Notification, PerThread, Row
from services.store.urls import DatabaseUrl

SELECT_NOTIFICATIONS_SQLITE = (
    "SELECT rowid, originator_id, originator_version, topic, state "
    "FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
)
INSERT_ROWS = "INSERT INTO {table} ({columns}) VALUES ({marks})"
UPDATE_ROWS = "UPDATE {table} SET {assignments} WHERE {match}"
DELETE_ROWS = "DELETE FROM {table} WHERE {match}"
SELECT_ROWS = "SELECT {columns} FROM {table} WHERE ({key}) IN (VALUES {values})"
SQLITE_MAX_PARAMS = 500


class _SQLiteCursor(Cursor):
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall()

    def notifications(self, table: str, after: int, limit: int) -> list[Notification]:
        self._cur.execute(SELECT_NOTIFICATIONS_SQLITE.format(table=table), (after, limit))
        # The SQLite store keeps originator ids as hex without dashes.
        return [
            (position, str(UUID(hex=originator)), version, topic, state)
            for position, originator, version, topic, state in self._cur.fetchall()
        ]

    def create_table(self, statement: str) -> None:
        self._cur.execute(statement)  # SQLite's text compares bytewise (BINARY) by default

    def relation_kind(self, name: str) -> str | None:
        self._cur.execute("SELECT type FROM sqlite_master WHERE name = ?", (name,))
        row = self._cur.fetchone()
        return None if row is None else str(row[0])

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        self._cur.executemany(
            INSERT_ROWS.format(table=table, columns=", ".join(columns), marks=marks), rows
        )

    def update(
        self,
        table: str,
        key: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        assignments = ", ".join(f"{column} = ?" for column in columns)
        match = " AND ".join(f"{column} = ?" for column in key)
        width = len(key)
        self._cur.executemany(
            UPDATE_ROWS.format(table=table, assignments=assignments, match=match),
            [(*row[width:], *row[:width]) for row in rows],
        )

    def delete(self, table: str, key: Sequence[str], keys: Sequence[Row]) -> None:
        match = " AND ".join(f"{column} = ?" for column in key)
        self._cur.executemany(DELETE_ROWS.format(table=table, match=match), keys)

    def select(
        self, table: str, columns: Sequence[str], key: Sequence[str], keys: Sequence[Row]
    ) -> list[Row]:
        found: list[Row] = []
        chunk = SQLITE_MAX_PARAMS // len(key)
        value = "(" + ", ".join("?" * len(key)) + ")"
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            statement = SELECT_ROWS.format(
                columns=", ".join(columns),
                table=table,
                key=", ".join(key),
                values=", ".join([value] * len(part)),
            )
            self._cur.execute(statement, [v for k in part for v in k])
            found.extend(self._cur.fetchall())
        return found


class SQLiteDatabase(Database):
    is_postgres = False

    def lock(self, cur: Cursor, name: str) -> None:
        pass  # BEGIN IMMEDIATE already serialises every writing transaction

    def __init__(self, url: DatabaseUrl) -> None:
        Path(url.path).parent.mkdir(parents=True, exist_ok=True)
        path = url.path

        def open_connection() -> sqlite3.Connection:
            # Used by its own thread only; closed by whichever thread closes the database.
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn

        self._conns: PerThread[sqlite3.Connection] = PerThread(
            open_connection, lambda conn: conn.close()
        )
        self._conns.get()  # creates the file now: a bad path fails at start-up

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        cur = self._conns.get().cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteCursor(cur)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def close(self) -> None:
        self._conns.close_all()
