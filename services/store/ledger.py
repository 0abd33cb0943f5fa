"""The event store of member aggregates: an eventsourcing Application."""

from __future__ import annotations

import fcntl
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import CanMutateProtocol
from eventsourcing.persistence import Mapper, Notification, StoredEvent, Tracking, Transcoder
from eventsourcing.utils import get_topic

from services.domain import member_snapshot
from services.domain.member import Member
from services.store.checkpoint import Checkpoint, InputPosition, incarnation_of, tracking_name
from services.store.recorders import LedgerPostgresRecorder, LedgerSQLiteRecorder, SnapshotRow
from services.store.transcoder import LedgerMapper, OrjsonTranscoder, StoredRow
from services.store.urls import DatabaseUrl

SCHEMA_LOCK = 0x4C4F59414C5459  # "LOYALTY": the advisory lock held while creating tables
LedgerRecorder = LedgerPostgresRecorder | LedgerSQLiteRecorder


class Ledger(Application[UUID]):
    name = "Ledger"
    mapper: LedgerMapper  # construct_mapper's

    @classmethod
    def open(cls, database_url: str) -> Ledger:
        url = DatabaseUrl.parse(database_url)
        # Worker, projector and API start together: creating the schema concurrently
        # races (in PostgreSQL's catalog; in eventsourcing's SQLite migration record), so
        # the first one creates it while the others wait.
        if not url.is_postgres:
            Path(url.path).parent.mkdir(parents=True, exist_ok=True)
            with open(f"{url.path}.schema-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return cls(env=url.eventsourcing_env())
        with psycopg.connect(url.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                return cls(env=url.eventsourcing_env())
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=LedgerMapper
        )

    @property
    def store(self) -> LedgerRecorder:
        return cast(LedgerRecorder, self.recorder)

    def member(self, member_id: str) -> Member | None:
        return self.members([member_id]).get(member_id)

    def members(self, member_ids: Collection[str]) -> dict[str, Member]:
        """The members the store holds among those asked for: each from its latest
        snapshot, if any, and the events after it; one query for each, whatever their
        number."""
        ids = {Member.create_id(member_id): member_id for member_id in member_ids}
        folded: dict[UUID, Any] = {}
        for key, (_, state) in self.store.latest_snapshots(list(ids)).items():
            member = member_snapshot.decode(state)
            if member is not None:
                folded[key] = member
        after = {key: folded[key].version if key in folded else 0 for key in ids}
        for stored in self.store.select_events_after(after):
            event = cast(CanMutateProtocol[Any], self.mapper.to_domain_event(stored))
            key = UUID(str(stored.originator_id))
            folded[key] = event.mutate(folded.get(key))
        return {ids[key]: cast(Member, member) for key, member in folded.items()}

    def member_as_of(self, member_id: str, at: datetime) -> Member | None:
        """The member as its stored events dated at or before `at` left it: the longest
        prefix of its events, from the latest snapshot inside that prefix; None when not
        even its first event is that old. Nothing is written."""
        key = Member.create_id(member_id)
        member: Any = None
        snapshot = self.store.snapshot_as_of(key, member_snapshot.instant_text(at))
        if snapshot is not None:
            member = member_snapshot.decode(snapshot[1])
        after = 0 if member is None else member.version
        # The next snapshot has an event dated after `at` (else it would have been chosen):
        # the prefix ends before it, so no event beyond it is read.
        upto = self.store.next_snapshot_version(key, after)
        for stored in self.store.select_member_events(key, after, upto):
            event = cast(CanMutateProtocol[Any], self.mapper.to_domain_event(stored))
            dated = getattr(event, "at", None)
            if dated is not None and dated > at:
                break
            member = event.mutate(member)
        if member is None or member.latest_at is None:
            return None  # registered, and not one event dated at or before `at`
        return cast(Member, member)

    def save_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        if rows:
            self.store.insert_snapshots(rows)

    def member_ids_of(self, aggregate_ids: Collection[UUID]) -> dict[UUID, str]:
        """The member id of each aggregate the store holds among those asked for."""
        found: dict[UUID, str] = {}
        for stored in self.store.select_members_events(list(aggregate_ids), first_only=True):
            registered = self.mapper.to_domain_event(stored)
            found[UUID(str(stored.originator_id))] = registered.member_id  # type: ignore[attr-defined]
        return found

    def commit(self, members: Collection[Member], checkpoint: Checkpoint) -> None:
        """Stores the members' new events and the checkpoint atomically.

        What `Application.save` does for us, less what we do not use (its repository
        cache, snapshots, notify hooks) and less its runtime Protocol checks on every
        aggregate, which cost ~5% of ingestion (make bench --profile)."""
        self.put([event for member in members for event in member.collect_events()], checkpoint)

    def put(self, events: Sequence[Any], checkpoint: Checkpoint) -> None:
        """Stores events already collected from their members, and the checkpoint,
        atomically."""
        self.put_rows(self.rows(events), checkpoint)

    def rows(self, events: Iterable[Any]) -> list[StoredRow]:
        """Events as the store's rows, by the ledger's own mapper (not through the
        library's `EventStore.put`, which would make a StoredEvent of each)."""
        return list(map(self.mapper.to_row, events))

    def put_rows(self, rows: Iterable[StoredRow], checkpoint: Checkpoint) -> None:
        """Stores mapped events and the checkpoint atomically: what a batch decided
        while the one before it was being written."""
        self.store.insert_rows(rows, checkpoint)

    def input_position(self, topic: str, partition: int) -> InputPosition | None:
        """How far the store has taken that input partition in, in its latest incarnation;
        None when it has taken nothing in of it."""
        return self.input_positions([(topic, partition)]).get((topic, partition))

    def input_positions(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], InputPosition]:
        """`input_position` of each (topic, partition), in one query: a batch asks for
        every partition it holds (a round trip each was ~3% of deciding, issue 19). The
        partitions the store has taken nothing in of are left out."""
        partition_of = {tracking_name(topic, p): (topic, p) for topic, p in partitions}
        if not partition_of:
            return {}
        positions: dict[tuple[str, int], InputPosition] = {}
        for name, offset in self.store.input_trackings(list(partition_of)):
            # A name is its partition's, or that and "~incarnation" (topics hold no '~').
            key = partition_of.get(name.partition("~")[0])
            if key is None:
                continue  # not asked for
            position = InputPosition(incarnation_of(name), offset)
            known = positions.get(key)
            if known is None or position.incarnation > known.incarnation:
                positions[key] = position
        return positions

    def known_event_ids(self, event_ids: Collection[str]) -> set[str]:
        return self.store.known_event_ids(event_ids) if event_ids else set()

    def message_counts(self) -> dict[tuple[str, str], int]:
        return self.store.message_counts()

    def member_ids(self, page: int = 10_000) -> list[str]:
        """Every member the store knows, in order of registration."""
        registered = [get_topic(Member.Registered)]
        ids: list[str] = []
        position = 0
        while notifications := self.store.select_notifications(
            start=position, limit=page, topics=registered, inclusive_of_start=False
        ):
            ids.extend(self.mapper.to_domain_event(n).member_id for n in notifications)  # type: ignore[attr-defined]
            position = notifications[-1].id
        return ids

    def last_position(self) -> int:
        return self.store.max_notification_id() or 0

    # ---- the store's followers (relay, digest, replay, projections) ---------------------

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Up to `limit` stored events after position `after`, in store order."""
        return self.store.select_notifications(start=after, limit=limit, inclusive_of_start=False)

    def domain_event(self, stored: StoredEvent) -> Any:
        return self.mapper.to_domain_event(stored)

    def all_members(self, as_of: datetime | None = None, page: int = 10_000) -> Iterator[Member]:
        """Every member as the store holds it, folded from the log in one pass; with
        `as_of`, as `member_as_of` answers for each (members with no event that old are
        left out)."""
        folded: dict[Any, Any] = {}
        closed: set[Any] = set()  # members whose prefix dated at or before as_of has ended
        position = 0
        while notifications := self.notifications(position, page):
            for notification in notifications:
                event = cast(CanMutateProtocol[Any], self.domain_event(notification))
                key = event.originator_id
                if as_of is not None:
                    if key in closed:
                        continue
                    dated = getattr(event, "at", None)
                    if dated is not None and dated > as_of:
                        closed.add(key)
                        continue
                folded[key] = event.mutate(folded.get(key))
            position = notifications[-1].id
        for member in folded.values():
            if as_of is None or member.latest_at is not None:
                yield cast(Member, member)

    def tracked(self, name: str) -> int:
        """The position a follower named `name` recorded (0 before any)."""
        return self.store.max_tracking_id(name) or 0

    def track(self, name: str, position: int) -> None:
        """Records a follower's position; refuses (IntegrityError) to move it back."""
        self.store.insert_tracking(Tracking(name, position))

    def insert_stored(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> None:
        """Stored events copied as they are (a rebuild from the changelog), with receipts."""
        self.store.insert_events(events, checkpoint=checkpoint)

    def events_table(self) -> str:
        """Where a read side reading the log with SQL of its own finds it; its states are
        plain JSON in the transcoder's format (no cipher, no compressor)."""
        if self.mapper.cipher is not None or self.mapper.compressor is not None:
            raise ValueError("the read side reads stored states as plain JSON")
        store = self.store
        schema: str = getattr(store.datastore, "schema", "")  # PostgreSQL's store only
        return f"{schema}.{store.events_table_name}" if schema else store.events_table_name
