"""eventsourcing recorders that also record input checkpoints in the events' transaction.

`Application.save(..., checkpoint=...)` passes the checkpoint down to `_insert_events`,
which both recorders run inside the transaction that inserts the stored events.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Sequence
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from psycopg.sql import SQL, Composed, Identifier

from services.store.checkpoint import Checkpoint, Receipt, tracking_name
from services.store.transcoder import StoredRow

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

# Snapshots of long members (services/domain/member_snapshot.py): a cache beside the
# events, never the truth; `latest_at` is the latest `at` of the events up to `version`,
# as fixed-width UTC text, so that it compares as the instants do.
CREATE_SNAPSHOTS = (
    "CREATE TABLE IF NOT EXISTS member_snapshots ("
    "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, latest_at TEXT NOT NULL, "
    "state {blob} NOT NULL, PRIMARY KEY (aggregate_id, version))"
)
INSERT_SNAPSHOT = (
    "INSERT INTO member_snapshots (aggregate_id, version, latest_at, state) "
    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING"
)
SELECT_LATEST_SNAPSHOTS_PG = (
    "SELECT DISTINCT ON (aggregate_id) aggregate_id, version, state FROM member_snapshots "
    "WHERE aggregate_id = ANY(%s) ORDER BY aggregate_id, version DESC"
)
SELECT_LATEST_SNAPSHOT_SQLITE = (
    "SELECT aggregate_id, version, state FROM member_snapshots WHERE aggregate_id = ? "
    "ORDER BY version DESC LIMIT 1"
)
SELECT_NEXT_SNAPSHOT = (
    "SELECT MIN(version) FROM member_snapshots WHERE aggregate_id = {p} AND version > {p}"
)
SELECT_SNAPSHOT_AS_OF = (
    "SELECT aggregate_id, version, state FROM member_snapshots WHERE aggregate_id = {p} "
    "AND latest_at <= {p} ORDER BY version DESC LIMIT 1"
)
# (aggregate id, version, latest_at as text, state)
SnapshotRow = tuple[UUID, int, str, bytes]
# aggregate id -> (version, state)
Snapshots = dict[UUID, tuple[int, bytes]]

# The ids go as one JSON array: psycopg builds an array literal element by element in
# Python (6.5 ms for a batch of 5,000 ids), orjson writes the JSON in C (2 ms in all).
SELECT_KNOWN_PG = (
    "SELECT event_id FROM ingest_receipts "
    "WHERE event_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
)
SELECT_KNOWN_SQLITE = "SELECT event_id FROM ingest_receipts WHERE event_id IN ({marks})"
SELECT_COUNTS = "SELECT topic, outcome, messages FROM ingest_counts"
# Input partitions' tracking records: one per partition and incarnation, named by
# checkpoint.tracking_name (the partition's name, then "~incarnation" after the first).
SELECT_INPUT_TRACKINGS_PG = (
    "SELECT application_name, MAX(notification_id) FROM {table} "
    "WHERE application_name = ANY(%s::text[]) OR application_name LIKE ANY(%s::text[]) "
    "GROUP BY application_name"
)  # PostgreSQL's LIKE escapes with a backslash unless told otherwise
SELECT_INPUT_TRACKINGS_SQLITE = (
    "SELECT application_name, MAX(notification_id) FROM tracking WHERE {where} "
    "GROUP BY application_name"
)
SQLITE_INPUT_TRACKING = "application_name = ? OR application_name LIKE ? ESCAPE '\\'"
COPY_RECEIPTS = (
    "COPY ingest_receipts (event_id, topic, partition, input_offset, outcome) "
    "FROM STDIN (FORMAT binary)"
)
SQLITE_MAX_PARAMS = 500
FIRST_ONLY = "AND originator_version = 1 "
NO_JIT = "SET jit = off"


# Stored events go in COPY's binary format: a row is packed in one call, the state goes
# as it is (text format wants it hex-encoded: twice the bytes, for Python to write and
# PostgreSQL to read), and ids as their 16 bytes. ~3.3 -> ~0.9 us a row (issue 19): this
# is the ingest path's hottest loop after the domain. Columns as eventsourcing creates
# them (uuid, bigint, text, bytea).
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_BINARY_TRAILER = b"\xff\xff"
_EMPTY_COPY = len(_BINARY_HEADER) + len(_BINARY_TRAILER)
_EVENT_ROW = struct.Struct("!hi16siqi")  # 4 fields; uuid; bigint; the topic's length
_LENGTH = struct.Struct("!i")
_RECEIPT_HEAD = struct.Struct("!hi")  # 5 fields; the event id's length
_RECEIPT_TAIL = struct.Struct("!iiiq")  # integer partition; bigint offset


def _event_rows(rows: Iterable[StoredRow]) -> bytes:
    topics: dict[str, bytes] = {}  # a batch has a handful of topics: each encoded once
    parts = [_BINARY_HEADER]
    append = parts.append
    for originator_id, version, topic, state in rows:
        encoded = topics.get(topic)
        if encoded is None:
            encoded = topics[topic] = topic.encode()
        append(_EVENT_ROW.pack(4, 16, originator_id.bytes, 8, version, len(encoded)))
        append(encoded)
        append(_LENGTH.pack(len(state)))
        append(state)
    append(_BINARY_TRAILER)
    return b"".join(parts)


def _receipt_rows(receipts: Iterable[Receipt]) -> bytes:
    """Receipts in COPY's binary format too: 2.8 -> 1.4 us a row, and less since each
    topic and outcome is packed with its length once a batch."""
    texts: dict[str, bytes] = {}  # a handful of topics and outcomes a batch
    parts = [_BINARY_HEADER]
    append = parts.append
    for event_id, topic, partition, offset, outcome in receipts:
        encoded = event_id.encode()
        append(_RECEIPT_HEAD.pack(5, len(encoded)))
        append(encoded)
        append(texts.get(topic) or texts.setdefault(topic, _field(topic)))
        append(_RECEIPT_TAIL.pack(4, partition, 8, offset))
        append(texts.get(outcome) or texts.setdefault(outcome, _field(outcome)))
    append(_BINARY_TRAILER)
    return b"".join(parts)


def _field(text: str) -> bytes:
    """A text field of a binary COPY row: its length, then its UTF-8."""
    encoded = text.encode()
    return _LENGTH.pack(len(encoded)) + encoded


def _stored_events(rows: Iterable[Any]) -> list[StoredEvent]:
    """PostgreSQL's rows of (originator_id, originator_version, topic, state)."""
    return [
        StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
        for r in rows
    ]


