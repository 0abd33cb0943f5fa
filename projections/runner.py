"""Follows the event store's notification log and feeds every projection, page by page.

eventsourcing 9.5's SQLite recorder cannot subscribe, so the runner polls the store for both
backends: one code path, and idle polls are cheap.

Each page is read and decoded once, by the calling thread, and queued for every
projection. Each projection applies its pages in a thread and a connection of its own,
one transaction per page (or per run of pages queued while it was busy) with its
position, so the four write side by side (PostgreSQL works on them while Python decodes
and folds the next pages), and none waits for the slowest at every page.

A long catch-up (a replay, a projector starting far behind) is shared among processes:
one interpreter decodes and folds on one core at a time, whatever its threads. Each
process takes a group of projections and reads the log itself; the groups' locks and
positions are the same as a thread's, so a process killed at any instant loses nothing
and the one that follows resumes after its last committed page.
"""

from __future__ import annotations

import bisect
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from queue import Full, Queue

from projections.base import Projection, iso
from projections.events import Event, decode
from services import telemetry
from services.faults import Fault, backoff, fault_of
from services.store.database import Cursor, Database
from services.store.ledger import Ledger

log = logging.getLogger(__name__)

CREATE_POSITIONS = (
    "CREATE TABLE IF NOT EXISTS projection_positions "
    "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)
CREATE_REBUILDS = "CREATE TABLE IF NOT EXISTS projection_rebuilds (started_at TEXT NOT NULL)"
SELECT_POSITIONS = "SELECT name, position FROM projection_positions"
SELECT_POSITION = "SELECT position FROM projection_positions WHERE name = ?"
SAVE_POSITION = (
    "INSERT INTO projection_positions (name, position) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)
# Events decoded ahead of the slowest projection (~60 MB): enough for the reader to keep
# decoding while the projections wait on the database, and for a projection behind to
# take several pages in one transaction.
AHEAD = 40_000

# Events the slowest projection must be behind before a catch-up is shared among
# processes (unless the runner is told otherwise): starting one (a fresh interpreter,
# its imports) costs about a second.
PROCESSES_FROM = 200_000

# Seconds a transaction may hold rows across pages: a projector far behind commits the
# rows it holds at least this often (each commit writes at most every member's row once).
HOLD_SECONDS = 30.0

Progress = Callable[[int, int], None]
Page = tuple[int, list[Event]]  # (the position the page follows, its events in order)
# Catches up the named projections in the calling process, in pages of the given size
# (then builds their read indexes, if the flag says they are due), until the log's end
# or until the process with the given pid is gone, keeping the shared value at the
# position its projections have applied (committed, or held for a later commit: their
# positions in the store say less while rows are held); pickled into each process a
# shared catch-up starts.
CatchUpApart = Callable[[tuple[str, ...], int, bool, int, "Synchronized[int]"], None]


def now() -> datetime:
    return datetime.now(UTC)


class ProjectionRunner:
    def __init__(
        self,
        ledger: Ledger,
        connect: Callable[[], Database],
        projections: Sequence[Projection],
        page: int = 5000,
        processes: int = 1,
        apart: CatchUpApart | None = None,
        processes_from: int = PROCESSES_FROM,
        hold_rows: int = 0,
    ) -> None:
        self._ledger = ledger
        self._table = ledger.events_table()
        self._db = connect()
        self.projections = list(projections)
        self.page = page
        self._processes = processes if apart is not None else 1
        self._apart = apart
        self.processes_from = processes_from
        # Rows a projection may hold in memory across the pages of one transaction
        # (Projection.held). 0 commits every page; SQLite, one writer at a time, must: a
        # transaction held open would keep the other projections from writing.
        self.hold_rows = hold_rows
        self.hold_seconds = HOLD_SECONDS
        self._writers = {p.name: connect() for p in self.projections}
        # reset() left the tables without their read indexes: the catch-up builds them at the end
        self.indexes_due = False
        self._pool = ThreadPoolExecutor(len(self.projections), thread_name_prefix="projection")

    def setup(self) -> None:
        with self._db.transaction() as cur:
            # The projector and the API start together: PostgreSQL's CREATE ... IF NOT
            # EXISTS is not safe against a concurrent twin, so creators take turns.
            self._db.lock(cur, "projections:schema")
            cur.create_table(CREATE_POSITIONS)
            cur.create_table(CREATE_REBUILDS)
            for projection in self.projections:
                for statement in projection.create_statements:
                    cur.create_table(statement)
                for statement in projection.index_statements:
                    cur.execute(statement)
            self._make_views(cur)

    def close(self) -> None:
        """Stops the writer threads and closes every connection the runner opened."""
        self._pool.shutdown(wait=True)
        for database in (self._db, *self._writers.values()):
            database.close()

    def _disconnect(self) -> None:
        for database in (self._db, *self._writers.values()):
            try:
                database.close()
            except Exception as exc:  # closing what already broke: nothing left to save
                log.debug("closing a connection failed: %s", exc)

    def positions(self) -> dict[str, int]:
        rows = {name: int(position) for name, position in self._db.query(SELECT_POSITIONS)}
        return {p.name: rows.get(p.name, 0) for p in self.projections}

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
        """Drops every read model: the next catch-up rebuilds them from the first event.

        The tables come back with their keys only; the catch-up that fills them builds
        their other indexes once it reaches the log's end (building one at the end costs a
        fraction of keeping it up row by row), and so does `setup` in any process that
        starts meanwhile."""
        with self._db.transaction() as cur:
            # Views, then tables, as `setup` (tables, then views) must not meet it half-way:
            # each would hold what the other waits for.
            self._db.lock(cur, "projections:schema")
            self._drop_views(cur)
            for projection in self.projections:
                # Under the projection's lock, and back in the same transaction: a
                # projector following meanwhile waits, then finds its position gone and
                # starts over, and never meets a missing table.
                self._db.lock(cur, f"projection:{projection.name}")
                for table in projection.tables:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute("DELETE FROM projection_positions WHERE name = ?", (projection.name,))
                for statement in projection.create_statements:
                    cur.create_table(statement)
            self._make_views(cur)
        self.indexes_due = True

    def _views(self) -> list[tuple[str, str]]:
        return [(name, sql) for p in self.projections for name, sql in p.views.items()]

    def _drop_views(self, cur: Cursor) -> None:
        for name, _ in reversed(self._views()):  # a view may stand on the ones before it
            kind = cur.relation_kind(name)
            if kind == "view":
                cur.execute(f"DROP VIEW {name}")
            elif kind == "table":
                # A read model that was a table before it became a view (`point_lots`):
                # the view replaces it.
                cur.execute(f"DROP TABLE {name}")

    def _make_views(self, cur: Cursor) -> None:
        # Made anew at every start: a view's definition follows the code that reads it.
        self._drop_views(cur)
        for name, sql in self._views():
            cur.execute(f"CREATE VIEW {name} AS {sql}")

    def catch_up(
        self, progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Applies the log up to its end (or until `should_stop`); returns the
        notifications read."""
        total = 0
        if self._processes > 1 and self._behind() >= self.processes_from:
            total += self.catch_up_apart(progress, should_stop)
            if should_stop():
                return total
        with _collector_paused():
            # A round ends early when another runner moved a projection meanwhile: the
            # next one starts again from where the last projection stands.
            while (read := self._round(progress, should_stop)) > 0:
                total += read
                if should_stop():
                    return total
        if self.indexes_due:
            # Side by side too: the largest tables' indexes take the most time.
            for building in [self._pool.submit(self._index, p) for p in self.projections]:
                building.result()
            self.indexes_due = False
        return total

    def _behind(self) -> int:
        return self._ledger.last_position() - min(self.positions().values())

    def groups(self, count: int) -> list[tuple[str, ...]]:
        """The projections in at most `count` groups of about equal work, heaviest first."""
        loads: list[tuple[float, list[str]]] = []
        for projection in sorted(self.projections, key=lambda p: -p.cost):
            if len(loads) < count:
                loads.append((projection.cost, [projection.name]))
                continue
            lightest = min(range(len(loads)), key=lambda i: loads[i][0])
            load, names = loads[lightest]
            loads[lightest] = (load + projection.cost, [*names, projection.name])
        return [tuple(names) for _, names in loads]

    def catch_up_apart(
        self, progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Each group of projections catches up in a process of its own, while this one
        reports progress; returns how far the slowest projection moved. A process that
        fails leaves its projections where it stopped: `catch_up`, which calls this
        first, takes them on in this process (and meets the error again, if it lasts)."""
        if self._apart is None:
            raise ValueError("this runner was given no way to start a catch-up apart")
        start = min(self.positions().values())
        # "spawn": a fork would copy this process's threads' locks and connections.
        context = multiprocessing.get_context("spawn")
        groups = self.groups(self._processes)
        applied = [context.Value("q", start) for _ in groups]
        processes = [
            context.Process(
                target=self._apart,
                # A group that ends first builds its indexes while the others still load.
                args=(group, self.page, self.indexes_due, os.getpid(), reached),
                name=f"projections:{'+'.join(group)}",
                daemon=True,
            )
            for group, reached in zip(groups, applied, strict=True)
        ]
        for process in processes:
            process.start()
        try:
            while running := [p.sentinel for p in processes if p.is_alive()]:
                if should_stop():
                    break
                if progress is not None:
                    progress(min(v.value for v in applied), self._ledger.last_position())
                multiprocessing.connection.wait(running, timeout=0.5)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()  # mid-page: its transaction rolls back
                process.join()
        for process in processes:
            if process.exitcode != 0:
                log.warning(
                    "%s exited with %s; this process takes its projections on",
                    process.name,
                    process.exitcode,
                )
        return min(self.positions().values()) - start

    def run_forever(self, should_stop: Callable[[], bool], idle_seconds: float = 0.2) -> None:
        """Follows the store until `should_stop`, waiting out its outages: a page that
        failed is rolled back with its position, and read again once the store is back."""
        attempt = 0
        ready = False
        measured = 0.0
        while not should_stop():
            try:
                if not ready:
                    self.setup()
                    ready = True
                read = self.catch_up(should_stop=should_stop)
                attempt = 0
                if time.monotonic() - measured >= 1.0:
                    measured = time.monotonic()
                    telemetry.positions(self._ledger.last_position(), self.positions())
            except Exception as exc:
                if fault_of(exc) is not Fault.OUTAGE:
                    raise
                attempt += 1
                telemetry.OUTAGE_RETRIES.labels("projector", "projections").inc()
                delay = backoff(attempt)
                log.error("projections paused (%s); retrying in %.1fs", exc, delay)
                # Every thread holds a connection of each database: a server that went
                # away leaves them all dead, and each would fail one more round.
                self._disconnect()
                _sleep_unless(should_stop, delay)
                continue
            if read == 0:
                time.sleep(idle_seconds)

    def _round(self, progress: Progress | None, should_stop: Callable[[], bool]) -> int:
        start = min(self.positions().values())
        reached = dict.fromkeys(self._writers, start)  # projection -> position applied
        ahead = max(2, AHEAD // self.page)  # pages
        queues = {name: Queue[Page | None](maxsize=ahead) for name in self._writers}
        following = {
            p.name: self._pool.submit(self._follow, p, queues[p.name], reached)
            for p in self.projections
        }
        after = start
        read = 0
        try:
            while not should_stop() and (events := self._read(after)):
                if not all(_offer(queues[n], (after, events), f) for n, f in following.items()):
                    break  # a projection stopped following: a new round will see why
                after = events[-1].position
                read += len(events)
                if read % COLLECT_EVERY < len(events):
                    gc.collect(0)  # the young: what the other threads made meanwhile
                if progress is not None:
                    progress(min(reached.values()), self._ledger.last_position())
        finally:
            for name, future in following.items():
                _offer(queues[name], None, future)
            for future in following.values():
                future.result()  # re-raises a projection's error
        if progress is not None and read:
            progress(min(reached.values()), self._ledger.last_position())  # the last pages'
        return read

    def _read(self, after: int) -> list[Event]:
        with self._db.transaction() as cur:
            return decode(cur.notifications(self._table, after, self.page))

    def _follow(
        self, projection: Projection, pages: Queue[Page | None], reached: dict[str, int]
    ) -> None:
        end = False
        while not end and (page := pages.get()) is not None:
            end = self._advance(projection, page, pages, reached)

    def _advance(
        self,
        projection: Projection,
        page: Page,
        pages: Queue[Page | None],
        reached: dict[str, int],
    ) -> bool:
        """Applies the page's events that follow the projection's position, in one
        transaction with that position, and the pages that follow while the projection
        holds rows for a later write; keeps `reached` at the position applied. Returns
        True once no page is to follow: the queue ended, or the position moved back."""
        name = projection.name
        db = self._writers[name]
        with db.transaction() as cur:
            # A projector and a replay may follow the same store: the lock and the
            # position read inside it let exactly one of them apply each page.
            db.lock(cur, f"projection:{name}")
            cur.execute(SELECT_POSITION, (name,))
            row = cur.fetchone()
            start = position = int(row[0]) if row else 0
            if position < page[0]:
                reached[name] = position
                return True  # moved back (reset) meanwhile: the pages do not follow it
            projection.begin(position)
            began = time.monotonic()
            while True:
                events, full, end = _take(page, pages, self.page)
                behind = events[bisect.bisect_right(events, position, key=_position) :]
                if behind:
                    projection.apply(cur, behind, position)
                    position = behind[-1].position
                reached[name] = position
                # Held rows wait for the next page while the reader brings full ones (a
                # catch-up): a page short of full is the log's end. The time bound keeps
                # a long catch-up's read model from going stale.
                if (
                    end
                    or not full
                    or not 0 < projection.held() < self.hold_rows
                    or time.monotonic() - began > self.hold_seconds
                ):
                    break
                if (next_page := pages.get()) is None:
                    end = True
                    break
                page = next_page
            if position > start:
                projection.flush(cur)
                cur.execute(SAVE_POSITION, (name, position))
        if position > start:
            projection.committed(position)
        return end

    def _index(self, projection: Projection) -> None:
        db = self._writers[projection.name]
        with db.transaction() as cur:
            for statement in projection.index_statements:
                cur.execute(statement)


def _sleep_unless(should_stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(min(0.2, seconds))


def _position(event: Event) -> int:
    return event.position


def _take(page: Page, pages: Queue[Page | None], size: int) -> tuple[list[Event], bool, bool]:
    """The page's events and those of the pages queued behind it (a projection behind
    the others takes them in one go: fewer, larger statements, and a row touched on each
    written once); whether the last of them was full; whether the queue has ended."""
    events = last = page[1]
    while not pages.empty():
        queued = pages.get_nowait()
        if queued is None:
            return events, len(last) >= size, True
        if events is page[1]:
            events = list(events)
        last = queued[1]
        events.extend(last)
    return events, len(last) >= size, False


def _offer(queue: Queue[Page | None], page: Page | None, follower: Future[None]) -> bool:
    """Queues the page unless the follower has stopped (then nobody would take it)."""
    while not follower.done():
        try:
            queue.put(page, timeout=0.1)
            return True
        except Full:
            continue
    return False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pages of decoded events are trees, freed by reference counting: the cyclic
    collector finds nothing in them (nor in anything else a catch-up makes), yet it sets
    off every few hundred allocations and walks every queued page again each time, a
    sixth of a catch-up's CPU time. It is paused meanwhile; the reader runs it over the
    youngest objects every COLLECT_EVERY events, for whatever else in the process (the
    projector's relay) may leave cycles behind."""
    if not gc.isenabled():
        yield  # paused by a catch-up running in another thread: it resumes it
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


COLLECT_EVERY = 200_000  # events read


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
