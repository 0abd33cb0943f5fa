"""Input events, once understood: what upstream asked the ledger to do.

Each command names the member that owns it (the message key's member), so that
one partition, and so one worker, holds every command of a member.

Tuples, as immutable as frozen dataclasses: one is built per input message, and a frozen
dataclass's guarded `__init__` (a `setattr` a field) costs three times as much.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple


class Purchase(NamedTuple):
    event_id: str
    member_id: str
    order_id: str
    amount: Decimal
    at: datetime


class Refund(NamedTuple):
    event_id: str
    member_id: str
    order_id: str
    amount: Decimal
    at: datetime


class Referral(NamedTuple):
    event_id: str
    member_id: str  # the referee: referrals are recorded on the member who was referred
    referrer_id: str
    at: datetime


class SocialShare(NamedTuple):
    event_id: str
    member_id: str
    network: str
    url: str | None
    at: datetime


class Redemption(NamedTuple):
    event_id: str
    member_id: str
    points: int
    reward: str
    at: datetime


class Enrolment(NamedTuple):
    event_id: str
    member_id: str
    birth_date: date | None
    channel: str | None
    at: datetime


class Review(NamedTuple):
    event_id: str
    member_id: str
    product_id: str
    rating: int
    order_id: str | None
    at: datetime


Command = Purchase | Refund | Referral | SocialShare | Redemption | Enrolment | Review
