"""docs/RULES.md, section 2, through a real broker and a real PostgreSQL store."""

from __future__ import annotations

import uuid

import orjson
import pytest

from services.config import Topics
from services.store.checkpoint import MessageOutcome
from tests.integration.harness import context_for, event, ingesting, read_to_end, send, wait_until

pytestmark = pytest.mark.integration
AT = "2026-03-01T12:00:00Z"


async def test_every_message_is_applied_duplicate_rejected_or_dead_lettered(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    purchase = dict(
        type="purchase",
        occurred_at=AT,
        member_id="ann",
        order_id="o1",
        amount="20.00",
        currency="EUR",
    )
    good = [
        event(topics.purchases, event_id="p1", **purchase),
        event(topics.purchases, event_id="p1", **purchase),  # an upstream retry: duplicate
        event(
            topics.redemptions,
            event_id="r1",
            type="redemption",
            occurred_at=AT,
            member_id="ann",
            points=500,
            reward="mug",
        ),  # beyond the balance: rejected by a rule
        event(
            topics.referrals,
            event_id="f1",
            type="referral",
            occurred_at=AT,
            referrer_id="bob",
            referee_id="bob",
        ),  # self referral: rejected by a rule
    ]
    poison = [
        (topics.purchases, b"ann", b"{not json"),
        (topics.purchases, b"ann", b"[]"),
        (topics.purchases, b"ann", orjson.dumps({**purchase, "event_id": "x1", "member_id": None})),
        (topics.purchases, b"ann", orjson.dumps({**purchase, "event_id": "x2", "type": "gift"})),
        (topics.redemptions, b"ann", orjson.dumps({**purchase, "event_id": "x3"})),
        (
            topics.purchases,
            b"ann",
            orjson.dumps({**purchase, "event_id": "x4", "occurred_at": "yesterday"}),
        ),
        (topics.purchases, b"ann", orjson.dumps({**purchase, "event_id": "x5", "currency": "USD"})),
        (
            topics.purchases,
            b"ann",
            orjson.dumps({**purchase, "event_id": "x6", "amount": "2000000"}),
        ),
    ]
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await send(kafka_bootstrap, [*good, *poison])

    def settled() -> dict[tuple[str, str], int] | None:
        counts = context.ledger.message_counts()
        return counts if sum(counts.values()) == len(good) + len(poison) else None

    async with ingesting(context):
        counts = await wait_until(settled, 60, "every message accounted for")

    assert counts[(topics.purchases, MessageOutcome.APPLIED)] == 1
    assert counts[(topics.purchases, MessageOutcome.DUPLICATE)] == 1
    assert counts[(topics.redemptions, MessageOutcome.REJECTED)] == 1
    assert counts[(topics.referrals, MessageOutcome.REJECTED)] == 1
    dead_counted = sum(
        n for (_, outcome), n in counts.items() if outcome == MessageOutcome.DEAD_LETTERED
    )
    assert dead_counted == len(poison)

    letters = await read_to_end(kafka_bootstrap, topics.dead_letters)
    assert sorted(r.value for r in letters) == sorted(v for _, _, v in poison)
    # Where each poison pill was published: its headers must point back at exactly that.
    origin = {
        r.value: (r.topic, r.partition, r.offset)
        for topic in (topics.purchases, topics.redemptions)
        for r in await read_to_end(kafka_bootstrap, topic)
    }
    for record in letters:
        headers = dict(record.headers)
        assert record.key == b"ann"
        assert headers["error"]
        assert (
            headers["source.topic"].decode(),
            int(headers["source.partition"]),
            int(headers["source.offset"]),
        ) == origin[record.value]
    reasons = {r.value: dict(r.headers)["error"].decode() for r in letters}
    assert "not JSON" in reasons[b"{not json"]
    assert (
        "currency 'USD'" in reasons[orjson.dumps({**purchase, "event_id": "x5", "currency": "USD"})]
    )

    member = context.ledger.member("ann")
    assert member is not None and member.balance == 20
