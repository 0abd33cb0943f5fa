"""Projections fold whole pages, yet hold exactly the rows that applying the events one
at a time gives, on both backends: several events of a member in a page, a lot emptied
and refilled within one, a projection behind the others, runners racing or taking
turns on the same store."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from projections.base import iso
from projections.runner import HOLD_SECONDS, ProjectionRunner, default_projections
from services.bootstrap import Context, build, catch_up_apart
from services.config import Settings
from services.demo import generate
from services.domain.member import Member
from services.store.checkpoint import Checkpoint
from services.store.database import Cursor
from tests.integration.harness import commit_events, read_models

pytestmark = pytest.mark.integration

OTHERS = ("ledger_entries", "activity", "lots")  # the projections that write each page


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def demo(members: int = 40) -> list[dict[str, Any]]:
    return list(generate(members=members, seed=11, now=datetime(2026, 6, 1, tzinfo=UTC)))


def rebuilt(context: Context, page: int, hold_rows: int = 0) -> dict[str, list[Any]]:
    """The read models rebuilt in pages of `page` events, a transaction per page unless
    projections may hold `hold_rows` rows across pages."""
    runner = context.projection_runner()
    runner.reset()
    runner.page = page
    runner.hold_rows = hold_rows
    runner.catch_up()
    return read_models(context, "projection_positions", "point_lots")


def positions_in_store(context: Context) -> list[int]:
    """The store's notification ids, in order."""
    table = context.ledger.events_table()
    rows = context.database().query(f"SELECT notification_id FROM {table} ORDER BY 1")
    return [int(row[0]) for row in rows]


def at(clock: str) -> str:
    return f"2026-01-10T{clock}Z"


# ann's lot of 12:00:00 is credited, redeemed to nothing and credited again within the
# same second; bob's purchases and refund take lots he has half spent; cy's lot expires.
CRAFTED: list[dict[str, Any]] = [
    {"type": "purchase", "event_id": "a1", "member_id": "ann", "order_id": "o1",
     "amount": "100.00", "currency": "EUR", "occurred_at": at("12:00:00.100")},
    {"type": "redemption", "event_id": "a2", "member_id": "ann", "points": 100,
     "reward": "coffee", "occurred_at": at("12:00:00.200")},
    {"type": "social_share", "event_id": "a3", "member_id": "ann", "network": "x",
     "occurred_at": at("12:00:00.300")},
    {"type": "purchase", "event_id": "b1", "member_id": "bob", "order_id": "o1",
     "amount": "300.00", "currency": "EUR", "occurred_at": at("13:00:00")},
    {"type": "purchase", "event_id": "b2", "member_id": "bob", "order_id": "o2",
     "amount": "900.00", "currency": "EUR", "occurred_at": at("13:30:00")},
    {"type": "redemption", "event_id": "b3", "member_id": "bob", "points": 200,
     "reward": "tote-bag", "occurred_at": at("14:00:00")},
    {"type": "refund", "event_id": "b4", "member_id": "bob", "order_id": "o2",
     "amount": "900.00", "occurred_at": at("15:00:00")},
    {"type": "social_share", "event_id": "b5", "member_id": "bob", "network": "x",
     "occurred_at": at("15:00:00")},
    {"type": "purchase", "event_id": "c1", "member_id": "cy", "order_id": "o1",
     "amount": "50.00", "currency": "EUR", "occurred_at": "2025-01-02T08:00:00Z"},
]  # fmt: skip


def crafted_store(database_url: str) -> Context:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, CRAFTED)
    context.ingest_service().sweep(["ann", "bob", "cy"], datetime(2026, 2, 1, tzinfo=UTC))
    return context


def test_whole_pages_give_the_rows_of_one_event_at_a_time(database_url: str) -> None:
    context = crafted_store(database_url)
    one_by_one = rebuilt(context, page=1)
    assert rebuilt(context, page=1000) == one_by_one
    assert rebuilt(context, page=3) == one_by_one

    ann = str(context.ledger.member("ann").id)  # type: ignore[union-attr]
    lots = {(k, d): n for k, d, n in one_by_one["point_lots"]}
    assert lots[ann, "2026-01-10T12:00:00Z"] == 10  # emptied by the redemption, refilled
    cy = str(context.ledger.member("cy").id)  # type: ignore[union-attr]
    assert not [lot for lot in lots if lot[0] == cy]  # expired by the sweep
    kinds = {row[3] for row in one_by_one["ledger_entries"]}
    assert {"PointsRedeemed", "RefundRecorded", "PointsExpired"} <= kinds


