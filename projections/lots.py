"""`point_lots`: open points per member and lot date, for the points liability."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from projections.base import Projection, iso
from services.store.database import Cursor

ADD_POINTS = (
    "INSERT INTO point_lots (aggregate_id, lot_date, points) VALUES (?, ?, ?) "
    "ON CONFLICT (aggregate_id, lot_date) "
    "DO UPDATE SET points = point_lots.points + excluded.points"
)
DROP_EMPTY = "DELETE FROM point_lots WHERE aggregate_id = ? AND lot_date = ? AND points <= 0"
CREDITS = ("PurchaseRecorded", "ReferralRewarded", "ReferrerBonusEarned", "SocialShareRecorded")


class LotsProjection(Projection):
    """Lots by date: how much of a member's points expires when (debt is not a lot)."""

    name: ClassVar[str] = "lots"
    tables: ClassVar[tuple[str, ...]] = ("point_lots",)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS point_lots ("
        "aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, lot_date))",
        "CREATE INDEX IF NOT EXISTS point_lots_date ON point_lots (lot_date)",
    )

    def handle(self, cur: Cursor, aggregate_id: UUID, event: Any, position: int) -> None:
        kind = type(event).__name__
        key = str(aggregate_id)
        if kind in CREDITS:
            lot = int(event.points) - int(event.debt_repaid)
            if lot > 0:
                cur.execute(ADD_POINTS, (key, iso(event.at), lot))
        elif kind in ("PointsRedeemed", "RefundRecorded"):
            for lot_date, taken in event.consumed:
                self._take(cur, key, iso(lot_date), int(taken))
        elif kind == "PointsExpired":
            self._take(cur, key, iso(event.lot_date), -int(event.points))

    def _take(self, cur: Cursor, key: str, lot_date: str, points: int) -> None:
        cur.execute(ADD_POINTS, (key, lot_date, -points))
        cur.execute(DROP_EMPTY, (key, lot_date))
