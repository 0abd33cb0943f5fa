"""Follows the event store's notification log and feeds every projection, page by page.

SQLite's recorder cannot subscribe (FACTS.md), so the runner polls the store for both
backends: one code path, and idle polls are cheap. Each page is read and decoded once and
handed to every projection whose position is behind its end, in one transaction that also
saves those projections' positions.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from projections.base import Projection, iso
from projections.events import decode
from services.store.database import Cursor, Database
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

CREATE_POSITIONS = (
    "CREATE TABLE IF NOT EXISTS projection_positions "
    "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)
CREATE_REBUILDS = "CREATE TABLE IF NOT EXISTS projection_rebuilds (started_at TEXT NOT NULL)"
SELECT_POSITIONS = "SELECT name, position FROM projection_positions"
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
        mapper = ledger.mapper
        if mapper.cipher is not None or mapper.compressor is not None:
            raise ValueError(
                "projections decode stored states as plain JSON: no cipher, no compressor"
            )
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
        with self._db.transaction() as cur:
            return self._positions(cur)

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
        """Applies one page of the log to the projections behind its end; returns the
        number of notifications in the page."""
        return self._advance()[0]

    def catch_up(self, progress: Progress | None = None) -> int:
        total = 0
        while True:
            done, reached = self._advance()
            if done == 0:
                return total
            total += done
            if progress is not None:
                progress(reached, self._ledger.last_position())

    def run_forever(self, should_stop: Callable[[], bool], idle_seconds: float = 0.2) -> None:
        self.setup()
        while not should_stop():
            if self.run_once() == 0:
                time.sleep(idle_seconds)

    def _advance(self) -> tuple[int, int]:
        """(notifications read, the position every projection has reached)."""
        with self._db.transaction() as cur:
            # A projector and a replay may follow the same store: the locks (in one order,
            # so two runners cannot deadlock) and the positions read inside them let
            # exactly one of them apply each page.
            for name in sorted(p.name for p in self.projections):
                self._db.lock(cur, f"projection:{name}")
            positions = self._positions(cur)
            start = min(positions.values())
            events = decode(cur.notifications(self._events_table(), start, self.page))
            if not events:
                return 0, start
            ends = [e.position for e in events]
            for projection in self.projections:
                # Each projection takes only what follows its own position.
                behind = events[bisect.bisect_right(ends, positions[projection.name]) :]
                if behind:
                    projection.apply(cur, behind)
                    cur.execute(SAVE_POSITION, (projection.name, ends[-1]))
        return len(events), ends[-1]

    def _positions(self, cur: Cursor) -> dict[str, int]:
        cur.execute(SELECT_POSITIONS)
        rows = {name: int(position) for name, position in cur.fetchall()}
        return {p.name: rows.get(p.name, 0) for p in self.projections}

    def _events_table(self) -> str:
        store = self._ledger.store
        schema: str = getattr(store.datastore, "schema", "")  # PostgreSQL's store only
        return f"{schema}.{store.events_table_name}" if schema else store.events_table_name


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
