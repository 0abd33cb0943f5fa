"""The Kafka side of ingestion: batches in, dead letters out, offsets sought from the store.

faust's per-message stream machinery tops out near 6,000 messages/s on these machines,
so the hot path reads with aiokafka's `getmany` and hands whole batches to the write
path (pipeline.py); faust hosts this loop (see worker.py) for lifecycle and timers.

Where each partition resumes is the store's to say, not Kafka's: a partition assigned
to this worker is paused until its stored position is read (retrying while the store
is away: other partitions go on meanwhile), then sought to the next offset. Kafka's
committed offsets follow the store's, for lag tools only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from services import telemetry
from services.config import KafkaSecurity
from services.faults import Fault, backoff, fault_of, operator_error
from services.ingest.messages import DeadLetter, InputMessage
from services.ingest.pipeline import Stopped, WritePath
from services.ingest.service import NOTHING_STORED, IngestService
from services.kafka_clients import client_options, start
from services.named_tuples import maker
from services.store.checkpoint import Checkpoint, InputPosition
from services.store.ledger import Ledger
from services.topics import check_dead_letter_room

log = logging.getLogger(__name__)
_message = maker(InputMessage)

# A worker that dies (SIGKILL, a lost host) keeps its partitions until its session times
# out: 6 s is the broker's smallest allowed, so a restarted or surviving worker takes
# over within seconds. Heartbeats are sent from the event loop, which commits never block.
SESSION_TIMEOUT_S = 6.0
HEARTBEAT_S = 2.0
# Dead letters are as large as the messages they carry plus headers: the producer must
# not refuse what the dead-letter topic accepts (the broker enforces the topic's limit).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


class SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """The store, not Kafka's committed offset, says where each partition resumes."""

    def __init__(self, loop: IngestLoop, consumer: AIOKafkaConsumer) -> None:
        self._loop = loop
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._loop.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Nothing is read from them until the store has said where they resume: the
        # store may be away right now, and a rebalance must not wait for it.
        if assigned:
            self._consumer.pause(*assigned)
        self._loop.assigned(assigned)


