"""Publishes the store's notification log on `loyalty.member-events`, in store order.

Its position is a tracking record written after Kafka acknowledged the messages, so a
crash republishes at most the last unacknowledged page (consumers dedupe on `id`) and
never skips one. One relay per store: the worker runs it under faust's leader election.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import Notification, Tracking

from services import member_events
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

RELAY_TRACKING_NAME = "relay:member-events"


class MemberEventRelay:
    def __init__(self, *, ledger: Ledger, bootstrap: str, topic: str, page: int = 2000) -> None:
        self._ledger = ledger
        self._bootstrap = bootstrap
        self._topic = topic
        self._page = page
        self._member_ids: dict[UUID, str] = {}

    def position(self) -> int:
        return self._ledger.store.max_tracking_id(RELAY_TRACKING_NAME) or 0

    async def run(self, stopping: asyncio.Event, idle_seconds: float = 0.2) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, enable_idempotence=True, acks="all", linger_ms=10
        )
        await producer.start()
        try:
            position = await asyncio.to_thread(self.position)
            while not stopping.is_set():
                page = await asyncio.to_thread(self._next_page, position)
                if not page:
                    await asyncio.sleep(idle_seconds)
                    continue
                futures = []
                for notification, member_id in page:
                    value = member_events.encode(notification, member_id, notification.id)
                    futures.append(
                        await producer.send(self._topic, value=value, key=member_id.encode())
                    )
                await asyncio.gather(*futures)
                position = page[-1][0].id
                await asyncio.to_thread(
                    self._ledger.store.insert_tracking, Tracking(RELAY_TRACKING_NAME, position)
                )
        finally:
            await producer.stop()

    def _next_page(self, position: int) -> list[tuple[Notification, str]]:
        notifications = self._ledger.store.select_notifications(
            start=position, limit=self._page, inclusive_of_start=False
        )
        return [(n, self._member_id(n.originator_id)) for n in notifications]

    def _member_id(self, originator_id: UUID | str) -> str:
        key = UUID(str(originator_id))
        member_id = self._member_ids.get(key)
        if member_id is None:
            first = self._ledger.store.select_events(key, lte=1)
            member_id = self._ledger.mapper.to_domain_event(first[0]).member_id  # type: ignore[attr-defined]
            if len(self._member_ids) > 500_000:
                self._member_ids.clear()
            self._member_ids[key] = member_id
        return member_id
