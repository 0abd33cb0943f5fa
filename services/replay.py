"""Ops' rebuilds (README, "Command line"): read models, a store from the changelog, a store
from the input topics under the current program, each with progress on stderr."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from eventsourcing.persistence import StoredEvent
from tqdm import tqdm

from services import member_events
from services.bootstrap import Context, build
from services.config import KafkaSecurity
from services.digest import members
from services.errors import OperatorError
from services.ingest.messages import InputMessage
from services.kafka_clients import client_options, start
from services.relay import RELAY_TRACKING_NAME
from services.status import end_offsets
from services.store.checkpoint import Checkpoint, MessageOutcome, Receipt
from services.store.urls import mask_url

REJECTIONS = frozenset(
    {
        "PurchaseRejected",
        "RefundRejected",
        "ReferralRejected",
        "RedemptionDeclined",
        "EnrolmentRejected",
    }
)


class Progress:
    """A long job's progress (events done of a total, rate, time left): a tqdm bar on a
    terminal; elsewhere (a log file, a pipe, a Kubernetes Job's log) a line every
    LINE_EVERY seconds and one when it ends, since a redrawn bar would fill a log."""

    LINE_EVERY = 10.0

    def __init__(self, label: str, out: TextIO = sys.stderr, unit: str = "events") -> None:
        self._label = label
        self._out = out
        self._unit = unit
        self._started = time.monotonic()
        self._bar = tqdm(
            desc=label,
            unit=f" {unit}",
            unit_scale=True,
            file=out,
            disable=not out.isatty(),
            mininterval=0.25,
            dynamic_ncols=True,
        )
        self.done = 0
        self._line_at = self._started

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        now = time.monotonic()
        if self._bar.disable and now - self._line_at >= self.LINE_EVERY:
            self._line_at = now
            left = (total - done) / self.rate if self.rate > 0 and total >= done else None
            eta = f", about {left:,.0f} s left" if left is not None else ""
            share = f" ({100 * done / total:.1f}%)" if total else ""
            self._out.write(
                f"{self._label}: {done:,} of {total:,} {self._unit}{share}, "
                f"{self.rate:,.0f} {self._unit}/s{eta}\n"
            )
            self._out.flush()

    def close(self) -> None:
        self._bar.close()
        if self._bar.disable:
            self._out.write(
                f"{self._label}: {self.done:,} {self._unit}, {self.rate:,.0f} {self._unit}/s\n"
            )
            self._out.flush()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-6)


def replay_projections(context: Context, out: TextIO = sys.stderr) -> Progress:
    progress = Progress("replay projections", out)
    runner = context.projection_runner()
    runner.rebuild(progress)
    progress(context.ledger.last_position(), context.ledger.last_position())
    progress.close()
    return progress


def fresh_target(context: Context, url: str) -> Context:
    target = build(replace(context.settings, database_url=url))
    if target.ledger.last_position() != 0:
        raise OperatorError(
            f"--into {mask_url(url)} already holds events: rebuilds go into an empty store"
        )
    return target


async def _read(
    bootstrap: str,
    topics: tuple[str, ...],
    on_batch: Callable[[list[Any], int, int], None],
    security: KafkaSecurity | None = None,
) -> None:
    """Every record of the topics up to their current end offsets, in batches."""
    ends = {
        TopicPartition(t, p): end
        for (t, p), end in (await end_offsets(bootstrap, topics, security=security)).items()
    }
    total = sum(ends.values())
    live = [tp for tp, end in ends.items() if end > 0]
    if not live:
        on_batch([], 0, 0)
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options(security)
    )
    await start(consumer, security, bootstrap)
    try:
        consumer.assign(live)
        await consumer.seek_to_beginning(*live)
        done = 0
        while live:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            records = [r for tp, rows in batch.items() for r in rows if r.offset < ends[tp]]
            done += len(records)
            on_batch(records, done, total)
            live = [tp for tp in live if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()


def replay_stream(context: Context, into: str, out: TextIO = sys.stderr) -> Progress:
    """A fresh store at `into` from `loyalty.member-events` alone; the live one is untouched."""
    target = fresh_target(context, into)
    progress = Progress("replay stream", out)
    versions: dict[Any, int] = {}  # aggregate id -> last version stored: the relay may repeat one
    seen_inputs: set[str] = set()

    def store(records: list[Any], done: int, total: int) -> None:
        events: list[StoredEvent] = []
        checkpoint = Checkpoint()
        for record in records:
            message = member_events.decode(record.value)
            stored = message.stored
            if stored.originator_version <= versions.get(stored.originator_id, 0):
                continue
            versions[stored.originator_id] = stored.originator_version
            events.append(stored)
            event_id = _input_event_id(target, stored)
            if event_id is not None and event_id not in seen_inputs:
                seen_inputs.add(event_id)
                kind = stored.topic.rsplit(".", 1)[-1]
                outcome = MessageOutcome.REJECTED if kind in REJECTIONS else MessageOutcome.APPLIED
                checkpoint.receipts.append(
                    Receipt(event_id, record.topic, record.partition, record.offset, outcome)
                )
        target.ledger.insert_stored(events, checkpoint)
        progress(done, total)

    settings = context.settings
    asyncio.run(
        _read(
            settings.kafka_bootstrap,
            (settings.topics.member_events,),
            store,
            settings.kafka_security,
        )
    )
    # Everything the rebuilt store holds is on the changelog already: its relay starts
    # after it, instead of publishing the whole history a second time.
    rebuilt = target.ledger.last_position()
    if rebuilt:
        target.ledger.track(RELAY_TRACKING_NAME, rebuilt)
    progress.close()
    return progress


def _input_event_id(target: Context, stored: StoredEvent) -> str | None:
    # The receipts let workers pointed at the rebuilt store recognise inputs as duplicates.
    event_id = getattr(target.ledger.domain_event(stored), "event_id", None)
    return str(event_id) if event_id is not None else None


@dataclass
class Difference:
    member_id: str
    live: tuple[int, str, int] | None  # balance, tier, lifetime points
    reprocessed: tuple[int, str, int] | None
    # Campaigns that rewarded the member more often reprocessed than live: what a
    # campaign would have changed.
    campaigns: list[str] = field(default_factory=list)

    @property
    def points_delta(self) -> int:
        return (self.reprocessed[0] if self.reprocessed else 0) - (self.live[0] if self.live else 0)


@dataclass
class ReprocessReport:
    messages: int = 0
    differences: list[Difference] = field(default_factory=list)
    # campaign id -> (members it rewarded, events it rewarded) in the reprocessed store
    campaigns: dict[str, tuple[int, int]] = field(default_factory=dict)


def reprocess(context: Context, into: str, out: TextIO = sys.stderr) -> ReprocessReport:
    """Re-applies the input topics from their earliest offsets under the current program
    into a fresh store, then compares every member with the live store."""
    target = fresh_target(context, into)
    service = target.ingest_service()
    progress = Progress("reprocess", out, unit="messages")
    report = ReprocessReport()

    def apply(records: list[Any], done: int, total: int) -> None:
        messages = [
            InputMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for r in records
        ]
        service.commit(*service.decode(messages))
        report.messages = done
        progress(done, total)

    settings = context.settings
    asyncio.run(
        _read(settings.kafka_bootstrap, settings.topics.inputs, apply, settings.kafka_security)
    )
    progress.close()
    live, live_uses = _ledgers(context)
    reprocessed, uses = _ledgers(target)
    for member_id in sorted(live.keys() | reprocessed.keys()):
        before, after = live.get(member_id), reprocessed.get(member_id)
        if before != after:
            was, now = live_uses.get(member_id, {}), uses.get(member_id, {})
            changed = sorted(c for c, n in now.items() if n > was.get(c, 0))
            report.differences.append(Difference(member_id, before, after, changed))
    for member_uses in uses.values():
        for campaign_id, n in member_uses.items():
            reached, events = report.campaigns.get(campaign_id, (0, 0))
            report.campaigns[campaign_id] = (reached + 1, events + n)
    return report


def _ledgers(
    context: Context,
) -> tuple[dict[str, tuple[int, str, int]], dict[str, dict[str, int]]]:
    """Each member's (balance, tier, lifetime points), and the events each campaign
    rewarded of it."""
    program = context.program
    ledgers, uses = {}, {}
    for m in members(context.ledger):
        ledgers[m.member_id] = (m.balance, m.tier_name(program), m.lifetime_points)
        uses[m.member_id] = dict(m.campaign_uses)
    return ledgers, uses
