"""The Kafka side of ingestion: batches in, dead letters out, offsets sought from the store.

faust's per-message stream machinery tops out near 6,000 messages/s on these machines
(FACTS.md), so the hot path reads with aiokafka's `getmany` and hands whole batches to
the ingest service; faust hosts this loop (see worker.py) for lifecycle, timers and
the web status page.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from services.ingest.messages import DeadLetter, Decoded, InputMessage
from services.ingest.service import BatchReport, IngestService, Prepared, StoreContention
from services.outages import OUTAGES as INFRASTRUCTURE
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

Decoding = tuple[list[Decoded], list[DeadLetter]]

# A worker that dies (SIGKILL, a lost host) keeps its partitions until its session times
# out: 6 s is the broker's smallest allowed, so a restarted or surviving worker takes
# over within seconds. Heartbeats are sent from the event loop, which commits never block.
SESSION_TIMEOUT_S = 6.0
HEARTBEAT_S = 2.0

# Failures that are never a message's: retried, not dead-lettered.
OUTAGES: tuple[type[BaseException], ...] = (StoreContention, *INFRASTRUCTURE)


@dataclass
class Writing:
    """A batch decided ahead, and the task writing it."""

    messages: list[InputMessage]
    decoding: Decoding
    prepared: Prepared
    task: asyncio.Task[BatchReport | None] | None = None
    letters_sent: bool = False


class SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """The store, not Kafka's committed offset, says where each partition resumes."""

    def __init__(self, loop: IngestLoop, consumer: AIOKafkaConsumer) -> None:
        self._loop = loop
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Another worker may write these members next: our cached copies would go stale.
        if revoked:
            self._loop.assignment_changed()
        for tp in revoked:
            self._loop.next_offsets.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._loop.assignment_changed()
        ledger = self._loop.ledger
        for tp in assigned:
            position = await asyncio.to_thread(ledger.input_position, tp.topic, tp.partition)
            start = 0 if position is None else position + 1
            self._loop.next_offsets[(tp.topic, tp.partition)] = start
            self._consumer.seek(tp, start)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class IngestLoop:
    def __init__(
        self,
        *,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        dead_letter_topic: str,
        ledger: Ledger,
        service: IngestService,
        batch_max: int,
        batch_seconds: float,
    ) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._topics = tuple(topics)
        self._dead_letter_topic = dead_letter_topic
        self.ledger = ledger
        self._service = service
        self._batch_max = batch_max
        self._batch_seconds = batch_seconds
        self.totals: dict[str, int] = {}
        # (topic, partition) -> next offset to hand to the service
        self.next_offsets: dict[tuple[str, int], int] = {}
        # Bumped on every rebalance: aiokafka may fetch before our listener has sought
        # to the store's positions, so a batch begun under an older assignment is dropped
        # (nothing of it is stored yet) and read again from the sought positions.
        self._assignment = 0

    def assignment_changed(self) -> None:
        self._assignment += 1
        # Another worker may write members of our old partitions next; the cache is
        # dropped by the commit thread itself, before its next batch.
        self._service.members.invalidate()

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            heartbeat_interval_ms=int(HEARTBEAT_S * 1000),
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, enable_idempotence=True, acks="all", linger_ms=5
        )
        consumer.subscribe(
            topics=list(self._topics),
            listener=SeekToStoredPositions(self, consumer),
        )
        await _start_with_retry(consumer)
        await _start_with_retry(producer)
        # Batch N is written while batch N+1 is fetched, decoded and decided on the
        # members as batch N left them in memory. N+1 is written only once N is stored
        # and nothing has put the cache in doubt while it was decided (epoch); otherwise
        # it is decided again, from the store, on the one-batch-at-a-time path. (A cache
        # dropped before N+1 was decided held the store's state without N: the store's
        # (aggregate, version) key refuses whatever N+1 wrote over N.)
        writing: Writing | None = None
        try:
            while not stopping.is_set():
                messages = await self._next_batch(consumer, stopping)
                decoding = self._service.decode(messages)
                prepared = None
                if messages:
                    in_flight = writing.prepared.event_ids if writing is not None else set()
                    prepared = await self._prepare(decoding, in_flight)
                if writing is not None:
                    await self._settle(consumer, producer, writing)
                    writing = None
                if not messages:
                    continue
                if prepared is not None and prepared.epoch != self._service.members.epoch:
                    # Its decisions live in the cached members: they go with them.
                    self._service.members.invalidate()
                    prepared = None
                if prepared is not None:
                    batch = Writing(messages, decoding, prepared)
                    batch.task = asyncio.create_task(self._write(producer, batch))
                    writing = batch
                else:
                    await self._process(consumer, producer, messages, decoding)
            if writing is not None:
                await self._settle(consumer, producer, writing)
                writing = None
        finally:
            if writing is not None and writing.task is not None and not writing.task.done():
                writing.task.cancel()
            await consumer.stop()
            await producer.stop()

    async def _prepare(self, decoding: Decoding, in_flight: set[str]) -> Prepared | None:
        try:
            return await asyncio.to_thread(self._service.prepare, *decoding, in_flight)
        except Exception as exc:
            # A message that breaks deciding: the one-batch-at-a-time path finds which.
            log.warning("deciding a batch ahead failed (%s: %s); taking it alone", type(exc), exc)
            return None

    async def _write(self, producer: AIOKafkaProducer, batch: Writing) -> BatchReport | None:
        """Publishes the batch's dead letters, then stores it; None if either failed."""
        try:
            await self._publish_dead_letters(producer, batch.decoding[1])
            batch.letters_sent = True
            return await asyncio.to_thread(self._service.write, batch.prepared)
        except Exception as exc:
            self._service.members.invalidate()
            log.warning("writing a batch failed (%s: %s); deciding it again", type(exc), exc)
            return None

    async def _settle(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, batch: Writing
    ) -> None:
        assert batch.task is not None
        report = await batch.task
        if report is None:
            await self._process(
                consumer, producer, batch.messages, batch.decoding, batch.letters_sent
            )
            return
        self._count(report)
        await self._commit_offsets(consumer, batch.messages)

    async def _next_batch(
        self, consumer: AIOKafkaConsumer, stopping: asyncio.Event
    ) -> list[InputMessage]:
        batch: list[InputMessage] = []
        deadline = time.monotonic() + self._batch_seconds
        assignment = self._assignment
        while len(batch) < self._batch_max and not stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and batch:
                break
            records = await consumer.getmany(
                timeout_ms=max(left_ms, 50), max_records=self._batch_max - len(batch)
            )
            if assignment != self._assignment:
                assignment = self._assignment
                batch.clear()
            for tp, rows in records.items():
                key = (tp.topic, tp.partition)
                expected = self.next_offsets.get(key)
                if expected is None:
                    continue  # not (or no longer) ours
                fresh = [r for r in rows if r.offset >= expected]
                if fresh:
                    self.next_offsets[key] = fresh[-1].offset + 1
                batch.extend(
                    InputMessage(tp.topic, tp.partition, r.offset, r.key, r.value) for r in fresh
                )
            if not batch:
                deadline = time.monotonic() + self._batch_seconds
        return batch

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        messages: list[InputMessage],
        decoding: Decoding,
        letters_sent: bool = False,
    ) -> None:
        # Dead letters are published before the store takes their offsets in: a crash
        # in between redelivers them (at-least-once on the dead-letter topic; readers
        # dedupe on source.topic/partition/offset), but never loses one.
        if not letters_sent:
            await _retrying(lambda: self._publish_dead_letters(producer, decoding[1]))
        await _retrying(lambda: self._take_in(producer, messages, decoding))
        await self._commit_offsets(consumer, messages)

    async def _commit_offsets(
        self, consumer: AIOKafkaConsumer, messages: list[InputMessage]
    ) -> None:
        # For lag tools only: the store's positions are what a restart resumes from.
        last: dict[tuple[str, int], int] = {}
        for m in messages:  # in offset order within each partition
            last[m.topic, m.partition] = m.offset
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset + 1, "")
            for (topic, partition), offset in last.items()
        }
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("Kafka offset commit failed (the store has them): %s", exc)

    async def _take_in(
        self, producer: AIOKafkaProducer, messages: list[InputMessage], decoding: Decoding
    ) -> None:
        """Commits the messages; a failure not of the store's making is narrowed down by
        halving until the one message that causes it is dead-lettered with the reason."""
        decoded, dead = decoding
        try:
            report = await asyncio.to_thread(self._service.commit, decoded, dead)
        except OUTAGES:
            raise
        except Exception as exc:
            if len(messages) == 1:
                log.exception("message %s failed; dead-lettering it", messages[0][:3])
                letter = DeadLetter(messages[0], f"processing failed: {type(exc).__name__}: {exc}")
                await self._publish_dead_letters(producer, [letter])
                report = await asyncio.to_thread(self._service.commit, [], [letter])
            else:
                middle = len(messages) // 2
                for half in (messages[:middle], messages[middle:]):
                    await self._take_in(producer, half, _within(decoding, half))
                return
        self._count(report)

    def _count(self, report: BatchReport) -> None:
        for outcome, n in report.outcomes.items():
            self.totals[outcome.value] = self.totals.get(outcome.value, 0) + n

    async def _publish_dead_letters(
        self, producer: AIOKafkaProducer, dead: list[DeadLetter]
    ) -> None:
        if not dead:
            return
        futures = [
            await producer.send(
                self._dead_letter_topic,
                value=letter.message.value,
                key=letter.message.key,
                headers=letter.headers(),
            )
            for letter in dead
        ]
        await asyncio.gather(*futures)


def _within(decoding: Decoding, messages: list[InputMessage]) -> Decoding:
    """The part of a batch's decoding that concerns these of its messages."""
    keys = {(m.topic, m.partition, m.offset) for m in messages}
    decoded, dead = decoding
    return (
        [d for d in decoded if d.message[:3] in keys],
        [d for d in dead if d.message[:3] in keys],
    )


async def _retrying(step: Callable[[], Awaitable[None]]) -> None:
    for attempt in itertools.count(1):
        try:
            await step()
            return
        except OUTAGES as exc:
            # Not the messages' fault: the same step is tried again, forever; the store's
            # positions make a half-done earlier attempt harmless.
            delay = min(30.0, 0.5 * 2**attempt)
            log.error("store or broker unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)


async def _start_with_retry(
    client: AIOKafkaConsumer | AIOKafkaProducer, attempts: int = 30
) -> None:
    # A fresh broker may not have a group coordinator for the first seconds (FACTS.md).
    for attempt in range(1, attempts + 1):
        try:
            await client.start()
            return
        except KafkaError as exc:
            if attempt == attempts:
                raise
            log.warning("Kafka not ready (%s); retrying", exc)
            await asyncio.sleep(1)
