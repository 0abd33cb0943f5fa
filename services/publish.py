"""`loyalty publish FILE`: sends a JSON Lines file of events to their topics, keyed by member."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from services.config import KafkaSecurity, Topics
from services.inputs import REGISTRY
from services.kafka_clients import client_options, start


@dataclass
class PublishReport:
    sent: int = 0
    unroutable: int = 0


def route(line: bytes, topics: Topics) -> tuple[str, bytes | None] | None:
    """The topic and key of one event line, or None when it names no known type."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    event_type = data.get("type")
    input_type = REGISTRY.by_name(event_type) if isinstance(event_type, str) else None
    if input_type is None:
        return None
    topic = topics.names[input_type.topic]
    key = data.get(input_type.key_field)
    return topic, str(key).encode() if key is not None else None


async def publish_lines(
    lines: Iterable[bytes], bootstrap: str, topics: Topics, security: KafkaSecurity | None = None
) -> PublishReport:
    report = PublishReport()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
        **client_options(security),
    )
    try:
        await start(producer, security, bootstrap)
        pending = []
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            routed = route(line, topics)
            if routed is None:
                report.unroutable += 1
                continue
            topic, key = routed
            pending.append(await producer.send(topic, value=line, key=key))
            report.sent += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return report


def publish_file(
    path: Path, bootstrap: str, topics: Topics, security: KafkaSecurity | None = None
) -> PublishReport:
    with path.open("rb") as lines:
        return asyncio.run(publish_lines(lines, bootstrap, topics, security))