class LagOffsets:
    """Kafka's committed offsets for group `loyalty-ledger`, following the store's, so that
    lag tools show progress (docs/RULES.md, section 2: within seconds, also when the stream goes
    quiet). Commits that fail are tried again at the next turn of the loop."""

    def __init__(self) -> None:
        self._due: dict[TopicPartition, int] = {}  # partition -> next offset to read
        self._warned = 0.0

    def stored(self, messages: Sequence[InputMessage]) -> None:
        # The batch's last offset per partition first: a TopicPartition a message cost
        # ~1% of the worker's time (issue 19).
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic, m.partition)
            if m.offset > last.get(key, -1):
                last[key] = m.offset
        for (topic, partition), offset in last.items():
            tp = TopicPartition(topic, partition)
            if offset + 1 > self._due.get(tp, -1):
                self._due[tp] = offset + 1

    def resumes_at(self, tp: TopicPartition, offset: int) -> None:
        self._due[tp] = max(offset, self._due.get(tp, -1))

    def forget(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            self._due.pop(tp, None)

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        owned = consumer.assignment()
        due = {tp: OffsetAndMetadata(o, "") for tp, o in self._due.items() if tp in owned}
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:
            if time.monotonic() - self._warned > 30:
                self._warned = time.monotonic()
                log.warning("Kafka offset commit failed (the store has them): %s", exc)
            return
        for tp, committed in due.items():
            if self._due.get(tp) == committed.offset:
                del self._due[tp]


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
        security: KafkaSecurity | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._group = group
        self._topics = tuple(topics)
        self._dead_letter_topic = dead_letter_topic
        self.ledger = ledger
        self._service = service
        self._batch_max = batch_max
        self._batch_seconds = batch_seconds
        self._offsets = LagOffsets()
        self._path: WritePath | None = None
        # (topic, partition) -> next offset to hand to the write path
        self.next_offsets: dict[tuple[str, int], int] = {}
        # (topic, partition) -> its incarnation (checkpoint.InputPosition)
        self._incarnations: dict[tuple[str, int], int] = {}
        # Assigned, paused until the store says where they resume.
        self._unresolved: set[TopicPartition] = set()
        self._resolve_attempts = 0
        self._resolve_after = 0.0
        # Bumped on every rebalance: a batch begun under an older assignment is dropped
        # (nothing of it is stored yet) and read again from the sought positions.
        self._assignment = 0
        self._lag_reported = 0.0

    @property
    def totals(self) -> dict[str, int]:
        return self._path.totals if self._path is not None else {}

    def revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if not revoked:
            return
        self._changed()
        for tp in revoked:
            self.next_offsets.pop((tp.topic, tp.partition), None)
            self._unresolved.discard(tp)
            with contextlib.suppress(KeyError):
                telemetry.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self._offsets.forget(revoked)

    def assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._changed()
        self._unresolved.update(assigned)
        self._resolve_after = 0.0
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def _changed(self) -> None:
        self._assignment += 1
        # Another worker may write members of our old partitions next; the cache is
        # dropped by the deciding thread itself, before its next batch.
        self._service.members.invalidate()

    async def run(self, stopping: asyncio.Event) -> None:
        await check_dead_letter_room(
            self._bootstrap, self._topics, self._dead_letter_topic, security=self._security
        )
        options = client_options(self._security)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            # Never jump silently: a position outside the log is resolved against the
            # store (retention, a re-created topic) in `_resolve`.
            auto_offset_reset="none",
            isolation_level="read_committed",
            max_poll_records=self._batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            heartbeat_interval_ms=int(HEARTBEAT_S * 1000),
            **options,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=MAX_REQUEST_BYTES,
            **options,
        )
        consumer.subscribe(
            topics=list(self._topics), listener=SeekToStoredPositions(self, consumer)
        )
        await _start_with_retry(consumer, self._security, self._bootstrap)
        await _start_with_retry(producer, self._security, self._bootstrap)
        path = self._path = WritePath(
            self._service,
            lambda letters: self._publish(producer, letters),
            self._offsets.stored,
            stopping,
        )
        try:
            while not stopping.is_set():
                if self._unresolved and time.monotonic() >= self._resolve_after:
                    await path.flush()
                    await self._resolve(consumer)
                await path.take(await self._next_batch(consumer, stopping))
                await self._offsets.commit(consumer)
                self._report_lag(consumer)
            await path.flush()
            await self._offsets.commit(consumer)
        except Stopped as exc:
            log.warning("stopped while %s waited out an outage; it is read again at restart", exc)
        finally:
            path.cancel()
            await consumer.stop()
            await producer.stop()

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        # highwater() is what the last fetch said, so this costs no round trip; once a
        # second is plenty for a scrape interval of seconds.
        now = time.monotonic()
        if now - self._lag_reported < 1.0:
            return
        self._lag_reported = now
        for (topic, partition), next_offset in self.next_offsets.items():
            end = consumer.highwater(TopicPartition(topic, partition))
            if end is not None:
                telemetry.CONSUMER_LAG.labels(topic, str(partition)).set(max(end - next_offset, 0))

    async def _resolve(self, consumer: AIOKafkaConsumer) -> None:
        """Seeks every assigned partition still paused to where the store says it resumes.

        Called with no batch in flight, so the store's positions are final. A position
        the log no longer holds is resolved here too: offsets retention deleted before
        they were read are counted as skipped; a partition whose log ends below the
        store's position has started over (its topic was re-created) and is read anew
        from its first offset, as its next incarnation."""
        pending = sorted(self._unresolved)
        try:
            stored = await asyncio.to_thread(self._stored_positions, pending)
            begins = await consumer.beginning_offsets(pending)
            ends = await consumer.end_offsets(pending)
            starts = await asyncio.to_thread(self._starts, stored, begins, ends)
        except Exception as exc:
            if fault_of(exc) is Fault.OPERATOR:
                raise operator_error(exc, "reading where the assigned partitions resume") from exc
            self._resolve_attempts += 1
            telemetry.OUTAGE_RETRIES.labels("worker", "resume positions").inc()
            delay = backoff(self._resolve_attempts)
            self._resolve_after = time.monotonic() + delay
            log.error(
                "cannot read where %d assigned partitions resume (%s); retrying in %.1fs",
                len(pending),
                exc,
                delay,
            )
            return
        self._resolve_attempts = 0
        for tp in pending:
            if tp not in self._unresolved:
                continue  # revoked meanwhile
            incarnation, start = starts[tp]
            key = (tp.topic, tp.partition)
            self.next_offsets[key] = start
            self._incarnations[key] = incarnation
            consumer.seek(tp, start)
            self._offsets.resumes_at(tp, start)
            self._unresolved.discard(tp)
            consumer.resume(tp)

    def _stored_positions(
        self, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, InputPosition]:
        stored = self.ledger.input_positions((tp.topic, tp.partition) for tp in tps)
        return {tp: stored.get((tp.topic, tp.partition), NOTHING_STORED) for tp in tps}

    def _starts(
        self,
        stored: dict[TopicPartition, InputPosition],
        begins: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> dict[TopicPartition, tuple[int, int]]:
        """(incarnation, offset) each partition resumes at; skipped offsets are stored."""
        starts = {}
        for tp, position in stored.items():
            incarnation, start = position.incarnation, position.offset + 1
            begin, end = begins[tp], ends[tp]
            if start > end:
                log.error(
                    "%s-%d ends at offset %d, below the store's position %d: it has started "
                    "over (its topic was deleted and created again); reading it anew from its "
                    "first offset, as incarnation %d",
                    tp.topic,
                    tp.partition,
                    end,
                    position.offset,
                    incarnation + 1,
                )
                incarnation, start = incarnation + 1, 0
            if start < begin:
                log.warning(
                    "%s-%d: offsets %d to %d were deleted (retention) before they were read; "
                    "counted as skipped",
                    tp.topic,
                    tp.partition,
                    start,
                    begin - 1,
                )
                checkpoint = Checkpoint()
                checkpoint.skip(tp.topic, tp.partition, incarnation, start, begin)
                self.ledger.put([], checkpoint)
                start = begin
            starts[tp] = (incarnation, start)
        return starts

    async def _next_batch(
        self, consumer: AIOKafkaConsumer, stopping: asyncio.Event
    ) -> list[InputMessage]:
        """Up to `batch_max` messages, or what came within `batch_seconds`: possibly none,
        so that an idle loop still settles the batch in flight and commits offsets."""
        batch: list[InputMessage] = []
        deadline = time.monotonic() + self._batch_seconds
        assignment = self._assignment
        while len(batch) < self._batch_max and not stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            try:
                records = await consumer.getmany(
                    timeout_ms=left_ms, max_records=self._batch_max - len(batch)
                )
            except OffsetOutOfRangeError as exc:
                self._out_of_range(consumer, exc)
                continue
            except NoOffsetForPartitionError:
                continue  # assigned, not yet sought: `_resolve` will
            if assignment != self._assignment:
                assignment = self._assignment
                batch.clear()
            for tp, rows in records.items():
                key = (tp.topic, tp.partition)
                expected = self.next_offsets.get(key)
                if expected is None:
                    continue  # not (or no longer) ours, or not yet sought
                fresh = [r for r in rows if r.offset >= expected]
                if fresh:
                    self.next_offsets[key] = fresh[-1].offset + 1
                incarnation = self._incarnations.get(key, 0)
                topic, partition = tp.topic, tp.partition
                batch.extend(
                    _message((topic, partition, r.offset, r.key, r.value, r.timestamp, incarnation))
                    for r in fresh
                )
        return batch

    def _out_of_range(self, consumer: AIOKafkaConsumer, exc: OffsetOutOfRangeError) -> None:
        positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        for tp, offset in positions.items():
            log.warning("%s: offset %s is no longer in the log; resolving it", tp, offset)
            self.next_offsets.pop((tp.topic, tp.partition), None)
            consumer.pause(tp)
            self._unresolved.add(tp)

    async def _publish(self, producer: AIOKafkaProducer, dead: Sequence[DeadLetter]) -> None:
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


async def _start_with_retry(
    client: AIOKafkaConsumer | AIOKafkaProducer,
    security: KafkaSecurity | None,
    bootstrap: str,
    attempts: int = 30,
) -> None:
    # A fresh broker may not have a group coordinator for the first seconds.
    for attempt in range(1, attempts + 1):
        try:
            await start(client, security, bootstrap)
            return
        except KafkaError as exc:
            if fault_of(exc) is Fault.OPERATOR:
                raise operator_error(exc, f"connecting to Kafka at {client}") from exc
            if attempt == attempts:
                raise
            log.warning("Kafka not ready (%s); retrying", exc)
            await asyncio.sleep(1)
