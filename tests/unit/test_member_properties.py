"""Invariants of the member aggregate over random histories (Hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.application import Application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.domain import member_snapshot
from services.domain.member import Member, latest_birthday
from services.program import Badge, Campaign, Program
from services.program_file import load_program
from tests.unit.reference_model import Model

PROGRAM = load_program(None)
START = datetime(2025, 1, 1, tzinfo=UTC)
MEMBERS = ("ann", "bob", "cy")


def _campaign(id: str, kind: str, start: int, end: int, **fields: Any) -> Campaign:
    """A campaign from month `start` of 2025 to month `end` (13 and on: into 2026)."""
    return Campaign(
        id=id,
        starts=datetime(2025, start, 1, tzinfo=UTC),
        ends=datetime(2025 + (end - 1) // 12, (end - 1) % 12 + 1, 1, tzinfo=UTC),
        applies_to=kind,
        **fields,
    )


# Every rule of enrolment, reviews, campaigns, badges and pending points in play: a
# return window, campaigns of each kind (one for silver and gold only, capped ones,
# overlapping ones), badges of each kind.
RICH = replace(
    PROGRAM,
    pending_days=7,
    campaigns=(
        _campaign("double", "purchase", 1, 4, multiplier=Decimal(2)),
        _campaign("big", "purchase", 2, 14, bonus=30, min_amount=Decimal("500"), max_per_member=2),
        _campaign(
            "upper",
            "purchase",
            3,
            9,
            multiplier=Decimal("1.5"),
            bonus=7,
            tiers=frozenset({"silver", "gold"}),
        ),
        _campaign("shares", "social_share", 1, 14, bonus=3, max_per_member=5),
        _campaign("reviews", "review", 1, 14, multiplier=Decimal("1.5")),
        _campaign("welcome", "enrolment", 1, 7, multiplier=Decimal(2)),
    ),
    badges=(
        Badge("regular", "purchase", count=3, within_days=30, bonus=100),
        Badge("sharer", "social_share", count=4, bonus=20),
        Badge("critic", "review", count=2, within_days=10, bonus=15),
    ),
)
PROGRAMS = st.sampled_from((PROGRAM, RICH))
BIRTH_DATES = (None, date(1990, 1, 3), date(2000, 2, 29), date(1985, 7, 30))

amounts = st.integers(min_value=1, max_value=300_000).map(lambda cents: Decimal(cents) / 100)
# Whole-hour and whole-day steps land events exactly on the rules' edges (365 days of a
# lot or a window, 90 days of a referral, the fourth share of a day, a badge's 10 or 30 days,
# a 7-day return window) often enough to matter.
steps = st.one_of(
    st.sampled_from((0, 1, 2, 23, 24, 7 * 24, 10 * 24, 30 * 24, 90 * 24, 91 * 24, 365 * 24)),
    st.integers(min_value=1, max_value=200 * 24),
).map(lambda hours: timedelta(hours=hours))
member = st.sampled_from(MEMBERS)
order = st.sampled_from(("o1", "o2", "o3", "o4", "o5", "o6"))
inputs = st.one_of(
    st.tuples(st.just("purchase"), member, order, amounts),
    st.tuples(st.just("refund"), member, order, amounts),
    st.tuples(st.just("referral"), member, member),
    st.tuples(st.just("share"), member, st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("redeem"), member, st.integers(min_value=1, max_value=3000)),
    st.tuples(st.just("enrol"), member, st.sampled_from(BIRTH_DATES)),
    st.tuples(st.just("review"), member, st.sampled_from(("p1", "p2", "p3", "p4"))),
    st.tuples(st.just("sweep")),
)
histories = st.lists(st.tuples(steps, inputs), min_size=1, max_size=60)


def replay(
    history: list[tuple[timedelta, tuple[Any, ...]]], program: Program = PROGRAM
) -> tuple[dict[str, Member], Model, datetime]:
    members: dict[str, Member] = {}
    model = Model(program)
    PROGRAM = program
    t = START

    def get(member_id: str) -> Member:
        return members.setdefault(member_id, Member.register(member_id))

    for n, (step, (kind, *args)) in enumerate(history):
        t += step
        event_id = f"e{n}"
        if kind == "purchase":
            who, order_id, amount = args
            outcome = get(who).purchase(
                PROGRAM, event_id=event_id, order_id=order_id, amount=amount, at=t
            )
            if outcome.referrer_bonus is not None:
                due = outcome.referrer_bonus
                get(due.referrer_id).earn_referrer_bonus(
                    PROGRAM, event_id=due.event_id, referee_id=who, at=due.at
                )
            model.purchase(who, order_id, amount, t)
        elif kind == "refund":
            who, order_id, amount = args
            get(who).refund(PROGRAM, event_id=event_id, order_id=order_id, amount=amount, at=t)
            model.refund(who, order_id, amount, t)
        elif kind == "referral":
            referee, referrer = args
            get(referee).record_referral(PROGRAM, event_id=event_id, referrer_id=referrer, at=t)
            model.referral(referee, referrer, t)
        elif kind == "share":
            who, burst = args
            for i in range(burst):
                get(who).share(PROGRAM, event_id=f"{event_id}.{i}", network="x", url=None, at=t)
                model.share(who, t)
        elif kind == "redeem":
            who, points = args
            get(who).redeem(PROGRAM, event_id=event_id, points=points, reward="mug", at=t)
            model.redeem(who, points, t)
        elif kind == "enrol":
            who, birth = args
            get(who).enrol(PROGRAM, event_id=event_id, birth_date=birth, channel=None, at=t)
            model.enrol(who, birth, t)
        elif kind == "review":
            who, product = args
            get(who).review(
                PROGRAM, event_id=event_id, product_id=product, rating=4, order_id=None, at=t
            )
            model.review(who, product, t)
        else:
            for m in members.values():
                m.sweep(PROGRAM, at=t)
            model.sweep(t)
    return members, model, t


def lots_by_date(lots: Any) -> list[tuple[datetime, int]]:
    merged: dict[datetime, int] = {}
    for lot_date, points in lots:
        merged[lot_date] = merged.get(lot_date, 0) + int(points)
    return sorted(merged.items())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, PROGRAMS)
def test_the_aggregate_agrees_with_the_reference_model(
    history: list[Any], program: Program
) -> None:
    members, model, t = replay(history, program)
    for member_id, m in members.items():
        expected = model.m(member_id)
        assert m.balance == expected.balance, member_id
        assert m.tier_name(program) == expected.tier, member_id
        assert m.lifetime_points == expected.lifetime, member_id
        assert m.qualifying_points == expected.reviewed_qp, member_id
        assert m.qualifying_points_at(program, t) == expected.qp(t), member_id
        assert m.debt == expected.debt, member_id
        assert m.pending_points == expected.pending_points, member_id
        assert set(m.badges) == expected.badges, member_id
        assert m.enrolled_at == expected.enrolled_at, member_id
        assert m.campaign_uses == {k: v for k, v in expected.uses.items() if v}, member_id
        assert [(lot.date, lot.points) for lot in m.lots] == lots_by_date(expected.lots)


@settings(max_examples=200, deadline=None)
@given(histories, PROGRAMS)
def test_the_balance_is_the_sum_of_the_ledger_and_of_open_lots_minus_debt(
    history: list[Any], program: Program
) -> None:
    members, _, _ = replay(history, program)
    for m in members.values():
        ledger = [e for e in m.collect_events() if hasattr(e, "balance") and hasattr(e, "points")]
        assert m.balance == sum(entry.points for entry in ledger)
        assert m.balance == sum(lot.points for lot in m.lots) - m.debt
        assert all(lot.points > 0 for lot in m.lots)
        assert [lot.date for lot in m.lots] == sorted({lot.date for lot in m.lots})
        assert m.debt >= 0 and (m.debt == 0 or not m.lots)
        running = 0
        for entry in ledger:
            running += entry.points
            assert entry.balance == running


@settings(max_examples=100, deadline=None)
@given(histories, PROGRAMS)
def test_an_aggregate_rebuilt_from_its_stored_events_equals_the_live_one(
    history: list[Any], program: Program
) -> None:
    members, _, t = replay(history, program)
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(*members.values())
    for live in members.values():
        rebuilt = app.repository.get(live.id)
        assert rebuilt.member_id == live.member_id
        assert rebuilt.balance == live.balance
        assert rebuilt.tier == live.tier
        assert rebuilt.qualifying_points == live.qualifying_points
        assert rebuilt.lifetime_points == live.lifetime_points
        assert rebuilt.last_event_at == live.last_event_at
        assert rebuilt.lots == live.lots
        assert rebuilt.debt == live.debt
        assert rebuilt.orders == live.orders
        assert rebuilt.referral == live.referral
        assert rebuilt.shares_by_day == live.shares_by_day
        assert rebuilt.pending == live.pending
        assert rebuilt.badges == live.badges
        assert rebuilt.campaign_uses == live.campaign_uses
        assert (rebuilt.enrolled_at, rebuilt.birth_date) == (live.enrolled_at, live.birth_date)
        assert rebuilt.reviewed_products == live.reviewed_products
        assert rebuilt.qualifying_points_at(PROGRAM, t) == live.qualifying_points_at(PROGRAM, t)


@settings(max_examples=100, deadline=None)
@given(histories, PROGRAMS)
def test_a_snapshot_restores_the_member_it_was_taken_of(
    history: list[Any], program: Program
) -> None:
    members, _, t = replay(history, program)
    for live in members.values():
        live.collect_events()
        restored = member_snapshot.decode(member_snapshot.encode(live))
        assert restored is not None
        assert vars(restored) == vars(live)
        # and it goes on deciding exactly as the live one does (the events' wall-clock
        # timestamps aside)
        for m in (live, restored):
            m.sweep(program, at=t + timedelta(days=400))
        decided = [
            [
                (type(e).__name__, e.originator_version, getattr(e, "points", None))
                for e in m.collect_events()
            ]
            for m in (live, restored)
        ]
        assert decided[0] == decided[1]
        assert {**vars(restored), "_modified_on": None} == {**vars(live), "_modified_on": None}


def test_a_snapshot_of_another_format_is_ignored() -> None:
    member = Member.register("ann")
    data = member_snapshot.encode(member).replace(b'"format":1', b'"format":0')
    assert member_snapshot.decode(data) is None


def _birthday_by_scan(birth_date: date, at: datetime) -> datetime | None:
    """Every year back from `at`'s to the birth year, by the rule's words."""
    for year in range(at.year, max(birth_date.year, 1) - 1, -1):
        try:
            day = birth_date.replace(year=year)
        except ValueError:  # 29 February in a year without one
            day = date(year, 2, 28)
        instant = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if instant <= at:
            return instant
    return None


@given(
    st.dates(),
    st.datetimes(timezones=st.just(UTC)),
)
def test_the_latest_birthday_is_the_last_one_at_or_before_the_instant(
    birth_date: date, at: datetime
) -> None:
    # Asked twice: the second answer comes from the cache of birthdays by year.
    assert latest_birthday(birth_date, at) == _birthday_by_scan(birth_date, at)
    assert latest_birthday(birth_date, at) == _birthday_by_scan(birth_date, at)
