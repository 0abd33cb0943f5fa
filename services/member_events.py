"""The wire format of `loyalty.member-events`: one stored domain event per message.

Stored forever on a compacted-never topic and read by `replay stream`: version with care.
A message is the event's stored state (eventsourcing's JSON, in which decimals, datetimes
and UUIDs are tagged objects) wrapped with where it came from:
  {"id": uuid of (member, version), "member_id", "type": "PurchaseRecorded",
   "topic": "services.domain.member:Member.PurchaseRecorded", "version": n,
   "position": notification id in the source store, "state": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

import orjson
from eventsourcing.persistence import StoredEvent

EVENT_ID_NAMESPACE = UUID("6f3b2a4e-1c1d-4a55-9a43-3c0f6c1b8e21")


def domain_event_id(originator_id: UUID, version: int) -> UUID:
    return uuid5(EVENT_ID_NAMESPACE, f"{originator_id}:{version}")


def encode(stored: StoredEvent, member_id: str, position: int) -> bytes:
    originator_id = UUID(str(stored.originator_id))
    return orjson.dumps(
        {
            "id": str(domain_event_id(originator_id, stored.originator_version)),
            "member_id": member_id,
            "type": stored.topic.rsplit(".", 1)[-1],
            "topic": stored.topic,
            "version": stored.originator_version,
            "position": position,
            "aggregate_id": str(originator_id),
            "state": orjson.Fragment(stored.state),
        }
    )


@dataclass(frozen=True)
class MemberEventMessage:
    id: UUID
    member_id: str
    stored: StoredEvent
    position: int


def decode(value: bytes) -> MemberEventMessage:
    data: dict[str, Any] = orjson.loads(value)
    stored = StoredEvent(
        originator_id=UUID(data["aggregate_id"]),
        originator_version=int(data["version"]),
        topic=data["topic"],
        state=orjson.dumps(data["state"]),
    )
    return MemberEventMessage(UUID(data["id"]), data["member_id"], stored, int(data["position"]))
