"""Input events, once understood: what upstream asked the ledger to do.

Each command names the member that owns it (the message key's member), so that
one partition, and so one worker, holds every command of a member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    member_id: str
    order_id: str
    amount: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Refund:
    event_id: str
    member_id: str
    order_id: str
    amount: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Referral:
    event_id: str
    member_id: str  # the referee: referrals are recorded on the member who was referred
    referrer_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SocialShare:
    event_id: str
    member_id: str
    network: str
    url: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Redemption:
    event_id: str
    member_id: str
    points: int
    reward: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Enrolment:
    event_id: str
    member_id: str
    birth_date: date | None
    channel: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Review:
    event_id: str
    member_id: str
    product_id: str
    rating: int
    order_id: str | None
    at: datetime


Command = Purchase | Refund | Referral | SocialShare | Redemption | Enrolment | Review
