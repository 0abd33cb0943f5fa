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
    """CONTRACT section 2: every input message ends in exactly one of these."""

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


@dataclass
class Checkpoint:
    # (topic, partition) -> offset of the last message of this batch on that partition
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    # (topic, outcome) -> number of messages
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def account(self, topic: str, partition: int, offset: int, outcome: MessageOutcome) -> None:
        key = (topic, partition)
        self.positions[key] = max(offset, self.positions.get(key, -1))
        self.counts[(topic, outcome.value)] += 1

    def merge(self, others: Iterable[Checkpoint]) -> None:
        for other in others:
            for key, offset in other.positions.items():
                self.positions[key] = max(offset, self.positions.get(key, -1))
            self.receipts.extend(other.receipts)
            self.counts.update(other.counts)


def tracking_name(topic: str, partition: int) -> str:
    # One tracking record per input partition: offsets only increase within one.
    return f"input:{topic}:{partition}"
