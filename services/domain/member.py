"""The member aggregate: one member's points, lots, orders, tier and referral.

Every public command applies CONTRACT section 3's four steps at its `at`: expire lots,
review the tier, act, review the tier. Commands decide; the private `@event` methods
only assign the decided results, so replaying stored events never re-runs a rule (a
program change applies to new events, never to history).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from services.program import Program

MEMBER_NAMESPACE = UUID("0b0f6a63-52a1-4bd3-9a3e-7d3f6f1d2c10")

# Reasons a rule declines an understood event (CONTRACT section 2, "rejected by a rule").
SELF_REFERRAL = "self_referral"
ALREADY_REFERRED = "already_referred"
REFEREE_HAS_PURCHASED = "referee_has_purchased"
UNKNOWN_ORDER = "unknown_order"
REFUND_EXCEEDS_ORDER = "refund_exceeds_order"
INSUFFICIENT_BALANCE = "insufficient_balance"
DUPLICATE_ORDER = "duplicate_order"


@dataclass
class Lot:
    """Points credited together, dated at their event; they expire together."""

    date: datetime
    points: int


@dataclass(frozen=True)
class ReferrerBonusDue:
    """The referee's first purchase qualified: the referrer is owed a bonus at `at`."""

    referrer_id: str
    event_id: str
    at: datetime


@dataclass(frozen=True)
class Outcome:
    rejected: str | None = None
    referrer_bonus: ReferrerBonusDue | None = None


APPLIED = Outcome()


def floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


