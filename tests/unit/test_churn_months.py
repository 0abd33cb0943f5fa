"""Monthly churn by bisection agrees with the figures' definitions read literally (Hypothesis).

The reference functions below are the README's sentences as plain scans over every
purchase; `_month_by_month` is what `/metrics/churn` runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.metrics import Month, _month_by_month, months_before

AS_OF = datetime(2026, 7, 1, 12, tzinfo=UTC)
EARLIEST = datetime(2024, 1, 1, tzinfo=UTC)


def active_at(purchases: list[datetime], at: datetime, window: timedelta) -> bool:
    return any(at - window < p <= at for p in purchases)


def lapses_during(purchases: list[datetime], month: Month, window: timedelta) -> bool:
    last = max(p for p in purchases if p <= month.start)
    for p in purchases:
        if month.start < p < month.end:
            if p - last > window:
                return True
            last = p
    return last + window < month.end


def returns_during(purchases: list[datetime], month: Month, window: timedelta) -> bool:
    return any(month.start <= q < month.end and q - p > window for p, q in pairwise(purchases))


def by_definition(
    purchases: list[datetime], months: list[Month], active: timedelta, churn: timedelta
) -> list[tuple[int, int, int]]:
    moves = []
    for month in months:
        was_active = active_at(purchases, month.start, active)
        lapsed = was_active and lapses_during(purchases, month, active)
        moves.append((int(was_active), int(lapsed), int(returns_during(purchases, month, churn))))
    return moves


# Instants to the second, bunched on month starts and window edges often enough to matter.
instants = st.one_of(
    st.integers(0, int((AS_OF - EARLIEST).total_seconds())).map(
        lambda s: EARLIEST + timedelta(seconds=s)
    ),
    st.sampled_from(
        [m.start for m in months_before(AS_OF, 30)]
        + [m.start - timedelta(days=d) for m in months_before(AS_OF, 30) for d in (30, 90)]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    purchases=st.lists(instants, min_size=1, max_size=12).map(sorted),
    months=st.integers(1, 24),
    active_days=st.integers(1, 120),
    extra_days=st.integers(0, 200),
)
def test_bisection_counts_what_the_definitions_count(
    purchases: list[datetime], months: int, active_days: int, extra_days: int
) -> None:
    calendar = months_before(AS_OF, months)
    active = timedelta(days=active_days)
    churn = timedelta(days=active_days + extra_days)
    assert _month_by_month(purchases, calendar, active, churn) == by_definition(
        purchases, calendar, active, churn
    )


def test_a_purchase_on_a_month_start_is_active_at_it_and_a_return_in_it() -> None:
    # Given a purchase exactly at June's start, the one before it 100 days earlier
    june = next(m for m in months_before(AS_OF, 2) if m.label == "2026-06")
    purchases = [june.start - timedelta(days=100), june.start]
    # When June is counted with a 20-day active window and a 90-day churn window
    (moves,) = _month_by_month(purchases, [june], timedelta(days=20), timedelta(days=90))
    # Then the member is active at June's start (p <= start), lapses 20 days later, and
    # the June purchase is a return (q >= start, over 90 days after the previous one)
    assert moves == (1, 1, 1)
    # And with a 30-day window it lapses at the end of June 30: not before July starts
    (moves,) = _month_by_month(purchases, [june], timedelta(days=30), timedelta(days=90))
    assert moves == (1, 0, 1)
