"""`member_purchases` and `tier_changes`: the histories churn and tier metrics read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from projections.base import Projection, iso
from services.store.database import Cursor

INSERT_PURCHASE = (
    "INSERT INTO member_purchases (aggregate_id, version, at) VALUES (?, ?, ?) "
    "ON CONFLICT (aggregate_id, version) DO NOTHING"
)
INSERT_TIER_CHANGE = (
    "INSERT INTO tier_changes (aggregate_id, version, at, month, from_tier, to_tier, direction) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (aggregate_id, version) DO NOTHING"
)


class ActivityProjection(Projection):
    name: ClassVar[str] = "activity"
    tables: ClassVar[tuple[str, ...]] = ("member_purchases", "tier_changes")
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS member_purchases ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "PRIMARY KEY (aggregate_id, version))",
        "CREATE INDEX IF NOT EXISTS member_purchases_at ON member_purchases (at)",
        "CREATE TABLE IF NOT EXISTS tier_changes ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "month TEXT NOT NULL, from_tier TEXT NOT NULL, to_tier TEXT NOT NULL, "
        "direction TEXT NOT NULL, PRIMARY KEY (aggregate_id, version))",
        "CREATE INDEX IF NOT EXISTS tier_changes_month ON tier_changes (month)",
    )

    def __init__(self, tier_order: Sequence[str]) -> None:
        self._rank = {name: i for i, name in enumerate(tier_order)}

    def on_PurchaseRecorded(self, cur: Cursor, aggregate_id: UUID, event: Any, _: int) -> None:
        cur.execute(INSERT_PURCHASE, (str(aggregate_id), event.originator_version, iso(event.at)))

    def on_TierChanged(self, cur: Cursor, aggregate_id: UUID, event: Any, _: int) -> None:
        up = self._rank.get(event.to_tier, 0) > self._rank.get(event.from_tier, 0)
        at = iso(event.at)
        cur.execute(
            INSERT_TIER_CHANGE,
            (
                str(aggregate_id),
                event.originator_version,
                at,
                at[:7],
                event.from_tier,
                event.to_tier,
                "upgrade" if up else "downgrade",
            ),
        )