@pytest.mark.parametrize("hold_rows", [2, 9, 250_000])
def test_rows_held_across_pages_give_the_rows_of_a_transaction_per_event(
    postgres_url: str, hold_rows: int
) -> None:
    context = crafted_store(postgres_url)
    commit_events(context, demo(), first_offset=len(CRAFTED))
    one_by_one = rebuilt(context, page=1)
    for page in (1, 7, 5000):
        assert rebuilt(context, page=page, hold_rows=hold_rows) == one_by_one


@pytest.mark.parametrize("hold_seconds", [HOLD_SECONDS, 0.0])
def test_a_catch_up_holds_the_balances_until_the_end_and_reports_them_applied(
    postgres_url: str, hold_seconds: float
) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=20)
    log = positions_in_store(context)
    pages = len(log) // 20
    halfway = log[20 * (pages // 2) - 1]  # the last event of a page mid-way
    runner = context.projection_runner()
    runner.reset()
    runner.page = 20
    runner.hold_seconds = hold_seconds
    committing = OTHERS if hold_seconds else (*OTHERS, "balances")  # a page at a time
    reports: list[tuple[int, int]] = []  # (progress, the balances' position in the store)
    seen: dict[str, Any] = {}

    def look_halfway(done: int, total: int) -> None:
        reports.append((done, runner.positions()["balances"]))
        if len(reports) != pages // 2:
            return
        # The reader waits here with the pages up to `halfway` queued: the projections
        # that commit each page get there, and the balances hold theirs.
        deadline = time.monotonic() + 30
        while min(runner.positions()[n] for n in committing) < halfway:
            assert time.monotonic() < deadline, runner.positions()
            time.sleep(0.05)
        seen.update(stored=runner.positions(), rows=read_models(context)["member_balances"])

    runner.catch_up(look_halfway)
    last = context.ledger.last_position()
    if hold_seconds:
        assert seen["stored"] == {"balances": 0, **dict.fromkeys(OTHERS, halfway)}
        assert seen["rows"] == []
        # The progress counted the held pages as applied.
        assert any(done >= halfway and stored == 0 for done, stored in reports)
    else:  # past its time bound at every page: a commit each
        assert seen["stored"] == {"balances": halfway, **dict.fromkeys(OTHERS, halfway)}
        assert seen["rows"]
    # Every row was written once the log's end was reached.
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert reports[-1] == (last, last)
    assert set(runner.positions().values()) == {last}
    assert read_models(context, "projection_positions", "point_lots") == expected


class FlushFails(RuntimeError):
    pass


def test_a_transaction_that_fails_with_rows_held_leaves_the_last_commit_to_resume_from(
    postgres_url: str,
) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=20)
    runner = context.projection_runner()
    runner.reset()
    runner.page = 20
    runner.hold_rows = 2  # a page's members are more: each transaction commits its pages
    balances = next(p for p in runner.projections if p.name == "balances")
    flushes: list[int] = []
    flush = balances.flush

    def second_flush_fails(cur: Cursor) -> None:
        # Its pages applied in memory, none of them written.
        flushes.append(balances.held())
        if len(flushes) == 2:
            raise FlushFails("the store went away mid-commit")
        flush(cur)

    def first_page_alone(done: int, total: int) -> None:
        # The reader has queued one page: the first transaction takes it alone.
        deadline = time.monotonic() + 30
        while not flushes and time.monotonic() < deadline:
            time.sleep(0.01)

    balances.flush = second_flush_fails  # type: ignore[method-assign]
    with pytest.raises(FlushFails):
        runner.catch_up(first_page_alone)
    assert runner.positions()["balances"] == positions_in_store(context)[19]  # the first page
    assert len(read_models(context)["member_balances"]) == flushes[0] >= 2
    # The same runner, whose rows in memory went past the commit, resumes from it.
    runner.catch_up()
    assert len(flushes) > 2
    assert read_models(context, "projection_positions", "point_lots") == expected


def test_a_demo_stream_folded_in_pages_equals_one_event_at_a_time(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    one_by_one = rebuilt(context, page=1)
    assert len(one_by_one["member_balances"]) == 40
    for page in (7, 250, 5000):
        assert rebuilt(context, page=page) == one_by_one


def test_the_rows_agree_with_the_members_the_store_holds(database_url: str) -> None:
    """An independent model: each member's aggregate, loaded from its events."""
    context = crafted_store(database_url)
    commit_events(context, demo(), first_offset=len(CRAFTED))
    tables = rebuilt(context, page=64)
    program = context.program
    ids = context.ledger.member_ids()
    members = {str(m.id): m for m in context.ledger.members(ids).values()}
    assert len(members) == len(ids) == len(tables["member_balances"])
    for row in tables["member_balances"]:
        key, member_id, balance, tier, qualifying, lifetime, last_at, _, pending, enrolled, born = (
            row
        )
        m = members[key]
        expected = (m.member_id, m.balance, m.tier_name(program), m.qualifying_points)
        assert (member_id, balance, tier, qualifying) == expected
        assert (lifetime, pending) == (m.lifetime_points, m.pending_points)
        assert last_at == (iso(m.last_event_at) if m.last_event_at else None)
        assert enrolled == (iso(m.enrolled_at) if m.enrolled_at else None)
        assert born == (m.birth_date.isoformat() if m.birth_date else None)
    lots: dict[tuple[str, str], int] = {}
    for key, m in members.items():
        for lot in m.lots:
            lots[key, iso(lot.date)] = lots.get((key, iso(lot.date)), 0) + lot.points
    assert {(k, d): n for k, d, n in tables["point_lots"]} == lots
    moved: dict[str, int] = {}
    for key, _, _, _, points, *_ in tables["ledger_entries"]:
        moved[key] = moved.get(key, 0) + points
    assert moved == {k: m.balance for k, m in members.items() if k in moved}


def test_a_projection_behind_the_others_catches_up_alone(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=100)
    # The lots projection starts over (its table and position dropped, as the README
    # says), while the others stand at the log's end.
    db = context.database()
    with db.transaction() as cur:
        cur.execute("DROP VIEW point_lots")  # it stands on lot_movements
        for table in ("lot_movements", "pending_moves"):
            cur.execute(f"DROP TABLE {table}")
        cur.execute("DELETE FROM projection_positions WHERE name = 'lots'")
    runner = context.projection_runner()
    runner.page = 100
    runner.catch_up()
    assert read_models(context, "projection_positions", "point_lots") == expected


def test_runners_taking_turns_read_back_what_the_other_wrote(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    events = demo(60)
    third = len(events) // 3
    first, second = context.projection_runner(), context.projection_runner()
    first.page = second.page = 50
    commit_events(context, events[:third])
    first.catch_up()  # now holds the rows it wrote
    commit_events(context, events[third : 2 * third], first_offset=third)
    second.catch_up()  # moves every projection on behind the first's back
    commit_events(context, events[2 * third :], first_offset=2 * third)
    first.catch_up()  # must not trust the rows it remembers
    assert read_models(context, "projection_positions", "point_lots") == rebuilt(context, page=50)


def test_racing_runners_apply_each_event_once(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=40)
    context.projection_runner().reset()
    runners = [context.projection_runner() for _ in range(2)]
    errors: list[BaseException] = []

    def follow(runner: ProjectionRunner) -> None:
        runner.page = 40
        try:
            runner.catch_up()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=follow, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert read_models(context, "projection_positions", "point_lots") == expected


def test_processes_starting_together_create_the_read_side_once(database_url: str) -> None:
    # The projector and the API set the read side up at the same time on a fresh store.
    failures: list[BaseException] = []

    def start() -> None:
        try:
            build(Settings(database_url=database_url)).projection_runner()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_projector_keeps_following_while_replays_rebuild_under_it(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=40)
    follower, replayer = context.projection_runner(), context.projection_runner()
    follower.page = 40
    stopping = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            follower.run_forever(stopping.is_set, idle_seconds=0.01)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        for _ in range(3):
            replayer.rebuild()  # drops the tables the follower is writing to
    finally:
        stopping.set()
        thread.join(timeout=120)
    assert not errors
    follower.catch_up()
    assert read_models(context, "projection_positions", "point_lots") == expected


def test_text_with_nul_stored_before_ingestion_refused_it_does_not_stop_the_read_side(
    database_url: str,
) -> None:
    # A store written by an older version: U+0000 reached the store through the domain.
    context = build(Settings(database_url=database_url, daily_sweep=False))
    member = Member.register("a\x00")
    member.purchase(
        context.program,
        event_id="e\x00",
        order_id="o\x00",
        amount=Decimal("10"),
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    context.ledger.commit([member], Checkpoint())

    runner = context.projection_runner()
    try:
        assert runner.catch_up() > 0
    finally:
        runner.close()
    rows = read_models(context)
    assert [row[1] for row in rows["member_balances"]] == ["a\ufffd"]
    assert rows["ledger_entries"][0][6] == "e\ufffd"


# The append-only tables' keys, which a rebuild builds once its load is done.
KEYED = ("ledger_entries", "lot_movements", "member_purchases")


class Interrupted(Exception):
    pass


def refused_duplicates(context: Context) -> set[str]:
    """The tables among KEYED whose key refuses a copy of one of their rows (a copy taken
    in is rolled back)."""
    refused = set()
    db = context.database()
    try:
        for table in KEYED:
            try:
                with db.transaction() as cur:
                    cur.execute(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1")
                    raise Interrupted
            except (psycopg.IntegrityError, sqlite3.IntegrityError):
                refused.add(table)
            except Interrupted:
                pass
    finally:
        db.close()
    return refused


def test_a_rebuild_loads_without_the_keys_and_builds_them_at_the_end(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=40)
    assert all(expected[table] for table in KEYED)
    assert refused_duplicates(context) == set(KEYED)

    runner = context.projection_runner()
    runner.page = 40
    pages = 0

    def interrupt(done: int, total: int) -> None:
        nonlocal pages
        pages += 1
        if pages == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        runner.rebuild(interrupt)  # as a replay killed mid-way leaves the store
    runner.close()
    db = context.database()  # not a runner: its setup would build the keys
    reached = [int(p) for _, p in db.query("SELECT name, position FROM projection_positions")]
    db.close()
    assert len(reached) == 4 and 0 < min(reached) < context.ledger.last_position()
    assert refused_duplicates(context) == set()  # no keys yet: the load appends

    # A projector started meanwhile builds them before it follows, and goes on.
    projector = context.projection_runner()
    assert refused_duplicates(context) == set(KEYED)
    assert projector.rebuilding()  # until a replay completes
    projector.catch_up()
    assert read_models(context, "projection_positions", "point_lots") == expected
    projector.close()

    # Run again, the replay completes the same state, keys and all.
    replay = context.projection_runner()
    replay.page = 40
    replay.rebuild()
    assert not replay.rebuilding()
    assert read_models(context, "projection_positions", "point_lots") == expected
    assert refused_duplicates(context) == set(KEYED)


def test_a_store_with_point_lots_as_a_table_has_it_replaced_by_the_view(
    database_url: str,
) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=40)["point_lots"]
    db = context.database()
    with db.transaction() as cur:  # as the versions that kept the lots row by row left it
        cur.execute("DROP VIEW point_lots")
        cur.execute(
            "CREATE TABLE point_lots (aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, "
            "points BIGINT NOT NULL, PRIMARY KEY (aggregate_id, lot_date))"
        )
        cur.execute("INSERT INTO point_lots VALUES ('stale', '2020-01-01T00:00:00Z', 1)")
    db.close()
    context.projection_runner().close()  # any process's start-up: the API's, a projector's
    assert read_models(context, "point_lots")["point_lots"] == expected


def test_read_models_made_in_the_databases_collation_serve_and_a_replay_makes_them_bytewise(
    postgres_url: str,
) -> None:
    """Stores made before the read models' text compared bytewise have their tables in the
    database's collation (C.UTF-8 here, a locale's). A start-up leaves them as they are
    (no table rewritten under the API's feet); a projection made anew meanwhile sits
    beside them and the views join the two; a replay makes them all bytewise."""
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=40)
    runner = context.projection_runner()
    db = context.database()
    with db.transaction() as cur:  # as the earlier versions made every table but one
        runner._drop_views(cur)
        for projection in runner.projections:
            if projection.name == "balances":
                continue
            for table in projection.tables:
                cur.execute(f"ALTER TABLE {table} ALTER COLUMN aggregate_id TYPE TEXT")
        runner._make_views(cur)
    runner.close()
    assert len(locale_text(db)) == 8  # aggregate_id of every table but member_balances

    context.projection_runner().close()  # the API's start-up, or a projector's
    assert len(locale_text(db)) == 8
    assert read_models(context, "projection_positions", "point_lots") == expected
    joined = "SELECT COUNT(*) FROM member_balances b JOIN member_purchases p USING (aggregate_id)"
    assert db.query(joined)[0][0] == len(expected["member_purchases"])
    assert db.query("SELECT COUNT(*) FROM member_rfm")[0][0] > 0

    replay = context.projection_runner()
    replay.rebuild()
    replay.close()
    assert locale_text(db) == []
    assert read_models(context, "projection_positions", "point_lots") == expected
    db.close()


def locale_text(db: Any) -> list[tuple[Any, ...]]:
    """Text columns of the read models' tables that do not compare bytewise."""
    tables = [t for p in default_projections(["bronze"]) for t in p.tables]
    return list(
        db.query(
            "SELECT c.relname, a.attname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_collation l ON l.oid = a.attcollation "
            "WHERE c.relkind = 'r' AND c.relname = ANY(?) "
            "AND a.atttypid = 'text'::regtype AND l.collname <> 'C'",
            (tables,),
        )
    )


def test_a_catch_up_shared_among_processes_gives_the_rows_of_one(postgres_url: str) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False, projection_processes=2))
    commit_events(context, demo())
    expected = rebuilt(context, page=5000)  # a few hundred events: under the threshold

    runner = context.projection_runner()
    assert runner.groups(2) == [("balances",), ("ledger_entries", "activity", "lots")]
    assert runner.groups(4) == [("balances",), ("ledger_entries",), ("activity",), ("lots",)]
    runner.reset()
    runner.page = 40
    seen: list[tuple[int, int]] = []
    moved = runner.catch_up_apart(lambda done, total: seen.append((done, total)))
    last = context.ledger.last_position()
    # The processes moved every projection to the end; this one only watched.
    assert moved == last
    assert set(runner.positions().values()) == {last}
    assert seen and all(total == last for _, total in seen)
    # Each process built its projections' read indexes once it reached the end.
    assert refused_duplicates(context) == set(KEYED)
    runner.catch_up()
    assert read_models(context, "projection_positions", "point_lots") == expected


def failing_catch_up(
    names: tuple[str, ...], page: int, indexes_due: bool, parent: int, applied: Any
) -> None:
    raise RuntimeError(f"{names} could not start")


def test_projections_a_process_failed_to_move_are_caught_up_by_the_runner(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    commit_events(context, demo())
    expected = rebuilt(context, page=5000)
    runner = ProjectionRunner(
        context.ledger,
        context.database,
        context.projections(),
        page=40,
        processes=2,
        apart=failing_catch_up,
    )
    runner.processes_from = 0
    runner.reset()
    runner.catch_up()
    failed = [r.getMessage() for r in caplog.records if "exited with 1" in r.getMessage()]
    assert len(failed) == 2, failed
    assert read_models(context, "projection_positions", "point_lots") == expected


def test_a_process_sharing_a_catch_up_stops_once_its_parent_is_gone(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, daily_sweep=False)
    context = build(settings)
    commit_events(context, demo())
    runner = context.projection_runner()
    runner.reset()
    last = context.ledger.last_position()

    applied = multiprocessing.get_context("spawn").Value("q", 0)
    catch_up_apart(settings, ("balances",), 40, False, -1, applied)  # not this one's parent
    assert runner.positions()["balances"] == applied.value == 0
    catch_up_apart(settings, ("balances",), 40, False, os.getppid(), applied)
    assert runner.positions() == {"balances": last, "ledger_entries": 0, "activity": 0, "lots": 0}
    assert applied.value == last
