"""eventsourcing recorders that also record input checkpoints in the events' transaction.

`Application.save(..., checkpoint=...)` passes the checkpoint down to `_insert_events`,
which both recorders run inside the transaction that inserts the stored events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from services.store.checkpoint import Checkpoint, tracking_name

# Stored forever next to the events: change only with a migration.
CREATE_RECEIPTS = (
    "CREATE TABLE IF NOT EXISTS ingest_receipts ("
    "event_id TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL, "
    "input_offset BIGINT NOT NULL, outcome TEXT NOT NULL)"
)
CREATE_COUNTS = (
    "CREATE TABLE IF NOT EXISTS ingest_counts ("
    "topic TEXT NOT NULL, outcome TEXT NOT NULL, messages BIGINT NOT NULL, "
    "PRIMARY KEY (topic, outcome))"
)
INSERT_RECEIPT = (
    "INSERT INTO ingest_receipts (event_id, topic, partition, input_offset, outcome) "
    "VALUES ({p}, {p}, {p}, {p}, {p})"
)
ADD_COUNT = (
    "INSERT INTO ingest_counts (topic, outcome, messages) VALUES ({p}, {p}, {p}) "
    "ON CONFLICT (topic, outcome) "
    "DO UPDATE SET messages = ingest_counts.messages + excluded.messages"
)

SELECT_KNOWN_PG = "SELECT event_id FROM ingest_receipts WHERE event_id = ANY(%s)"
SELECT_KNOWN_SQLITE = "SELECT event_id FROM ingest_receipts WHERE event_id IN ({marks})"
SELECT_COUNTS = "SELECT topic, outcome, messages FROM ingest_counts"
SQLITE_MAX_PARAMS = 500


def _write(
    checkpoint: Checkpoint,
    insert_tracking: Callable[[Tracking], None],
    executemany: Callable[[str, list[tuple[Any, ...]]], Any],
    placeholder: str,
) -> None:
    # Positions go through eventsourcing's tracking records, which refuse to move back.
    for (topic, partition), offset in sorted(checkpoint.positions.items()):
        insert_tracking(Tracking(tracking_name(topic, partition), offset))
    receipts = [
        (r.event_id, r.topic, r.partition, r.offset, r.outcome.value) for r in checkpoint.receipts
    ]
    if receipts:
        executemany(INSERT_RECEIPT.format(p=placeholder), receipts)
    counts = [(topic, outcome, n) for (topic, outcome), n in sorted(checkpoint.counts.items())]
    if counts:
        executemany(ADD_COUNT.format(p=placeholder), counts)


class LedgerPostgresRecorder(PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend([SQL(CREATE_RECEIPTS), SQL(CREATE_COUNTS)])  # type: ignore[list-item]

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        checkpoint: Checkpoint | None = kwargs.get("checkpoint")
        if checkpoint is not None:
            _write(checkpoint, partial(self._insert_tracking, curs), curs.executemany, "%s")
        super()._insert_events(curs, stored_events, **kwargs)

    def known_event_ids(self, event_ids: Collection[str]) -> set[str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_KNOWN_PG, (list(event_ids),))
            return {row["event_id"] for row in curs.fetchall()}

    def message_counts(self) -> dict[tuple[str, str], int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_COUNTS)
            return {(r["topic"], r["outcome"]): int(r["messages"]) for r in curs.fetchall()}


class LedgerSQLiteRecorder(SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), CREATE_RECEIPTS, CREATE_COUNTS]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        checkpoint: Checkpoint | None = kwargs.get("checkpoint")
        if checkpoint is not None:
            _write(checkpoint, partial(self._insert_tracking, c), c.executemany, "?")
        return returning

    def known_event_ids(self, event_ids: Collection[str]) -> set[str]:
        ids = list(event_ids)
        known: set[str] = set()
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), SQLITE_MAX_PARAMS):
                chunk = ids[start : start + SQLITE_MAX_PARAMS]
                c.execute(SELECT_KNOWN_SQLITE.format(marks=",".join("?" * len(chunk))), chunk)
                known.update(row[0] for row in c.fetchall())
        return known

    def message_counts(self) -> dict[tuple[str, str], int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SELECT_COUNTS)
            return {(r[0], r[1]): int(r[2]) for r in c.fetchall()}
