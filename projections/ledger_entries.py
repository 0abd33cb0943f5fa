"""`ledger_entries`: every movement of a member's points, oldest first."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from projections.base import Projection, iso
from services.store.database import Cursor

INSERT_ENTRY = (
    "INSERT INTO ledger_entries "
    "(aggregate_id, version, at, kind, points, balance, event_id, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (aggregate_id, version) DO NOTHING"
)
DETAIL_FIELDS = ("order_id", "reward", "network", "referrer_id", "referee_id", "lot_date", "reason")


class LedgerEntriesProjection(Projection):
    name: ClassVar[str] = "ledger_entries"
    tables: ClassVar[tuple[str, ...]] = ("ledger_entries",)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS ledger_entries ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "kind TEXT NOT NULL, "
        "points BIGINT NOT NULL, balance BIGINT NOT NULL, event_id TEXT, detail TEXT, "
        "PRIMARY KEY (aggregate_id, version))",
    )

    def handle(self, cur: Cursor, aggregate_id: UUID, event: Any, position: int) -> None:
        if getattr(event, "balance", None) is None or getattr(event, "points", None) is None:
            return
        detail = ", ".join(
            f"{name}={getattr(event, name)}" for name in DETAIL_FIELDS if getattr(event, name, None)
        )
        cur.execute(
            INSERT_ENTRY,
            (
                str(aggregate_id),
                event.originator_version,
                iso(event.at),
                type(event).__name__,
                int(event.points),
                int(event.balance),
                getattr(event, "event_id", None),
                detail or None,
            ),
        )
