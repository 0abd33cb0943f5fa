"""`point_lots`: open points per member and lot date, for the points liability."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from projections.base import Projection
from projections.events import Event, instant
from services.store.database import Cursor

TABLE = "point_lots"
KEY = ("aggregate_id", "lot_date")
CREDITS = frozenset(
    {"PurchaseRecorded", "ReferralRewarded", "ReferrerBonusEarned", "SocialShareRecorded"}
)
Lot = tuple[str, str]  # (aggregate_id, lot_date)


class LotsProjection(Projection):
    """Lots by date: how much of a member's points expires when (debt is not a lot)."""

    name: ClassVar[str] = "lots"
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS point_lots ("
        "aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, lot_date))",
        "CREATE INDEX IF NOT EXISTS point_lots_date ON point_lots (lot_date)",
    )

    def apply(self, cur: Cursor, events: Sequence[Event]) -> None:
        """Loads the lots the page moves, moves them in order, writes each one's outcome."""
        moves = [move for e in events for move in _moves(e)]
        touched = list({lot: None for lot, _, _ in moves})
        stored: dict[Lot, int] = {
            (key, date): points
            for key, date, points in cur.select(TABLE, (*KEY, "points"), KEY, touched)
        }
        lots = dict(stored)
        for lot, points, taking in moves:
            held = lots.get(lot, 0) + points
            # A lot taken down to nothing is closed; a later credit at its date opens it anew.
            if taking and held <= 0:
                lots.pop(lot, None)
            else:
                lots[lot] = held
        cur.insert(
            TABLE, (*KEY, "points"), [(*lot, n) for lot, n in lots.items() if lot not in stored]
        )
        cur.update(
            TABLE,
            KEY,
            ("points",),
            [(*lot, n) for lot, n in lots.items() if lot in stored and n != stored[lot]],
        )
        cur.delete(TABLE, KEY, [lot for lot in stored if lot not in lots])


def _moves(e: Event) -> Iterator[tuple[Lot, int, bool]]:
    """The event's changes to lots, in order: (lot, points added, whether it takes)."""
    if e.kind in CREDITS:
        lot = int(e.data["points"]) - int(e.data["debt_repaid"])
        if lot > 0:
            yield (e.aggregate_id, e.at), lot, False
    elif e.kind in ("PointsRedeemed", "RefundRecorded"):
        for lot_date, taken in e.data["consumed"]:
            yield (e.aggregate_id, instant(lot_date)), -int(taken), True
    elif e.kind == "PointsExpired":
        # `points` is the (negative) change of the balance: all that the lot held.
        yield (e.aggregate_id, instant(e.data["lot_date"])), int(e.data["points"]), True
