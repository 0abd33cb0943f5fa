"""A batch is applied in occurred_at order across partitions, never reordering one."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.commands import SocialShare
from services.ingest.messages import Decoded, InputMessage
from services.ingest.service import interleave

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item(topic: str, partition: int, offset: int, hours: int) -> Decoded:
    command = SocialShare(
        f"{topic}{partition}@{offset}", "m", "x", None, T0 + timedelta(hours=hours)
    )
    return Decoded(InputMessage(topic, partition, offset, b"m", b"{}"), command)


def test_a_redemption_on_another_topic_waits_for_the_earlier_purchase() -> None:
    purchase = item("purchases", 0, 0, hours=1)
    redemption = item("redemptions", 0, 0, hours=2)
    assert interleave([redemption, purchase]) == [purchase, redemption]


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 2), st.integers(0, 100))))
def test_each_partition_keeps_its_order_and_nothing_is_lost(
    rows: list[tuple[str, int, int]],
) -> None:
    batch = [
        item(topic, partition, offset, hours)
        for offset, (topic, partition, hours) in enumerate(rows)
    ]
    merged = interleave(batch)
    assert sorted(merged, key=lambda d: d.message.offset) == batch
    for key in {(d.message.topic, d.message.partition) for d in batch}:
        own = [d for d in merged if (d.message.topic, d.message.partition) == key]
        assert own == [d for d in batch if (d.message.topic, d.message.partition) == key]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 2), st.integers(0, 30))))
def test_runs_already_in_time_order_merge_as_a_heap_merges_them(
    rows: list[tuple[str, int, int]],
) -> None:
    """The sorted fast path, and the merge when a run is out of time order, both give the
    merge of the partitions' runs (ties to the run seen first)."""
    batch = [
        item(topic, partition, offset, hours)
        for offset, (topic, partition, hours) in enumerate(rows)
    ]
    runs: dict[tuple[str, int], list[Decoded]] = {}
    for d in batch:
        runs.setdefault((d.message.topic, d.message.partition), []).append(d)
    expected = list(heapq.merge(*runs.values(), key=lambda d: d.command.at))
    assert interleave(batch) == expected
    in_order = sorted(batch, key=lambda d: d.command.at)  # every run in time order
    runs.clear()
    for d in in_order:
        runs.setdefault((d.message.topic, d.message.partition), []).append(d)
    assert interleave(in_order) == list(heapq.merge(*runs.values(), key=lambda d: d.command.at))
