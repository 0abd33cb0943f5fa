"""What a batch of input messages leaves in the store besides domain events.

Written in the same transaction as the events, so that a crash anywhere leaves
either all of it or none of it: this is what makes ingestion exactly-once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class MessageOutcome(StrEnum):
    """docs/RULES.md, section 2: every input message ends in exactly one of these."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"


class Receipt(NamedTuple):
    """An input event_id that changed the store; a later copy of it is a duplicate."""

    event_id: str
    topic: str
    partition: int
    offset: int
    outcome: MessageOutcome


# Offsets that no message was read at: retention deleted them before the worker got
# there. Counted beside the outcomes (ingest_counts), so that nothing vanishes unseen.
SKIPPED = "skipped"


class InputPosition(NamedTuple):
    """How far the store has taken an input partition in.

    `incarnation` counts the partition's restarts below that position (its topic deleted
    and created again): offsets start over, so they are tracked anew under a name of
    their own, and a restarted partition is never mistaken for one already read."""

    incarnation: int
    offset: int  # of the last message taken in; -1 when none yet in this incarnation

    def holds(self, incarnation: int, offset: int) -> bool:
        """True when the message at `offset` of that incarnation was taken in already."""
        # Positions order as (incarnation, offset) tuples, which this is.
        return (incarnation, offset) <= self


@dataclass
class Checkpoint:
    # (topic, partition, incarnation) -> offset of the batch's last message on it
    positions: dict[tuple[str, int, int], int] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    # (topic, outcome) -> number of messages
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def account(
        self,
        topic: str,
        partition: int,
        offset: int,
        outcome: MessageOutcome,
        incarnation: int = 0,
    ) -> None:
        key = (topic, partition, incarnation)
        self.positions[key] = max(offset, self.positions.get(key, -1))
        self.counts[(topic, outcome.value)] += 1

    def skip(self, topic: str, partition: int, incarnation: int, first: int, upto: int) -> None:
        """Offsets `first` up to, not including, `upto` hold nothing left to read."""
        key = (topic, partition, incarnation)
        self.positions[key] = max(upto - 1, self.positions.get(key, -1))
        self.counts[(topic, SKIPPED)] += upto - first

    def merge(self, others: Iterable[Checkpoint]) -> None:
        for other in others:
            for key, offset in other.positions.items():
                self.positions[key] = max(offset, self.positions.get(key, -1))
            self.receipts.extend(other.receipts)
            self.counts.update(other.counts)


def tracking_name(topic: str, partition: int, incarnation: int = 0) -> str:
    # One tracking record per input partition and incarnation: offsets only increase
    # within one. Kafka topic names hold no '~'.
    base = f"input:{topic}:{partition}"
    return base if incarnation == 0 else f"{base}~{incarnation}"


def incarnation_of(name: str) -> int:
    _, _, suffix = name.partition("~")
    return int(suffix) if suffix else 0
