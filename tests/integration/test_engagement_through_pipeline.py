"""Enrolment, reviews, birthdays, campaigns, badges and pending points from Kafka to the
API and the changelog, under a program that has them all."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services import member_events
from services.api.app import create_app
from services.config import Topics
from services.relay import MemberEventRelay
from tests.integration.harness import context_for, event, ingest_all, read_to_end, wait_until

pytestmark = pytest.mark.integration

PROGRAM = """
pending_days = 14

[[campaigns]]
id = "welcome-january"
starts = 2026-01-01T00:00:00Z
ends = 2026-02-01T00:00:00Z
applies_to = "enrolment"
multiplier = "2"

[[campaigns]]
id = "big"
starts = 2026-01-01T00:00:00Z
ends = 2027-01-01T00:00:00Z
applies_to = "purchase"
bonus = 50
min_amount = "150.00"

[[badges]]
id = "critic"
type = "review"
count = 3
bonus = 75
"""


def scenario(t: Topics) -> list[list[Any]]:
    def review(eid: str, product: str) -> Any:
        return event(
            t.reviews,
            event_id=eid,
            type="review",
            occurred_at="2026-02-01T09:00:00Z",
            member_id="eve",
            product_id=product,
            rating=4,
        )

    enrolment = dict(
        type="member_enrolled",
        occurred_at="2026-01-10T10:00:00Z",
        member_id="eve",
        birth_date="1990-03-15",
        channel="web",
    )
    return [
        [
            event(t.members, event_id="m1", **enrolment),
            event(t.members, event_id="m2", **{**enrolment, "occurred_at": "2026-01-11T10:00:00Z"}),
            review("v1", "p1"),
            review("v2", "p2"),
            review("v3", "p3"),  # the day's third: 0 points, yet the badge's third
            event(
                t.purchases,
                event_id="b1",
                type="purchase",
                occurred_at="2026-02-02T12:00:00Z",
                member_id="eve",
                order_id="o1",
                amount="200.00",
                currency="EUR",
            ),
        ],
        [
            # after the birthday and the return window: both come first, in step 0
            event(
                t.social_shares,
                event_id="s1",
                type="social_share",
                occurred_at="2026-03-15T12:00:00Z",
                member_id="eve",
                network="x",
            ),
        ],
    ]


async def test_engagement_rules_hold_from_kafka_to_the_api_and_the_changelog(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, tmp_path: Path
) -> None:
    (tmp_path / "program.toml").write_text(PROGRAM)
    context = context_for(
        kafka_bootstrap,
        postgres_url,
        topics,
        f"g-{uuid.uuid4().hex[:8]}",
        tmp_path / "program.toml",
    )
    phases = scenario(topics)
    await ingest_all(context, phases[0])
    runner = context.projection_runner()
    runner.catch_up()
    app = create_app(context, context.database(), runner)
    async with TestClient(TestServer(app)) as client:
        eve = await (await client.get("/members/eve")).json()
        # welcome 100 x 2 + reviews 25 + 25 + 0 + the critic badge 75; the purchase pending
        assert eve["balance"] == 200 + 50 + 75
        assert eve["pending_points"] == 200 + 50  # floor(200 x 1) + the big-basket bonus
        assert eve["qualifying_points"] == 200
        assert (eve["enrolled_at"], eve["birth_date"]) == ("2026-01-10T10:00:00Z", "1990-03-15")
        assert eve["badges"] == [{"id": "critic", "earned_at": "2026-02-01T09:00:00Z"}]

        await ingest_all(context, phases[1])
        runner.catch_up()
        eve = await (await client.get("/members/eve")).json()
        # + the birthday 200 + the release 250 + the share 10
        assert (eve["balance"], eve["pending_points"]) == (325 + 200 + 250 + 10, 0)
        assert eve["lifetime_points"] == eve["balance"]
        entries = (await (await client.get("/members/eve/ledger")).json())["entries"]
        by_kind = {e["kind"]: e for e in entries}
        assert "campaigns=welcome-january:100" in by_kind["Enrolled"]["detail"]
        assert "campaigns=big:50" in by_kind["PurchaseRecorded"]["detail"]
        assert (by_kind["PurchaseRecorded"]["points"], by_kind["PurchaseRecorded"]["pending"]) == (
            0,
            250,
        )
        released = by_kind["PointsReleased"]
        assert (released["points"], released["pending"], released["at"]) == (
            250,
            -250,
            "2026-02-16T12:00:00Z",
        )
        assert by_kind["BirthdayRewarded"]["at"] == "2026-03-15T00:00:00Z"
        assert by_kind["BadgeEarned"]["detail"] == "badge_id=critic"
        assert sum(e["points"] for e in entries) == eve["balance"]
        campaigns = (await (await client.get("/metrics/campaigns")).json())["campaigns"]
        assert {
            c["id"]: (c["members_reached"], c["events_rewarded"], c["points_issued"])
            for c in campaigns
        } == {"welcome-january": (1, 1, 100), "big": (1, 1, 50)}
    counts = context.ledger.message_counts()
    assert counts[(topics.members, "applied")] == 1
    assert counts[(topics.members, "rejected")] == 1
    assert counts[(topics.reviews, "applied")] == 3

    relay = MemberEventRelay(
        ledger=context.ledger, bootstrap=kafka_bootstrap, topic=topics.member_events
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    stored = context.ledger.last_position()
    await wait_until(lambda: relay.position() == stored, 60, "relay caught up")
    stopping.set()
    await task
    kinds = {
        member_events.decode(r.value).stored.topic.rsplit(".", 1)[-1]
        for r in await read_to_end(kafka_bootstrap, topics.member_events)
    }
    assert {
        "Enrolled",
        "EnrolmentRejected",
        "ReviewRecorded",
        "BadgeEarned",
        "BirthdayRewarded",
        "PointsReleased",
    } <= kinds