class Member(Aggregate):
    # Lots are kept in date order: expiry and oldest-first consumption take from the front.
    # Events name the lots they touch as [date, points] pairs, which is how they are stored.

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
        self.tier: str | None = None  # None until the first review: the program's lowest tier
        self.lots: list[Lot] = []
        self.debt = 0
        # order_id -> {at, amount, earned, base, refunded, base_removed}
        self.orders: dict[str, dict[str, Any]] = {}
        self.referral: dict[str, Any] | None = None  # {referrer_id, at, settled}
        self.shares_by_day: dict[str, int] = {}
        self.lifetime_points = 0
        self.last_event_at: datetime | None = None
        self.qualifying_points = 0

    # ---- queries -------------------------------------------------------------------

    @property
    def balance(self) -> int:
        return sum(lot.points for lot in self.lots) - self.debt

    def tier_name(self, program: Program) -> str:
        return self.tier or program.lowest_tier

    def qualifying_points_at(self, program: Program, at: datetime) -> int:
        since = at - timedelta(days=program.qualifying_window_days)
        return sum(
            int(o["base"] - o["base_removed"])
            for o in self.orders.values()
            if since < o["at"] <= at
        )

    # ---- commands ------------------------------------------------------------------

    def purchase(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._begin(program, at)
        if order_id in self.orders:
            self._purchase_rejected(
                event_id=event_id, order_id=order_id, amount=amount, reason=DUPLICATE_ORDER, at=at
            )
            self._review_tier(program, at)
            return Outcome(rejected=DUPLICATE_ORDER)
        tier = program.tier_named(self.tier_name(program))
        base = floor(amount * program.earn_rate)
        points = floor(amount * program.earn_rate * tier.multiplier)
        first_purchase = not self.orders
        repaid = min(self.debt, points)
        qualifying = self.qualifying_points_at(program, at) + (
            base if self._in_window(program, at, at) else 0
        )
        self._purchase_recorded(
            event_id=event_id,
            order_id=order_id,
            amount=amount,
            base_points=base,
            multiplier=tier.multiplier,
            points=points,
            debt_repaid=repaid,
            balance=self.balance + points,
            qualifying_points=qualifying,
            at=at,
        )
        bonus_due = None
        if first_purchase and self._referral_qualifies(program, at):
            assert self.referral is not None
            bonus = program.referee_bonus
            self._referral_rewarded(
                event_id=event_id,
                referrer_id=self.referral["referrer_id"],
                points=bonus,
                debt_repaid=min(self.debt, bonus),
                balance=self.balance + bonus,
                at=at,
            )
            bonus_due = ReferrerBonusDue(self.referral["referrer_id"], event_id, at)
        self._review_tier(program, at)
        return Outcome(referrer_bonus=bonus_due)

    def refund(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._begin(program, at)
        order = self.orders.get(order_id)
        reason = None
        if order is None:
            reason = UNKNOWN_ORDER
        elif order["refunded"] + amount > order["amount"]:
            reason = REFUND_EXCEEDS_ORDER
        if reason is not None or order is None:
            reason = reason or UNKNOWN_ORDER
            self._refund_rejected(
                event_id=event_id, order_id=order_id, amount=amount, reason=reason, at=at
            )
            self._review_tier(program, at)
            return Outcome(rejected=reason)
        total, before, after = order["amount"], order["refunded"], order["refunded"] + amount
        clawback = floor(order["earned"] * after / total) - floor(order["earned"] * before / total)
        base_removed = floor(order["base"] * after / total) - floor(order["base"] * before / total)
        consumed, debt_added = self._consume(clawback)
        qualifying = self.qualifying_points_at(program, at) - (
            base_removed if self._in_window(program, order["at"], at) else 0
        )
        self._refund_recorded(
            event_id=event_id,
            order_id=order_id,
            amount=amount,
            base_points_removed=base_removed,
            points=-clawback,
            consumed=consumed,
            debt_added=debt_added,
            balance=self.balance - clawback,
            qualifying_points=qualifying,
            at=at,
        )
        self._review_tier(program, at)
        return APPLIED

    def record_referral(
        self, program: Program, *, event_id: str, referrer_id: str, at: datetime
    ) -> Outcome:
        self._begin(program, at)
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
        self._review_tier(program, at)
        return Outcome(rejected=reason)

    def share(
        self, program: Program, *, event_id: str, network: str, url: str | None, at: datetime
    ) -> Outcome:
        self._begin(program, at)
        day = _utc_day(at)
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
        self._review_tier(program, at)
        return APPLIED

    def redeem(
        self, program: Program, *, event_id: str, points: int, reward: str, at: datetime
    ) -> Outcome:
        self._begin(program, at)
        if self.balance < points:
            self._redemption_declined(
                event_id=event_id,
                reward=reward,
                requested=points,
                balance=self.balance,
                reason=INSUFFICIENT_BALANCE,
                at=at,
            )
            self._review_tier(program, at)
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
        self._review_tier(program, at)
        return APPLIED

    def earn_referrer_bonus(
        self, program: Program, *, event_id: str, referee_id: str, at: datetime
    ) -> Outcome:
        self._begin(program, at)
        bonus = program.referrer_bonus
        self._referrer_bonus_earned(
            event_id=event_id,
            referee_id=referee_id,
            points=bonus,
            debt_repaid=min(self.debt, bonus),
            balance=self.balance + bonus,
            at=at,
        )
        self._review_tier(program, at)
        return APPLIED

    def sweep(self, program: Program, *, at: datetime) -> None:
        self._begin(program, at)

    # ---- decisions shared by the commands ----------------------------------------

    def _begin(self, program: Program, at: datetime) -> None:
        """Steps 1 and 2: expire the lots due at `at`, then review the tier as of `at`."""
        lifetime = timedelta(days=program.lot_lifetime_days)
        while self.lots and self.lots[0].date + lifetime <= at:
            lot_date, points = self.lots[0].date, self.lots[0].points
            self._points_expired(
                lot_date=lot_date, points=-points, balance=self.balance - points, at=at
            )
        self._review_tier(program, at)

    def _review_tier(self, program: Program, at: datetime) -> None:
        qualifying = self.qualifying_points_at(program, at)
        tier = program.tier_for(qualifying).name
        if tier != self.tier_name(program):
            self._tier_changed(
                from_tier=self.tier_name(program), to_tier=tier, qualifying_points=qualifying, at=at
            )

    def _in_window(self, program: Program, occurred: datetime, at: datetime) -> bool:
        return at - timedelta(days=program.qualifying_window_days) < occurred <= at

    def _referral_qualifies(self, program: Program, at: datetime) -> bool:
        if self.referral is None or self.referral["settled"]:
            return False
        since: timedelta = at - self.referral["at"]
        return timedelta(0) <= since <= timedelta(days=program.referral_window_days)

    def _consume(self, points: int) -> tuple[list[list[Any]], int]:
        """Oldest lots first; what the lots cannot cover becomes debt."""
        consumed: list[list[Any]] = []
        left = points
        for lot in self.lots:
            if left == 0:
                break
            taken = min(lot.points, left)
            consumed.append([lot.date, taken])
            left -= taken
        return consumed, left

    # ---- events: assign decided results only ----------------------------------

    def _credit(self, at: datetime, points: int, debt_repaid: int) -> None:
        self.debt -= debt_repaid
        if points - debt_repaid > 0:
            insort(self.lots, Lot(at, points - debt_repaid), key=lambda lot: lot.date)
        self.lifetime_points += points

    def _take(self, consumed: list[list[Any]]) -> None:
        for lot_date, taken in consumed:
            for lot in self.lots:
                if lot.date == lot_date and lot.points > 0:
                    lot.points -= taken
                    break
        self.lots = [lot for lot in self.lots if lot.points > 0]

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
        self.orders[order_id] = {
            "at": at,
            "amount": amount,
            "earned": points,
            "base": base_points,
            "refunded": Decimal(0),
            "base_removed": 0,
        }
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
        consumed: list[list[Any]],
        debt_added: int,
        balance: int,
        qualifying_points: int,
        at: datetime,
    ) -> None:
        order = self.orders[order_id]
        order["refunded"] += amount
        order["base_removed"] += base_points_removed
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
        self.referral = {"referrer_id": referrer_id, "at": at, "settled": False}
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
        assert self.referral is not None
        self.referral["settled"] = True
        self._credit(at, points, debt_repaid)

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
        consumed: list[list[Any]],
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


def _utc_day(at: datetime) -> str:
    day: date = at.date()  # `at` is UTC: the decoder normalises every offset
    return day.isoformat()
