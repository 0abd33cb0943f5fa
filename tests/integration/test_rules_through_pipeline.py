"""docs/RULES.md (sections 3 and 7) through the real pipeline: Kafka, the worker, the store, the
projections and the HTTP API, plus the member-events changelog."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services import member_events
from services.api.app import create_app
from services.bootstrap import Context
from services.config import Topics
from services.relay import MemberEventRelay
from tests.integration.harness import (
    context_for,
    event,
    ingest_all,
    read_to_end,
    wait_until,
)

pytestmark = pytest.mark.integration


def scenario(t: Topics) -> list[list[tuple[str, bytes | None, bytes]]]:
    """Two phases: the contract orders a member's events within a partition only, so an
    event that depends on one on another topic (cy's purchase on her referral, dee's
    redemptions on her shares) is published once the first phase is in the store."""

    def at(day: int, hour: int = 12) -> str:
        return f"2026-01-{day:02d}T{hour:02d}:00:00Z"

    def buy(eid: str, who: str, order: str, amount: str, day: int) -> Any:
        return event(
            t.purchases,
            event_id=eid,
            type="purchase",
            occurred_at=at(day),
            member_id=who,
            order_id=order,
            amount=amount,
            currency="EUR",
        )

    def share(eid: str, who: str, day: int, hour: int) -> Any:
        return event(
            t.social_shares,
            event_id=eid,
            type="social_share",
            occurred_at=at(day, hour),
            member_id=who,
            network="tiktok",
        )

    first = [
        # bob refers cy; cy's first purchase within 90 days pays both bonuses
        event(
            t.referrals,
            event_id="r1",
            type="referral",
            occurred_at=at(1),
            referrer_id="bob",
            referee_id="cy",
        ),
        # ann crosses silver on o2 (earns at bronze), then earns x1.25 on o3
        buy("p2", "ann", "a1", "990.00", 3),
        buy("p3", "ann", "a2", "20.00", 4),
        buy("p4", "ann", "a3", "100.00", 5),
        # a partial refund of a3 claws back floor(125 x 40/100) = 50
        event(
            t.purchases,
            event_id="p5",
            type="refund",
            occurred_at=at(6),
            member_id="ann",
            order_id="a3",
            amount="40.00",
        ),
        # four shares on one UTC day: the fourth earns nothing
        share("s1", "dee", 7, 1),
        share("s2", "dee", 7, 2),
        share("s3", "dee", 7, 3),
        share("s4", "dee", 7, 23),
    ]
    second = [
        buy("p1", "cy", "c1", "100.00", 2),
        # a redemption beyond the balance is declined; one of exactly the balance is not
        event(
            t.redemptions,
            event_id="d1",
            type="redemption",
            occurred_at=at(8),
            member_id="dee",
            points=31,
            reward="mug",
        ),
        event(
            t.redemptions,
            event_id="d2",
            type="redemption",
            occurred_at=at(9),
            member_id="dee",
            points=30,
            reward="mug",
        ),
    ]
    return [first, second]


@asynccontextmanager
async def api(context: Context) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(context, context.database(), context.projection_runner())
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_every_rule_holds_from_kafka_to_the_api(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    for phase in scenario(topics):
        await ingest_all(context, phase)
    runner = context.projection_runner()
    runner.catch_up()

    async with api(context) as client:

        async def member(member_id: str) -> dict[str, Any]:
            response = await client.get(f"/members/{member_id}")
            assert response.status == 200, member_id
            body: dict[str, Any] = await response.json()
            return body

        cy, bob = await member("cy"), await member("bob")
        assert (cy["balance"], cy["lifetime_points"], cy["qualifying_points"]) == (350, 350, 100)
        assert (bob["balance"], bob["qualifying_points"], bob["tier"]) == (500, 0, "bronze")

        ann = await member("ann")
        assert ann["tier"] == "silver"
        assert ann["balance"] == 990 + 20 + 125 - 50
        assert ann["qualifying_points"] == 990 + 20 + 100 - 40
        assert ann["last_event_at"] == "2026-01-06T12:00:00Z"

        dee = await member("dee")
        assert dee["balance"] == 0
        ledger = await (await client.get("/members/dee/ledger")).json()
        kinds = [(e["kind"], e["points"], e["balance"]) for e in ledger["entries"]]
        assert kinds == [
            ("SocialShareRecorded", 10, 10),
            ("SocialShareRecorded", 10, 20),
            ("SocialShareRecorded", 10, 30),
            ("SocialShareRecorded", 0, 30),
            ("PointsRedeemed", -30, 0),
        ]
        assert (await client.get("/members/nobody")).status == 404
        assert (await client.get("/members/nobody/ledger")).status == 404
        assert (await client.get("/members?limit=0")).status == 400
        tiers = await (await client.get("/metrics/tiers")).json()
        assert tiers["members_per_tier"] == {"bronze": 3, "silver": 1, "gold": 0}

    counts = context.ledger.message_counts()
    assert counts[(topics.redemptions, "rejected")] == 1
    assert counts[(topics.redemptions, "applied")] == 1

    # A sweep a year on expires every lot and drops ann back to bronze, through the store.
    service = context.ingest_service()
    written = service.sweep(context.ledger.member_ids(), datetime(2027, 1, 10, tzinfo=UTC))
    assert written > 0
    runner.catch_up()
    async with api(context) as client:
        ann = await (await client.get("/members/ann")).json()
        assert (ann["balance"], ann["tier"], ann["qualifying_points"]) == (0, "bronze", 0)
        assert service.sweep(context.ledger.member_ids(), datetime(2027, 1, 10, tzinfo=UTC)) == 0


async def test_member_events_are_published_in_store_order_and_rebuild_the_ledgers(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    for phase in scenario(topics):
        await ingest_all(context, phase)
        # A relay per phase, as after a restart: each resumes where the last one stopped.
        stored = context.ledger.last_position()
        relay = MemberEventRelay(
            ledger=context.ledger, bootstrap=kafka_bootstrap, topic=topics.member_events
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(relay.run(stopping))
        await wait_until(lambda r=relay, s=stored: r.position() == s, 60, "relay caught up")
        stopping.set()
        await task

    records = await read_to_end(kafka_bootstrap, topics.member_events)
    decoded = [member_events.decode(r.value) for r in records]
    assert len(records) == len({m.id for m in decoded}) == stored  # each once, none again
    by_member: dict[str, list[int]] = {}
    for record, message in zip(records, decoded, strict=True):
        assert record.key == message.member_id.encode()
        by_member.setdefault(message.member_id, []).append(message.stored.originator_version)
    for versions in by_member.values():
        assert versions == list(range(1, len(versions) + 1))
    # Complete enough to rebuild: every event maps back to the domain event it came from.
    for message in decoded:
        domain_event = context.ledger.mapper.to_domain_event(message.stored)
        assert domain_event.originator_version == message.stored.originator_version
    purchase = next(m for m in decoded if m.stored.topic.endswith("PurchaseRecorded"))
    body = orjson.loads(next(r.value for r in records if member_events.decode(r.value) == purchase))
    assert body["type"] == "PurchaseRecorded"
    assert body["state"]["points"] > 0


async def test_a_stopped_relay_stops_between_pages_of_a_backlog(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await ingest_all(
        context,
        [
            event(
                topics.purchases,
                event_id=f"p{i}",
                type="purchase",
                occurred_at="2026-03-01T12:00:00Z",
                member_id=f"m{i % 7}",
                order_id=f"o{i}",
                amount="10",
                currency="EUR",
            )
            for i in range(300)
        ],
    )
    stored = context.ledger.last_position()
    relay = MemberEventRelay(
        ledger=context.ledger, bootstrap=kafka_bootstrap, topic=topics.member_events, page=1
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    await wait_until(lambda: relay.position() > 0, 60, "the relay's first page")
    stopping.set()
    await asyncio.wait_for(task, 10)  # one page more at most, not the whole backlog

    stopped_at = relay.position()
    assert 0 < stopped_at < stored
    published = await read_to_end(kafka_bootstrap, topics.member_events)
    assert len(published) == stopped_at  # what it tracked is what it sent, nothing beyond
