"""Where the worker reads from, and what lag tools see (docs/RULES.md, section 2).

The store's positions say where each partition resumes; Kafka's committed offsets for the
group follow them within seconds, also once the stream goes quiet. Offsets the log no
longer holds are accounted for: deleted by retention before they were read (counted as
skipped), or a topic re-created below the store's position (read anew).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from services.bootstrap import Context
from services.config import Topics
from services.ingest.messages import InputMessage
from services.status import end_offsets
from services.store.checkpoint import SKIPPED, InputPosition
from tests.conftest import create_topics
from tests.integration.harness import context_for, event, ingesting, read_to_end, send, wait_until

pytestmark = pytest.mark.integration


def purchases(topics: Topics, prefix: str, n: int, members: int = 7) -> list[Any]:
    return [
        event(
            topics.purchases,
            event_id=f"{prefix}{i}",
            type="purchase",
            occurred_at="2026-03-01T12:00:00Z",
            member_id=f"m{i % members}",
            order_id=f"{prefix}{i}",
            amount="10",
            currency="EUR",
        )
        for i in range(n)
    ]


async def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def lag_reaches_zero(context: Context, within: float) -> float:
    """Seconds until every input partition's committed offset is its end offset."""
    settings = context.settings
    ends = {
        k: v
        for k, v in (await end_offsets(settings.kafka_bootstrap, settings.topics.inputs)).items()
        if v
    }
    started = time.monotonic()
    while time.monotonic() - started < within:
        offsets = await committed(settings.kafka_bootstrap, settings.consumer_group)
        if all(offsets.get(k) == end for k, end in ends.items()):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"committed {offsets} never reached the end offsets {ends}")


def accounted(context: Context) -> int:
    return sum(context.ledger.message_counts().values())


async def test_committed_offsets_reach_the_store_within_5_s_after_the_stream_goes_quiet(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    records = purchases(topics, "p", 300)
    await send(kafka_bootstrap, records)
    async with ingesting(context):
        await wait_until(lambda: accounted(context) == len(records), 60, "ingest")
        # The last batch is written ahead and settled by the loop's next turn, message
        # or none: lag tools must see zero while the stream stays quiet.
        assert await lag_reaches_zero(context, within=5.0) < 5.0


async def test_a_worker_restarted_after_its_store_commit_catches_lag_tools_up_at_idle(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    # A worker that died between the store's commit and Kafka's: the store holds every
    # message, Kafka's offsets hold none, and nothing new arrives.
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    records = purchases(topics, "p", 60)
    await send(kafka_bootstrap, records)
    service = context.ingest_service()
    stored = await read_to_end(kafka_bootstrap, topics.purchases)
    service.commit(
        *service.decode(
            [InputMessage(r.topic, r.partition, r.offset, r.key, r.value) for r in stored]
        )
    )
    assert await committed(kafka_bootstrap, context.settings.consumer_group) == {}
    async with ingesting(context) as loop:
        assert await lag_reaches_zero(context, within=20.0) < 20.0
    assert loop.totals == {}  # nothing taken in twice
    assert accounted(context) == len(records)


async def delete_records(bootstrap: str, before: dict[TopicPartition, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(o) for tp, o in before.items()})
    finally:
        await admin.close()


async def test_offsets_deleted_by_retention_before_they_were_read_are_counted_as_skipped(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    first = purchases(topics, "a", 40)
    await send(kafka_bootstrap, first)
    async with ingesting(context):
        await wait_until(lambda: accounted(context) == len(first), 60, "the first part")
    # While no worker runs, more arrive, and retention deletes some before anyone read them.
    second = purchases(topics, "b", 80)
    await send(kafka_bootstrap, second)
    ends = await end_offsets(kafka_bootstrap, (topics.purchases,))
    cut = {TopicPartition(t, p): end - 5 for (t, p), end in ends.items() if end > 5}
    gone = 0
    for tp, offset in cut.items():
        stored = context.ledger.input_position(tp.topic, tp.partition)
        gone += max(0, offset - (0 if stored is None else stored.offset + 1))
    assert gone > 0
    await delete_records(kafka_bootstrap, cut)  # all but each partition's last 5

    async with ingesting(context):
        await wait_until(
            lambda: accounted(context) == len(first) + len(second), 60, "the rest, or its count"
        )
    counts = context.ledger.message_counts()
    assert counts[(topics.purchases, SKIPPED)] == gone
    assert counts[(topics.purchases, "applied")] == len(first) + len(second) - gone
    for tp, offset in cut.items():
        assert context.ledger.input_position(tp.topic, tp.partition) == InputPosition(0, offset + 4)


async def test_a_topic_re_created_below_the_stores_position_is_read_anew(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    old = purchases(topics, "old", 60)
    await send(kafka_bootstrap, old)
    async with ingesting(context):
        await wait_until(lambda: accounted(context) == len(old), 60, "the old topic")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topics.purchases])
    finally:
        await admin.close()
    for _ in range(60):  # the broker deletes asynchronously
        try:
            await create_topics(kafka_bootstrap, topics)
            ends = await end_offsets(kafka_bootstrap, (topics.purchases,))
            if ends and all(v == 0 for v in ends.values()):
                break
        except Exception:
            pass
        await asyncio.sleep(0.5)
    new = purchases(topics, "new", 12)  # fewer than before: every offset is below the old ones
    await send(kafka_bootstrap, new)

    async with ingesting(context):
        await wait_until(lambda: accounted(context) == len(old) + len(new), 60, "the new topic")
    counts = context.ledger.message_counts()
    assert counts[(topics.purchases, "applied")] == len(old) + len(new)
    for record in await read_to_end(kafka_bootstrap, topics.purchases):
        position = context.ledger.input_position(record.topic, record.partition)
        assert position is not None and position.incarnation == 1
