"""The read side's SQL port on PostgreSQL: bulk rows by binary COPY, straight into the
table or into a session's staging table joined to it."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg

from services.store.database import Cursor, Database, Notification, PerThread, Row
from services.store.urls import DatabaseUrl


def _match(key: Sequence[str]) -> str:
    return " AND ".join(f"t.{column} = s.{column}" for column in key)


SELECT_NOTIFICATIONS_PG = (
    "SELECT notification_id, originator_id::text, originator_version, topic, state "
    "FROM {table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)
# Binary COPY: psycopg formats a row in C without escaping text, and the server parses
# nothing; it needs the columns' types, read once per table from the catalog.
COPY_ROWS = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
SELECT_COLUMN_TYPES = (
    "SELECT attname, atttypid FROM pg_attribute "
    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)
# A session's staging tables, per target, column list and use in a transaction: created
# once, emptied at each commit, so a page costs no catalog writes. Taken from the
# target, they have its column types.
CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
    "SELECT {columns} FROM {table} WITH NO DATA"
)
# Staged keys are a page's worth, few next to the table's rows: probing the table's
# index for each one is the plan, but a stage has no statistics, and the planner, taking
# it for larger, hashes the whole table instead (60 ms against 5 ms for 3,000 lots).
PROBE_BY_INDEX = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
UPDATE_FROM_STAGE = "UPDATE {table} AS t SET {assignments} FROM {stage} AS s WHERE {match}"
DELETE_USING_STAGE = "DELETE FROM {table} AS t USING {stage} AS s WHERE {match}"
SELECT_JOIN_STAGE = "SELECT {columns} FROM {table} AS t JOIN {stage} AS s ON {match}"


# Text columns of the tables the port creates compare bytewise. A database's default
# collation is the locale's (C.UTF-8, en_US.UTF-8): strcoll for every comparison, and no
# abbreviated keys in sorts. At a million events, building the read models' indexes
# after a rebuild took 7.8-8.0 s that way and 4.0-4.2 s with "C".
TEXT_TYPE = re.compile(r"\bTEXT\b")
BYTEWISE_TEXT = 'TEXT COLLATE "C"'
SELECT_RELATION_KIND = "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)"
_KINDS = {"r": "table", "p": "table", "v": "view", "m": "view"}


ColumnTypes = dict[str, dict[str, int]]  # table -> column -> type oid


class _PgCursor(Cursor):
    def __init__(self, cur: psycopg.Cursor[Row], types: ColumnTypes) -> None:
        self._cur = cur
        self._types = types
        self._stages: dict[str, int] = {}  # stage shape -> uses in this transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql.replace("?", "%s"), rows)

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall()

    def notifications(self, table: str, after: int, limit: int) -> list[Notification]:
        # Binary results: the states arrive as bytes without hex-decoding them.
        self._cur.execute(SELECT_NOTIFICATIONS_PG.format(table=table), (after, limit), binary=True)
        return cast(list[Notification], self._cur.fetchall())

    def create_table(self, statement: str) -> None:
        self._cur.execute(TEXT_TYPE.sub(BYTEWISE_TEXT, statement))

    def relation_kind(self, name: str) -> str | None:
        self._cur.execute(SELECT_RELATION_KIND, (name,))
        row = self._cur.fetchone()
        return None if row is None else _KINDS.get(row[0], row[0])

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._copy(table, table, columns, rows)

    def update(
        self,
        table: str,
        key: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        if not rows:
            return
        stage = self._stage(table, [*key, *columns], rows)
        assignments = ", ".join(f"{column} = s.{column}" for column in columns)
        self._cur.execute(
            UPDATE_FROM_STAGE.format(
                table=table, assignments=assignments, stage=stage, match=_match(key)
            )
        )

    def delete(self, table: str, key: Sequence[str], keys: Sequence[Row]) -> None:
        if keys:
            stage = self._stage(table, key, keys)
            self._cur.execute(
                DELETE_USING_STAGE.format(table=table, stage=stage, match=_match(key))
            )

    def select(
        self, table: str, columns: Sequence[str], key: Sequence[str], keys: Sequence[Row]
    ) -> list[Row]:
        if not keys:
            return []
        stage = self._stage(table, key, keys)
        selected = ", ".join(f"t.{column}" for column in columns)
        self._cur.execute(
            SELECT_JOIN_STAGE.format(columns=selected, table=table, stage=stage, match=_match(key))
        )
        return self._cur.fetchall()

    def _stage(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        listed = ", ".join(columns)
        shape = f"stage_{table}_{zlib.crc32(listed.encode()):08x}"
        # A stage keeps its rows until the commit: a second use in the transaction
        # takes a second stage.
        if not self._stages:
            self._cur.execute(PROBE_BY_INDEX)
        uses = self._stages[shape] = self._stages.get(shape, -1) + 1
        stage = f"{shape}_{uses}"
        self._cur.execute(CREATE_STAGE.format(stage=stage, columns=listed, table=table))
        self._copy(stage, table, columns, rows)
        return stage

    def _copy(
        self, into: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """COPY into `into`, whose columns have the types of `table`'s."""
        types = self._column_types(table)
        with self._cur.copy(COPY_ROWS.format(table=into, columns=", ".join(columns))) as copy:
            copy.set_types([types[column] for column in columns])
            for row in rows:
                copy.write_row(row)

    def _column_types(self, table: str) -> dict[str, int]:
        if table not in self._types:
            self._cur.execute(SELECT_COLUMN_TYPES, (table,))
            self._types[table] = {name: oid for name, oid in self._cur.fetchall()}
        return self._types[table]


class PostgresDatabase(Database):
    is_postgres = True

    def lock(self, cur: Cursor, name: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def __init__(self, url: DatabaseUrl) -> None:
        conninfo = url.conninfo()
        self._conns: PerThread[psycopg.Connection[Row]] = PerThread(
            lambda: psycopg.connect(conninfo), lambda conn: conn.close()
        )
        self._types: ColumnTypes = {}

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        conn = self._conns.get()
        if conn.closed:
            self._conns.forget()
            conn = self._conns.get()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield _PgCursor(cur, self._types)
        except psycopg.OperationalError:
            self._conns.forget()
            raise

    def close(self) -> None:
        self._conns.close_all()
