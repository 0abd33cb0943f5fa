"""A small SQL port for the read side, with one adapter per backend.

Statements are written once with `?` placeholders in the SQL both PostgreSQL and
SQLite accept; the PostgreSQL adapter rewrites the placeholders to psycopg's `%s`.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from services.store.urls import DatabaseUrl

Row = tuple[Any, ...]


class Cursor(ABC):
    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def fetchall(self) -> list[Row]: ...

    def fetchone(self) -> Row | None:
        rows = self.fetchall()
        return rows[0] if rows else None


class Database(ABC):
    is_postgres: bool

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Cursor]: ...

    @abstractmethod
    def lock(self, cur: Cursor, name: str) -> None:
        """Serialises transactions that take the same named lock, until they end."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.transaction() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    @abstractmethod
    def close(self) -> None: ...


class _PgCursor(Cursor):
    def __init__(self, cur: psycopg.Cursor[Row]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql.replace("?", "%s"), rows)

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall()


class PostgresDatabase(Database):
    is_postgres = True

    def lock(self, cur: Cursor, name: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def __init__(self, url: DatabaseUrl) -> None:
        self._conninfo = url.conninfo()
        self._conn: psycopg.Connection[Row] | None = None

    def _connection(self) -> psycopg.Connection[Row]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo)
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield _PgCursor(cur)
        except psycopg.OperationalError:
            conn.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _SQLiteCursor(Cursor):
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall()


class SQLiteDatabase(Database):
    is_postgres = False

    def lock(self, cur: Cursor, name: str) -> None:
        pass  # BEGIN IMMEDIATE already serialises every writing transaction

    def __init__(self, url: DatabaseUrl) -> None:
        Path(url.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            url.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        cur = self._conn.cursor()
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
        self._conn.close()


def connect(database_url: str) -> Database:
    url = DatabaseUrl.parse(database_url)
    return PostgresDatabase(url) if url.is_postgres else SQLiteDatabase(url)
