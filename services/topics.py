"""The ledger's Kafka topics: the settings each needs, creating the missing ones, and the
check the worker makes before it reads.

The dead-letter topic must take every message an input topic took, plus the headers a
dead letter adds (docs/RULES.md, section 2); otherwise one large bad message would stall its
partition, and every topic behind it, forever. The member-events topic is the ledger's
changelog: it is kept forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from services.config import KafkaSecurity, Topics
from services.errors import OperatorError
from services.ingest.messages import DEAD_LETTER_HEADROOM
from services.kafka_clients import client_options, start

log = logging.getLogger(__name__)

# Kafka's default largest record batch (message.max.bytes): what an input topic created
# without settings of its own accepts.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
MAX_MESSAGE_BYTES = "max.message.bytes"
TOPIC_ALREADY_EXISTS = 36  # Kafka's error code


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Every topic of the ledger, with the settings it needs beyond the broker's."""
    configs: dict[str, dict[str, str]] = {name: {} for name in topics.inputs}
    configs[topics.member_events] = {"retention.ms": "-1", "retention.bytes": "-1"}
    configs[topics.dead_letters] = {
        MAX_MESSAGE_BYTES: str(KAFKA_DEFAULT_MAX_MESSAGE_BYTES + DEAD_LETTER_HEADROOM)
    }
    return configs


async def ensure_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 4,
    replication: int = 1,
    *,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Creates the ledger's topics that are missing; returns their names."""
    configs = topic_configs(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await start(admin, security, bootstrap)
    try:
        response = await admin.create_topics(
            [
                NewTopic(name, partitions, replication, topic_configs=settings)
                for name, settings in configs.items()
            ]
        )
    finally:
        await admin.close()
    created = []
    for topic, code, message in _topic_errors(response):
        if code == 0:
            created.append(topic)
        elif code != TOPIC_ALREADY_EXISTS:
            raise OperatorError(f"creating topic {topic} failed: error {code}: {message}")
    return created


async def check_dead_letter_room(
    bootstrap: str,
    inputs: Sequence[str],
    dead_letters: str,
    timeout: float = 15.0,
    *,
    security: KafkaSecurity | None = None,
) -> None:
    """Refuses to start a worker whose dead-letter topic cannot take what the input topics
    can: a too-large bad message would then stall its partition. A broker that does not
    let the worker read topic settings is trusted, with a warning; one that refuses the
    worker's credentials or TLS settings stops it."""
    names = [*inputs, dead_letters]
    try:
        limits = await asyncio.wait_for(_max_message_bytes(bootstrap, names, security), timeout)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("could not read the topics' max.message.bytes (%s); not checked", exc)
        return
    accepted = {name: limits[name] for name in inputs if name in limits}
    room = limits.get(dead_letters)
    if not accepted or room is None:
        return  # a missing topic: subscribing says so
    largest_topic, largest = max(accepted.items(), key=lambda item: item[1])
    needed = largest + DEAD_LETTER_HEADROOM
    if room < needed:
        raise OperatorError(
            f"topic {dead_letters} accepts messages up to {room} bytes, but "
            f"{largest_topic} accepts {largest}: a dead letter carries the message plus up "
            f"to {DEAD_LETTER_HEADROOM} bytes of headers. Raise its max.message.bytes to at "
            f"least {needed} (kafka-configs.sh --alter --entity-type topics --entity-name "
            f"{dead_letters} --add-config max.message.bytes={needed})"
        )


async def _max_message_bytes(
    bootstrap: str, names: Iterable[str], security: KafkaSecurity | None
) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await start(admin, security, bootstrap)
    try:
        responses = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, {MAX_MESSAGE_BYTES: None})
                for name in names
            ]
        )
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for code, _, _, name, entries in response.resources:
            if code != 0:
                continue
            for entry in entries:
                if entry[0] == MAX_MESSAGE_BYTES and entry[1] is not None:
                    limits[name] = int(entry[1])
    return limits


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    rows: list[tuple[str, int, str | None]] = []
    for item in response.topic_errors:
        topic, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        rows.append((topic, int(code), message))
    return rows


def describe(configs: Mapping[str, Mapping[str, str]]) -> str:
    return ", ".join(
        f"{name}" + (f" ({', '.join(f'{k}={v}' for k, v in c.items())})" if c else "")
        for name, c in configs.items()
    )