def _trackings(checkpoint: Checkpoint) -> list[Tracking]:
    # Positions go through eventsourcing's tracking records, which refuse to move back.
    return [
        Tracking(tracking_name(topic, partition, incarnation), offset)
        for (topic, partition, incarnation), offset in sorted(checkpoint.positions.items())
    ]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _count_rows(checkpoint: Checkpoint) -> list[tuple[Any, ...]]:
    return [(topic, outcome, n) for (topic, outcome), n in sorted(checkpoint.counts.items())]


class LedgerPostgresRecorder(PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        statements = [CREATE_RECEIPTS, CREATE_COUNTS, CREATE_SNAPSHOTS.format(blob="BYTEA")]
        self.sql_create_statements.extend(SQL(s) for s in statements)  # type: ignore[misc]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """eventsourcing's entry (an application's save) onto `insert_rows`. Returns no
        notification ids: nothing here reads them."""
        # Its UUID ids are the only ones this store holds (the columns are eventsourcing's).
        rows = [
            (cast(UUID, e.originator_id), e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        self.insert_rows(rows, kwargs.get("checkpoint"), kwargs.get("tracking"))
        return None

    def insert_rows(
        self,
        rows: Iterable[StoredRow],
        checkpoint: Checkpoint | None = None,
        tracking: Tracking | None = None,
    ) -> None:
        """The bulk path: events and receipts by COPY, in one transaction.

        The library's insert dumps a composite array row by row in Python; COPY is the
        fastest way into PostgreSQL. The table lock is kept: notification ids must be
        committed in their order, or a projection could pass over a gap filled later.
        Both COPYs are made before it is taken, so that it is held for the writes alone.
        """
        events = _event_rows(rows)
        receipts = _receipt_rows(checkpoint.receipts) if checkpoint and checkpoint.receipts else b""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            if tracking is not None:
                self._insert_tracking(curs, tracking)
            if checkpoint is not None:
                self._insert_trackings(curs, _trackings(checkpoint))
                if receipts:
                    with curs.copy(COPY_RECEIPTS) as copy:
                        copy.write(receipts)
                counts = _count_rows(checkpoint)
                if counts:
                    curs.executemany(ADD_COUNT.format(p="%s"), counts)
            if len(events) > _EMPTY_COPY:
                with curs.copy(self._copy_events) as copy:
                    copy.write(events)

    def _insert_trackings(self, curs: Any, trackings: list[Tracking]) -> None:
        """eventsourcing's single-row tracking upsert, every partition of a batch in one
        statement rather than a round trip each: a position that would move back is not
        updated, so not returned, and the transaction fails as the library's would."""
        if not self.datastore.single_row_tracking:
            for tracking in trackings:
                self._insert_tracking(curs, tracking)
            return
        if not trackings:
            return
        curs.execute(
            self._upsert_trackings,
            (
                [t.application_name for t in trackings],
                [t.notification_id for t in trackings],
            ),
        )
        if len(curs.fetchall()) != len(trackings):
            moved_back = ", ".join(f"{t.application_name} {t.notification_id}" for t in trackings)
            raise IntegrityError(f"Failed to record tracking for one of {moved_back}")

    @property
    def _upsert_trackings(self) -> Composed:
        return SQL(
            "INSERT INTO {0}.{1} AS t (application_name, notification_id) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (application_name) DO UPDATE "
            "SET notification_id = excluded.notification_id "
            "WHERE t.notification_id < excluded.notification_id "
            "RETURNING t.notification_id"
        ).format(Identifier(self.datastore.schema), Identifier(self.tracking_table_name))

    @property
    def _copy_events(self) -> Composed:
        return SQL(
            "COPY {0}.{1} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT binary)"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))

    def select_members_events(
        self, originator_ids: Collection[UUID], *, first_only: bool = False
    ) -> list[StoredEvent]:
        """Every event of the given aggregates, in order, or only each one's first: one
        query for a whole batch."""
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE originator_id = ANY(%s) {2}ORDER BY originator_id, originator_version"
        ).format(
            Identifier(self.datastore.schema),
            Identifier(self.events_table_name),
            SQL(FIRST_ONLY if first_only else ""),
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(originator_ids),))
            return _stored_events(curs.fetchall())

    @property
    def events_after_statement(self) -> Composed:
        """Each member's events after a version: one index range per member, whatever the
        planner believes. The table's writers hold a lock that keeps autovacuum from ever
        analyzing it under load, and on guessed statistics a join here became a scan of
        every stored event for each batch (at a million, 1.7 s a batch: ingest fell to a
        third of its rate). The subquery's ORDER BY also keeps PostgreSQL from flattening
        it back into that join."""
        return SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS s(id, after) "
            "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
            "FROM {0}.{1} WHERE originator_id = s.id AND originator_version > s.after "
            "ORDER BY originator_version) e"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))

    def select_events_after(self, versions: dict[UUID, int]) -> list[StoredEvent]:
        """Each aggregate's events after the version given for it, in order."""
        if not versions:
            return []
        ids = list(versions)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            # On guessed statistics, thousands of index ranges are estimated to cost enough
            # for PostgreSQL to compile the plan (JIT): ~100 ms for a query of milliseconds.
            # Set for the session (the pool's connections are the store's own) rather than
            # as a connection option, which poolers such as PgBouncer refuse by default.
            curs.execute(NO_JIT)
            curs.execute(self.events_after_statement, (ids, [versions[i] for i in ids]))
            return _stored_events(curs.fetchall())

    def insert_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(
                INSERT_SNAPSHOT.format(p="%s"), [(str(i), v, at, s) for i, v, at, s in rows]
            )

    def latest_snapshots(self, ids: Collection[UUID]) -> Snapshots:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_LATEST_SNAPSHOTS_PG, ([str(i) for i in ids],))
            return {
                UUID(r["aggregate_id"]): (int(r["version"]), bytes(r["state"]))
                for r in curs.fetchall()
            }

    def snapshot_as_of(self, aggregate_id: UUID, latest_at: str) -> tuple[int, bytes] | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_SNAPSHOT_AS_OF.format(p="%s"), (str(aggregate_id), latest_at))
            row = curs.fetchone()
            return None if row is None else (int(row["version"]), bytes(row["state"]))

    def next_snapshot_version(self, aggregate_id: UUID, after: int) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_NEXT_SNAPSHOT.format(p="%s"), (str(aggregate_id), after))
            row = curs.fetchone()
            return None if row is None or row["min"] is None else int(row["min"])

    def select_member_events(
        self, aggregate_id: UUID, after: int, upto: int | None
    ) -> list[StoredEvent]:
        """The aggregate's events with after < version <= upto (no upper bound: None)."""
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE originator_id = %s AND originator_version > %s AND originator_version <= %s "
            "ORDER BY originator_version"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (aggregate_id, after, upto if upto is not None else 2**62))
            return _stored_events(curs.fetchall())

    def input_trackings(self, names: Sequence[str]) -> list[tuple[str, int]]:
        """(name, position) of each tracking record of these input partitions, in every
        incarnation."""
        statement = SQL(SELECT_INPUT_TRACKINGS_PG.format(table="{0}.{1}")).format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
        )
        patterns = [_escape_like(name) + "~%" for name in names]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(names), patterns))
            return [(r["application_name"], int(r["max"])) for r in curs.fetchall()]

    def known_event_ids(self, event_ids: Collection[str]) -> set[str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_KNOWN_PG, (orjson.dumps(list(event_ids)).decode(),))
            return {row["event_id"] for row in curs.fetchall()}

    def message_counts(self) -> dict[tuple[str, str], int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SELECT_COUNTS)
            return {(r["topic"], r["outcome"]): int(r["messages"]) for r in curs.fetchall()}


