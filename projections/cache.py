"""A projection's rows as it last wrote them, so that it need not read them back.

The rows are kept only while this runner is the tables' only writer: each page, the
runner hands over the projection's position as read under its lock, and the cache
stays valid only if it is the position the cache reached itself. Anything else (another
runner applied pages, a reset, a page rolled back) empties it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

LIMIT = 250_000  # rows: a few tens of MB; beyond, the cache starts over and reads misses


class RowCache(Generic[K, V]):
    def __init__(self, limit: int = LIMIT) -> None:
        self.rows: dict[K, V] = {}
        # True when `rows` holds every row of the table: a key it lacks is not stored.
        self.complete = False
        self._limit = limit
        self._at: int | None = None  # the position `rows` reflects, once committed

    def begin(self, position: int) -> None:
        """Before applying events after `position`, the projection's committed position."""
        if position != self._at:
            self.rows.clear()
            # A projection at zero has applied nothing: its tables are empty.
            self.complete = position == 0
        self._at = None  # until `committed`

    def committed(self, position: int) -> None:
        self._at = position
        if len(self.rows) > self._limit:
            self.rows.clear()
            self.complete = False

    def missing(self, keys: Iterable[K]) -> list[K]:
        """The keys the table may hold but the cache does not know, once each."""
        if self.complete:
            return []
        rows = self.rows
        return list(dict.fromkeys(key for key in keys if key not in rows))
