"""The ingest application service: a batch of input messages in, one store commit out.

Messages are decoded first (dead letters do not depend on the store), then decided
against member aggregates kept in memory between batches, then committed together
with the batch's input positions, receipts and counts. A conflicting commit (another
writer touched one of our members, or another worker took our partition) evicts what
the batch touched and decides again from the store.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from operator import attrgetter, le
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

from services.commands import Purchase, Referral
from services.domain import member_snapshot
from services.domain.member import Member
from services.domain.member_snapshot import SNAPSHOT_EVERY
from services.faults import Contention
from services.ingest.messages import DeadLetter, Decoded, InputMessage
from services.inputs import REGISTRY, Registry
from services.named_tuples import maker
from services.program import Program
from services.store.checkpoint import Checkpoint, InputPosition, MessageOutcome, Receipt
from services.store.ledger import Ledger
from services.store.recorders import SnapshotRow
from services.store.transcoder import StoredRow
from services.validation import Decoder, InvalidEvent

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
NOTHING_STORED = InputPosition(0, -1)


class Snapshots:
    """Snapshots taken as a batch is decided: whenever a member's version crosses a
    multiple of SNAPSHOT_EVERY, its state at that very version, so that no fold from a
    snapshot is ever longer than that, however many events a batch brings a member."""

    def __init__(self) -> None:
        self._marks: dict[str, int] = {}  # member id -> version // SNAPSHOT_EVERY, last seen
        self.rows: list[SnapshotRow] = []

    def touched(self, member: Member) -> None:
        self._marks.setdefault(member.member_id, member.version // SNAPSHOT_EVERY)

    def decided(self, member: Member) -> None:
        mark = member.version // SNAPSHOT_EVERY
        if mark > self._marks[member.member_id]:
            self._marks[member.member_id] = mark
            assert member.latest_at is not None  # a member past a snapshot mark has events
            self.rows.append(
                (
                    member.id,
                    member.version,
                    member_snapshot.instant_text(member.latest_at),
                    member_snapshot.encode(member),
                )
            )


class StoreContention(Contention):
    """A batch or a sweep still conflicted after MAX_ATTEMPTS decisions."""


@dataclass
class BatchReport:
    outcomes: dict[MessageOutcome, int] = field(default_factory=dict)
    skipped: int = 0  # messages already taken in by the store (a redelivery after a crash)
    by_topic: dict[tuple[str, str], int] = field(default_factory=dict)  # (topic, outcome) -> n


@dataclass
class Prepared:
    """A batch decided on the cached members, its events mapped to the store's rows,
    nothing stored yet."""

    rows: list[StoredRow]
    checkpoint: Checkpoint
    touched: list[str]  # member ids
    skipped: int
    epoch: int  # the member cache's when the decisions began
    # Taken when decided (the cached members move on with the next batch), written once
    # the batch is stored: a snapshot of a version the store refused would be a lie.
    snapshots: list[SnapshotRow] = field(default_factory=list)

    @property
    def event_ids(self) -> set[str]:
        return {receipt.event_id for receipt in self.checkpoint.receipts}

    def report(self) -> BatchReport:
        return report_of(self.checkpoint, self.skipped)


def report_of(checkpoint: Checkpoint, skipped: int = 0) -> BatchReport:
    report = BatchReport(skipped=skipped, by_topic=dict(checkpoint.counts))
    for (_, outcome), n in checkpoint.counts.items():
        key = MessageOutcome(outcome)
        report.outcomes[key] = report.outcomes.get(key, 0) + n
    return report


def interleave(decoded: Sequence[Decoded]) -> list[Decoded]:
    """Merges the batch's partitions by occurred_at, keeping each partition's own order.

    A member's events arrive on up to four topics; applying whatever partition was
    fetched first would, say, decline a redemption whose purchase sits in the same
    batch on another topic. Within a partition, arrival order is kept (docs/RULES.md, section 7).
    """
    partitions: dict[tuple[str, int], list[Decoded]] = {}
    for item in decoded:
        partitions.setdefault((item.message.topic, item.message.partition), []).append(item)
    if len(partitions) < 2:
        return list(decoded)
    runs = list(partitions.values())
    if all(_in_time_order(run) for run in runs):
        # What the merge makes of runs already in time order, ties to the earlier run,
        # by a stable sort in C: a third of the merge's Python generator (issue 19).
        return sorted((item for run in runs for item in run), key=_occurred_at)
    return list(heapq.merge(*runs, key=_occurred_at))


_occurred_at = attrgetter("command.at")
_decoded = maker(Decoded)
_receipt = maker(Receipt)
_event_id_of = attrgetter("command.event_id")
_partition_of = attrgetter("topic", "partition")
_member_id_of = attrgetter("command.member_id")


Item = TypeVar("Item", Decoded, DeadLetter)


def _fresh(items: Sequence[Item], positions: dict[tuple[str, int], InputPosition]) -> list[Item]:
    """The items whose message is not held by its partition's stored position: what
    `InputPosition.holds` says, as the tuple comparison it is, inline rather than a call
    a message."""
    return [
        item
        for item in items
        if (item.message.incarnation, item.message.offset)
        > positions.get(item.message[:2], NOTHING_STORED)
    ]


def _in_time_order(run: list[Decoded]) -> bool:
    times = [item.command.at for item in run]
    return all(map(le, times, islice(times, 1, None)))


def _checkpoint(
    messages: Iterable[InputMessage],
    receipts: list[Receipt],
    duplicates: Sequence[InputMessage],
    dead: Sequence[DeadLetter],
) -> Checkpoint:
    """A decided batch's checkpoint: each message counted once under its outcome (the
    receipts', the duplicates' and the dead letters'), and each partition's position the
    last offset of `messages` (the decoded ones). A duplicate has no receipt: its first
    copy's stands."""
    checkpoint = Checkpoint(receipts=receipts)
    positions = checkpoint.positions
    counts = checkpoint.counts
    for m in messages:
        key = (m.topic, m.partition, m.incarnation)
        if m.offset > positions.get(key, -1):
            positions[key] = m.offset
    by_outcome = Counter((r.topic, r.outcome) for r in receipts)
    for (topic, outcome), n in by_outcome.items():
        counts[(topic, outcome.value)] += n
    for m in duplicates:
        checkpoint.account(m.topic, m.partition, m.offset, MessageOutcome.DUPLICATE, m.incarnation)
    for letter in dead:
        m = letter.message
        checkpoint.account(
            m.topic, m.partition, m.offset, MessageOutcome.DEAD_LETTERED, m.incarnation
        )
    return checkpoint


