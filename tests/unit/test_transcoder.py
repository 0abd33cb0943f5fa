"""The orjson transcoder and eventsourcing's JSON transcoder read each other's bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from hypothesis import given
from hypothesis import strategies as st

from services.store.transcoder import OrjsonTranscoder

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
