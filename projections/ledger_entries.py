"""`ledger_entries`: every movement of a member's points, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from projections.base import Projection
from projections.events import Event, plain
from services.store.database import Cursor, Row

TABLE = "ledger_entries"
COLUMNS = ("aggregate_id", "version", "at", "kind", "points", "balance", "event_id", "detail")
DETAIL_FIELDS = ("order_id", "reward", "network", "referrer_id", "referee_id", "lot_date", "reason")


class LedgerEntriesProjection(Projection):
    name: ClassVar[str] = "ledger_entries"
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS ledger_entries ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "kind TEXT NOT NULL, "
        "points BIGINT NOT NULL, balance BIGINT NOT NULL, event_id TEXT, detail TEXT, "
        "PRIMARY KEY (aggregate_id, version))",
    )

    def apply(self, cur: Cursor, events: Sequence[Event]) -> None:
        # A movement is an event that carries both the points moved and the balance after.
        cur.insert(TABLE, COLUMNS, [entry(e) for e in events if _moves_points(e)])


def _moves_points(e: Event) -> bool:
    return e.data.get("balance") is not None and e.data.get("points") is not None


def entry(e: Event) -> Row:
    data = e.data
    detail = ", ".join(f"{name}={plain(data[name])}" for name in DETAIL_FIELDS if data.get(name))
    return (
        e.aggregate_id,
        e.version,
        e.at,
        e.kind,
        int(data["points"]),
        int(data["balance"]),
        data.get("event_id"),
        detail or None,
    )
