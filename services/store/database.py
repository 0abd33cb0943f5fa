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

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from services.store.urls import DatabaseUrl

Row = tuple[Any, ...]


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


def connect(database_url: str) -> Database:
    from services.store.database_postgres import PostgresDatabase
    from services.store.database_sqlite import SQLiteDatabase

    url = DatabaseUrl.parse(database_url)
    return PostgresDatabase(url) if url.is_postgres else SQLiteDatabase(url)
