"""The member aggregate: one member's points, lots, orders, tier, enrolment and rewards.

Every public command applies the program's steps at its `at` (docs/RULES.md): step 0
(the birthday bonus, then pending points whose return window has closed), step 1
(expire lots), step 2 (review the tier), the act itself with the badges it earns
(step 3), and step 4 (review the tier). Commands decide and trigger events; each event
class's `apply` only assigns the decided results, so replaying stored events never re-runs
a rule (a program change applies to new events, never to history). The events are
declared as classes, not `@event`-decorated methods: the decorator's per-call signature
matching cost a quarter of the worker's time deciding (issue 19).

Stored forever and published on `loyalty.member-events`: event names and fields are a
contract with the read side; add fields with defaults, never rename or remove one.
Every event that moves points carries `points` (the change of the balance), `balance`
(after it) and, when it credits, `debt_repaid`; `pending` is the change of the points
held pending.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, CanMutateAggregate, event
from eventsourcing.utils import get_topic

from services.domain.lots import Lot, Order, PendingCredit, Referral
from services.domain.triggering import build_event
from services.domain.window import OrderWindow
from services.named_tuples import maker
from services.program import Campaign, Program, Rewarded, reward

__all__ = [
    "ALREADY_ENROLLED",
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
    "birthday_in",
]

# Fixed forever: member aggregate ids are uuid5(MEMBER_NAMESPACE, member_id).
MEMBER_NAMESPACE = UUID("0b0f6a63-52a1-4bd3-9a3e-7d3f6f1d2c10")

# Reasons a rule declines an understood event (the "rejected" outcome).
SELF_REFERRAL = "self_referral"
ALREADY_REFERRED = "already_referred"
REFEREE_HAS_PURCHASED = "referee_has_purchased"
UNKNOWN_ORDER = "unknown_order"
REFUND_EXCEEDS_ORDER = "refund_exceeds_order"
INSUFFICIENT_BALANCE = "insufficient_balance"
DUPLICATE_ORDER = "duplicate_order"
ALREADY_ENROLLED = "already_enrolled"


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
NOTHING_REWARDED = Rewarded(0)
_lot = maker(Lot)

# [lot date, points taken] pairs, oldest lot first: the shape stored in events.
Consumed = list[list[Any]]


def floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def floor_share(whole: int, part: Decimal, total: Decimal) -> int:
    """floor(whole x part / total), exactly: `//` on Decimals never rounds the quotient."""
    return int((whole * part) // total)


def utc_day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def birthday_in(year: int, birth_date: date) -> date:
    """The birthday in `year`: 29 February is 28 February in other years."""
    try:
        return birth_date.replace(year=year)
    except ValueError:
        return birth_date.replace(year=year, day=28)


def latest_birthday(birth_date: date, at: datetime) -> datetime | None:
    """The most recent birthday (00:00:00Z of its day) at or before `at`."""
    for instant in _birthdays(birth_date, at.year):
        if instant <= at:
            return instant
    return None


@lru_cache(maxsize=65_536)
def _birthdays(birth_date: date, year: int) -> tuple[datetime, ...]:
    """The birthdays in `year` and the year before, latest first, as far as they exist.
    Every command of an enrolled member asks (step 0): ~4% of the deciding thread's CPU
    went to making the same two instants again (issue 19). Keyed by the birth date, not
    the member: a century of birth dates over a few years fits the cache."""
    found: list[datetime] = []
    for y in (year, year - 1):
        if y < birth_date.year or y < 1:
            break
        day = birthday_in(y, birth_date)
        found.append(datetime(day.year, day.month, day.day, tzinfo=UTC))
    return tuple(found)


class Member(Aggregate):
    """A member's ledger.

    Queries: `member_id`, `balance`, `tier` (None until the first tier change: the
    program's lowest tier, which `tier_name(program)` names), `qualifying_points` (as of
    the last review), `lifetime_points`, `pending_points`, `last_event_at`, `lots` (oldest
    first), `debt`, `enrolled_at`, `birth_date`, `badges`, and the decision state the
    rules need. The ledger of movements is not kept here: it is in the events, and in
    the read side.

    `lifetime_points` is every point that reached the balance (purchases once released,
    bonuses, shares, reviews) minus refund clawbacks from the balance; redemptions and
    expiries do not lower it.
    """

    @staticmethod
    def create_id(member_id: str) -> UUID:
        return _member_uuid(member_id)

    @classmethod
    def register(cls, member_id: str) -> Member:
        """`Member(member_id)`, without eventsourcing's generic `_create`, whose signature
        matching and topic resolution cost 18.6 us a new member (issue 19): the same
        Registered event, built and applied as `CanInitAggregate.mutate` does."""
        created = build_event(
            Member.Registered,
            _member_uuid(member_id),
            cls.INITIAL_VERSION,
            {"originator_topic": get_topic(cls), "member_id": member_id},
        )
        member = object.__new__(cls)
        member.__base_init__(created.originator_id, created.originator_version, created.timestamp)
        cls.__init__(member, member_id)
        created.apply(member)
        member._pending_events.append(created)
        return member

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
        self._window = OrderWindow()  # the orders' qualifying points by time
        self.referral: Referral | None = None
        self.shares_by_day: dict[str, int] = {}  # UTC date (ISO) -> shares recorded that day
        self._lots: list[Lot] = []  # by date, one lot per date; empty while in debt
        self._held = 0  # the lots' points: the balance is asked for several times an event
        self.enrolled_at: datetime | None = None
        self.birth_date: date | None = None
        self.last_birthday: datetime | None = None  # the latest birthday rewarded
        self.reviewed_products: set[str] = set()
        self.rewarded_reviews_by_day: dict[str, int] = {}  # UTC date (ISO) -> rewarded
        self.share_times: list[datetime] = []  # every share recorded, by time
        self.review_times: list[datetime] = []  # every review recorded, by time
        self.campaign_uses: dict[str, int] = {}  # campaign id -> events it rewarded
        self.badges: dict[str, datetime] = {}  # badge id -> when earned
        self._pending: list[PendingCredit] = []  # by release time
        # The latest `at` of any of its events: a snapshot is usable as of T when it is <= T.
        self.latest_at: datetime | None = None

    # ---- queries -------------------------------------------------------------------

    @property
    def balance(self) -> int:
        return self._held - self.debt

    @property
    def lots(self) -> tuple[Lot, ...]:
        return tuple(self._lots)

    @property
    def pending_points(self) -> int:
        return sum(credit.points for credit in self._pending)

    @property
    def pending(self) -> tuple[PendingCredit, ...]:
        return tuple(self._pending)

    def tier_name(self, program: Program) -> str:
        return self.tier or program.lowest_tier

    def qualifying_points_at(self, program: Program, at: datetime) -> int:
        return self._window.between(at - program.qualifying_window, at)

    # ---- commands ------------------------------------------------------------------

    def purchase(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._steps_0_to_2(program, at)
        if order_id in self.orders:
            self._trigger(
                Member.PurchaseRejected,
                dict(
                    event_id=event_id,
                    order_id=order_id,
                    amount=amount,
                    reason=DUPLICATE_ORDER,
                    at=at,
                ),
            )
            self._review(program, at)
            return Outcome(rejected=DUPLICATE_ORDER)
        tier = self.tier_name(program)
        multiplier = program.multiplier(tier)
        base = floor(amount * program.earn_rate)
        earned = self._rewarded(
            program,
            "purchase",
            amount * program.earn_rate * multiplier,
            program.campaigns_for("purchase", at, tier, amount),
        )
        held = program.pending_days > 0
        credited = 0 if held else earned.points
        first_purchase = not self.orders
        self._trigger(
            Member.PurchaseRecorded,
            dict(
                event_id=event_id,
                order_id=order_id,
                amount=amount,
                base_points=base,
                multiplier=multiplier,
                points=credited,
                earned=earned.points,
                pending=earned.points if held else 0,
                release_at=at + program.pending_period if held else None,
                campaigns=earned.by_campaign(),
                debt_repaid=min(self.debt, credited),
                balance=self.balance + credited,
                qualifying_points=self.qualifying_points_at(program, at) + base,
                at=at,
            ),
        )
        bonus_due = None
        if first_purchase and self.referral is not None and self._referral_open(program, at):
            bonus = program.referee_bonus
            self._trigger(
                Member.ReferralRewarded,
                dict(
                    event_id=event_id,
                    referrer_id=self.referral.referrer_id,
                    points=bonus,
                    debt_repaid=min(self.debt, bonus),
                    balance=self.balance + bonus,
                    at=at,
                ),
            )
            bonus_due = ReferrerBonusDue(self.referral.referrer_id, event_id, at)
        self._earn_badges(program, "purchase", event_id, at)
        self._review(program, at)
        return APPLIED if bonus_due is None else Outcome(referrer_bonus=bonus_due)

    def refund(
        self, program: Program, *, event_id: str, order_id: str, amount: Decimal, at: datetime
    ) -> Outcome:
        self._steps_0_to_2(program, at)
        order = self.orders.get(order_id)
        if order is None or order.refunded + amount > order.amount:
            reason = UNKNOWN_ORDER if order is None else REFUND_EXCEEDS_ORDER
            self._trigger(
                Member.RefundRejected,
                dict(event_id=event_id, order_id=order_id, amount=amount, reason=reason, at=at),
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
        # The order's points still held pending go first: a returned order never leaves debt
        # for points the member could not have spent.
        from_pending = min(clawback, self._pending_of(order_id))
        from_balance = clawback - from_pending
        consumed, shortfall = self._consume(from_balance)
        self._trigger(
            Member.RefundRecorded,
            dict(
                event_id=event_id,
                order_id=order_id,
                amount=amount,
                base_points_removed=base_removed,
                points=-from_balance,
                pending=-from_pending,
                consumed=consumed,
                debt_added=shortfall,
                balance=self.balance - from_balance,
                qualifying_points=self.qualifying_points_at(program, at)
                - (base_removed if in_window else 0),
                at=at,
            ),
        )
        self._review(program, at)
        return APPLIED

    def record_referral(
        self, program: Program, *, event_id: str, referrer_id: str, at: datetime
    ) -> Outcome:
        self._steps_0_to_2(program, at)
        reason = None
        if referrer_id == self.member_id:
            reason = SELF_REFERRAL
        elif self.referral is not None:
            reason = ALREADY_REFERRED
        elif self.orders:
            reason = REFEREE_HAS_PURCHASED
        if reason is None:
            self._trigger(
                Member.ReferralRecorded, dict(event_id=event_id, referrer_id=referrer_id, at=at)
            )
        else:
            self._trigger(
                Member.ReferralRejected,
                dict(event_id=event_id, referrer_id=referrer_id, reason=reason, at=at),
            )
        self._review(program, at)
        return Outcome(rejected=reason)

    def share(
        self, program: Program, *, event_id: str, network: str, url: str | None, at: datetime
    ) -> Outcome:
        """`network` is one of the program's networks: the caller validated it."""
        self._steps_0_to_2(program, at)
        day = utc_day(at)
        earned = NOTHING_REWARDED
        if self.shares_by_day.get(day, 0) < program.shares_per_day and program.share_points:
            earned = self._rewarded(
                program,
                "social_share",
                program.share_points,
                program.campaigns_for("social_share", at, self.tier_name(program)),
            )
        self._trigger(
            Member.SocialShareRecorded,
            dict(
                event_id=event_id,
                network=network,
                url=url,
                day=day,
                points=earned.points,
                campaigns=earned.by_campaign(),
                debt_repaid=min(self.debt, earned.points),
                balance=self.balance + earned.points,
                at=at,
            ),
        )
        self._earn_badges(program, "social_share", event_id, at)
        self._review(program, at)
        return APPLIED

    def redeem(
        self, program: Program, *, event_id: str, points: int, reward: str, at: datetime
    ) -> Outcome:
        self._steps_0_to_2(program, at)
        if self.balance < points:
            self._trigger(
                Member.RedemptionDeclined,
                dict(
                    event_id=event_id,
                    reward=reward,
                    requested=points,
                    balance=self.balance,
                    reason=INSUFFICIENT_BALANCE,
                    at=at,
                ),
            )
            self._review(program, at)
            return Outcome(rejected=INSUFFICIENT_BALANCE)
        consumed, _ = self._consume(points)
        self._trigger(
            Member.PointsRedeemed,
            dict(
                event_id=event_id,
                reward=reward,
                points=-points,
                consumed=consumed,
                balance=self.balance - points,
                at=at,
            ),
        )
        self._review(program, at)
        return APPLIED

    def enrol(
        self,
        program: Program,
        *,
        event_id: str,
        birth_date: date | None,
        channel: str | None,
        at: datetime,
    ) -> Outcome:
        """`birth_date` is a real date no later than `at`'s UTC date: the caller validated it."""
        self._steps_0_to_2(program, at)
        if self.enrolled_at is not None:
            self._trigger(
                Member.EnrolmentRejected, dict(event_id=event_id, reason=ALREADY_ENROLLED, at=at)
            )
            self._review(program, at)
            return Outcome(rejected=ALREADY_ENROLLED)
        earned = self._rewarded(
            program,
            "enrolment",
            program.welcome_bonus,
            program.campaigns_for("enrolment", at, self.tier_name(program)),
        )
        self._trigger(
            Member.Enrolled,
            dict(
                event_id=event_id,
                birth_date=None if birth_date is None else birth_date.isoformat(),
                channel=channel,
                points=earned.points,
                campaigns=earned.by_campaign(),
                debt_repaid=min(self.debt, earned.points),
                balance=self.balance + earned.points,
                at=at,
            ),
        )
        self._review(program, at)
        return APPLIED

    def review(
        self,
        program: Program,
        *,
        event_id: str,
        product_id: str,
        rating: int,
        order_id: str | None,
        at: datetime,
    ) -> Outcome:
        self._steps_0_to_2(program, at)
        day = utc_day(at)
        earned = NOTHING_REWARDED
        rewarded = (
            product_id not in self.reviewed_products
            and self.rewarded_reviews_by_day.get(day, 0) < program.rewarded_reviews_per_day
        )
        if rewarded and program.review_points:
            earned = self._rewarded(
                program,
                "review",
                program.review_points,
                program.campaigns_for("review", at, self.tier_name(program)),
            )
        self._trigger(
            Member.ReviewRecorded,
            dict(
                event_id=event_id,
                product_id=product_id,
                rating=rating,
                order_id=order_id,
                day=day,
                rewarded=rewarded,
                points=earned.points,
                campaigns=earned.by_campaign(),
                debt_repaid=min(self.debt, earned.points),
                balance=self.balance + earned.points,
                at=at,
            ),
        )
        self._earn_badges(program, "review", event_id, at)
        self._review(program, at)
        return APPLIED

    def earn_referrer_bonus(
        self, program: Program, *, event_id: str, referee_id: str, at: datetime
    ) -> Outcome:
        """The referrer's side of a rewarded referral; `event_id` is the referee's purchase."""
        self._steps_0_to_2(program, at)
        bonus = program.referrer_bonus
        self._trigger(
            Member.ReferrerBonusEarned,
            dict(
                event_id=event_id,
                referee_id=referee_id,
                points=bonus,
                debt_repaid=min(self.debt, bonus),
                balance=self.balance + bonus,
                at=at,
            ),
        )
        self._review(program, at)
        return APPLIED

    def sweep(self, program: Program, *, at: datetime) -> None:
        """Steps 0 to 2 only: birthday, releases, expiry and tier review as of `at`."""
        self._steps_0_to_2(program, at)

    # ---- decisions shared by the commands ----------------------------------------

    def _steps_0_to_2(self, program: Program, at: datetime) -> None:
        self._birthday(program, at)
        self._release(at)
        self._expire(program, at)
        self._review(program, at)

    def _birthday(self, program: Program, at: datetime) -> None:
        """Step 0: the most recent birthday at or before `at`, once, if it came after the
        enrolment (a member silent for years gets the latest one only)."""
        if self.birth_date is None or self.enrolled_at is None:
            return
        birthday = latest_birthday(self.birth_date, at)
        if birthday is None or birthday <= self.enrolled_at:
            return
        if self.last_birthday is not None and birthday <= self.last_birthday:
            return
        bonus = program.birthday_bonus
        self._trigger(
            Member.BirthdayRewarded,
            dict(
                birthday=birthday,
                points=bonus,
                debt_repaid=min(self.debt, bonus),
                balance=self.balance + bonus,
                at=birthday,
            ),
        )

    def _release(self, at: datetime) -> None:
        """Step 0, after the birthday: pending credits whose return window has closed
        reach the balance, oldest first, each a lot dated at its release time."""
        while self._pending and self._pending[0].release_at <= at:
            credit = self._pending[0]
            self._trigger(
                Member.PointsReleased,
                dict(
                    order_id=credit.order_id,
                    points=credit.points,
                    pending=-credit.points,
                    debt_repaid=min(self.debt, credit.points),
                    balance=self.balance + credit.points,
                    at=credit.release_at,
                ),
            )

    def _expire(self, program: Program, at: datetime) -> None:
        lifetime = program.lot_lifetime
        while self._lots and self._lots[0].date + lifetime <= at:
            lot = self._lots[0]
            self._trigger(
                Member.PointsExpired,
                dict(
                    lot_date=lot.date, points=-lot.points, balance=self.balance - lot.points, at=at
                ),
            )

    def _review(self, program: Program, at: datetime) -> None:
        qualifying = self.qualifying_points_at(program, at)
        tier = program.tier_for(qualifying).name
        current = self.tier_name(program)
        if tier != current:
            self._trigger(
                Member.TierChanged,
                dict(from_tier=current, to_tier=tier, qualifying_points=qualifying, at=at),
            )
        elif qualifying != self.qualifying_points:
            # Purchases left the window without moving the tier: the read side still
            # shows the member's qualifying points as of this review.
            self._trigger(Member.QualifyingPointsChanged, dict(qualifying_points=qualifying, at=at))

    def _rewarded(
        self, program: Program, kind: str, base: Decimal | int, campaigns: list[Campaign]
    ) -> Rewarded:
        """The event's points under the campaigns it matches, within their
        max_per_member (the event counts toward each of them)."""
        if campaigns:
            campaigns = [
                c
                for c in campaigns
                if c.max_per_member is None or self.campaign_uses.get(c.id, 0) < c.max_per_member
            ]
        return reward(base, campaigns)

    def _earn_badges(self, program: Program, kind: str, event_id: str, at: datetime) -> None:
        """Step 3, right after the event: each badge of its kind that the event's count
        reaches, once per member."""
        for badge in program.badges_for(kind):
            if badge.id in self.badges or self._count(kind, at, badge.window) < badge.count:
                continue
            self._trigger(
                Member.BadgeEarned,
                dict(
                    badge_id=badge.id,
                    event_id=event_id,
                    points=badge.bonus,
                    debt_repaid=min(self.debt, badge.bonus),
                    balance=self.balance + badge.bonus,
                    at=at,
                ),
            )

    def _count(self, kind: str, at: datetime, window: timedelta | None) -> int:
        """Recorded events of `kind` with occurred_at in (at - window, at], or ever."""
        if kind == "purchase":
            times: list[datetime] = [order.at for order in self.orders.values()]
            if window is None:
                return len(times)
            return sum(1 for t in times if at - window < t <= at)
        times = self.share_times if kind == "social_share" else self.review_times
        if window is None:
            return len(times)
        return bisect_right(times, at) - bisect_right(times, at - window)

    @staticmethod
    def _in_qualifying_window(program: Program, occurred: datetime, at: datetime) -> bool:
        return at - program.qualifying_window < occurred <= at

    def _referral_open(self, program: Program, at: datetime) -> bool:
        if self.referral is None or self.referral.settled:
            return False
        since = at - self.referral.at
        return timedelta(0) <= since <= program.referral_window

    def _pending_of(self, order_id: str) -> int:
        return sum(c.points for c in self._pending if c.order_id == order_id)

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
        lots = self._lots
        # Lots are by date, and a credit is mostly the newest: found in O(log n), not a scan
        # (a long member holds thousands of lots).
        i = bisect_left(lots, at, key=_lot_date)
        if i < len(lots) and lots[i].date == at:
            lots[i] = _lot((at, lots[i].points + remainder))
        else:
            lots.insert(i, _lot((at, remainder)))
        self._held += remainder

    def _take(self, consumed: Consumed) -> None:
        lots = self._lots
        for lot_date, taken in consumed:
            i = bisect_left(lots, lot_date, key=_lot_date)
            if i < len(lots) and lots[i].date == lot_date:
                held = lots[i].points
                left = held - taken
                if left > 0:
                    lots[i] = _lot((lot_date, left))
                else:
                    del lots[i]
                self._held -= held - max(left, 0)

    def _take_pending(self, order_id: str, points: int) -> None:
        for i, credit in enumerate(self._pending):
            if points <= 0:
                break
            if credit.order_id == order_id:
                taken = min(points, credit.points)
                self._pending[i] = PendingCredit(
                    credit.order_id, credit.release_at, credit.points - taken
                )
                points -= taken
        self._pending = [c for c in self._pending if c.points > 0]

    def _use_campaigns(self, campaigns: Mapping[str, int] | None) -> None:
        for campaign_id in campaigns or ():
            self.campaign_uses[campaign_id] = self.campaign_uses.get(campaign_id, 0) + 1

    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        """eventsourcing's, for events this aggregate declares and builds itself."""
        self._trigger(event_class, kwargs)

    def _trigger(self, event_class: type[CanMutateAggregate[UUID]], fields: dict[str, Any]) -> None:
        """`trigger_event(event_class, **fields)`: built by `build_event` and applied by
        their own `apply` (services/domain/triggering.py says why); the version moves only
        once `apply` returned, as in `mutate`. The commands pass `dict(...)`, not keywords:
        a Python function gathering a dozen keywords into `**kwargs` grows a dict key by
        key, twice the time of `dict`'s own (1.27 against 0.63 us for a purchase's 14)."""
        version = self._version + 1
        new_event = build_event(event_class, self._id, version, fields)
        new_event.apply(self)
        self._version = version
        self._modified_on = new_event.timestamp
        self._pending_events.append(new_event)

    def collect_events(self) -> list[CanMutateAggregate[UUID]]:
        """eventsourcing's, handing the pending list over whole where the library's pops
        it an event at a time (a batch collects thousands)."""
        collected, self._pending_events = self._pending_events, []
        return collected

    def _dated(self, at: datetime) -> None:
        if self.latest_at is None or at > self.latest_at:
            self.latest_at = at

    def _seen(self, at: datetime) -> None:
        if self.last_event_at is None or at > self.last_event_at:
            self.last_event_at = at

    class PurchaseRecorded(Aggregate.Event):
        event_id: str
        order_id: str
        amount: Decimal
        base_points: int
        multiplier: Decimal
        points: int
        debt_repaid: int
        balance: int
        qualifying_points: int
        at: datetime
        earned: int | None = None  # the order's points E for refunds; `points` before it
        pending: int = 0
        release_at: datetime | None = None
        campaigns: dict[str, int] | None = None

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.orders[self.order_id] = Order(
                self.at,
                self.amount,
                self.points if self.earned is None else self.earned,
                self.base_points,
            )
            member._window.add(self.at, self.base_points)
            member._credit(self.at, self.points, self.debt_repaid)
            if self.pending and self.release_at is not None:
                insort(
                    member._pending,
                    PendingCredit(self.order_id, self.release_at, self.pending),
                    key=_release_time,
                )
            member._use_campaigns(self.campaigns)
            member.qualifying_points = self.qualifying_points
            member._seen(self.at)

    class PurchaseRejected(Aggregate.Event):
        event_id: str
        order_id: str
        amount: Decimal
        reason: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._seen(self.at)

    class RefundRecorded(Aggregate.Event):
        event_id: str
        order_id: str
        amount: Decimal
        base_points_removed: int
        points: int
        consumed: Consumed
        debt_added: int
        balance: int
        qualifying_points: int
        at: datetime
        pending: int = 0

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            order = member.orders[self.order_id]
            order.refunded += self.amount
            order.base_removed += self.base_points_removed
            member._window.take(order.at, self.base_points_removed)
            member._take_pending(self.order_id, -self.pending)
            member._take(self.consumed)
            member.debt += self.debt_added
            member.lifetime_points += self.points
            member.qualifying_points = self.qualifying_points
            member._seen(self.at)

    class RefundRejected(Aggregate.Event):
        event_id: str
        order_id: str
        amount: Decimal
        reason: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._seen(self.at)

    class ReferralRecorded(Aggregate.Event):
        event_id: str
        referrer_id: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.referral = Referral(self.referrer_id, self.at)
            member._seen(self.at)

    class ReferralRejected(Aggregate.Event):
        event_id: str
        referrer_id: str
        reason: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._seen(self.at)

    class ReferralRewarded(Aggregate.Event):
        event_id: str
        referrer_id: str
        points: int
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            if member.referral is not None:
                member.referral.settled = True
            member._credit(self.at, self.points, self.debt_repaid)
            member._seen(self.at)

    class ReferrerBonusEarned(Aggregate.Event):
        event_id: str
        referee_id: str
        points: int
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._credit(self.at, self.points, self.debt_repaid)
            member._seen(self.at)

    class SocialShareRecorded(Aggregate.Event):
        event_id: str
        network: str
        url: str | None
        day: str
        points: int
        debt_repaid: int
        balance: int
        at: datetime
        campaigns: dict[str, int] | None = None

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.shares_by_day[self.day] = member.shares_by_day.get(self.day, 0) + 1
            insort(member.share_times, self.at)
            member._credit(self.at, self.points, self.debt_repaid)
            member._use_campaigns(self.campaigns)
            member._seen(self.at)

    class PointsRedeemed(Aggregate.Event):
        event_id: str
        reward: str
        points: int
        consumed: Consumed
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._take(self.consumed)
            member._seen(self.at)

    class RedemptionDeclined(Aggregate.Event):
        event_id: str
        reward: str
        requested: int
        balance: int
        reason: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._seen(self.at)

    class Enrolled(Aggregate.Event):
        event_id: str
        birth_date: str | None
        channel: str | None
        points: int
        campaigns: dict[str, int]
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.enrolled_at = self.at
            member.birth_date = (
                None if self.birth_date is None else date.fromisoformat(self.birth_date)
            )
            member._credit(self.at, self.points, self.debt_repaid)
            member._use_campaigns(self.campaigns)
            member._seen(self.at)

    class EnrolmentRejected(Aggregate.Event):
        event_id: str
        reason: str
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._seen(self.at)

    class ReviewRecorded(Aggregate.Event):
        event_id: str
        product_id: str
        rating: int
        order_id: str | None
        day: str
        rewarded: bool
        points: int
        campaigns: dict[str, int]
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.reviewed_products.add(self.product_id)
            if self.rewarded:
                member.rewarded_reviews_by_day[self.day] = (
                    member.rewarded_reviews_by_day.get(self.day, 0) + 1
                )
            insort(member.review_times, self.at)
            member._credit(self.at, self.points, self.debt_repaid)
            member._use_campaigns(self.campaigns)
            member._seen(self.at)

    class BirthdayRewarded(Aggregate.Event):
        birthday: datetime
        points: int
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.last_birthday = self.birthday
            member._credit(self.at, self.points, self.debt_repaid)

    class BadgeEarned(Aggregate.Event):
        badge_id: str
        event_id: str
        points: int
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.badges[self.badge_id] = self.at
            member._credit(self.at, self.points, self.debt_repaid)

    class PointsReleased(Aggregate.Event):
        order_id: str
        points: int
        pending: int
        debt_repaid: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._take_pending(self.order_id, -self.pending)
            member._credit(self.at, self.points, self.debt_repaid)

    class PointsExpired(Aggregate.Event):
        lot_date: datetime
        points: int
        balance: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member._take([[self.lot_date, -self.points]])

    class TierChanged(Aggregate.Event):
        from_tier: str
        to_tier: str
        qualifying_points: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.tier = self.to_tier
            member.qualifying_points = self.qualifying_points

    class QualifyingPointsChanged(Aggregate.Event):
        qualifying_points: int
        at: datetime

        def apply(self, member: Member) -> None:
            member._dated(self.at)
            member.qualifying_points = self.qualifying_points


# A batch asks for a new member's id twice (to read it, then to register it), at ~3 us a
# uuid5 in Python: a batch's members (at most 5,000, and their referrers) fit the cache,
# and a worker's RSS hardly notices it.
@lru_cache(maxsize=16_384)
def _member_uuid(member_id: str) -> UUID:
    return uuid5(MEMBER_NAMESPACE, member_id)


def _lot_date(lot: Lot) -> datetime:
    return lot.date


def _release_time(credit: PendingCredit) -> datetime:
    return credit.release_at
