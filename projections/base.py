"""What every projection is: a name, its tables, and a handler per event type.

A projection's rows and its position are written in one transaction, so a projector
killed at any instant resumes exactly after the last page it committed. Rebuilding is
"drop the tables, reset the position, run from zero".
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from services.store.database import Cursor

Handler = Callable[[Any, Cursor, UUID, Any, int], None]


class Projection(ABC):
    name: ClassVar[str]
    tables: ClassVar[Sequence[str]]
    create_statements: ClassVar[Sequence[str]]

    def handle(self, cur: Cursor, aggregate_id: UUID, event: Any, position: int) -> None:
        handler = getattr(self, f"on_{type(event).__name__}", None)
        if handler is not None:
            handler(cur, aggregate_id, event, position)


def iso(value: datetime) -> str:
    # ISO 8601 UTC text, fixed width to the second, in both backends: it sorts and
    # compares as text exactly as the instants do (the store keeps sub-second precision).
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
