"""The orjson transcoder and eventsourcing's JSON transcoder read each other's bytes, and
the ledger's mapper stores what eventsourcing's would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

import services
from services.config import Topics
from services.demo import generate
from services.domain.member import Member
from services.inputs import REGISTRY
from services.program_file import load_program
from services.store.transcoder import (
    LedgerMapper,
    OrjsonTranscoder,
    encode_tagged,
    may_hold_uuid,
    tagged_fields,
)
from services.validation import Decoder, InvalidEvent

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
    | st.uuids(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def library() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_round_trips_and_reads_the_librarys_format(state: dict[str, Any]) -> None:
    ours, theirs = OrjsonTranscoder(), library()
    assert ours.decode(ours.encode(state)) == state
    assert ours.decode(theirs.encode(state)) == state
    assert theirs.decode(ours.encode(state)) == state


def test_an_event_like_state_keeps_its_types() -> None:
    state = {
        "amount": Decimal("12.50"),
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "id": uuid4(),
        "consumed": [[datetime(2025, 1, 1, tzinfo=UTC), 3]],
    }
    assert OrjsonTranscoder().decode(OrjsonTranscoder().encode(state)) == state


class Ledgerish(Aggregate):
    class Linked(Aggregate.Event):
        other: UUID
        others: list[UUID] | None

    class Plain(Aggregate.Event):
        at: datetime
        amounts: dict[str, Decimal]

    class Tagged(Aggregate.Event):
        at: datetime
        since: datetime | None
        amount: Decimal
        refund: Decimal | None
        counts: dict[str, int]
        note: str | None


def member_events_of_every_kind() -> list[Any]:
    """The events a demo stream makes under the seasonal program (campaigns, badges,
    pending points, birthdays): every kind the rules decide."""
    program = load_program(Path(services.__file__).parent / "programs" / "seasonal.toml")
    decoder = Decoder(program, Topics(), REGISTRY)
    members: dict[str, Member] = {}
    events: list[Any] = []
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for body in generate(60, seed=7, now=now, days=500):
        try:
            command = decoder.decode_value(
                REGISTRY.topic_of(Topics(), body["type"]) or "", orjson.dumps(body)
            )
        except InvalidEvent:
            continue
        member = members.setdefault(command.member_id, Member.register(command.member_id))
        REGISTRY.handle(member, program, command)
    for member in members.values():
        member.sweep(program, at=now + timedelta(days=400))
        events += member.collect_events()
    return events


def test_the_ledger_mapper_stores_exactly_what_eventsourcing_s_mapper_stores() -> None:
    events = member_events_of_every_kind()
    kinds = {type(e).__name__ for e in events}
    assert {"PurchaseRecorded", "RefundRecorded", "PointsRedeemed", "BadgeEarned"} <= kinds
    assert {"PointsExpired", "PointsReleased", "Enrolled", "ReviewRecorded"} <= kinds
    theirs, ours = Mapper(transcoder=OrjsonTranscoder()), LedgerMapper(OrjsonTranscoder())
    assert [ours.to_stored_event(e) for e in events] == [theirs.to_stored_event(e) for e in events]
    # Most kinds take the path that tags their datetimes and decimals without a walk.
    tagged = {type(e).__name__ for e in events if tagged_fields(type(e)) is not None}
    assert {"PurchaseRecorded", "Enrolled", "PointsExpired", "TierChanged"} <= tagged
    assert not {"RefundRecorded", "PointsRedeemed"} & tagged  # `consumed` holds datetimes


def test_fields_whose_annotations_allow_what_orjson_writes_otherwise_are_not_planned() -> None:
    assert tagged_fields(Ledgerish.Plain) is None  # decimals inside a dict
    assert tagged_fields(Ledgerish.Tagged) == (
        ("timestamp", True),
        ("at", True),
        ("since", True),
        ("amount", False),
        ("refund", False),
    )


@given(
    st.datetimes(
        timezones=st.none() | st.sampled_from([UTC, timezone(timedelta(0))]) | st.timezones()
    ),
    st.none() | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))])),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1), max_size=3),
    st.none() | st.text(max_size=8),
)
def test_a_planned_state_is_stored_as_the_walk_would_store_it(
    at: datetime,
    since: datetime | None,
    amount: Decimal,
    refund: Decimal | None,
    counts: dict[str, int],
    note: str | None,
) -> None:
    state = {
        "timestamp": datetime(2026, 1, 1, 12, 30, 0, 1, tzinfo=UTC),
        "at": at,
        "since": since,
        "amount": amount,
        "refund": refund,
        "counts": counts,
        "note": note,
    }
    plan = tagged_fields(Ledgerish.Tagged)
    assert plan is not None
    assert encode_tagged(dict(state), plan) == OrjsonTranscoder().encode(state)


def test_a_field_that_may_hold_a_uuid_keeps_its_tag() -> None:
    assert may_hold_uuid(Ledgerish.Linked) and not may_hold_uuid(Ledgerish.Plain)
    aggregate_id, other = uuid4(), uuid4()
    event = Ledgerish.Linked(
        originator_id=aggregate_id,
        originator_version=2,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        other=other,
        others=[other],
    )
    mapper = LedgerMapper(OrjsonTranscoder())
    stored = mapper.to_stored_event(event)
    assert stored == Mapper(transcoder=OrjsonTranscoder()).to_stored_event(event)
    restored = mapper.to_domain_event(stored)
    assert restored.other == other and restored.others == [other]  # UUIDs, not strings


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])))
def test_a_datetime_is_stored_as_its_isoformat(at: datetime) -> None:
    stored = orjson.loads(OrjsonTranscoder().encode({"at": at}))
    assert stored == {"at": {"_type_": "datetime_iso", "_data_": at.isoformat()}}
