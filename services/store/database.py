"""A small SQL port for the read side: what the projections and the API need of a
database, with one adapter per backend (`database_postgres`, `database_sqlite`).

Statements are written once with `?` placeholders in the SQL both PostgreSQL and
SQLite accept; the PostgreSQL adapter rewrites the placeholders to psycopg's `%s`.
The bulk primitives (`insert`, `update`, `delete`, `select`) take a page's rows at once:
PostgreSQL moves them with COPY, a row costing a few microseconds instead of the tens
that a statement per row costs; SQLite runs in-process and takes `executemany`.
Table and column names come from the projections' own constants, never from input.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from services.store.urls import DatabaseUrl

Row = tuple[Any, ...]
C = TypeVar("C")


# One stored event as the notification log holds it: (position, aggregate id as text
# "xxxxxxxx-xxxx-...", version, topic, state). A plain tuple: pages hold thousands.
Notification = tuple[int, str, int, str, bytes]


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

    @abstractmethod
    def notifications(self, table: str, after: int, limit: int) -> list[Notification]:
        """Up to `limit` stored events of the event store's `table` after position `after`,
        in order."""

    @abstractmethod
    def create_table(self, statement: str) -> None:
        """Runs a `CREATE TABLE`. Its text columns compare bytewise (by code point) in
        every backend: one order in SQLite and PostgreSQL, and sorts and indexes that
        cost memcmp, not a locale's rules. A table that exists is left as it is."""

    @abstractmethod
    def relation_kind(self, name: str) -> str | None:
        """What stands under that name: "table", "view", or None for nothing."""

    @abstractmethod
    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Adds rows whose keys the table does not hold yet (a duplicate key is an error)."""

    @abstractmethod
    def update(
        self,
        table: str,
        key: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Sets `columns` of existing rows; each row holds its key's values, then the
        columns' values."""

    @abstractmethod
    def delete(self, table: str, key: Sequence[str], keys: Sequence[Row]) -> None:
        """Removes the rows with these keys."""

    @abstractmethod
    def select(
        self, table: str, columns: Sequence[str], key: Sequence[str], keys: Sequence[Row]
    ) -> list[Row]:
        """The rows whose key is among `keys`, in no particular order."""


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


class PerThread(Generic[C]):
    """One connection per thread: the API answers requests from a pool of threads, and a
    connection runs one transaction at a time. Closing closes every thread's."""

    def __init__(self, open_connection: Callable[[], C], close_connection: Callable[[C], None]):
        self._open = open_connection
        self._close = close_connection
        self._local = threading.local()
        self._all: list[C] = []
        self._guard = threading.Lock()

    def get(self) -> C:
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
            with self._guard:
                self._all.append(conn)
        return conn

    def forget(self) -> None:
        """Drops this thread's connection (after it failed): the next get opens another."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._guard:
                self._all.remove(conn)
            self._close(conn)

    def close_all(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            self._close(conn)
        self._local = threading.local()


def connect(database_url: str) -> Database:
    from services.store.database_postgres import PostgresDatabase
    from services.store.database_sqlite import SQLiteDatabase

    url = DatabaseUrl.parse(database_url)
    return PostgresDatabase(url) if url.is_postgres else SQLiteDatabase(url)
