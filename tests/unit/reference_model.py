"""An independent, deliberately plain model of CONTRACT section 3, for property tests.

Written from the contract text, not from the aggregate: lists and loops, no events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

YEAR = timedelta(days=365)
TIERS = [
    ("bronze", 0, Decimal("1")),
    ("silver", 1000, Decimal("1.25")),
    ("gold", 5000, Decimal("1.5")),
]


def tier_of(qp: int) -> tuple[str, Decimal]:
    name, mult = TIERS[0][0], TIERS[0][2]
    for tier_name, threshold, multiplier in TIERS:
        if qp >= threshold:
            name, mult = tier_name, multiplier
    return name, mult


@dataclass
class Order:
    at: datetime
    amount: Decimal
    earned: int
    base: int
    refunded: Decimal = Decimal(0)
    base_back: int = 0


@dataclass
class ModelMember:
    tier: str = "bronze"
    lots: list[list[object]] = field(default_factory=list)  # [date, points], oldest first
    debt: int = 0
    orders: dict[str, Order] = field(default_factory=dict)
    referrer: str | None = None
    referred_at: datetime | None = None
    shares: dict[object, int] = field(default_factory=dict)
    lifetime: int = 0
    reviewed_qp: int = 0  # qualifying points as of the member's last tier review

    @property
    def balance(self) -> int:
        return sum(int(points) for _, points in self.lots) - self.debt  # type: ignore[call-overload]

    def qp(self, t: datetime) -> int:
        return sum(o.base - o.base_back for o in self.orders.values() if t - YEAR < o.at <= t)

    def steps_1_2(self, t: datetime) -> None:
        self.lots = [lot for lot in self.lots if lot[0] + YEAR > t]  # type: ignore[operator]
        self.review(t)

    def review(self, t: datetime) -> None:
        self.reviewed_qp = self.qp(t)
        self.tier = tier_of(self.reviewed_qp)[0]

    def credit(self, points: int, t: datetime) -> None:
        self.lifetime += points
        repay = min(points, self.debt)
        self.debt -= repay
        if points - repay:
            self.lots.append([t, points - repay])
            self.lots.sort(key=lambda lot: lot[0])  # type: ignore[arg-type,return-value]

    def take(self, points: int) -> None:
        while points and self.lots:
            take = min(points, int(self.lots[0][1]))  # type: ignore[call-overload]
            self.lots[0][1] = int(self.lots[0][1]) - take  # type: ignore[call-overload]
            points -= take
            if self.lots[0][1] == 0:
                self.lots.pop(0)
        self.debt += points


class Model:
    def __init__(self) -> None:
        self.members: dict[str, ModelMember] = {}

    def m(self, member_id: str) -> ModelMember:
        return self.members.setdefault(member_id, ModelMember())

    def _run(self, member_id: str, t: datetime, act: object) -> None:
        member = self.m(member_id)
        member.steps_1_2(t)
        act(member)  # type: ignore[operator]
        member.review(t)

    def purchase(self, member_id: str, order_id: str, amount: Decimal, t: datetime) -> None:
        bonus_for: list[str] = []

        def act(member: ModelMember) -> None:
            if order_id in member.orders:
                return
            first = not member.orders
            multiplier = tier_of(member.qp(t))[1]
            earned = math.floor(amount * multiplier)
            member.orders[order_id] = Order(t, amount, earned, math.floor(amount))
            member.credit(earned, t)
            if (
                first
                and member.referrer is not None
                and member.referred_at is not None
                and timedelta(0) <= t - member.referred_at <= timedelta(days=90)
            ):
                member.credit(250, t)
                bonus_for.append(member.referrer)

        self._run(member_id, t, act)
        for referrer in bonus_for:
            self._run(referrer, t, lambda r: r.credit(500, t))

    def refund(self, member_id: str, order_id: str, amount: Decimal, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            order = member.orders.get(order_id)
            if order is None or order.refunded + amount > order.amount:
                return
            before, after = order.refunded, order.refunded + amount
            back = math.floor(order.earned * after / order.amount) - math.floor(
                order.earned * before / order.amount
            )
            order.base_back += math.floor(order.base * after / order.amount) - math.floor(
                order.base * before / order.amount
            )
            order.refunded = after
            member.lifetime -= back
            member.take(back)

        self._run(member_id, t, act)

    def referral(self, referee: str, referrer: str, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            if referee == referrer or member.referrer is not None or member.orders:
                return
            member.referrer, member.referred_at = referrer, t

        self._run(referee, t, act)

    def share(self, member_id: str, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            day = t.date()
            member.shares[day] = member.shares.get(day, 0) + 1
            if member.shares[day] <= 3:
                member.credit(10, t)

        self._run(member_id, t, act)

    def redeem(self, member_id: str, points: int, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            if member.balance >= points:
                member.take(points)

        self._run(member_id, t, act)

    def sweep(self, t: datetime) -> None:
        for member in self.members.values():
            member.steps_1_2(t)
