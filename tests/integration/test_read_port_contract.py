"""The read side's SQL port, the same contract on every adapter (SQLite, PostgreSQL)."""

from __future__ import annotations

from uuid import UUID

import pytest

from services.domain.member import Member
from services.store.checkpoint import Checkpoint
from services.store.database import Database, connect
from services.store.ledger import Ledger

pytestmark = pytest.mark.integration

CREATE = (
    "CREATE TABLE lots (aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, "
    "points BIGINT NOT NULL, note TEXT, PRIMARY KEY (aggregate_id, lot_date))"
)
COLUMNS = ("aggregate_id", "lot_date", "points", "note")
KEY = ("aggregate_id", "lot_date")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def db(database_url: str) -> Database:
    db = connect(database_url)
    with db.transaction() as cur:
        cur.execute(CREATE)
        cur.insert(
            "lots",
            COLUMNS,
            [
                ("a", "2026-01-01", 10, None),
                ("a", "2026-01-02", 20, "tab\there"),
                ("b", "x", 5, ""),
            ],
        )
    return db


def rows(db: Database) -> list[tuple[object, ...]]:
    return sorted(db.query("SELECT aggregate_id, lot_date, points, note FROM lots"))


def test_rows_come_back_as_written(db: Database) -> None:
    assert rows(db) == [
        ("a", "2026-01-01", 10, None),
        ("a", "2026-01-02", 20, "tab\there"),
        ("b", "x", 5, ""),
    ]


def test_select_finds_the_keys_it_is_given_once_each(db: Database) -> None:
    with db.transaction() as cur:
        found = cur.select("lots", ("lot_date", "points"), KEY, [("a", "2026-01-02"), ("z", "x")])
        assert found == [("2026-01-02", 20)]
        assert cur.select("lots", ("points",), KEY, []) == []
        assert sorted(cur.select("lots", ("points",), ("aggregate_id",), [("a",)])) == [
            (10,),
            (20,),
        ]


def test_update_and_delete_touch_only_their_keys(db: Database) -> None:
    with db.transaction() as cur:
        cur.update(
            "lots", KEY, ("points", "note"), [("a", "2026-01-01", 11, "n"), ("z", "x", 1, "")]
        )
        cur.delete("lots", KEY, [("b", "x"), ("z", "z")])
    assert rows(db) == [("a", "2026-01-01", 11, "n"), ("a", "2026-01-02", 20, "tab\there")]


def test_one_transaction_may_use_each_primitive_again(db: Database) -> None:
    # PostgreSQL stages keys in a table until the commit: a second use must not see
    # the first's.
    with db.transaction() as cur:
        assert cur.select("lots", ("points",), KEY, [("a", "2026-01-01")]) == [(10,)]
        cur.delete("lots", KEY, [("b", "x")])
        assert cur.select("lots", ("points",), KEY, [("a", "2026-01-02")]) == [(20,)]
        cur.update("lots", KEY, ("points",), [("a", "2026-01-01", 1)])
        cur.update("lots", KEY, ("points",), [("a", "2026-01-02", 2)])
    assert [r[2] for r in rows(db)] == [1, 2]
    with db.transaction() as cur:  # and the next transaction starts with empty stages
        cur.delete("lots", KEY, [("a", "2026-01-02")])
    assert rows(db) == [("a", "2026-01-01", 1, None)]


def test_an_insert_of_a_key_held_fails_and_a_failed_transaction_leaves_nothing(
    db: Database,
) -> None:
    with pytest.raises(Exception), db.transaction() as cur:  # noqa: B017 (either driver's)
        cur.insert("lots", COLUMNS, [("c", "y", 1, None)])
        cur.insert("lots", COLUMNS, [("a", "2026-01-01", 1, None)])
    assert len(rows(db)) == 3


def test_notifications_come_in_store_order_after_a_position(database_url: str) -> None:
    ledger = Ledger.open(database_url)
    members = [Member.register(f"m{i}") for i in range(3)]
    ledger.commit(members, Checkpoint())
    table = ledger.store.events_table_name
    schema = getattr(ledger.store.datastore, "schema", "")
    db = connect(database_url)
    with db.transaction() as cur:
        page = cur.notifications(f"{schema}.{table}" if schema else table, 0, 2)
        rest = cur.notifications(f"{schema}.{table}" if schema else table, page[-1][0], 10)
    assert [n[0] for n in page + rest] == sorted(n[0] for n in page + rest)
    assert len(page) == 2 and len(rest) == 1
    assert {UUID(n[1]) for n in page + rest} == {m.id for m in members}
    assert all(n[1] == str(UUID(n[1])) and n[2] == 1 for n in page + rest)
    assert all(n[3].endswith("Member.Registered") and n[4].startswith(b"{") for n in page)


WORDS = ["a", "B", "é", "Z", "ab", "a b", "Ä", "_x", "10", "9"]


def words(db: Database) -> list[str]:
    return [str(row[0]) for row in db.query("SELECT word FROM words ORDER BY word")]


def test_text_of_tables_it_creates_orders_bytewise_in_every_backend(database_url: str) -> None:
    db = connect(database_url)
    with db.transaction() as cur:
        cur.create_table("CREATE TABLE IF NOT EXISTS words (word TEXT PRIMARY KEY, n BIGINT)")
        cur.insert("words", ("word", "n"), [(w, i) for i, w in enumerate(WORDS)])
    assert words(db) == sorted(WORDS, key=str.encode)
    with db.transaction() as cur:  # made again: nothing changes
        cur.create_table("CREATE TABLE IF NOT EXISTS words (word TEXT PRIMARY KEY, n BIGINT)")
    assert words(db) == sorted(WORDS, key=str.encode)
    db.close()


def test_a_table_made_in_another_order_is_left_as_it_is_and_compares_with_ours(
    postgres_url: str,
) -> None:
    """Read models made by earlier versions keep the database's collation until a replay
    makes them anew; a bytewise column compares with one of the database's own."""
    db = connect(postgres_url)
    with db.transaction() as cur:
        cur.execute("CREATE TABLE theirs (word TEXT PRIMARY KEY)")  # the database's own
        cur.insert("theirs", ("word",), [(w,) for w in WORDS])
        cur.create_table("CREATE TABLE IF NOT EXISTS theirs (word TEXT PRIMARY KEY)")
        cur.create_table("CREATE TABLE IF NOT EXISTS words (word TEXT PRIMARY KEY, n BIGINT)")
        cur.insert("words", ("word", "n"), [(w, i) for i, w in enumerate(WORDS)])
    collations = db.query(
        "SELECT c.relname, l.collname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_collation l ON l.oid = a.attcollation "
        "WHERE c.relname IN ('theirs', 'words') AND a.attname = 'word' ORDER BY 1"
    )
    assert collations == [("theirs", "default"), ("words", "C")]
    joined = db.query(
        "SELECT w.word FROM words w JOIN theirs t ON t.word = w.word "
        "WHERE t.word >= ? ORDER BY w.word",
        ("B",),
    )
    assert [row[0] for row in joined] == [w for w in sorted(WORDS, key=str.encode) if w >= "B"]
    db.close()
