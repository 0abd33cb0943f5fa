"""Where everything stands: store position, projections, input lag, message accounting."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.config import KafkaSecurity
from services.errors import OperatorError
from services.kafka_clients import client_options, start
from services.relay import RELAY_TRACKING_NAME
from services.store.checkpoint import SKIPPED
from services.store.ledger import Ledger


async def end_offsets(
    bootstrap: str,
    topics: tuple[str, ...],
    timeout: float = 5.0,
    *,
    security: KafkaSecurity | None = None,
) -> dict[tuple[str, int], int]:
    options = client_options(security)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await asyncio.wait_for(start(admin, security, bootstrap), timeout)
    try:
        described = await asyncio.wait_for(admin.describe_topics(list(topics)), timeout)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["error_code"] == 0
        for p in t["partitions"]
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    try:
        await asyncio.wait_for(start(consumer, security, bootstrap), timeout)
        ends = (
            await asyncio.wait_for(consumer.end_offsets(partitions), timeout) if partitions else {}
        )
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def gather_status(
    ledger: Ledger,
    projection_positions: dict[str, int],
    bootstrap: str,
    topics: tuple[str, ...],
    security: KafkaSecurity | None = None,
    refusal_as_error: bool = False,
) -> dict[str, Any]:
    """A broker away is reported in `kafka_error`; one refusing the settings raises the
    OperatorError that says which (a misconfiguration is not an outage to wait out),
    unless `refusal_as_error` (the API, which reports the store's side all the same)."""
    store_position = await asyncio.to_thread(ledger.last_position)
    counts = await asyncio.to_thread(ledger.message_counts)
    inputs: dict[str, Any] = {}
    kafka_error = None
    try:
        ends = await end_offsets(bootstrap, topics, security=security)
    except (KafkaError, TimeoutError, OSError) as exc:
        ends, kafka_error = {}, f"Kafka unreachable at {bootstrap}: {exc}"
    except OperatorError as exc:
        if not refusal_as_error:
            raise
        ends, kafka_error = {}, str(exc)
    positions = await asyncio.to_thread(ledger.input_positions, ends)
    for topic in topics:
        lag = 0
        partitions = sorted(p for (t, p) in ends if t == topic)
        for partition in partitions:
            stored = positions.get((topic, partition))
            lag += max(ends[(topic, partition)] - (0 if stored is None else stored.offset + 1), 0)
        inputs[topic] = {
            "applied": counts.get((topic, "applied"), 0),
            "duplicate": counts.get((topic, "duplicate"), 0),
            "rejected": counts.get((topic, "rejected"), 0),
            "dead_lettered": counts.get((topic, "dead_lettered"), 0),
            # Offsets deleted by retention before they were read: no message to account.
            "skipped": counts.get((topic, SKIPPED), 0),
            "consumer_lag": lag if partitions else None,
        }
    relayed = await asyncio.to_thread(ledger.tracked, RELAY_TRACKING_NAME)
    status: dict[str, Any] = {
        "store_position": store_position,
        "projections": {
            name: {"position": pos, "behind": max(store_position - pos, 0)}
            for name, pos in projection_positions.items()
        },
        "member_events": {"position": relayed, "behind": max(store_position - relayed, 0)},
        "inputs": inputs,
    }
    if kafka_error:
        status["kafka_error"] = kafka_error
    return status
