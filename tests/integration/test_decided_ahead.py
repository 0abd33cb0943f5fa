"""A batch decided while the one before it is being written: same result, or decided again.

The ingest loop writes batch N while it decides batch N+1 on the members as N left them
in memory (`IngestService.prepare` / `write`). These check the two things that makes
safe, on both stores: ahead-of-time decisions equal one-at-a-time ones, and a failed
write of N puts N+1's decisions in doubt (the cache's epoch moves) so they are never
written.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from eventsourcing.persistence import IntegrityError

from services.bootstrap import build
from services.config import Settings
from services.domain.member import Member
from services.ingest.messages import InputMessage
from services.ingest.pipeline import WritePath
from services.store.checkpoint import MessageOutcome
from tests.conftest import new_database
from tests.integration.harness import ingest_service

pytestmark = pytest.mark.integration

TOPIC = Settings().topics.purchases


def purchase(offset: int, event_id: str, member_id: str, order_id: str, day: int) -> InputMessage:
    fields = dict(
        event_id=event_id,
        type="purchase",
        occurred_at=f"2026-01-{day:02d}T00:00:00Z",
        member_id=member_id,
        order_id=order_id,
        amount="100",
        currency="EUR",
    )
    return InputMessage(TOPIC, 0, offset, member_id.encode(), orjson.dumps(fields))


def batches() -> list[list[InputMessage]]:
    members = ["ann", "bob", "cy"]
    messages = [purchase(i, f"e{i}", members[i % 3], f"o{i}", 1 + i // 3) for i in range(0, 18)]
    # An upstream retry of e4 lands two batches later, at its own offset.
    messages.insert(9, purchase(9, "e4", "bob", "o4", 2))
    for offset, message in enumerate(messages):
        messages[offset] = message._replace(offset=offset)
    return [messages[i : i + 4] for i in range(0, len(messages), 4)]


def second_store(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path')}/other.sqlite3"
    return new_database(request.getfixturevalue("services"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_batches_decided_ahead_store_what_one_at_a_time_stores(
    backend: str, request: pytest.FixtureRequest
) -> None:
    ahead_url, one_at_a_time_url = (
        request.getfixturevalue(f"{backend}_url"),
        second_store(backend, request),
    )
    ahead, one_at_a_time = ingest_service(ahead_url), ingest_service(one_at_a_time_url)

    for batch in batches():
        one_at_a_time.commit(*one_at_a_time.decode(batch))
    counts: dict[MessageOutcome, int] = {}
    writing = None
    # As a partition assignment does: the first batch is decided on what the store holds,
    # which puts nothing in doubt, so it is written as decided.
    ahead.members.invalidate()
    for batch in batches():
        in_flight = writing.event_ids if writing is not None else set()
        prepared = ahead.prepare(*ahead.decode(batch), in_flight)
        if writing is not None:
            for outcome, n in ahead.write(writing).outcomes.items():
                counts[outcome] = counts.get(outcome, 0) + n
        assert prepared.epoch == ahead.members.epoch
        writing = prepared
    assert writing is not None
    for outcome, n in ahead.write(writing).outcomes.items():
        counts[outcome] = counts.get(outcome, 0) + n

    assert counts == {MessageOutcome.APPLIED: 18, MessageOutcome.DUPLICATE: 1}
    for member_id in ("ann", "bob", "cy"):
        want = state(one_at_a_time_url, member_id)
        assert want[0] > 0
        assert state(ahead_url, member_id) == want


def state(url: str, member_id: str) -> tuple[int, str | None, int, int]:
    """What the store holds, read by a ledger of its own: not a worker's cache."""
    member = build(Settings(database_url=url)).ledger.member(member_id)
    assert member is not None
    return member.balance, member.tier, member.lifetime_points, member.version


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_failed_write_puts_the_batch_decided_on_top_of_it_in_doubt(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    ours, other = ingest_service(url), ingest_service(url)
    first = [purchase(0, "a1", "ann", "o1", 1)]
    second = [purchase(1, "a2", "ann", "o2", 2)]

    # Given ann is cached, and batch N is decided, and N+1 decided on top of it
    ours.commit(*ours.decode([purchase(0, "a0", "ann", "o0", 1)._replace(partition=1)]))
    batch_n = ours.prepare(*ours.decode(first))
    batch_n1 = ours.prepare(*ours.decode(second), batch_n.event_ids)
    # When another worker writes ann meanwhile, and N's write fails on it
    other.commit(*other.decode([purchase(0, "z1", "ann", "oz", 1)._replace(partition=2)]))
    with pytest.raises(IntegrityError):
        ours.write(batch_n)

    # Then N+1's decisions are no longer trusted, and deciding both again is exact
    assert batch_n1.epoch != ours.members.epoch
    ours.commit(*ours.decode(first))
    ours.commit(*ours.decode(second))
    assert state(url, "ann")[0] == 400


def recorded_order(url: str, member_id: str) -> list[tuple[int, str]]:
    """(version, event_id) of the member's recorded purchases, in store order."""
    ledger = build(Settings(database_url=url)).ledger
    stored = ledger.store.select_members_events([Member.create_id(member_id)])
    events = [ledger.mapper.to_domain_event(s) for s in stored]
    return [
        (e.originator_version, e.event_id) for e in events if type(e).__name__ == "PurchaseRecorded"
    ]  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_batch_whose_write_failed_first_is_stored_before_the_one_decided_after_it(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    ours, other = ingest_service(url), ingest_service(url)
    stored: list[InputMessage] = []

    async def no_dead_letters(letters: object) -> None:
        pass

    path = WritePath(ours, no_dead_letters, stored.extend)
    # Given ann is cached by our worker
    await path.take([purchase(0, "a0", "ann", "o0", 1)._replace(partition=1)])
    await path.flush()
    # and another worker writes ann meanwhile, so that our batch N will be refused
    other.commit(*other.decode([purchase(0, "z1", "ann", "oz", 1)._replace(partition=2)]))
    batch_n = [purchase(0, "a1", "ann", "o1", 2)]
    batch_n1 = [purchase(1, "a2", "ann", "o2", 3)]

    # When N's write has failed before N+1 is decided (N+1 decided on the store without N)
    await path.take(batch_n)
    while path._writing is not None and not path._writing.task.done():  # type: ignore[union-attr]
        await asyncio.sleep(0.01)
    await path.take(batch_n1)
    await path.flush()

    # Then N is stored before N+1, each once, versions without a gap
    order = recorded_order(url, "ann")
    assert [event_id for _, event_id in order] == ["a0", "z1", "a1", "a2"]
    versions = [v for v, _ in order]
    assert versions == sorted(versions)
    ledger = build(Settings(database_url=url)).ledger
    member = ledger.member("ann")
    assert member is not None and member.balance == 400
    assert len(ledger.store.select_members_events([Member.create_id("ann")])) == member.version
    assert [m.offset for m in stored] == [0, 0, 1]
