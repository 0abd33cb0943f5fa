"""Follows the event store's notification log and feeds every projection, page by page.

SQLite's recorder cannot subscribe (FACTS.md), so the runner polls
`select_notifications` for both backends: one code path, and idle polls are cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID

from projections.base import Projection, iso
from services.store.database import Database
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

CREATE_POSITIONS = (
    "CREATE TABLE IF NOT EXISTS projection_positions "
    "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)
CREATE_REBUILDS = "CREATE TABLE IF NOT EXISTS projection_rebuilds (started_at TEXT NOT NULL)"
SELECT_POSITION = "SELECT position FROM projection_positions WHERE name = ?"
SAVE_POSITION = (
    "INSERT INTO projection_positions (name, position) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)

Progress = Callable[[int, int], None]


def now() -> datetime:
    return datetime.now(UTC)


class ProjectionRunner:
    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        projections: Sequence[Projection],
        page: int = 5000,
    ) -> None:
        self._ledger = ledger
        self._db = database
        self.projections = list(projections)
        self.page = page

    def setup(self) -> None:
        with self._db.transaction() as cur:
            cur.execute(CREATE_POSITIONS)
            cur.execute(CREATE_REBUILDS)
            for projection in self.projections:
                for statement in projection.create_statements:
                    cur.execute(statement)

    def positions(self) -> dict[str, int]:
        rows: dict[str, int] = dict(
            self._db.query("SELECT name, position FROM projection_positions")
        )
        return {p.name: int(rows.get(p.name, 0)) for p in self.projections}

    def rebuilding(self) -> bool:
        """True from the start of a rebuild until one completes (an interrupted one too)."""
        return bool(self._db.query("SELECT COUNT(*) FROM projection_rebuilds")[0][0])

    def rebuild(self, progress: Progress | None = None) -> int:
        """Drops every read model and rebuilds it from the first event; re-run to resume
        an interrupted one. Readers see `rebuilding()` until it completes."""
        with self._db.transaction() as cur:
            cur.execute("INSERT INTO projection_rebuilds (started_at) VALUES (?)", (iso(now()),))
        self.reset()
        done = self.catch_up(progress)
        with self._db.transaction() as cur:
            cur.execute("DELETE FROM projection_rebuilds")
        return done

    def reset(self) -> None:
        """Drops every read model: the next run rebuilds them from the first event."""
        with self._db.transaction() as cur:
            for projection in self.projections:
                for table in projection.tables:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute("DELETE FROM projection_positions WHERE name = ?", (projection.name,))
        self.setup()

    def run_once(self) -> int:
        """Processes at most one page per projection; returns notifications processed."""
        done = 0
        for projection in self.projections:
            done += self._advance(projection)
        return done

    def catch_up(self, progress: Progress | None = None) -> int:
        total = 0
        while (n := self.run_once()) > 0:
            total += n
            if progress is not None:
                progress(min(self.positions().values()), self._ledger.last_position())
        return total

    def run_forever(self, should_stop: Callable[[], bool], idle_seconds: float = 0.2) -> None:
        self.setup()
        while not should_stop():
            if self.run_once() == 0:
                time.sleep(idle_seconds)

    def _advance(self, projection: Projection) -> int:
        to_event = self._ledger.mapper.to_domain_event
        with self._db.transaction() as cur:
            # A projector and a replay may follow the same store: the lock and the
            # position read inside it let exactly one of them apply each page.
            self._db.lock(cur, f"projection:{projection.name}")
            cur.execute(SELECT_POSITION, (projection.name,))
            row = cur.fetchone()
            position = int(row[0]) if row else 0
            notifications = self._ledger.store.select_notifications(
                start=position, limit=self.page, inclusive_of_start=False
            )
            for notification in notifications:
                event = to_event(notification)
                projection.handle(
                    cur, UUID(str(notification.originator_id)), event, notification.id
                )
            if notifications:
                cur.execute(SAVE_POSITION, (projection.name, notifications[-1].id))
        return len(notifications)


def default_projections(tier_order: Sequence[str]) -> list[Projection]:
    """Every read model, for the program's tiers (lowest first)."""
    from projections.activity import ActivityProjection
    from projections.balances import BalancesProjection
    from projections.ledger_entries import LedgerEntriesProjection
    from projections.lots import LotsProjection

    return [
        BalancesProjection(tier_order[0]),
        LedgerEntriesProjection(),
        ActivityProjection(tier_order),
        LotsProjection(),
    ]
