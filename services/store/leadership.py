"""Which process of several may do a once-per-store job (the member-events relay).

PostgreSQL elects with a session-level advisory lock held on a connection of its own:
when the holder dies or its connection drops, the server releases the lock and the
next process to ask takes over. A SQLite store lives on one host with one follower
process, so it always leads.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod

import psycopg

from services.store.urls import DatabaseUrl

log = logging.getLogger(__name__)


class Leadership(ABC):
    @abstractmethod
    def held(self) -> bool:
        """True while this process leads; asks again (and may win) when it does not."""

    @abstractmethod
    def release(self) -> None:
        """Gives the lead up, for another process to take."""


class AlwaysLeader(Leadership):
    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class PostgresLeadership(Leadership):
    def __init__(self, url: DatabaseUrl, name: str) -> None:
        self._conninfo = url.conninfo()
        self._name = name
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._held = False

    def held(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
                self._held = False
            if self._held:
                self._conn.execute("SELECT 1")  # still connected, so still holding
            else:
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", (self._name,)
                ).fetchone()
                self._held = bool(row and row[0])
                if self._held:
                    log.info("leading %s", self._name)
        except psycopg.OperationalError as exc:
            log.warning("lost the connection that holds %s: %s", self._name, exc)
            self.release()
        return self._held

    def release(self) -> None:
        if self._conn is not None:
            # Unlocked before closing: a closed session's locks go only once the server
            # has noticed, and a successor asking at once must find it free.
            if self._held:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self._name,))
            self._conn.close()
            self._conn = None
        self._held = False


def leadership(database_url: str, name: str) -> Leadership:
    url = DatabaseUrl.parse(database_url)
    return PostgresLeadership(url, name) if url.is_postgres else AlwaysLeader()
