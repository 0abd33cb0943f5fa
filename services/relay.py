"""Publishes the store's notification log on `loyalty.member-events`, in store order.

Its position is a tracking record written after Kafka acknowledged the messages, so a
crash republishes at most the last unacknowledged page (consumers dedupe on `id`) and
never skips one. It follows the store like the projections do, in `loyalty projector`,
not in the ingest worker, whose one core goes to ingestion. Of several projectors, the
one that holds the store's leadership pumps; should two ever overlap, the slower one's
position write fails the tracking record's only-forward check and it re-reads where
the other got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import IntegrityError, Notification
from eventsourcing.utils import get_topic

from services import member_events, telemetry
from services.config import KafkaSecurity
from services.domain.member import Member
from services.faults import Fault, backoff, fault_of
from services.kafka_clients import client_options
from services.kafka_clients import start as start_client
from services.store.leadership import AlwaysLeader, Leadership
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

RELAY_TRACKING_NAME = "relay:member-events"

REGISTERED_TOPIC = get_topic(Member.Registered)


class MemberEventRelay:
    def __init__(
        self,
        *,
        ledger: Ledger,
        bootstrap: str,
        topic: str,
        leadership: Leadership | None = None,
        page: int = 2000,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._ledger = ledger
        self._security = security
        self._leadership = leadership or AlwaysLeader()
        self._bootstrap = bootstrap
        self._topic = topic
        self._page = page
        self._member_ids: dict[UUID, str] = {}
        self._producer: AIOKafkaProducer | None = None

    def position(self) -> int:
        return self._ledger.tracked(RELAY_TRACKING_NAME)

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            **client_options(self._security),
        )
        try:
            await start_client(producer, self._security, self._bootstrap)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def pump(self, stopping: asyncio.Event | None = None) -> int:
        """Publishes what the store holds beyond the relay's position, until it is all out
        or `stopping` is set (checked between pages: a backlog of millions takes minutes,
        and a stopped process must not wait for it); returns how many."""
        assert self._producer is not None, "start() the relay first"
        published = 0
        position = await asyncio.to_thread(self.position)
        while not (stopping is not None and stopping.is_set()) and (
            page := await asyncio.to_thread(self._next_page, position)
        ):
            futures = [
                await self._producer.send(
                    self._topic,
                    value=member_events.encode(notification, member_id, notification.id),
                    key=member_id.encode(),
                )
                for notification, member_id in page
            ]
            await asyncio.gather(*futures)
            position = page[-1][0].id
            try:
                await asyncio.to_thread(self._ledger.track, RELAY_TRACKING_NAME, position)
            except IntegrityError:
                log.warning("another relay is ahead of %d; resuming from its position", position)
                return published
            published += len(page)
            await self._report(position)
        if not published:
            await self._report(position)
        return published

    async def _report(self, position: int) -> None:
        last = await asyncio.to_thread(self._ledger.last_position)
        telemetry.RELAY_POSITION.set(position)
        telemetry.RELAY_LAG.set(max(last - position, 0))

    async def run(self, stopping: asyncio.Event, idle_seconds: float = 0.2) -> None:
        failures = 0
        try:
            while not stopping.is_set():
                try:
                    if self._producer is None:
                        await self.start()
                    leading = await asyncio.to_thread(self._leadership.held)
                    published = await self.pump(stopping) if leading else 0
                    failures = 0
                except Exception as exc:
                    if fault_of(exc) is not Fault.OUTAGE:
                        raise
                    # The broker or the store is away: publish again from the stored
                    # position once it is back; consumers dedupe what is repeated.
                    failures += 1
                    telemetry.OUTAGE_RETRIES.labels("projector", "relay").inc()
                    delay = backoff(failures)
                    log.error("relay paused (%s); retrying in %.1fs", exc, delay)
                    await _sleep_unless(stopping, delay)
                    continue
                if not published:
                    await _sleep_unless(stopping, idle_seconds if leading else 5.0)
        finally:
            await asyncio.to_thread(self._leadership.release)
            await self.stop()

    def _next_page(self, position: int) -> list[tuple[Notification, str]]:
        notifications = self._ledger.notifications(position, self._page)
        if len(self._member_ids) > 500_000:
            self._member_ids.clear()
        keys = [UUID(str(n.originator_id)) for n in notifications]
        for key, notification in zip(keys, notifications, strict=True):
            # A member's first event names it: most pages introduce their own members.
            if notification.topic == REGISTERED_TOPIC:
                registered = self._ledger.domain_event(notification)
                self._member_ids[key] = registered.member_id
        unknown = set(keys).difference(self._member_ids)
        if unknown:
            self._member_ids.update(self._ledger.member_ids_of(unknown))
        return [(n, self._member_ids[key]) for key, n in zip(keys, notifications, strict=True)]


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
