"""Value types the member aggregate keeps: lots, orders, its referral, ledger entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class Lot:
    """Points credited at one instant; they expire together, `lot_lifetime_days` later."""

    date: datetime
    points: int


@dataclass
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


@dataclass
class Referral:
    referrer_id: str
    at: datetime
    settled: bool = False


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of a member's points; `reference` names what moved them (an order,
    a reward, a network, the other member of a referral, or the date of an expired lot)."""

    at: datetime
    kind: str
    points: int
    balance: int
    event_id: str | None
    reference: str | None
