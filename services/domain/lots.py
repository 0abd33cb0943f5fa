"""Value types the member aggregate keeps: lots, orders, its referral.

Slotted: a worker keeps every active member in memory, and these are most of it. The
immutable ones are tuples: a credit makes a lot, and a tuple is built in a third of a
frozen dataclass's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple


class Lot(NamedTuple):
    """Points credited at one instant; they expire together, `lot_lifetime_days` later."""

    date: datetime
    points: int


@dataclass(slots=True)
class Order:
    """A purchase as recorded, and what its refunds have taken back so far."""

    at: datetime
    amount: Decimal
    earned: int
    base: int
    refunded: Decimal = Decimal(0)
    base_removed: int = 0

    @property
    def qualifying_points(self) -> int:
        return self.base - self.base_removed


@dataclass(slots=True)
class Referral:
    referrer_id: str
    at: datetime
    settled: bool = False


class PendingCredit(NamedTuple):
    """A purchase's points held until its return window closes (`release_at`)."""

    order_id: str
    release_at: datetime
    points: int