class MemberCache:
    """Aggregates kept between batches; a miss loads from the store."""

    def __init__(self, ledger: Ledger, maxsize: int = 200_000) -> None:
        self._ledger = ledger
        self._maxsize = maxsize
        self._members: OrderedDict[str, Member] = OrderedDict()
        self._invalid = False
        # Bumped whenever the cached members stop being trusted: a batch decided ahead
        # while it moved is decided again instead of written.
        self.epoch = 0

    def get(self, member_id: str) -> Member:
        member = self._members.get(member_id)
        if member is None:
            member = self._ledger.member(member_id) or Member.register(member_id)
            self._members[member_id] = member
            if len(self._members) > self._maxsize:
                self._members.popitem(last=False)
        else:
            self._members.move_to_end(member_id)
        return member

    def cached(self, member_id: str) -> Member | None:
        """The member if cached, without loading it or marking it used."""
        return self._members.get(member_id)

    def prefetch(self, member_ids: Iterable[str]) -> None:
        """Loads every member not yet cached in one query: a batch's misses, at once."""
        # Not set.difference: given an OrderedDict, it walks all of it.
        missing = {m for m in member_ids if m not in self._members}
        if not missing:
            return
        loaded = self._ledger.members(missing)
        for member_id in missing:
            self._members[member_id] = loaded.get(member_id) or Member.register(member_id)
        while len(self._members) > self._maxsize:
            self._members.popitem(last=False)

    def invalidate(self) -> None:
        """Drops every member at the next `drop_if_invalid`: safe from another thread."""
        self._invalid = True
        self.epoch += 1

    def drop_if_invalid(self) -> None:
        if self._invalid:
            self._invalid = False
            self._members.clear()

    def evict(self, member_ids: Iterable[str]) -> None:
        for member_id in member_ids:
            self._members.pop(member_id, None)