class LedgerSQLiteRecorder(SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            CREATE_RECEIPTS,
            CREATE_COUNTS,
            CREATE_SNAPSHOTS.format(blob="BLOB"),
        ]

    def insert_rows(
        self,
        rows: Iterable[StoredRow],
        checkpoint: Checkpoint | None = None,
        tracking: Tracking | None = None,
    ) -> None:
        """The PostgreSQL recorder's bulk path, by the library's own insert."""
        self.insert_events(
            [StoredEvent(*row) for row in rows], checkpoint=checkpoint, tracking=tracking
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        checkpoint: Checkpoint | None = kwargs.get("checkpoint")
        if checkpoint is not None:
            for tracking in _trackings(checkpoint):
                self._insert_tracking(c, tracking)
            if checkpoint.receipts:
                c.executemany(INSERT_RECEIPT.format(p="?"), checkpoint.receipts)
            counts = _count_rows(checkpoint)
            if counts:
                c.executemany(ADD_COUNT.format(p="?"), counts)
        return returning

    def select_members_events(
        self, originator_ids: Collection[UUID], *, first_only: bool = False
    ) -> list[StoredEvent]:
        ids = [i.hex for i in originator_ids]
        events: list[StoredEvent] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), SQLITE_MAX_PARAMS):
                chunk = ids[start : start + SQLITE_MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM "
                    f"{self.events_table_name} WHERE originator_id IN ({marks}) "
                    f"{FIRST_ONLY if first_only else ''}ORDER BY originator_id, originator_version",
                    chunk,
                )
                events.extend(StoredEvent(UUID(r[0]), r[1], r[2], r[3]) for r in c.fetchall())
        return events

    def select_events_after(self, versions: dict[UUID, int]) -> list[StoredEvent]:
        events: list[StoredEvent] = []
        with self.datastore.transaction(commit=False) as c:
            for aggregate_id, after in versions.items():  # in-process: a query each is cheap
                c.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM "
                    f"{self.events_table_name} WHERE originator_id = ? AND "
                    f"originator_version > ? ORDER BY originator_version",
                    (aggregate_id.hex, after),
                )
                events.extend(StoredEvent(UUID(r[0]), r[1], r[2], r[3]) for r in c.fetchall())
        return events

    def insert_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                INSERT_SNAPSHOT.format(p="?"), [(str(i), v, at, s) for i, v, at, s in rows]
            )

    def latest_snapshots(self, ids: Collection[UUID]) -> Snapshots:
        found: Snapshots = {}
        with self.datastore.transaction(commit=False) as c:
            for aggregate_id in ids:
                c.execute(SELECT_LATEST_SNAPSHOT_SQLITE, (str(aggregate_id),))
                row = c.fetchone()
                if row is not None:
                    found[aggregate_id] = (int(row[1]), bytes(row[2]))
        return found

    def snapshot_as_of(self, aggregate_id: UUID, latest_at: str) -> tuple[int, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SELECT_SNAPSHOT_AS_OF.format(p="?"), (str(aggregate_id), latest_at))
            row = c.fetchone()
            return None if row is None else (int(row[1]), bytes(row[2]))

    def next_snapshot_version(self, aggregate_id: UUID, after: int) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SELECT_NEXT_SNAPSHOT.format(p="?"), (str(aggregate_id), after))
            row = c.fetchone()
            return None if row is None or row[0] is None else int(row[0])

    def select_member_events(
        self, aggregate_id: UUID, after: int, upto: int | None
    ) -> list[StoredEvent]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_id, originator_version, topic, state FROM "
                f"{self.events_table_name} WHERE originator_id = ? AND originator_version > ? "
                f"AND originator_version <= ? ORDER BY originator_version",
                (aggregate_id.hex, after, upto if upto is not None else 2**62),
            )
            return [StoredEvent(UUID(r[0]), r[1], r[2], r[3]) for r in c.fetchall()]

    def input_trackings(self, names: Sequence[str]) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(names), SQLITE_MAX_PARAMS // 2):
                chunk = names[start : start + SQLITE_MAX_PARAMS // 2]
                where = " OR ".join([SQLITE_INPUT_TRACKING] * len(chunk))
                c.execute(
                    SELECT_INPUT_TRACKINGS_SQLITE.format(where=where),
                    [p for name in chunk for p in (name, _escape_like(name) + "~%")],
                )
                found.extend((r[0], int(r[1])) for r in c.fetchall())
        return found

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
