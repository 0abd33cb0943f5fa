"""`lot_movements`: every change of a lot, when it happened, for the liability as of any
date; `pending_moves`: points held pending and clawed back from; and the view `point_lots`,
the open lots now, summed from the movements.

Only rows are appended: a page's moves are known from its events alone, so the projection
reads nothing back and keeps no rows in memory. `point_lots` was a table kept up with an
upsert per lot, read back once the lots outgrew a cache: at a million events its ~930,000
rows cost more than every other read model together (projections/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from projections.base import Projection
from projections.events import CREDITS, Event, instant
from services.store.database import Cursor, Row

TABLE = "point_lots"  # a view
MOVEMENTS = "lot_movements"
MOVEMENT_COLUMNS = ("aggregate_id", "version", "seq", "at", "lot_date", "points")
# A purchase's points held pending (+, with their release time) and refunds' clawbacks
# from them (-): the pending points as of any date. Releases are not here: a credit is
# pending as of T exactly when its release time is after T.
PENDING = "pending_moves"
PENDING_COLUMNS = ("aggregate_id", "version", "order_id", "at", "release_at", "points")
TAKES = frozenset({"PointsRedeemed", "RefundRecorded"})
# A lot's points are its movements' sum: a credit forms it, takes (never more than it
# holds: services/domain/member.py) bring it down, to zero when it is closed.
POINT_LOTS = (
    "SELECT aggregate_id, lot_date, CAST(SUM(points) AS BIGINT) AS points FROM lot_movements "
    "GROUP BY aggregate_id, lot_date HAVING SUM(points) > 0"
)


class LotsProjection(Projection):
    """Lots by date: how much of a member's points expires when (debt is not a lot)."""

    name: ClassVar[str] = "lots"
    cost: ClassVar[float] = 1.0
    tables: ClassVar[tuple[str, ...]] = (MOVEMENTS, PENDING)
    # Their keys too: nothing they write reads them (see Projection.index_statements).
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS lot_movements ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, seq INTEGER NOT NULL, "
        "at TEXT NOT NULL, lot_date TEXT NOT NULL, points BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS pending_moves ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, order_id TEXT NOT NULL, "
        "at TEXT NOT NULL, release_at TEXT, points BIGINT NOT NULL)",
    )
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE UNIQUE INDEX IF NOT EXISTS lot_movements_pkey "
        "ON lot_movements (aggregate_id, version, seq)",
        "CREATE UNIQUE INDEX IF NOT EXISTS pending_moves_pkey "
        "ON pending_moves (aggregate_id, version)",
        "CREATE INDEX IF NOT EXISTS lot_movements_lot_date ON lot_movements (lot_date, at)",
    )
    views: ClassVar[Mapping[str, str]] = {TABLE: POINT_LOTS}

    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        cur.insert(MOVEMENTS, MOVEMENT_COLUMNS, movements(events))
        cur.insert(PENDING, PENDING_COLUMNS, _pending_moves(events))


def movements(events: Sequence[Event]) -> list[Row]:
    """The events' changes to lots, in order, as rows of `lot_movements`.

    A take dated before the lot it took from (events arriving out of date order) counts
    from the lot's date: no lot ever sums below zero as of any instant, so the liability
    as of T is one filtered sum, not a sum per lot."""
    rows: list[Row] = []
    append = rows.append
    for _, key, version, kind, at, data in events:
        if kind in CREDITS:
            lot = int(data.points) - int(data.debt_repaid)
            if lot > 0:
                append((key, version, 0, at, at, lot))
        elif kind in TAKES:
            for seq, (tagged, taken) in enumerate(data.consumed):
                date = instant(tagged)
                append((key, version, seq, at if at > date else date, date, -int(taken)))
        elif kind == "PointsExpired":
            # `points` is the (negative) change of the balance: all that the lot held.
            date = instant(data.lot_date)
            append((key, version, 0, at if at > date else date, date, int(data.points)))
    return rows


def _pending_moves(events: Sequence[Event]) -> list[Row]:
    rows: list[Row] = []
    for _, key, version, kind, at, data in events:
        pending = data.pending
        if not pending or kind not in ("PurchaseRecorded", "RefundRecorded"):
            continue
        release_at = data.release_at
        rows.append(
            (
                key,
                version,
                data.order_id,
                at,
                None if release_at is None else instant(release_at),
                int(pending),
            )
        )
    return rows
