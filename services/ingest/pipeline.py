"""The ingest write path: from batches of input messages to the store, in order, once.

One batch is written while the next one is decided, so that the worker's core decides
while PostgreSQL writes. `WritePath.take` runs these steps for every batch N+1 it is
given, and `flush` runs step 3 alone (at idle, before a rebalance is acted on, at stop):

1. **Decode** N+1. What cannot be understood becomes a dead letter; nothing stored is
   needed for that.
2. **Decide N+1 ahead**, on the cached members as batch N left them in memory, N's event
   ids counted as known. Nothing is stored yet.
3. **Settle N**: wait for its write (its dead letters published, then one store
   transaction with its positions, receipts and counts). Stored: count it, and hand its
   offsets to Kafka's committed offsets, for lag tools.
4. **N not stored**: the cache holds decisions the store refused, and N+1's rest on them.
   The cache is dropped, N+1's decisions with it, and N is taken on its own (step 6).
5. **Write N+1** in the background, if N is stored and nothing has put the cache in doubt
   since N+1's deciding began (a rebalance, a failed write: the cache's epoch moved).
   Otherwise N+1's decisions are dropped and it is taken on its own (step 6).
6. **On its own**: its dead letters published, then decided from the store and committed,
   waiting out outages with backoff. A failure that is a message's own is narrowed down
   by halving the batch until that one message is dead-lettered with the reason; the
   store's positions make a half committed before a retry harmless. An operator's error
   (a missing privilege) stops the worker with one line.

A batch is never written before the one before it is stored, and never on decisions
that a refused write left behind: batches reach the store in the order they were read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services import telemetry
from services.faults import Fault, backoff, fault_of, operator_error
from services.ingest.messages import DeadLetter, Decoded, InputMessage
from services.ingest.service import BatchReport, IngestService, Prepared

log = logging.getLogger(__name__)

Decoding = tuple[list[Decoded], list[DeadLetter]]
PublishDeadLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]
OnStored = Callable[[Sequence[InputMessage]], None]


@dataclass
class Writing:
    """Batch N: decided ahead, and the task writing it (None once done: not stored)."""

    messages: list[InputMessage]
    decoding: Decoding
    prepared: Prepared
    task: asyncio.Task[BatchReport | None] | None = None
    letters_sent: bool = False


class Stopped(Exception):
    """The worker was asked to stop while a batch waited out an outage: the batch is not
    stored, and is read again after a restart."""


class WritePath:
    def __init__(
        self,
        service: IngestService,
        publish: PublishDeadLetters,
        on_stored: OnStored,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._service = service
        self._publish = publish
        self._on_stored = on_stored
        self._stopping = stopping or asyncio.Event()
        self._writing: Writing | None = None
        # outcome -> messages, since start: what this worker took in
        self.totals: dict[str, int] = {}

    @property
    def in_flight(self) -> bool:
        return self._writing is not None

    async def take(self, messages: list[InputMessage]) -> None:
        """Steps 1-6 for the next batch; an empty one only settles the batch in flight."""
        decoding = self._service.decode(messages)  # 1
        if messages:
            telemetry.INGEST_BATCH.observe(len(messages))
        prepared = await self._decide_ahead(decoding) if messages else None  # 2
        stored = await self._settle()  # 3, 4
        if not messages:
            return
        members = self._service.members
        if prepared is not None and (not stored or prepared.epoch != members.epoch):
            members.invalidate()  # its decisions are in the cached members: they go too
            prepared = None
        if prepared is not None:  # 5
            batch = Writing(messages, decoding, prepared)
            batch.task = asyncio.create_task(self._write(batch))
            self._writing = batch
        else:
            await self._take_alone(messages, decoding)  # 6

    async def flush(self) -> None:
        """Step 3 alone: when it returns, no batch taken is left unstored."""
        await self._settle()

    def cancel(self) -> None:
        """At a stop that cannot wait: the batch in flight is read again after a restart."""
        if self._writing is not None and self._writing.task is not None:
            self._writing.task.cancel()
        self._writing = None

    async def _decide_ahead(self, decoding: Decoding) -> Prepared | None:
        in_flight = self._writing.prepared.event_ids if self._writing is not None else set()
        try:
            return await asyncio.to_thread(self._service.prepare, *decoding, in_flight)
        except Exception as exc:
            # An outage, or a message that breaks deciding: step 6 retries or finds it.
            log.warning("deciding a batch ahead failed (%s); taking it on its own", _say(exc))
            return None

    async def _write(self, batch: Writing) -> BatchReport | None:
        """Step 5's background task: dead letters, then the store; None if either failed."""
        try:
            await self._publish_counted(batch.decoding[1])
            batch.letters_sent = True
            with telemetry.INGEST_WRITE.time():
                return await asyncio.to_thread(self._service.write, batch.prepared)
        except Exception as exc:
            self._service.members.invalidate()
            log.warning("writing a batch failed (%s); taking it again on its own", _say(exc))
            return None

    async def _settle(self) -> bool:
        """Steps 3 and 4; True when the batch in flight (if any) was stored as decided."""
        writing, self._writing = self._writing, None
        if writing is None or writing.task is None:
            return True
        report = await writing.task
        if report is not None:
            self._count(report)
            self._on_stored(writing.messages)
            return True
        # Whatever was decided on top of the refused batch is in the cache too.
        self._service.members.invalidate()
        await self._take_alone(writing.messages, writing.decoding, writing.letters_sent)
        return False

    async def _take_alone(
        self, messages: list[InputMessage], decoding: Decoding, letters_sent: bool = False
    ) -> None:
        """Step 6. Dead letters are published before the store takes their offsets in: a
        crash in between publishes one again (readers dedupe on its source.* headers),
        but none is ever lost."""
        if not letters_sent:
            await self._until_done(
                lambda: self._publish_counted(decoding[1]), "publishing dead letters"
            )
        await self._until_done(lambda: self._narrow(messages, decoding), "storing a batch")
        self._on_stored(messages)

    async def _until_done(self, step: Callable[[], Awaitable[None]], doing: str) -> None:
        attempt = 0
        while True:
            try:
                await step()
                return
            except Exception as exc:
                fault = fault_of(exc)
                if fault is Fault.OPERATOR:
                    raise operator_error(exc, doing) from exc
                if fault is Fault.MESSAGE:
                    raise  # not a message's: _narrow deals with those; this is a bug
                attempt += 1
                telemetry.OUTAGE_RETRIES.labels("worker", doing).inc()
                delay = backoff(attempt)
                log.error(
                    "%s: store or broker unavailable (%s); retrying in %.1fs",
                    doing,
                    _say(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _narrow(self, messages: list[InputMessage], decoding: Decoding) -> None:
        """Commits the messages; a failure that is a message's own is narrowed down by
        halving until the one message that causes it is dead-lettered with the reason."""
        decoded, dead = decoding
        try:
            with telemetry.INGEST_WRITE.time():
                report = await asyncio.to_thread(self._service.commit, decoded, dead)
        except Exception as exc:
            if fault_of(exc) is not Fault.MESSAGE:
                raise
            if len(messages) == 1:
                log.exception("message %s failed; dead-lettering it", messages[0][:3])
                letter = DeadLetter(messages[0], f"processing failed: {_say(exc)}")
                await self._publish_counted([letter])
                report = await asyncio.to_thread(self._service.commit, [], [letter])
            else:
                middle = len(messages) // 2
                for half in (messages[:middle], messages[middle:]):
                    await self._narrow(half, _within(decoding, half))
                return
        self._count(report)

    def _count(self, report: BatchReport) -> None:
        for outcome, n in report.outcomes.items():
            self.totals[outcome.value] = self.totals.get(outcome.value, 0) + n
        for (topic, counted), n in report.by_topic.items():
            telemetry.INGEST_MESSAGES.labels(topic, counted).inc(n)

    async def _publish_counted(self, letters: Sequence[DeadLetter]) -> None:
        await self._publish(letters)
        for letter in letters:
            telemetry.DEAD_LETTERS.labels(letter.message.topic).inc()


def _within(decoding: Decoding, messages: list[InputMessage]) -> Decoding:
    """The part of a batch's decoding that concerns these of its messages."""
    keys = {(m.topic, m.partition, m.offset) for m in messages}
    decoded, dead = decoding
    return (
        [d for d in decoded if d.message[:3] in keys],
        [d for d in dead if d.message[:3] in keys],
    )


def _say(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
