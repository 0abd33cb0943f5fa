"""What every projection is: a name, its tables, and a fold of a page of events.

A projection's rows and its position are written in one transaction, so a projector
killed at any instant resumes exactly after the last page it committed. Rebuilding is
"drop the tables, reset the position, run from zero".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from services.store.database import Cursor

if TYPE_CHECKING:
    from projections.events import Event


class Projection(ABC):
    name: ClassVar[str]
    tables: ClassVar[Sequence[str]]
    create_statements: ClassVar[Sequence[str]]  # the tables, with their keys
    # What only readers need, keys included wherever the projection's own writes do not
    # read by them: built after a rebuild's load rather than kept up row by row on the way.
    # At a million events the keys of append-only tables, kept up during the load, cost
    # more than the rows (random inserts into indexes larger than PostgreSQL's buffers);
    # built at the end they take seconds. A key is `CREATE UNIQUE INDEX IF NOT EXISTS
    # <table>_pkey`: the name PostgreSQL gave the primary key of the earlier definitions,
    # so that a store made by them gets no second index of the same key. Exactly-once
    # does not rest on keys: the runner's lock and position decide which pages apply.
    index_statements: ClassVar[Sequence[str]] = ()
    # SQL views over the tables (name -> SELECT), for analysts: made after the tables,
    # dropped before them (a table with a view on it cannot be dropped).
    views: ClassVar[Mapping[str, str]] = {}
    # Its Python time per event, relative to the others': a long catch-up shared among
    # processes groups the projections by it (ProjectionRunner.groups).
    cost: ClassVar[float] = 1.0

    def begin(self, since: int) -> None:  # noqa: B027 (a hook; most need nothing)
        """A transaction starts from `since`, the projection's position read in it; the
        pages `apply` gets until the commit follow it, in order."""

    @abstractmethod
    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        """Folds a page of events, in order, into the tables: a few bulk statements in the
        caller's transaction, whatever the page's size. `since` is the position the
        events follow (the transaction's, or the last event of the page before)."""

    def held(self) -> int:
        """Rows `apply` has kept in memory for `flush` to write, rather than writing them
        page by page. While a catch-up is under way the runner gives such a projection
        the pages that follow in the same transaction (up to a bound), so that a row the
        pages touch again and again is written once (projections/README.md)."""
        return 0

    def flush(self, cur: Cursor) -> None:  # noqa: B027 (a hook; most need nothing)
        """Writes the rows `apply` held, in the transaction, before its position."""

    def committed(self, position: int) -> None:  # noqa: B027 (a hook; most need nothing)
        """The transaction that applied the events up to `position` has committed."""


def iso(value: datetime) -> str:
    # ISO 8601 UTC text, fixed width to the second, in both backends: it sorts and
    # compares as text exactly as the instants do (the store keeps sub-second precision).
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
