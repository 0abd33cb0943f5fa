"""`point_lots`: open points per member and lot date, for the points liability; and
`lot_movements`: every change of a lot, when it happened, for the liability as of a
past date."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from projections.base import Projection
from projections.cache import RowCache
from projections.events import CREDITS, Event, instant
from services.store.database import Cursor, Row

TABLE = "point_lots"
MOVEMENTS = "lot_movements"
MOVEMENT_COLUMNS = ("aggregate_id", "version", "seq", "at", "lot_date", "points")
# A purchase's points held pending (+, with their release time) and refunds' clawbacks
# from them (-): the pending points as of any date. Releases are not here: a credit is
# pending as of T exactly when its release time is after T.
PENDING = "pending_moves"
PENDING_COLUMNS = ("aggregate_id", "version", "order_id", "at", "release_at", "points")
KEY = ("aggregate_id", "lot_date")
COLUMNS = (*KEY, "points")
TAKES = frozenset({"PointsRedeemed", "RefundRecorded"})
Lot = tuple[str, str]  # (aggregate_id, lot_date)


class LotsProjection(Projection):
    """Lots by date: how much of a member's points expires when (debt is not a lot)."""

    name: ClassVar[str] = "lots"
    tables: ClassVar[tuple[str, ...]] = (TABLE, MOVEMENTS, PENDING)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS point_lots ("
        "aggregate_id TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, lot_date))",
        "CREATE TABLE IF NOT EXISTS lot_movements ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, seq INTEGER NOT NULL, "
        "at TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, version, seq))",
        "CREATE TABLE IF NOT EXISTS pending_moves ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, order_id TEXT NOT NULL, "
        "at TEXT NOT NULL, release_at TEXT, points BIGINT NOT NULL, "
        "PRIMARY KEY (aggregate_id, version))",
    )
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE INDEX IF NOT EXISTS point_lots_date ON point_lots (lot_date)",
        "CREATE INDEX IF NOT EXISTS lot_movements_lot_date ON lot_movements (lot_date, at)",
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
        # A take dated before the lot it took from (events arriving out of date order)
        # counts from the lot's date: no lot ever sums below zero as of any instant, so the
        # liability as of T is one filtered sum, not a sum per lot.
        cur.insert(
            MOVEMENTS,
            MOVEMENT_COLUMNS,
            [
                (key, version, seq, max(at, date), date, points)
                for (key, date), points, _, version, seq, at in moves
            ],
        )
        cur.insert(PENDING, PENDING_COLUMNS, _pending_moves(events))
        missing = cache.missing(lot for lot, *_ in moves)
        if missing:
            for key, date, points in cur.select(TABLE, COLUMNS, KEY, missing):
                lots[key, date] = points
        before: dict[Lot, int | None] = {}  # each moved lot's points before the page
        for lot, points, taking, *_ in moves:
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


# (lot, points added, whether it takes, the event's version, its order in the event, when)
Move = tuple[Lot, int, bool, int, int, str]


def _moves(events: Sequence[Event]) -> list[Move]:
    """The events' changes to lots, in order."""
    moves: list[Move] = []
    for _, key, version, kind, at, data in events:
        if kind in CREDITS:
            lot = int(data["points"]) - int(data["debt_repaid"])
            if lot > 0:
                moves.append(((key, at), lot, False, version, 0, at))
        elif kind in TAKES:
            for seq, (lot_date, taken) in enumerate(data["consumed"]):
                moves.append(((key, instant(lot_date)), -int(taken), True, version, seq, at))
        elif kind == "PointsExpired":
            # `points` is the (negative) change of the balance: all that the lot held.
            lot_date = instant(data["lot_date"])
            moves.append(((key, lot_date), int(data["points"]), True, version, 0, at))
    return moves


def _pending_moves(events: Sequence[Event]) -> list[Row]:
    rows: list[Row] = []
    for _, key, version, kind, at, data in events:
        pending = data.get("pending")
        if not pending or kind not in ("PurchaseRecorded", "RefundRecorded"):
            continue
        release_at = data.get("release_at")
        rows.append(
            (
                key,
                version,
                data["order_id"],
                at,
                None if release_at is None else instant(release_at),
                int(pending),
            )
        )
    return rows
