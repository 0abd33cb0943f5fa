"""The order window sums what a scan of every order sums, whatever the order of changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.window import OrderWindow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
instants = st.integers(0, 40).map(lambda d: T0 + timedelta(days=d))
changes = st.lists(
    st.tuples(st.sampled_from(["add", "take", "ask"]), instants, instants, st.integers(0, 500)),
    max_size=60,
)


@given(changes)
def test_every_window_sums_what_a_scan_sums(
    steps: list[tuple[str, datetime, datetime, int]],
) -> None:
    window = OrderWindow()
    orders: list[list[object]] = []  # [at, points], as the member's orders hold them
    for kind, at, other, points in steps:
        if kind == "add":
            window.add(at, points)
            orders.append([at, points])
        elif kind == "take" and orders:
            order = orders[points % len(orders)]
            taken = points // 3
            window.take(order[0], taken)  # type: ignore[arg-type]
            order[1] -= taken  # type: ignore[operator]
        since, until = min(at, other), max(at, other)
        scanned = sum(p for t, p in orders if since < t <= until)  # type: ignore[operator,misc]
        assert window.between(since, until) == scanned
        assert window.between(until, since) == 0


def test_a_refund_of_an_order_never_added_is_refused() -> None:
    window = OrderWindow()
    window.add(T0, 10)
    with pytest.raises(KeyError):
        window.take(T0 + timedelta(seconds=1), 5)


def test_windows_are_equal_when_every_instant_holds_the_same_points() -> None:
    live, restored = OrderWindow(), OrderWindow()
    live.add(T0, 10)
    live.add(T0, 20)
    live.take(T0, 5)  # from the first entry of that instant
    restored.add(T0, 10)
    restored.add(T0, 15)  # the second order, as a snapshot restores it
    assert live == restored
    restored.take(T0, 1)
    assert live != restored
