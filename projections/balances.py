"""`member_balances`: one row per member, what `GET /members/{id}` returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from projections.base import Projection
from projections.cache import RowCache
from projections.events import CREDITS, Event
from services.store.database import Cursor

TABLE = "member_balances"
KEY = ("aggregate_id",)
VALUES = (
    "member_id",
    "balance",
    "tier",
    "qualifying_points",
    "lifetime_points",
    "last_event_at",
    "position",
    "pending_points",
    "enrolled_at",
    "birth_date",
)
COLUMNS = (*KEY, *VALUES)
# Indexes into a row of COLUMNS.
(
    MEMBER_ID,
    BALANCE,
    TIER,
    QUALIFYING,
    LIFETIME,
    LAST_EVENT_AT,
    POSITION,
    PENDING,
    ENROLLED_AT,
    BIRTH_DATE,
) = range(1, 11)

# Credits and clawbacks that count toward lifetime points (expiries and redemptions do not).
LIFETIME_EVENTS = CREDITS | {"RefundRecorded"}


class BalancesProjection(Projection):
    name: ClassVar[str] = "balances"
    cost: ClassVar[float] = 3.5
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS member_balances ("
        "aggregate_id TEXT PRIMARY KEY, member_id TEXT NOT NULL, balance BIGINT NOT NULL, "
        "tier TEXT NOT NULL, qualifying_points BIGINT NOT NULL, lifetime_points BIGINT NOT NULL, "
        "last_event_at TEXT, position BIGINT NOT NULL, pending_points BIGINT NOT NULL, "
        "enrolled_at TEXT, birth_date TEXT)",
    )
    # The key on aggregate_id stays in the table: each page reads and updates rows by it.
    # The member id's is for readers only (see Projection.index_statements).
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE UNIQUE INDEX IF NOT EXISTS member_balances_member_id_key "
        "ON member_balances (member_id)",
        "CREATE INDEX IF NOT EXISTS member_balances_tier ON member_balances (tier)",
    )

    def __init__(self, lowest_tier: str) -> None:
        self._lowest_tier = lowest_tier
        # aggregate_id -> row as stored; the page's events update the rows in place.
        self._cache: RowCache[str, list[Any]] = RowCache()
        # The rows this transaction's pages touched, for `flush` to write once each:
        # aggregate_id -> whether the table held the row before (an update) or not (an
        # insert). A catch-up touches most members on every page of 5,000 events; held
        # to the end of a rebuild, a million-event store's ~550,000 row updates become
        # one COPY of ~140,000 rows.
        self._held: dict[str, bool] = {}

    def begin(self, since: int) -> None:
        self._cache.begin(since)
        self._held.clear()

    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        """Applies the events in order to their members' rows (read once, or known from
        the pages before), which `flush` writes."""
        cache = self._cache
        rows = cache.rows
        held = self._held
        touched = [key for key in dict.fromkeys(e.aggregate_id for e in events) if key not in held]
        missing = cache.missing(touched)
        if missing:
            for row in cur.select(TABLE, COLUMNS, KEY, [(key,) for key in missing]):
                rows[row[0]] = list(row)
        for key in touched:
            held[key] = key in rows
        for e in events:
            self._apply(rows, e)

    def held(self) -> int:
        return len(self._held)

    def flush(self, cur: Cursor) -> None:
        rows = self._cache.rows
        held = self._held
        # A key held but not in the rows: events of a member never registered.
        new = [rows[key] for key, stored in held.items() if not stored and key in rows]
        cur.insert(TABLE, COLUMNS, new)
        cur.update(TABLE, KEY, VALUES, [rows[key] for key, stored in held.items() if stored])
        held.clear()

    def committed(self, position: int) -> None:
        self._cache.committed(position)

    def _apply(self, rows: dict[str, list[Any]], e: Event) -> None:
        position, key, _, kind, at, data = e
        if kind == "Registered":
            if key not in rows:
                rows[key] = [
                    key,
                    data.member_id,
                    0,
                    self._lowest_tier,
                    0,
                    0,
                    None,
                    position,
                    0,
                    None,
                    None,
                ]
            return
        row = rows.get(key)
        if row is None:
            return  # not registered: nothing to update
        if kind == "TierChanged":
            row[TIER] = data.to_tier
            row[QUALIFYING] = data.qualifying_points
            row[POSITION] = position
            return
        if kind == "Enrolled":
            row[ENROLLED_AT] = at
            row[BIRTH_DATE] = data.birth_date
        pending = data.pending
        if pending:
            row[PENDING] += int(pending)
        balance = data.balance
        if balance is not None:
            row[BALANCE] = balance
            if kind in LIFETIME_EVENTS:
                row[LIFETIME] += int(data.points)
            row[POSITION] = position
        # Sweeps (expiries, tier reviews) are not the member's own events: no event_id.
        if data.event_id is not None and (row[LAST_EVENT_AT] is None or row[LAST_EVENT_AT] < at):
            row[LAST_EVENT_AT] = at
        qualifying = data.qualifying_points
        if qualifying is not None:
            row[QUALIFYING] = qualifying
