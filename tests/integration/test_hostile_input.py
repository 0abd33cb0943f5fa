"""Hostile and careless input through the real broker (docs/RULES.md, section 2): each bad message
is dead-lettered alone, with its key and bytes, and the canaries around it are applied.

Every case here once stalled or corrupted the ledger: a dead letter too large to publish
(a 600 KB network name quoted in its reason), U+0000 stored and then refused by every
reader, a purchase keyed by another member, and a year typed wrong.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.config import Topics
from services.errors import OperatorError
from services.ingest.messages import MAX_ERROR_BYTES
from tests.integration.harness import context_for, event, ingesting, read_to_end, wait_until

pytestmark = pytest.mark.integration
AT = "2026-03-01T12:00:00Z"


def purchase(event_id: str, member_id: str = "ann", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "occurred_at": AT,
        "member_id": member_id,
        "order_id": event_id,
        "amount": "10",
        "currency": "EUR",
        **fields,
    }


async def send_large(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        for topic, key, value in records:
            await (await producer.send(topic, value=value, key=key))
    finally:
        await producer.stop()


async def test_each_hostile_message_is_dead_lettered_and_its_neighbours_applied(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    share = {"event_id": "s-big", "type": "social_share", "occurred_at": AT, "member_id": "ann"}
    hostile = {
        "a 600 KB network name": (
            topics.social_shares,
            b"ann",
            orjson.dumps({**share, "network": "n" * 600_000}),
        ),
        "a message as large as the topic takes": (
            topics.purchases,
            b"ann",
            b'{"not": "an event", "pad": "' + b"x" * 1_040_000 + b'"}',
        ),
        "NUL in member_id": (
            topics.purchases,
            b"a\x00",
            orjson.dumps(purchase("p-nul", member_id="a\x00")),
        ),
        "an unpaired surrogate": (
            topics.purchases,
            b"ann",
            orjson.dumps(purchase("p-sur")).replace(b'"order_id":"p-sur"', b'"order_id":"\\ud800"'),
        ),
        "keyed by another member": (
            topics.purchases,
            b"bob",
            orjson.dumps(purchase("p-key")),
        ),
        "no key": (topics.purchases, None, orjson.dumps(purchase("p-nokey"))),
        "a typo in the year": (
            topics.social_shares,
            b"ann",
            orjson.dumps(
                {
                    **share,
                    "event_id": "s-2062",
                    "network": "x",
                    "occurred_at": "2062-01-01T00:00:00Z",
                }
            ),
        ),
    }
    before = [
        event(topics.purchases, **purchase("c1")),
        event(topics.social_shares, **{**share, "event_id": "c2", "network": "x"}),
    ]
    after = [
        event(topics.purchases, **purchase("c3")),
        # on a topic of its own: whatever order the topics interleave in, it earns the same
        event(
            topics.reviews,
            event_id="c4",
            type="review",
            occurred_at=AT,
            member_id="ann",
            product_id="mug",
            rating=5,
        ),
        event(topics.social_shares, **{**share, "event_id": "c5", "network": "x"}),
    ]
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await send_large(kafka_bootstrap, [*before, *hostile.values(), *after])
    total = len(before) + len(hostile) + len(after)

    async with ingesting(context):
        counts = await wait_until(
            lambda: (c := context.ledger.message_counts()) and sum(c.values()) == total and c,
            60,
            "every message accounted for",
        )

    dead = sum(n for (_, outcome), n in counts.items() if outcome == "dead_lettered")
    assert dead == len(hostile)
    member = context.ledger.member("ann")
    assert member is not None
    # c1 and c3: 10 points each; c2 and c5: 10 each; c4 a review, 25
    assert member.balance == 65
    assert member.last_event_at is not None and member.last_event_at.year == 2026
    assert context.ledger.member("a\x00") is None

    letters = await read_to_end(kafka_bootstrap, topics.dead_letters)
    by_value = {letter.value: letter for letter in letters}
    assert len(letters) == len(hostile)  # each once
    for why, (topic, key, value) in hostile.items():
        letter = by_value[value]  # the original bytes, unchanged
        headers = dict(letter.headers)
        assert letter.key == key, why
        assert headers["source.topic"].decode() == topic, why
        assert 0 < len(headers["error"]) <= MAX_ERROR_BYTES, why
    reasons = {
        why: dict(by_value[v].headers)["error"].decode() for why, (_, _, v) in hostile.items()
    }
    assert "network" in reasons["a 600 KB network name"]
    assert "U+0000" in reasons["NUL in member_id"]
    assert "surrogate" in reasons["an unpaired surrogate"]
    assert (
        "message key 'bob' is not the event's member_id 'ann'" in reasons["keyed by another member"]
    )
    assert "message has no key" in reasons["no key"]
    assert "later than the message's Kafka timestamp" in reasons["a typo in the year"]


async def test_a_worker_refuses_a_dead_letter_topic_smaller_than_its_inputs(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics.prefixed(f"s{suffix}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # as a topic tool with the broker's defaults would make them
        await admin.create_topics(
            [NewTopic(name, 1, 1) for name in (*topics.inputs, topics.dead_letters)]
        )
    finally:
        await admin.close()
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{suffix}")
    loop = context.ingest_loop()

    with pytest.raises(OperatorError, match=r"Raise its max\.message\.bytes to at least"):
        await asyncio.wait_for(loop.run(asyncio.Event()), 30)
