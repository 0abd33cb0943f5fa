"""`ledger_entries`: every movement of a member's points, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import ClassVar

from projections.base import Projection
from projections.events import Event, plain
from services.store.database import Cursor, Row

TABLE = "ledger_entries"
COLUMNS = (
    "aggregate_id",
    "version",
    "at",
    "kind",
    "points",
    "balance",
    "event_id",
    "detail",
    "pending",
)
DETAIL_FIELDS = (
    "order_id",
    "reward",
    "network",
    "referrer_id",
    "referee_id",
    "product_id",
    "badge_id",
    "lot_date",
    "release_at",
    "reason",
)
_details = attrgetter(*DETAIL_FIELDS)


class LedgerEntriesProjection(Projection):
    name: ClassVar[str] = "ledger_entries"
    cost: ClassVar[float] = 1.5
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS ledger_entries ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "kind TEXT NOT NULL, "
        "points BIGINT NOT NULL, balance BIGINT NOT NULL, event_id TEXT, detail TEXT, "
        "pending BIGINT NOT NULL)",
    )
    # Its key too: nothing it writes reads it (see Projection.index_statements).
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE UNIQUE INDEX IF NOT EXISTS ledger_entries_pkey "
        "ON ledger_entries (aggregate_id, version)",
        # Breakage: the expiries and redemptions of a year, not every entry.
        "CREATE INDEX IF NOT EXISTS ledger_entries_kind_at ON ledger_entries (kind, at)",
        # Debts: the few members whose balance ever went below zero.
        "CREATE INDEX IF NOT EXISTS ledger_entries_debt ON ledger_entries (aggregate_id) "
        "WHERE balance < 0",
    )

    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        cur.insert(TABLE, COLUMNS, entries(events))


def entries(events: Sequence[Event]) -> list[Row]:
    rows: list[Row] = []
    for _, key, version, kind, at, data in events:
        points = data.points
        balance = data.balance
        # A movement is an event that carries both the points moved and the balance after.
        if points is None or balance is None:
            continue
        details = [
            f"{n}={plain(v)}" for n, v in zip(DETAIL_FIELDS, _details(data), strict=True) if v
        ]
        campaigns = data.campaigns
        if campaigns:
            details.append("campaigns=" + " ".join(f"{c}:{p}" for c, p in campaigns.items()))
        rows.append(
            (
                key,
                version,
                at,
                kind,
                int(points),
                int(balance),
                data.event_id,
                ", ".join(details) or None,
                int(data.pending or 0),
            )
        )
    return rows
