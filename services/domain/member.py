"""The member aggregate: one member's points, lots, orders, tier and referral.

Every public command applies CONTRACT section 3's four steps at its `at`: expire lots,
review the tier, act, review the tier. Commands decide; the private `@event` methods
only assign the decided results, so replaying stored events never re-runs a rule (a
program change applies to new events, never to history).

Stored forever and published on `loyalty.member-events`: event names and fields are a
contract with the read side; add fields with defaults, never rename or remove one.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from services.domain.lots import Lot, Order, Referral
from services.program import Program

__all__ = [
    "ALREADY_REFERRED",
    "APPLIED",
    "DUPLICATE_ORDER",
    "INSUFFICIENT_BALANCE",
    "MEMBER_NAMESPACE",
    "REFEREE_HAS_PURCHASED",
    "REFUND_EXCEEDS_ORDER",
    "SELF_REFERRAL",
    "UNKNOWN_ORDER",
    "Lot",
    "Member",
    "Order",
    "Outcome",
    "Referral",
    "ReferrerBonusDue",
]

# Fixed forever: member aggregate ids are uuid5(MEMBER_NAMESPACE, member_id).
MEMBER_NAMESPACE = UUID("0b0f6a63-52a1-4bd3-9a3e-7d3f6f1d2c10")

# Reasons a rule declines an understood event (CONTRACT section 2, "rejected by a rule").
SELF_REFERRAL = "self_referral"
ALREADY_REFERRED = "already_referred"
REFEREE_HAS_PURCHASED = "referee_has_purchased"
UNKNOWN_ORDER = "unknown_order"
REFUND_EXCEEDS_ORDER = "refund_exceeds_order"
INSUFFICIENT_BALANCE = "insufficient_balance"
DUPLICATE_ORDER = "duplicate_order"


@dataclass(frozen=True)
class ReferrerBonusDue:
    """The referee's first purchase qualified: the referrer is owed a bonus at `at`."""

    referrer_id: str
    event_id: str
    at: datetime


@dataclass(frozen=True)
class Outcome:
    """`rejected` is a reason code when a rule declined the command (the rejection is
    still recorded as an event); `referrer_bonus` asks the caller to credit the referrer."""

    rejected: str | None = None
    referrer_bonus: ReferrerBonusDue | None = None


APPLIED = Outcome()

# [lot date, points taken] pairs, oldest lot first: the shape stored in events.
Consumed = list[list[Any]]


def floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def floor_share(whole: int, part: Decimal, total: Decimal) -> int:
    """floor(whole x part / total), exactly: `//` on Decimals never rounds the quotient."""
    return int((whole * part) // total)


def utc_day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


class Member(Aggregate):
    """A member's ledger.

    Queries: `member_id`, `balance`, `tier` (None until the first tier change: the
    program's lowest tier, which `tier_name(program)` names), `qualifying_points` (as of
    the last review), `lifetime_points`, `last_event_at`, `lots` (oldest first), `debt`,
    and the decision state the rules need (orders, referral, shares by day). The ledger
    of movements is not kept here: it is in the events, and in the read side.

    `lifetime_points` is every point ever credited (purchases, referral bonuses of either
    side, shares) minus refund clawbacks; redemptions and expiries do not lower it.
    """

    @staticmethod
    def create_id(member_id: str) -> UUID:
        return uuid5(MEMBER_NAMESPACE, member_id)

    @classmethod
    def register(cls, member_id: str) -> Member:
        return cls(member_id)

    class Registered(Aggregate.Created):
        member_id: str

    @event(Registered)
    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.tier: str | None = None
        self.qualifying_points = 0
        self.lifetime_points = 0
        self.last_event_at: datetime | None = None
        self.debt = 0
        self.orders: dict[str, Order] = {}
        self.referral: Referral | None = None
        self.shares_by_day: dict[str, int] = {}  # UTC date (ISO) -> shares recorded that day
        self._lots: list[Lot] = []  # by date, one lot per date; empty while in debt

    # ---- queries -------------------------------------------------------------------

    @property
    def balance(self) -> int:
        return sum(lot.points for lot in self._lots) - self.debt

    @property
    def lots(self) -> tuple[Lot, ...]:
        return tuple(self._lots)

    def tier_name(self, program: Program) -> str:
        return self.tier or program.lowest_tier

    def qualifying_points_at(self, program: Program, at: datetime) -> int:
        since = at - program.qualifying_window
        total = 0
        # A plain loop: this runs two or three times per event, over every order.
        for order in self.orders.values():
            if since < order.at <= at:
                total += order.base - order.base_removed
        return total

    # ---- commands ------------------------------------------------------------------

    def purchase(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._expire_and_review(program, at)
        if order_id in self.orders:
            self._purchase_rejected(
                event_id=event_id, order_id=order_id, amount=amount, reason=DUPLICATE_ORDER, at=at
            )
            self._review(program, at)
            return Outcome(rejected=DUPLICATE_ORDER)
        multiplier = program.multiplier(self.tier_name(program))
        base = floor(amount * program.earn_rate)
        points = floor(amount * program.earn_rate * multiplier)
        first_purchase = not self.orders
        self._purchase_recorded(
            event_id=event_id,
            order_id=order_id,
            amount=amount,
            base_points=base,
            multiplier=multiplier,
            points=points,
            debt_repaid=min(self.debt, points),
            balance=self.balance + points,
            qualifying_points=self.qualifying_points_at(program, at) + base,
            at=at,
        )
        bonus_due = None
        if first_purchase and self.referral is not None and self._referral_open(program, at):
            bonus = program.referee_bonus
            self._referral_rewarded(
                event_id=event_id,
                referrer_id=self.referral.referrer_id,
                points=bonus,
                debt_repaid=min(self.debt, bonus),
                balance=self.balance + bonus,
                at=at,
            )
            bonus_due = ReferrerBonusDue(self.referral.referrer_id, event_id, at)
        self._review(program, at)
        return Outcome(referrer_bonus=bonus_due)

    def refund(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._expire_and_review(program, at)
        order = self.orders.get(order_id)
        if order is None or order.refunded + amount > order.amount:
            reason = UNKNOWN_ORDER if order is None else REFUND_EXCEEDS_ORDER
            self._refund_rejected(
                event_id=event_id, order_id=order_id, amount=amount, reason=reason, at=at
            )
            self._review(program, at)
            return Outcome(rejected=reason)
        before, after = order.refunded, order.refunded + amount
        clawback = floor_share(order.earned, after, order.amount) - floor_share(
            order.earned, before, order.amount
        )
        base_removed = floor_share(order.base, after, order.amount) - floor_share(
            order.base, before, order.amount
        )
        in_window = self._in_qualifying_window(program, order.at, at)
        consumed, shortfall = self._consume(clawback)
        self._refund_recorded(
            event_id=event_id,
            order_id=order_id,
            amount=amount,
            base_points_removed=base_removed,
            points=-clawback,
            consumed=consumed,
            debt_added=shortfall,
            balance=self.balance - clawback,
            qualifying_points=self.qualifying_points_at(program, at)
            - (base_removed if in_window else 0),
            at=at,
        )
        self._review(program, at)
        return APPLIED

    def record_referral(
        self, program: Program, *, event_id: str, referrer_id: str, at: datetime
    ) -> Outcome:
        self._expire_and_review(program, at)
        reason = None
        if referrer_id == self.member_id:
            reason = SELF_REFERRAL
        elif self.referral is not None:
            reason = ALREADY_REFERRED
        elif self.orders:
            reason = REFEREE_HAS_PURCHASED
        if reason is None:
            self._referral_recorded(event_id=event_id, referrer_id=referrer_id, at=at)
        else:
            self._referral_rejected(
                event_id=event_id, referrer_id=referrer_id, reason=reason, at=at
            )
        self._review(program, at)
        return Outcome(rejected=reason)

    def share(
        self, program: Program, *, event_id: str, network: str, url: str | None, at: datetime
    ) -> Outcome:
        """`network` is one of the program's networks: the caller validated it."""
        self._expire_and_review(program, at)
        day = utc_day(at)
        rewarded = self.shares_by_day.get(day, 0) < program.shares_per_day
        points = program.share_points if rewarded else 0
        self._social_share_recorded(
            event_id=event_id,
            network=network,
            url=url,
            day=day,
            points=points,
            debt_repaid=min(self.debt, points),
            balance=self.balance + points,
            at=at,
        )
        self._review(program, at)
        return APPLIED

    def redeem(
        self, program: Program, *, event_id: str, points: int, reward: str, at: datetime
    ) -> Outcome:
        self._expire_and_review(program, at)
        if self.balance < points:
            self._redemption_declined(
                event_id=event_id,
                reward=reward,
                requested=points,
                balance=self.balance,
                reason=INSUFFICIENT_BALANCE,
                at=at,
            )
            self._review(program, at)
            return Outcome(rejected=INSUFFICIENT_BALANCE)
        consumed, _ = self._consume(points)
        self._points_redeemed(
            event_id=event_id,
            reward=reward,
            points=-points,
            consumed=consumed,
            balance=self.balance - points,
            at=at,
        )
        self._review(program, at)
        return APPLIED

    def earn_referrer_bonus(
        self, program: Program, *, event_id: str, referee_id: str, at: datetime
    ) -> Outcome:
        """The referrer's side of a rewarded referral; `event_id` is the referee's purchase."""
        self._expire_and_review(program, at)
        bonus = program.referrer_bonus
        self._referrer_bonus_earned(
            event_id=event_id,
            referee_id=referee_id,
            points=bonus,
            debt_repaid=min(self.debt, bonus),
            balance=self.balance + bonus,
            at=at,
        )
        self._review(program, at)
        return APPLIED

    def sweep(self, program: Program, *, at: datetime) -> None:
        """Steps 1 and 2 only: expiry and tier review as of `at`."""
        self._expire_and_review(program, at)

    # ---- decisions shared by the commands ----------------------------------------

    def _expire_and_review(self, program: Program, at: datetime) -> None:
        """Steps 1 and 2: expire the lots due at or before `at`, then review the tier."""
        lifetime = program.lot_lifetime
        while self._lots and self._lots[0].date + lifetime <= at:
            lot = self._lots[0]
            self._points_expired(
                lot_date=lot.date, points=-lot.points, balance=self.balance - lot.points, at=at
            )
        self._review(program, at)

    def _review(self, program: Program, at: datetime) -> None:
        qualifying = self.qualifying_points_at(program, at)
        tier = program.tier_for(qualifying).name
        current = self.tier_name(program)
        if tier != current:
            self._tier_changed(from_tier=current, to_tier=tier, qualifying_points=qualifying, at=at)
        elif qualifying != self.qualifying_points:
            # Purchases left the window without moving the tier: the read side still
            # shows the member's qualifying points as of this review.
            self._qualifying_points_changed(qualifying_points=qualifying, at=at)

    @staticmethod
    def _in_qualifying_window(program: Program, occurred: datetime, at: datetime) -> bool:
        return at - program.qualifying_window < occurred <= at

    def _referral_open(self, program: Program, at: datetime) -> bool:
        if self.referral is None or self.referral.settled:
            return False
        since = at - self.referral.at
        return timedelta(0) <= since <= program.referral_window

    def _consume(self, points: int) -> tuple[Consumed, int]:
        """Oldest lots first; returns what was taken from which lot, and the shortfall
        that becomes debt."""
        consumed: Consumed = []
        left = points
        for lot in self._lots:
            if left == 0:
                break
            taken = min(lot.points, left)
            consumed.append([lot.date, taken])
            left -= taken
        return consumed, left

    # ---- events: assign decided results only ----------------------------------

    def _credit(self, at: datetime, points: int, debt_repaid: int) -> None:
        self.debt -= debt_repaid
        self.lifetime_points += points
        remainder = points - debt_repaid
        if remainder <= 0:
            return
        for i, lot in enumerate(self._lots):
            if lot.date == at:
                self._lots[i] = Lot(at, lot.points + remainder)
                return
        insort(self._lots, Lot(at, remainder), key=lambda lot: lot.date)

    def _take(self, consumed: Consumed) -> None:
        for lot_date, taken in consumed:
            for i, lot in enumerate(self._lots):
                if lot.date == lot_date:
                    self._lots[i] = Lot(lot.date, lot.points - taken)
                    break
        self._lots = [lot for lot in self._lots if lot.points > 0]

    def _seen(self, at: datetime) -> None:
        if self.last_event_at is None or at > self.last_event_at:
            self.last_event_at = at

    @event("PurchaseRecorded")
    def _purchase_recorded(
        self,
        event_id: str,
        order_id: str,
        amount: Decimal,
        base_points: int,
        multiplier: Decimal,
        points: int,
        debt_repaid: int,
        balance: int,
        qualifying_points: int,
        at: datetime,
    ) -> None:
        self.orders[order_id] = Order(at, amount, points, base_points)
        self._credit(at, points, debt_repaid)
        self.qualifying_points = qualifying_points
        self._seen(at)

    @event("PurchaseRejected")
    def _purchase_rejected(
        self, event_id: str, order_id: str, amount: Decimal, reason: str, at: datetime
    ) -> None:
        self._seen(at)

    @event("RefundRecorded")
    def _refund_recorded(
        self,
        event_id: str,
        order_id: str,
        amount: Decimal,
        base_points_removed: int,
        points: int,
        consumed: Consumed,
        debt_added: int,
        balance: int,
        qualifying_points: int,
        at: datetime,
    ) -> None:
        order = self.orders[order_id]
        order.refunded += amount
        order.base_removed += base_points_removed
        self._take(consumed)
        self.debt += debt_added
        self.lifetime_points += points
        self.qualifying_points = qualifying_points
        self._seen(at)

    @event("RefundRejected")
    def _refund_rejected(
        self, event_id: str, order_id: str, amount: Decimal, reason: str, at: datetime
    ) -> None:
        self._seen(at)

    @event("ReferralRecorded")
    def _referral_recorded(self, event_id: str, referrer_id: str, at: datetime) -> None:
        self.referral = Referral(referrer_id, at)
        self._seen(at)

    @event("ReferralRejected")
    def _referral_rejected(
        self, event_id: str, referrer_id: str, reason: str, at: datetime
    ) -> None:
        self._seen(at)

    @event("ReferralRewarded")
    def _referral_rewarded(
        self,
        event_id: str,
        referrer_id: str,
        points: int,
        debt_repaid: int,
        balance: int,
        at: datetime,
    ) -> None:
        if self.referral is not None:
            self.referral.settled = True
        self._credit(at, points, debt_repaid)
        self._seen(at)

    @event("ReferrerBonusEarned")
    def _referrer_bonus_earned(
        self,
        event_id: str,
        referee_id: str,
        points: int,
        debt_repaid: int,
        balance: int,
        at: datetime,
    ) -> None:
        self._credit(at, points, debt_repaid)
        self._seen(at)

    @event("SocialShareRecorded")
    def _social_share_recorded(
        self,
        event_id: str,
        network: str,
        url: str | None,
        day: str,
        points: int,
        debt_repaid: int,
        balance: int,
        at: datetime,
    ) -> None:
        self.shares_by_day[day] = self.shares_by_day.get(day, 0) + 1
        self._credit(at, points, debt_repaid)
        self._seen(at)

    @event("PointsRedeemed")
    def _points_redeemed(
        self,
        event_id: str,
        reward: str,
        points: int,
        consumed: Consumed,
        balance: int,
        at: datetime,
    ) -> None:
        self._take(consumed)
        self._seen(at)

    @event("RedemptionDeclined")
    def _redemption_declined(
        self, event_id: str, reward: str, requested: int, balance: int, reason: str, at: datetime
    ) -> None:
        self._seen(at)

    @event("PointsExpired")
    def _points_expired(self, lot_date: datetime, points: int, balance: int, at: datetime) -> None:
        self._take([[lot_date, -points]])

    @event("TierChanged")
    def _tier_changed(
        self, from_tier: str, to_tier: str, qualifying_points: int, at: datetime
    ) -> None:
        self.tier = to_tier
        self.qualifying_points = qualifying_points

    @event("QualifyingPointsChanged")
    def _qualifying_points_changed(self, qualifying_points: int, at: datetime) -> None:
        self.qualifying_points = qualifying_points
