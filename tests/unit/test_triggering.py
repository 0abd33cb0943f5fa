"""Events built by `build_event` are those their classes' constructors build."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from services.domain.member import Member
from services.domain.triggering import build_event
from tests.unit.given import PROGRAM
from tests.unit.test_transcoder import member_events_of_every_kind


def test_every_kind_of_event_is_what_its_constructor_builds() -> None:
    events = member_events_of_every_kind()
    assert len({type(e) for e in events}) >= 12
    for built in events:
        constructed = type(built)(**vars(built))
        assert list(vars(built).items()) == list(vars(constructed).items())  # order too
        assert built == constructed


def test_events_stay_frozen() -> None:
    member = Member.register("m-1")
    member.enrol(
        PROGRAM, event_id="e-1", birth_date=None, channel=None, at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    event = member.collect_events()[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.at = datetime(2027, 1, 1, tzinfo=UTC)  # type: ignore[misc]


def test_a_missing_or_unknown_field_is_refused_as_the_constructor_refuses_it() -> None:
    fields = {"event_id": "e-1", "order_id": "o-1", "amount": Decimal(1), "reason": "x"}
    with pytest.raises(TypeError, match="needs at"):
        build_event(Member.PurchaseRejected, uuid4(), 2, fields)
    with pytest.raises(TypeError, match="has no field colour"):
        build_event(
            Member.PurchaseRejected,
            uuid4(),
            2,
            {**fields, "at": datetime(2026, 1, 1, tzinfo=UTC), "colour": "red"},
        )


def test_a_failing_apply_leaves_the_version_where_it_was() -> None:
    member = Member.register("m-1")
    version = member.version
    with pytest.raises(KeyError):
        member.trigger_event(
            Member.RefundRecorded,
            event_id="e-1",
            order_id="no-such-order",
            amount=Decimal(1),
            base_points_removed=1,
            points=-1,
            consumed=[],
            debt_added=0,
            balance=0,
            qualifying_points=0,
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    assert member.version == version and len(member.pending_events) == 1


def test_a_registered_member_is_what_eventsourcing_s_create_makes() -> None:
    ours, theirs = Member.register("m-1"), Member("m-1")
    times = {"_created_on": None, "_modified_on": None, "_pending_events": None}
    assert {**vars(ours), **times} == {**vars(theirs), **times}
    (created,), (expected,) = ours.collect_events(), theirs.collect_events()
    assert type(created) is type(expected) is Member.Registered
    assert list(vars(created)) == list(vars(expected))
    assert {**vars(created), "timestamp": None} == {**vars(expected), "timestamp": None}
    assert ours.created_on == ours.modified_on == created.timestamp


def test_a_field_the_aggregate_sets_itself_is_refused_as_unknown() -> None:
    fields = {
        "event_id": "e-1",
        "order_id": "o-1",
        "amount": Decimal(1),
        "reason": "x",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    with pytest.raises(TypeError, match="has no field timestamp"):
        build_event(Member.PurchaseRejected, uuid4(), 2, {**fields, "timestamp": None})
    built = build_event(Member.PurchaseRejected, uuid4(), 2, fields)
    assert list(vars(built))[:3] == ["originator_id", "originator_version", "timestamp"]
