"""The ledger store's contract, run against every adapter: SQLite and real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL

from services.domain.member import Member
from services.program_file import load_program
from services.store.checkpoint import SKIPPED, Checkpoint, InputPosition, MessageOutcome, Receipt
from services.store.leadership import AlwaysLeader, leadership
from services.store.ledger import Ledger
from services.store.recorders import LedgerPostgresRecorder
from tests.conftest import new_database
from tests.infra import Services

pytestmark = pytest.mark.integration
PROGRAM = load_program(None)
AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    url = request.getfixturevalue(f"{request.param}_url")
    return Ledger.open(url)


def checkpoint(offset: int, *event_ids: str) -> Checkpoint:
    cp = Checkpoint()
    for i, event_id in enumerate(event_ids):
        cp.account("in", 0, offset + i, MessageOutcome.APPLIED)
        cp.receipts.append(Receipt(event_id, "in", 0, offset + i, MessageOutcome.APPLIED))
    return cp


def test_events_positions_receipts_and_counts_commit_together(ledger: Ledger) -> None:
    member = Member.register("ann")
    member.purchase(PROGRAM, event_id="p1", order_id="o1", amount=Decimal("12.50"), at=AT)
    ledger.commit([member], checkpoint(0, "p1"))

    assert ledger.input_position("in", 0) == InputPosition(0, 0)
    assert ledger.input_position("in", 1) is None
    assert ledger.known_event_ids({"p1", "p2"}) == {"p1"}
    assert ledger.message_counts() == {("in", "applied"): 1}
    stored = ledger.member("ann")
    assert stored is not None and stored.balance == 12
    assert ledger.member_ids() == ["ann"]
    assert ledger.last_position() >= 2


def test_a_conflicting_commit_leaves_nothing_behind(ledger: Ledger) -> None:
    first = Member.register("ann")
    ledger.commit([first], checkpoint(0, "p1"))
    rival = Member.register("ann")  # a second writer that did not see the first
    rival.purchase(PROGRAM, event_id="p2", order_id="o2", amount=Decimal("5"), at=AT)
    with pytest.raises(IntegrityError):
        ledger.commit([rival], checkpoint(1, "p2"))

    assert ledger.input_position("in", 0) == InputPosition(0, 0)
    assert ledger.known_event_ids({"p2"}) == set()
    assert ledger.message_counts() == {("in", "applied"): 1}


def test_a_receipt_is_taken_once(ledger: Ledger) -> None:
    ledger.commit([], checkpoint(0, "p1"))
    with pytest.raises(IntegrityError):
        ledger.commit([], checkpoint(5, "p1"))
    assert ledger.input_position("in", 0) == InputPosition(0, 0)


def test_input_positions_only_move_forward(ledger: Ledger) -> None:
    ledger.commit([], checkpoint(10, "p1"))
    with pytest.raises(IntegrityError):
        ledger.commit([], checkpoint(3, "p2"))
    assert ledger.input_position("in", 0) == InputPosition(0, 10)


def test_a_batch_of_many_partitions_commits_none_when_one_would_move_back(
    ledger: Ledger,
) -> None:
    def across(offsets: dict[int, int], event_id: str) -> Checkpoint:
        cp = Checkpoint()
        for partition, offset in offsets.items():
            cp.account("in", partition, offset, MessageOutcome.APPLIED)
        cp.receipts.append(Receipt(event_id, "in", 0, offsets[0], MessageOutcome.APPLIED))
        return cp

    ledger.commit([], across({0: 10, 1: 20, 2: 30}, "p1"))
    for offsets in ({0: 11, 1: 19, 2: 31}, {0: 11, 1: 21, 2: 30}):  # back; then level
        with pytest.raises(IntegrityError):
            ledger.commit([], across(offsets, "p2"))
        assert [ledger.input_position("in", p) for p in range(3)] == [
            InputPosition(0, 10),
            InputPosition(0, 20),
            InputPosition(0, 30),
        ]
        assert ledger.known_event_ids({"p2"}) == set()
    ledger.commit([], across({0: 11, 1: 21, 2: 31, 3: 0}, "p2"))
    assert [ledger.input_position("in", p) for p in range(4)] == [
        InputPosition(0, 11),
        InputPosition(0, 21),
        InputPosition(0, 31),
        InputPosition(0, 0),
    ]


def test_a_restarted_partition_is_tracked_anew_as_its_next_incarnation(ledger: Ledger) -> None:
    ledger.commit([], checkpoint(500, "p1"))
    restarted = Checkpoint()
    restarted.account("in", 0, 3, MessageOutcome.APPLIED, incarnation=1)
    ledger.commit([], restarted)
    assert ledger.input_position("in", 0) == InputPosition(1, 3)
    assert ledger.input_position("in", 0).holds(0, 900)  # type: ignore[union-attr]
    assert not ledger.input_position("in", 0).holds(1, 4)  # type: ignore[union-attr]
    back = Checkpoint()
    back.account("in", 0, 2, MessageOutcome.APPLIED, incarnation=1)
    with pytest.raises(IntegrityError):
        ledger.commit([], back)


def test_partitions_of_topics_whose_names_look_alike_never_mix(ledger: Ledger) -> None:
    # '_' and '%' are wildcards to SQL's LIKE; Kafka allows '_' and '.' in topic names.
    for topic, incarnation, offset in (("a_b", 1, 5), ("aXb", 2, 7), ("a.b", 0, 9)):
        cp = Checkpoint()
        cp.account(topic, 0, offset, MessageOutcome.APPLIED, incarnation)
        ledger.commit([], cp)
    assert ledger.input_position("a_b", 0) == InputPosition(1, 5)
    assert ledger.input_position("aXb", 0) == InputPosition(2, 7)
    assert ledger.input_position("a.b", 0) == InputPosition(0, 9)
    assert ledger.input_position("a_b", 1) is None


def test_a_batch_reads_the_positions_of_all_its_partitions_at_once(ledger: Ledger) -> None:
    for topic, partition, incarnation, offset in (
        ("a_b", 0, 0, 4),
        ("a_b", 0, 1, 5),
        ("aXb", 0, 2, 7),
        ("aXb", 1, 0, 3),
        ("a.b", 0, 0, 9),
        ("a%b", 10, 0, 2),
    ):
        cp = Checkpoint()
        cp.account(topic, partition, offset, MessageOutcome.APPLIED, incarnation)
        ledger.commit([], cp)
    asked = [("a_b", 0), ("aXb", 0), ("aXb", 1), ("a.b", 0), ("a%b", 1), ("a%b", 10), ("c", 0)]
    assert ledger.input_positions(asked) == {
        ("a_b", 0): InputPosition(1, 5),
        ("aXb", 0): InputPosition(2, 7),
        ("aXb", 1): InputPosition(0, 3),
        ("a.b", 0): InputPosition(0, 9),
        ("a%b", 10): InputPosition(0, 2),
    }
    assert ledger.input_positions([]) == {}


def test_skipped_offsets_move_the_position_and_are_counted(ledger: Ledger) -> None:
    cp = Checkpoint()
    cp.skip("in", 0, 0, first=0, upto=40)
    ledger.commit([], cp)
    assert ledger.input_position("in", 0) == InputPosition(0, 39)
    assert ledger.message_counts() == {("in", SKIPPED): 40}


def test_any_event_id_upstream_may_send_is_stored_exactly(ledger: Ledger) -> None:
    odd = "a\\b\tc\nd\re ü €"
    member = Member.register("tab\there")
    member.purchase(PROGRAM, event_id=odd, order_id="o\\1", amount=Decimal("1"), at=AT)
    ledger.commit([member], checkpoint(0, odd))
    assert ledger.known_event_ids({odd}) == {odd}
    stored = ledger.member("tab\there")
    assert stored is not None and stored.orders.keys() == {"o\\1"}


def test_a_batch_of_members_loads_in_one_call(ledger: Ledger) -> None:
    ann, bob = Member.register("ann"), Member.register("bob")
    ann.purchase(PROGRAM, event_id="p1", order_id="o1", amount=Decimal("12.50"), at=AT)
    bob.purchase(PROGRAM, event_id="p2", order_id="o2", amount=Decimal("7"), at=AT)
    ledger.commit([ann, bob], checkpoint(0, "p1", "p2"))

    loaded = ledger.members(["ann", "bob", "carol"])
    assert {m: loaded[m].balance for m in loaded} == {"ann": 12, "bob": 7}
    assert loaded["ann"].version == ann.version
    assert ledger.member_ids_of([ann.id, bob.id, Member.create_id("carol")]) == {
        ann.id: "ann",
        bob.id: "bob",
    }


def test_one_process_at_a_time_leads(services: Services) -> None:
    url = new_database(services)
    first, second = (leadership(url, "relay") for _ in range(2))
    try:
        assert first.held()
        assert not second.held()
        assert first.held()  # asking again keeps it
        first.release()
        assert second.held()
        assert not first.held()
    finally:
        first.release()
        second.release()
    assert AlwaysLeader().held()


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_a_batch_of_members_is_read_by_index_whatever_the_statistics(postgres_url: str) -> None:
    """Under load the events table is never analyzed (its writers' lock cancels
    autovacuum); a plan that followed guessed statistics scanned every stored event for
    each batch. Each member's events are read by its own index range, analyzed or not."""
    ledger = Ledger.open(postgres_url)
    members = [Member.register(f"m{i}") for i in range(3000)]
    for i, member in enumerate(members):
        for n in range(3):
            member.purchase(
                PROGRAM, event_id=f"p{i}-{n}", order_id=f"o{i}-{n}", amount=Decimal(5), at=AT
            )
    ledger.commit(members, Checkpoint())
    store = cast(LedgerPostgresRecorder, ledger.store)
    asked = {member.id: 1 for member in members[:2000]}
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        for analyzed in (False, True):
            if analyzed:
                curs.execute("ANALYZE ledger_events")
            curs.execute(
                SQL("EXPLAIN (FORMAT JSON) ") + store.events_after_statement,
                (list(asked), list(asked.values())),
            )
            row = curs.fetchone()
            assert row is not None
            plan = row["QUERY PLAN"][0]["Plan"]
            scans = {
                node["Node Type"]
                for node in _plan_nodes(plan)
                if node.get("Relation Name") == "ledger_events"
            }
            assert scans and "Seq Scan" not in scans, (analyzed, scans)
    loaded = ledger.members([f"m{i}" for i in range(2000)])
    assert [loaded[f"m{i}"].version for i in (0, 1999)] == [members[0].version] * 2
    assert loaded["m7"].balance == 15
