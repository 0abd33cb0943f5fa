"""A loyalty program: the numbers the rules use, its campaigns and its badges.

Programs are data, read from a TOML file an operator edits (services/program_file.py);
this module holds what the rules ask of them. docs/PROGRAM.md documents every key.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from itertools import pairwise
from types import MappingProxyType
from typing import NamedTuple

from services.errors import OperatorError
from services.named_tuples import maker


class ProgramError(OperatorError):
    """A program file that cannot be used; the message names the file and the bad key."""


@dataclass(frozen=True)
class Tier:
    name: str
    min_qualifying_points: int
    multiplier: Decimal


# What a campaign may apply to: the kinds of rewarded event it can multiply or add to.
CAMPAIGN_KINDS = ("purchase", "social_share", "review", "enrolment")
BADGE_KINDS = ("purchase", "social_share", "review")


@dataclass(frozen=True)
class Campaign:
    """A time-limited offer: [starts, ends), on one kind of rewarded event."""

    id: str
    starts: datetime
    ends: datetime
    applies_to: str
    multiplier: Decimal = Decimal(1)
    bonus: int = 0
    tiers: frozenset[str] | None = None  # the member's tier after step 2; None: any
    min_amount: Decimal | None = None  # purchases only
    max_per_member: int | None = None  # events rewarded per member; None: no limit

    def matches(self, kind: str, at: datetime, tier: str, amount: Decimal | None) -> bool:
        """Every condition but `max_per_member`, which is the member's to count."""
        return (
            self.applies_to == kind
            and self.starts <= at < self.ends
            and (self.tiers is None or tier in self.tiers)
            and (self.min_amount is None or (amount is not None and amount >= self.min_amount))
        )


@dataclass(frozen=True)
class Badge:
    """Earned once, when a member has `count` recorded events of `kind` within the window."""

    id: str
    kind: str
    count: int
    within_days: int | None = None  # None: all time
    bonus: int = 0

    @cached_property
    def window(self) -> timedelta | None:
        return None if self.within_days is None else timedelta(days=self.within_days)


NO_CAMPAIGN: Mapping[str, int] = MappingProxyType({})


class Rewarded(NamedTuple):
    """What the matching campaigns make of an event's base points (a tuple: one is made
    per rewarded event, in a third of a frozen dataclass's time)."""

    points: int
    # campaign id -> the points it added, for every campaign that applied (0 included): the
    # multiplier's extra goes to the campaign with the highest multiplier (the first in
    # the program on a tie), each bonus to its own campaign.
    campaigns: Mapping[str, int] = NO_CAMPAIGN

    def by_campaign(self) -> dict[str, int]:
        """`campaigns` as an event stores it: a dict of its own (`dict()` of the shared
        empty proxy took 0.43 us, most events' case)."""
        return dict(self.campaigns) if self.campaigns else {}


@dataclass(frozen=True)
class Program:
    currency: str
    earn_rate: Decimal
    tiers: tuple[Tier, ...]
    lot_lifetime_days: int
    qualifying_window_days: int
    referral_window_days: int
    referee_bonus: int
    referrer_bonus: int
    share_points: int
    shares_per_day: int
    networks: frozenset[str]
    active_days: int
    at_risk_days: int
    point_value: Decimal
    max_clock_skew_minutes: int = 60
    pending_days: int = 0
    welcome_bonus: int = 100
    birthday_bonus: int = 200
    review_points: int = 25
    rewarded_reviews_per_day: int = 2
    campaigns: tuple[Campaign, ...] = ()
    badges: tuple[Badge, ...] = ()

    def tier_for(self, qualifying_points: int) -> Tier:
        """The last tier whose minimum the points reach (the first if none does)."""
        steps = self._tier_steps
        if steps is not None:
            return self.tiers[max(bisect_right(steps, qualifying_points) - 1, 0)]
        chosen = self.tiers[0]
        for tier in self.tiers:
            if qualifying_points >= tier.min_qualifying_points:
                chosen = tier
        return chosen

    def tier_named(self, name: str) -> Tier:
        return self._tiers_by_name[name]

    def multiplier(self, tier_name: str) -> Decimal:
        return self.tier_named(tier_name).multiplier

    @cached_property
    def lowest_tier(self) -> str:
        return self.tiers[0].name

    # Every decision asks for tiers at least twice (docs/RULES.md, steps 2 and 4): found
    # by bisection and by name rather than by a loop over the tiers.
    @cached_property
    def _tier_steps(self) -> list[int] | None:
        """The tiers' minimums when they rise (as a program file requires), else None."""
        steps = [tier.min_qualifying_points for tier in self.tiers]
        return steps if all(a < b for a, b in pairwise(steps)) else None

    @cached_property
    def _tiers_by_name(self) -> dict[str, Tier]:
        by_name: dict[str, Tier] = {}
        for tier in self.tiers:
            by_name.setdefault(tier.name, tier)  # the first of a name, as the loop found it
        return by_name

    def campaigns_for(
        self, kind: str, at: datetime, tier: str, amount: Decimal | None = None
    ) -> list[Campaign]:
        """The campaigns whose time, kind, tier and amount conditions an event meets."""
        if not self.campaigns:
            return []
        return [c for c in self.campaigns if c.matches(kind, at, tier, amount)]

    def badges_for(self, kind: str) -> tuple[Badge, ...]:
        return self._badges_by_kind.get(kind, ())

    # The rules ask for these on every event: built once.
    @cached_property
    def _badges_by_kind(self) -> dict[str, tuple[Badge, ...]]:
        return {
            kind: tuple(b for b in self.badges if b.kind == kind)
            for kind in BADGE_KINDS
            if any(b.kind == kind for b in self.badges)
        }

    @cached_property
    def lot_lifetime(self) -> timedelta:
        return timedelta(days=self.lot_lifetime_days)

    @cached_property
    def qualifying_window(self) -> timedelta:
        return timedelta(days=self.qualifying_window_days)

    @cached_property
    def referral_window(self) -> timedelta:
        return timedelta(days=self.referral_window_days)

    @cached_property
    def max_clock_skew(self) -> timedelta:
        return timedelta(minutes=self.max_clock_skew_minutes)

    @cached_property
    def pending_period(self) -> timedelta:
        return timedelta(days=self.pending_days)


_rewarded = maker(Rewarded)


def reward(base: Decimal | int, campaigns: list[Campaign]) -> Rewarded:
    """floor(base x the highest campaign multiplier) + every campaign's bonus (section 7)."""
    plain = int(base // 1)
    if not campaigns:
        return _rewarded((plain, NO_CAMPAIGN))
    top = max(campaigns, key=lambda c: c.multiplier)  # the first of equals: max keeps it
    multiplied = int((base * top.multiplier) // 1)
    added = {c.id: c.bonus for c in campaigns}
    added[top.id] += multiplied - plain
    return _rewarded((multiplied + sum(c.bonus for c in campaigns), added))
