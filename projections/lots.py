"""`point_lots`: open points per member and lot date, for the points liability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from projections.base import Projection
from projections.cache import RowCache
from projections.events import CREDITS, Event, instant
from services.store.database import Cursor, Row

TABLE = "point_lots"
KEY = ("aggregate_id", "lot_date")
COLUMNS = (*KEY, "points")
TAKES = frozenset({"PointsRedeemed", "RefundRecorded"})
Lot = tuple[str, str]  # (aggregate_id, lot_date)


class LotsProjection(Projection):
    """Lots by date: how much of a member's points expires when (debt is not a lot)."""

    name: ClassVar[str] = "lots"
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS point_lots ("
        "aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, lot_date))",
    )
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE INDEX IF NOT EXISTS point_lots_date ON point_lots (lot_date)",
    )

    def __init__(self) -> None:
        # open lot -> points as stored; the page's moves update it in place.
        self._cache: RowCache[Lot, int] = RowCache()

    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        """Moves the page's lots (read once, or known from the pages before) in order and
        writes each one's outcome."""
        cache = self._cache
        cache.begin(since)
        lots = cache.rows
        moves = _moves(events)
        missing = cache.missing(lot for lot, _, _ in moves)
        if missing:
            for key, date, points in cur.select(TABLE, COLUMNS, KEY, missing):
                lots[key, date] = points
        before: dict[Lot, int | None] = {}  # each moved lot's points before the page
        for lot, points, taking in moves:
            held = lots.get(lot)
            if lot not in before:
                before[lot] = held
            held = (held or 0) + points
            # A lot taken down to nothing is closed; a later credit at its date opens it anew.
            if taking and held <= 0:
                lots.pop(lot, None)
            else:
                lots[lot] = held
        opened: list[Row] = []
        changed: list[Row] = []
        closed: list[Row] = []
        for lot, held in before.items():
            now = lots.get(lot)
            if now is None:
                if held is not None:
                    closed.append(lot)
            elif held is None:
                opened.append((*lot, now))
            elif now != held:
                changed.append((*lot, now))
        cur.insert(TABLE, COLUMNS, opened)
        cur.update(TABLE, KEY, ("points",), changed)
        cur.delete(TABLE, KEY, closed)

    def committed(self, position: int) -> None:
        self._cache.committed(position)


def _moves(events: Sequence[Event]) -> list[tuple[Lot, int, bool]]:
    """The events' changes to lots, in order: (lot, points added, whether it takes)."""
    moves: list[tuple[Lot, int, bool]] = []
    for _, key, _, kind, at, data in events:
        if kind in CREDITS:
            lot = int(data["points"]) - int(data["debt_repaid"])
            if lot > 0:
                moves.append(((key, at), lot, False))
        elif kind in TAKES:
            for lot_date, taken in data["consumed"]:
                moves.append(((key, instant(lot_date)), -int(taken), True))
        elif kind == "PointsExpired":
            # `points` is the (negative) change of the balance: all that the lot held.
            moves.append(((key, instant(data["lot_date"])), int(data["points"]), True))
    return moves
