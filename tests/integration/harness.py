"""Runs the ingest loop in-process against real Kafka and a real store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.bootstrap import Context, build
from services.config import KafkaSecurity, Settings, Topics
from services.ingest.consumer import IngestLoop
from services.ingest.messages import InputMessage
from services.ingest.service import IngestService
from services.inputs import REGISTRY
from services.status import end_offsets


def context_for(
    bootstrap: str,
    database_url: str,
    topics: Topics,
    group: str,
    program: Path | None = None,
    security: KafkaSecurity | None = None,
) -> Context:
    return build(
        Settings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            program_path=program,
            topics=topics,
            consumer_group=group,
            daily_sweep=False,
            batch_max_seconds=0.1,
            kafka_security=security or KafkaSecurity(),
        )
    )


@asynccontextmanager
async def ingesting(context: Context) -> AsyncIterator[IngestLoop]:
    loop = context.ingest_loop()
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    try:
        yield loop
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def send(bootstrap: str, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        # Sent in order without waiting for each: the idempotent producer keeps each
        # partition's order, and the acknowledgements are awaited together.
        sent = [await producer.send(topic, value=value, key=key) for topic, key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def event(topic_key: str, **fields: Any) -> tuple[str, bytes | None, bytes]:
    key = fields.get("referee_id") if fields.get("type") == "referral" else fields.get("member_id")
    return topic_key, (str(key).encode() if key is not None else None), orjson.dumps(fields)


async def wait_until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(probe)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for rows in batch.values():
                records.extend(rows)
    finally:
        await consumer.stop()
    return records


async def ingest_all(context: Context, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    """Publishes the records and runs the ingest loop until each one is accounted for."""
    target = sum(context.ledger.message_counts().values()) + len(records)
    await send(context.settings.kafka_bootstrap, records)
    async with ingesting(context):
        await wait_until(
            lambda: sum(context.ledger.message_counts().values()) == target, 60, "ingest"
        )


async def read_to_end(bootstrap: str, topic: str) -> list[Any]:
    """Every record of the topic up to its current end offsets."""
    ends = {
        TopicPartition(t, p): end
        for (t, p), end in (await end_offsets(bootstrap, (topic,))).items()
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        records: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for rows in batch.values():
                records.extend(rows)
        return records
    finally:
        await consumer.stop()


def keyed_message(
    topic: str, offset: int, event: dict[str, Any], partition: int = 0
) -> InputMessage:
    """An event as a well-behaved upstream sends it: keyed by the member it concerns."""
    key = event.get("referee_id") if event.get("type") == "referral" else event.get("member_id")
    return InputMessage(
        topic, partition, offset, None if key is None else str(key).encode(), orjson.dumps(event)
    )


def buy(who: str, order: str, amount: str, day: str) -> dict[str, Any]:
    """A purchase in EUR at noon UTC of `day`, its event id made of member and order."""
    return {
        "event_id": f"{who}-{order}",
        "type": "purchase",
        "member_id": who,
        "order_id": order,
        "amount": amount,
        "currency": "EUR",
        "occurred_at": f"{day}T12:00:00Z",
    }


def ingest_service(database_url: str) -> IngestService:
    """What a worker process decides and commits with, on a store of its own."""
    return build(Settings(database_url=database_url, daily_sweep=False)).ingest_service()


def commit_events(
    context: Context, events: Sequence[dict[str, Any]], first_offset: int = 0, batch: int = 200
) -> None:
    """Takes events in straight through the ingest service, in batches, as one partition
    of their topics would bring them (no broker)."""
    service = context.ingest_service()
    topics = context.settings.topics
    messages = [
        keyed_message(REGISTRY.topic_of(topics, e["type"]) or "", first_offset + i, e)
        for i, e in enumerate(events)
    ]
    for start in range(0, len(messages), batch):
        service.commit(*service.decode(messages[start : start + batch]))


def read_models(context: Context, *also: str) -> dict[str, list[Any]]:
    """Every read-model table's rows (and those of the tables `also` names), sorted: two
    states compare equal when they hold the same rows."""
    runner = context.projection_runner()
    db = context.database()
    try:
        tables = {t for p in runner.projections for t in p.tables} | set(also)
        return {
            table: sorted((tuple(row) for row in db.query(f"SELECT * FROM {table}")), key=repr)
            for table in sorted(tables)
        }
    finally:
        runner.close()
        db.close()