class IngestService:
    def __init__(
        self, ledger: Ledger, program: Program, decoder: Decoder, registry: Registry = REGISTRY
    ) -> None:
        self._ledger = ledger
        self._program = program
        self._decoder = decoder
        self._handlers = registry.check().handlers()
        self.members = MemberCache(ledger)

    def decode(self, messages: Sequence[InputMessage]) -> tuple[list[Decoded], list[DeadLetter]]:
        decoded: list[Decoded] = []
        dead: list[DeadLetter] = []
        for message in messages:
            try:
                decoded.append(_decoded((message, self._decoder.decode(message))))
            except InvalidEvent as exc:
                dead.append(DeadLetter(message, str(exc)))
            except Exception as exc:  # a decoder bug must not stop the worker: say what broke
                log.exception("decoding %s failed", message[:3])
                dead.append(DeadLetter(message, f"not understood: {type(exc).__name__}: {exc}"))
        return decoded, dead

    def commit(self, decoded: Sequence[Decoded], dead: Sequence[DeadLetter]) -> BatchReport:
        """Decides and commits; call only once the dead letters are safely published."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            prepared = self.prepare(decoded, dead)
            try:
                self._ledger.put_rows(prepared.rows, prepared.checkpoint)
                self._save_snapshots(prepared.snapshots)
            except IntegrityError as exc:
                self.members.evict(prepared.touched)
                log.warning("commit conflict (attempt %d): %s; deciding again", attempt, exc)
                continue
            except BaseException:
                # Decisions that were not stored must never be built on.
                self.members.evict(prepared.touched)
                raise
            return prepared.report()
        raise StoreContention(f"batch still conflicts after {MAX_ATTEMPTS} attempts")

    def prepare(
        self,
        decoded: Sequence[Decoded],
        dead: Sequence[DeadLetter],
        in_flight: Collection[str] = frozenset(),
    ) -> Prepared:
        """Decides a batch on the cached members without storing it. `in_flight`: the
        event ids of a batch prepared before this one and not yet stored (its members'
        states in the cache already include it), which count as known."""
        epoch = self.members.epoch
        self.members.drop_if_invalid()
        fresh_decoded, fresh_dead, skipped = self._not_yet_stored(decoded, dead)
        touched: dict[str, Member] = {}
        snapshots = Snapshots()
        rows: list[StoredRow] = []
        try:
            checkpoint = self._decide(
                fresh_decoded, fresh_dead, touched, snapshots, rows, in_flight
            )
        except BaseException:
            self.members.evict(touched)
            raise
        return Prepared(rows, checkpoint, list(touched), skipped, epoch, snapshots.rows)

    def write(self, prepared: Prepared) -> BatchReport:
        """Stores a prepared batch. On failure the member cache is invalidated (not
        evicted: another thread may be deciding the next batch on it meanwhile)."""
        try:
            self._ledger.put_rows(prepared.rows, prepared.checkpoint)
        except BaseException:
            self.members.invalidate()
            raise
        self._save_snapshots(prepared.snapshots)
        return prepared.report()

    def _save_snapshots(self, rows: list[SnapshotRow]) -> None:
        try:
            self._ledger.save_snapshots(rows)
        except Exception as exc:  # a cache: the events are stored, the next one will do
            log.warning("snapshots not saved (%s: %s)", type(exc).__name__, exc)

    def _not_yet_stored(
        self, decoded: Sequence[Decoded], dead: Sequence[DeadLetter]
    ) -> tuple[list[Decoded], list[DeadLetter], int]:
        # A message at or below the stored position was taken in by an earlier commit
        # (ours before a crash, or another worker's before a rebalance): never again.
        messages = [d.message for d in decoded] + [d.message for d in dead]
        positions = self._ledger.input_positions(set(map(_partition_of, messages)))
        fresh_decoded = _fresh(decoded, positions)
        fresh_dead = _fresh(dead, positions)
        skipped = len(decoded) + len(dead) - len(fresh_decoded) - len(fresh_dead)
        return fresh_decoded, fresh_dead, skipped

    def _decide(
        self,
        decoded: Sequence[Decoded],
        dead: Sequence[DeadLetter],
        touched: dict[str, Member],
        snapshots: Snapshots,
        rows: list[StoredRow],
        in_flight: Collection[str] = frozenset(),
    ) -> Checkpoint:
        """Decides each message on its member, appending to `rows` the events it made as
        soon as it is decided: mapped while they are still in the CPU's caches (the same
        mapping a batch later, in the writing thread, took half as long again: ~3 us an
        event against ~2), and in the order they were decided."""
        decoded = interleave(decoded)
        event_ids = set(map(_event_id_of, decoded))
        known = self._ledger.known_event_ids(event_ids) | event_ids.intersection(in_flight)
        self.members.prefetch(set(map(_member_id_of, decoded)))
        # A referee's first purchase credits its referrer too: the batch's referrers are
        # read in one query as well, not one each as their bonuses fall due (7% of the
        # CPU deciding the bench's stream, issue 19).
        self.members.prefetch(self._referrers(decoded))
        # The loop runs once a message: what it calls is bound once a batch (a tenth of
        # the deciding thread's time went to its bookkeeping, issue 19).
        program = self._program
        handlers = self._handlers
        decided = snapshots.decided
        add_rows = rows.extend
        to_rows = self._ledger.rows
        receipts: list[Receipt] = []
        add_receipt = receipts.append
        duplicates: list[InputMessage] = []
        applied, rejected = MessageOutcome.APPLIED, MessageOutcome.REJECTED
        for m, command in decoded:
            event_id = command.event_id
            if event_id in known:
                duplicates.append(m)
                continue
            known.add(event_id)
            member = self._member(command.member_id, touched, snapshots)
            decision = handlers[type(command)](member, program, command)
            decided(member)
            add_rows(to_rows(member.collect_events()))
            if decision.referrer_bonus is not None:
                bonus = decision.referrer_bonus
                referrer = self._member(bonus.referrer_id, touched, snapshots)
                referrer.earn_referrer_bonus(
                    program, event_id=bonus.event_id, referee_id=member.member_id, at=bonus.at
                )
                decided(referrer)
                add_rows(to_rows(referrer.collect_events()))
            outcome = rejected if decision.rejected else applied
            add_receipt(_receipt((event_id, m.topic, m.partition, m.offset, outcome)))
        return _checkpoint((d.message for d in decoded), receipts, duplicates, dead)

    def _referrers(self, decoded: Sequence[Decoded]) -> set[str]:
        """The members the batch's purchases may owe a referrer bonus to: the referrers
        of its referrals, and of its purchasers' referrals not yet settled."""
        referrers: set[str] = set()
        for item in decoded:
            command = item.command
            if isinstance(command, Referral):
                referrers.add(command.referrer_id)
            elif isinstance(command, Purchase):
                member = self.members.cached(command.member_id)
                referral = member.referral if member is not None else None
                if referral is not None and not referral.settled:
                    referrers.add(referral.referrer_id)
        return referrers

    def _member(self, member_id: str, touched: dict[str, Member], snapshots: Snapshots) -> Member:
        member = touched.get(member_id)
        if member is None:
            member = touched[member_id] = self.members.get(member_id)
            snapshots.touched(member)
        return member

    def sweep(
        self,
        member_ids: Iterable[str],
        at: datetime,
        chunk: int = 1000,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Steps 1 and 2 for every given member as of `at`; returns events written."""
        written = 0
        ids = list(member_ids)
        for start in range(0, len(ids), chunk):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                touched = {mid: self.members.get(mid) for mid in ids[start : start + chunk]}
                snapshots = Snapshots()
                for member in touched.values():
                    snapshots.touched(member)
                    member.sweep(self._program, at=at)
                    snapshots.decided(member)
                pending = sum(len(m.pending_events) for m in touched.values())
                try:
                    self._ledger.commit(list(touched.values()), Checkpoint())
                    self._save_snapshots(snapshots.rows)
                except IntegrityError:
                    self.members.evict(touched)
                    log.warning("sweep conflict (attempt %d); deciding again", attempt)
                    continue
                written += pending
                if progress is not None:
                    progress(min(start + chunk, len(ids)), len(ids))
                break
            else:
                raise StoreContention(f"sweep still conflicts after {MAX_ATTEMPTS} attempts")
        return written
