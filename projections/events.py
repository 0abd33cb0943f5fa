"""Stored events decoded once per page, for every projection.

The store's states are plain JSON (the ledger configures no cipher and no compressor)
in the format of services/store/transcoder.py: decimals, datetimes and UUIDs are tagged
objects. Decoding only the JSON and the one instant every projection needs costs a
fraction of building eventsourcing's event objects, which the projections never need.
The projections thus read states as stored: should a domain event ever be versioned
with an upcaster, they must read both shapes (eventsourcing's mapper is not in the way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import orjson

from projections.base import iso
from services.store.database import Notification

# The tags of services/store/transcoder.py (stored forever).
_RESTORE: dict[str, Callable[[Any], Any]] = {
    "decimal_str": Decimal,
    "datetime_iso": datetime.fromisoformat,
    "uuid_hex": lambda data: UUID(hex=data),
}


# Events that credit the balance: each forms a lot dated at its `at` (points beyond the
# debt it repaid) and counts toward lifetime points (services/domain/member.py).
CREDITS = frozenset(
    {
        "PurchaseRecorded",
        "ReferralRewarded",
        "ReferrerBonusEarned",
        "SocialShareRecorded",
        "Enrolled",
        "ReviewRecorded",
        "BirthdayRewarded",
        "BadgeEarned",
        "PointsReleased",
    }
)


class Event(NamedTuple):
    position: int
    aggregate_id: str
    version: int
    kind: str  # the domain event's class name: "PurchaseRecorded"
    at: str  # the event's `at` as `iso` text; "" for Registered, the one without an `at`
    data: dict[str, Any]  # the stored state; tagged values as stored (see `plain`, `instant`)


def decode(notifications: Sequence[Notification]) -> list[Event]:
    """The page's events, in order: each state parsed once, its `at` made `iso` text.

    Most of the reader's time goes here, event by event: what `instant` does is done
    inline, and each event is made as a tuple, not through the named tuple's __new__."""
    loads = orjson.loads
    kinds = _KINDS
    make = tuple.__new__
    events: list[Event] = []
    append = events.append
    for position, aggregate_id, version, topic, state in notifications:
        data = loads(state)
        # Only an escape puts U+0000 in JSON. Ingestion refuses it now, but a store may
        # hold events from before: PostgreSQL's text cannot, and one would stop the read
        # side for good.
        if b"\\u0000" in state:
            data = _without_nul(data)
        tagged = data.get("at")
        if tagged is None:
            at = ""
        else:
            text = tagged["_data_"]
            at = (
                text[:19] + "Z"
                if text.endswith("+00:00") and len(text) in (25, 32) and text[0] != "0"
                else instant(tagged)
            )
        kind = kinds.get(topic) or kinds.setdefault(topic, topic.rsplit(".", 1)[-1])
        append(make(Event, (position, aggregate_id, version, kind, at, data)))
    return events


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


_KINDS: dict[str, str] = {}  # topic -> kind, "services.domain.member:Member.X" -> "X"


def instant(tagged: dict[str, str]) -> str:
    """A stored datetime as `iso` text, without parsing it when it is already UTC."""
    text = tagged["_data_"]
    # isoformat() of a UTC instant: "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00". Years before
    # 1000 take the slow path: strftime would not pad them as isoformat does.
    if text.endswith("+00:00") and len(text) in (25, 32) and text[0] != "0":
        return text[:19] + "Z"
    return iso(datetime.fromisoformat(text))


def cents(tagged: dict[str, str]) -> int:
    """A stored amount (a tagged decimal string, at most 2 decimals) in integer cents."""
    return int(Decimal(tagged["_data_"]) * 100)


def plain(value: Any) -> Any:
    """A stored value as the domain event holds it."""
    if isinstance(value, dict) and "_type_" in value:
        return _RESTORE[value["_type_"]](value["_data_"])
    return value
