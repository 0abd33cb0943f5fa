"""Stored events decoded once per page, for every projection.

The store's states are plain JSON (the ledger configures no cipher and no compressor)
in the format of services/store/transcoder.py: decimals, datetimes and UUIDs are tagged
objects. Decoding only the JSON and the one instant every projection needs costs a
fraction of building eventsourcing's event objects, which the projections never need.
The projections thus read states as stored: should a domain event ever be versioned
with an upcaster, they must read both shapes (eventsourcing's mapper is not in the way).

A state is decoded into `State`, which names the fields the read models read, and
nothing else: the rest of the JSON (eventsourcing's `timestamp`, the originator topic,
the rule's workings) is skipped without making a Python object of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
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


class State(msgspec.Struct, gc=False):
    """What the read models read of a stored state: each field as stored (tagged values
    as their JSON objects, see `plain`, `instant`), None where the event has none.

    Typed `Any`, so that a value decodes exactly as JSON has it and an event stored by
    any version of the domain decodes: checking types here could stop the read side
    on an event the store holds forever. A projection that reads a new field names it
    here first (reading one not named fails at once, in every test that touches it).
    """

    at: Any = None
    event_id: Any = None
    member_id: Any = None
    order_id: Any = None
    amount: Any = None
    points: Any = None
    balance: Any = None
    debt_repaid: Any = None
    qualifying_points: Any = None
    pending: Any = None
    release_at: Any = None
    campaigns: Any = None
    consumed: Any = None
    lot_date: Any = None
    from_tier: Any = None
    to_tier: Any = None
    birth_date: Any = None
    badge_id: Any = None
    reward: Any = None
    network: Any = None
    referrer_id: Any = None
    referee_id: Any = None
    product_id: Any = None
    reason: Any = None


class Event(NamedTuple):
    position: int
    aggregate_id: str
    version: int
    kind: str  # the domain event's class name: "PurchaseRecorded"
    at: str  # the event's `at` as `iso` text; "" for Registered, the one without an `at`
    data: State


def decode(notifications: Sequence[Notification]) -> list[Event]:
    """The page's events, in order: each state parsed once, its `at` made `iso` text.

    Most of the reader's time goes here, event by event: what `instant` does is done
    inline, and each event is made as a tuple, not through the named tuple's __new__."""
    loads = _STATE.decode
    kinds = _KINDS
    make = tuple.__new__
    events: list[Event] = []
    append = events.append
    for position, aggregate_id, version, topic, state in notifications:
        # Only an escape puts U+0000 in JSON. Ingestion refuses it now, but a store may
        # hold events from before: PostgreSQL's text cannot, and one would stop the read
        # side for good. (A backslash is one memchr away; few states have any.)
        if b"\\" in state and b"\\u0000" in state:
            data = msgspec.convert(_without_nul(orjson.loads(state)), State)
        else:
            data = loads(state)
        tagged = data.at
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


_STATE = msgspec.json.Decoder(State)
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
