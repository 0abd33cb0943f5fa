"""Kafka's committed offsets follow the store's: after a stored batch, each partition's
offset is the one after its last stored message, and never moves back."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.ingest.consumer import LagOffsets
from services.ingest.messages import InputMessage

P0, P1 = TopicPartition("loyalty.purchases", 0), TopicPartition("loyalty.purchases", 1)


class Committer:
    """What LagOffsets asks of a consumer: its partitions, and a commit."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})


def message(tp: TopicPartition, offset: int) -> InputMessage:
    return InputMessage(tp.topic, tp.partition, offset, b"m", b"{}")


def committed(offsets: LagOffsets, consumer: Any) -> dict[TopicPartition, int]:
    asyncio.run(offsets.commit(consumer))
    return consumer.commits[-1] if consumer.commits else {}


def test_each_partition_commits_the_offset_after_its_last_stored_message() -> None:
    offsets, consumer = LagOffsets(), Committer()
    offsets.stored([message(P0, 7), message(P1, 3), message(P0, 9), message(P1, 2)])
    assert committed(offsets, consumer) == {P0: 10, P1: 4}


def test_a_batch_stored_again_after_a_later_one_does_not_move_the_offset_back() -> None:
    offsets, consumer = LagOffsets(), Committer()
    offsets.stored([message(P0, 20)])
    offsets.stored([message(P0, 5), message(P1, 1)])
    assert committed(offsets, consumer) == {P0: 21, P1: 2}
