"""An independent, deliberately plain model of the rules (docs/RULES.md), for property tests.

Written from the rules' text, not from the aggregate: lists and loops, no events. It
takes the program's numbers (campaigns, badges, the return window) as data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from services.program import Program

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
    enrolled_at: datetime | None = None
    birth: date | None = None
    birthday_paid: datetime | None = None
    reviewed: set[str] = field(default_factory=set)
    rewarded_reviews: dict[object, int] = field(default_factory=dict)
    share_log: list[datetime] = field(default_factory=list)
    review_log: list[datetime] = field(default_factory=list)
    uses: dict[str, int] = field(default_factory=dict)
    badges: set[str] = field(default_factory=set)
    pending: list[list[object]] = field(default_factory=list)  # [release, order id, points]

    @property
    def pending_points(self) -> int:
        return sum(int(p[2]) for p in self.pending)  # type: ignore[call-overload]

    @property
    def balance(self) -> int:
        return sum(int(points) for _, points in self.lots) - self.debt  # type: ignore[call-overload]

    def qp(self, t: datetime) -> int:
        return sum(o.base - o.base_back for o in self.orders.values() if t - YEAR < o.at <= t)

    def step_0(self, t: datetime, program: Program) -> None:
        if self.birth is not None and self.enrolled_at is not None:
            latest = None
            for year in range(t.year, self.birth.year - 1, -1):
                try:
                    b = self.birth.replace(year=year)
                except ValueError:  # 29 February in a common year
                    b = date(year, 2, 28)
                instant = datetime(b.year, b.month, b.day, tzinfo=UTC)
                if instant <= t:
                    latest = instant
                    break
            if (
                latest is not None
                and latest > self.enrolled_at
                and (self.birthday_paid is None or latest > self.birthday_paid)
            ):
                self.birthday_paid = latest
                self.credit(program.birthday_bonus, latest)
        for release, _, points in sorted(
            [p for p in self.pending if p[0] <= t],  # type: ignore[operator]
            key=lambda p: p[0],  # type: ignore[arg-type,return-value]
        ):
            self.credit(int(points), release)  # type: ignore[call-overload,arg-type]
        self.pending = [p for p in self.pending if not p[0] <= t]  # type: ignore[operator]

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
    def __init__(self, program: Program) -> None:
        self.program = program
        self.members: dict[str, ModelMember] = {}

    def m(self, member_id: str) -> ModelMember:
        return self.members.setdefault(member_id, ModelMember())

    def _run(self, member_id: str, t: datetime, act: object) -> None:
        member = self.m(member_id)
        member.step_0(t, self.program)
        member.steps_1_2(t)
        act(member)  # type: ignore[operator]
        member.review(t)

    def _earn(
        self, member: ModelMember, kind: str, base: Decimal, t: datetime, amount: Decimal | None
    ) -> int:
        """floor(base x the highest matching multiplier) + the matching bonuses."""
        matching = [
            c
            for c in self.program.campaigns
            if c.applies_to == kind
            and c.starts <= t < c.ends
            and (c.tiers is None or member.tier in c.tiers)
            and (c.min_amount is None or (amount is not None and amount >= c.min_amount))
            and (c.max_per_member is None or member.uses.get(c.id, 0) < c.max_per_member)
        ]
        for c in matching:
            member.uses[c.id] = member.uses.get(c.id, 0) + 1
        multiplier = max([c.multiplier for c in matching], default=Decimal(1))
        return math.floor(base * multiplier) + sum(c.bonus for c in matching)

    def _badges(self, member: ModelMember, kind: str, t: datetime) -> None:
        for badge in self.program.badges:
            if badge.kind != kind or badge.id in member.badges:
                continue
            if kind == "purchase":
                times = [o.at for o in member.orders.values()]
            elif kind == "social_share":
                times = member.share_log
            else:
                times = member.review_log
            if badge.within_days is not None:
                times = [x for x in times if t - timedelta(days=badge.within_days) < x <= t]
            if len(times) >= badge.count:
                member.badges.add(badge.id)
                member.credit(badge.bonus, t)

    def purchase(self, member_id: str, order_id: str, amount: Decimal, t: datetime) -> None:
        bonus_for: list[str] = []

        def act(member: ModelMember) -> None:
            if order_id in member.orders:
                return
            first = not member.orders
            multiplier = tier_of(member.qp(t))[1]
            earned = self._earn(member, "purchase", amount * multiplier, t, amount)
            member.orders[order_id] = Order(t, amount, earned, math.floor(amount))
            if self.program.pending_days:
                member.pending.append(
                    [t + timedelta(days=self.program.pending_days), order_id, earned]
                )
            else:
                member.credit(earned, t)
            if (
                first
                and member.referrer is not None
                and member.referred_at is not None
                and timedelta(0) <= t - member.referred_at <= timedelta(days=90)
            ):
                member.credit(250, t)
                bonus_for.append(member.referrer)
            self._badges(member, "purchase", t)

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
            for entry in member.pending:
                if entry[1] == order_id and back:
                    taken = min(back, int(entry[2]))  # type: ignore[call-overload]
                    entry[2] = int(entry[2]) - taken  # type: ignore[call-overload]
                    back -= taken
            member.pending = [p for p in member.pending if p[2]]
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
            member.share_log.append(t)
            if member.shares[day] <= 3:
                member.credit(self._earn(member, "social_share", Decimal(10), t, None), t)
            self._badges(member, "social_share", t)

        self._run(member_id, t, act)

    def review(self, member_id: str, product: str, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            day = t.date()
            member.review_log.append(t)
            if product not in member.reviewed and member.rewarded_reviews.get(day, 0) < 2:
                member.rewarded_reviews[day] = member.rewarded_reviews.get(day, 0) + 1
                member.credit(self._earn(member, "review", Decimal(25), t, None), t)
            member.reviewed.add(product)
            self._badges(member, "review", t)

        self._run(member_id, t, act)

    def enrol(self, member_id: str, birth: date | None, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            if member.enrolled_at is not None:
                return
            member.enrolled_at, member.birth = t, birth
            member.credit(self._earn(member, "enrolment", Decimal(100), t, None), t)

        self._run(member_id, t, act)

    def redeem(self, member_id: str, points: int, t: datetime) -> None:
        def act(member: ModelMember) -> None:
            if member.balance >= points:
                member.take(points)

        self._run(member_id, t, act)

    def sweep(self, t: datetime) -> None:
        for member in self.members.values():
            member.step_0(t, self.program)
            member.steps_1_2(t)
