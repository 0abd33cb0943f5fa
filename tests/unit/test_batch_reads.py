"""A batch reads the members it needs from the store in one query per kind, whatever
their number: its own members, and the referrers its purchases may owe a bonus to."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from services.bootstrap import Context, build
from services.config import Settings, Topics
from services.domain.member import Member
from services.ingest.messages import InputMessage
from services.inputs import REGISTRY

TOPICS = Topics()


def message(offset: int, body: dict[str, object]) -> InputMessage:
    at = datetime(2026, 1, 1, 10, tzinfo=UTC).replace(hour=10 + offset % 10)
    event = {"event_id": f"e{offset}", "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), **body}
    topic = REGISTRY.topic_of(TOPICS, str(event["type"]))
    assert topic is not None
    key = str(event.get("member_id", event.get("referee_id")))
    return InputMessage(topic, 0, offset, key.encode(), orjson.dumps(event))


def purchase(offset: int, member_id: str) -> InputMessage:
    body = {"type": "purchase", "member_id": member_id, "order_id": f"o{offset}"}
    return message(offset, {**body, "amount": "20.00", "currency": "EUR"})


@pytest.fixture
def context() -> Iterator[Context]:
    with tempfile.TemporaryDirectory() as folder:
        yield build(Settings(database_url=f"sqlite:///{folder}/s.sqlite3", daily_sweep=False))


def test_the_referrers_a_batch_credits_are_read_with_the_batch_not_one_by_one(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    referrers = [f"ann{i}" for i in range(5)]
    first = [purchase(i, r) for i, r in enumerate(referrers)]
    first += [
        message(10 + i, {"type": "referral", "referee_id": f"bob{i}", "referrer_id": r})
        for i, r in enumerate(referrers)
    ]
    context.ingest_service().commit(*context.ingest_service().decode(first))

    # A worker started afresh: nothing cached. Each referee's first purchase is due a
    # bonus for its referrer, a member the batch does not otherwise touch.
    service = context.ingest_service()
    single_reads: list[str] = []
    read_one = context.ledger.member

    def reading_one(member_id: str) -> Member | None:
        single_reads.append(member_id)
        return read_one(member_id)

    monkeypatch.setattr(context.ledger, "member", reading_one)
    second = [purchase(20 + i, f"bob{i}") for i in range(len(referrers))]
    service.commit(*service.decode(second))

    assert single_reads == []
    for referrer in referrers:
        member = context.ledger.member(referrer)
        assert member is not None
        assert member.balance == 20 + context.program.referrer_bonus


def test_a_batch_skips_what_the_store_took_in_and_takes_a_restarted_partition_anew(
    context: Context,
) -> None:
    # Given offsets 0-2 of a partition taken in
    service = context.ingest_service()
    service.commit(*service.decode([purchase(i, "ann") for i in range(3)]))
    # When a batch holds two of them again, one after them, and a restart of the
    # partition (its next incarnation) at offsets the first one already had
    again = [purchase(1, "ann"), purchase(2, "ann"), purchase(3, "ann")]
    restarted = [purchase(10 + i, "bob")._replace(offset=i, incarnation=1) for i in range(2)]
    report = service.commit(*service.decode(again + restarted))
    # Then the two already stored are skipped, and the other three are applied
    assert report.skipped == 2
    assert sum(report.outcomes.values()) == 3
