"""The event store of member aggregates: an eventsourcing Application."""

from __future__ import annotations

import fcntl
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import CanMutateProtocol
from eventsourcing.persistence import Notification, StoredEvent, Tracking, Transcoder
from eventsourcing.utils import get_topic

from services.domain.member import Member
from services.store.checkpoint import Checkpoint, InputPosition, incarnation_of, tracking_name
from services.store.recorders import LedgerPostgresRecorder, LedgerSQLiteRecorder
from services.store.transcoder import OrjsonTranscoder
from services.store.urls import DatabaseUrl

SCHEMA_LOCK = 0x4C4F59414C5459  # "LOYALTY": the advisory lock held while creating tables
LedgerRecorder = LedgerPostgresRecorder | LedgerSQLiteRecorder


class Ledger(Application[UUID]):
    name = "Ledger"

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

    @property
    def store(self) -> LedgerRecorder:
        return cast(LedgerRecorder, self.recorder)

    def member(self, member_id: str) -> Member | None:
        try:
            return cast(Member, self.repository.get(Member.create_id(member_id)))
        except AggregateNotFoundError:
            return None

    def members(self, member_ids: Collection[str]) -> dict[str, Member]:
        """The members the store holds among those asked for, in one query."""
        ids = {Member.create_id(member_id): member_id for member_id in member_ids}
        folded: dict[UUID, Any] = {}
        for stored in self.store.select_members_events(list(ids)):
            event = cast(CanMutateProtocol[Any], self.mapper.to_domain_event(stored))
            key = UUID(str(stored.originator_id))
            folded[key] = event.mutate(folded.get(key))
        return {ids[key]: cast(Member, member) for key, member in folded.items()}

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
        atomically: what a batch decided while the one before it was being written."""
        self.events.put(events, checkpoint=checkpoint)

    def input_position(self, topic: str, partition: int) -> InputPosition | None:
        """How far the store has taken that input partition in, in its latest incarnation;
        None when it has taken nothing in of it."""
        trackings = self.store.input_trackings(tracking_name(topic, partition))
        if not trackings:
            return None
        name, offset = max(trackings, key=lambda t: incarnation_of(t[0]))
        return InputPosition(incarnation_of(name), offset)

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

    def all_members(self, page: int = 10_000) -> Iterator[Member]:
        """Every member as the store holds it, folded from the log in one pass."""
        folded: dict[Any, Any] = {}
        position = 0
        while notifications := self.notifications(position, page):
            for notification in notifications:
                event = cast(CanMutateProtocol[Any], self.domain_event(notification))
                key = event.originator_id
                folded[key] = event.mutate(folded.get(key))
            position = notifications[-1].id
        for member in folded.values():
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
