"""Every kind of input that cannot be understood (docs/RULES.md, section 2) gets a precise
reason."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.commands import Purchase, Redemption, Referral, Refund, SocialShare
from services.config import Topics
from services.ingest.messages import MAX_ERROR_BYTES, DeadLetter, InputMessage
from services.inputs import REGISTRY
from services.program_file import DEFAULT_PROGRAM_PATH, load_program
from services.validation import Decoder, InvalidEvent

TOPICS = Topics()
DECODER = Decoder(load_program(None), TOPICS, REGISTRY)
AT = "2026-03-01T12:00:00Z"


def purchase(**overrides: Any) -> dict[str, Any]:
    event = {
        "event_id": "e1",
        "type": "purchase",
        "occurred_at": AT,
        "member_id": "m1",
        "order_id": "o1",
        "amount": "10.50",
        "currency": "EUR",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def keyed(event: Any, topic: str = TOPICS.purchases, **fields: Any) -> InputMessage:
    """The message a well-behaved upstream sends: keyed by the member it concerns."""
    raw = event if isinstance(event, bytes) else orjson.dumps(event)
    member = event.get("referee_id", event.get("member_id")) if isinstance(event, dict) else None
    key = member.encode() if isinstance(member, str) else None
    return InputMessage(topic, 0, 0, key, raw)._replace(**fields)


def decode(event: Any, topic: str = TOPICS.purchases) -> object:
    return DECODER.decode(keyed(event, topic))


def reason(event: Any, topic: str = TOPICS.purchases) -> str:
    with pytest.raises(InvalidEvent) as caught:
        decode(event, topic)
    return str(caught.value)


def test_a_valid_event_of_each_type_becomes_its_command() -> None:
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert decode(purchase()) == Purchase("e1", "m1", "o1", Decimal("10.50"), at)
    assert decode(purchase(type="refund", currency=None, amount=3)) == Refund(
        "e1", "m1", "o1", Decimal("3.00"), at
    )
    referral = {
        "event_id": "r",
        "type": "referral",
        "occurred_at": AT,
        "referrer_id": "a",
        "referee_id": "b",
    }
    assert decode(referral, TOPICS.referrals) == Referral("r", "b", "a", at)
    share = {
        "event_id": "s",
        "type": "social_share",
        "occurred_at": AT,
        "member_id": "m",
        "network": "x",
    }
    assert decode(share, TOPICS.social_shares) == SocialShare("s", "m", "x", None, at)
    redemption = {
        "event_id": "d",
        "type": "redemption",
        "occurred_at": AT,
        "member_id": "m",
        "points": 5,
        "reward": "mug",
    }
    assert decode(redemption, TOPICS.redemptions) == Redemption("d", "m", 5, "mug", at)


def test_amounts_as_json_numbers_keep_their_exact_decimal_value() -> None:
    assert decode(purchase(amount=0.07)).amount == Decimal("0.07")  # type: ignore[attr-defined]
    assert decode(purchase(amount=999999.99)).amount == Decimal("999999.99")  # type: ignore[attr-defined]
    assert decode(purchase(amount=1000000)).amount == Decimal("1000000.00")  # type: ignore[attr-defined]


def test_offsets_other_than_utc_are_normalised_to_utc() -> None:
    command = decode(purchase(occurred_at="2026-03-01T14:00:00+02:00"))
    assert command.at == datetime(2026, 3, 1, 12, tzinfo=UTC)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (purchase(type=None), "field 'type'"),
        (purchase(type="gift"), "unknown event type 'gift'"),
        (purchase(member_id=None), "member_id"),
        (purchase(member_id=7), "member_id"),
        (purchase(member_id="x" * 65), "member_id"),
        (purchase(event_id=""), "event_id"),
        (purchase(event_id="e" * 129), "event_id"),
        (purchase(occurred_at="2026-03-01 12:00"), "occurred_at"),
        (purchase(occurred_at="2026-03-01T12:00:00"), "occurred_at"),
        (purchase(occurred_at="2026-13-01T12:00:00Z"), "not a valid RFC 3339"),
        (purchase(currency="USD"), "currency 'USD' is not the program currency 'EUR'"),
        (purchase(amount=0), "amount"),
        (purchase(amount=-5), "amount"),
        (purchase(amount="12.345"), "amount"),
        (purchase(amount=12.345), "more than 2 decimals"),
        (purchase(amount=1000000.01), "at most 1000000"),
        (purchase(amount="ten"), "amount"),
        (purchase(amount=True), "amount"),
    ],
)
def test_bad_purchases_are_dead_lettered_with_the_reason(raw: Any, expected: str) -> None:
    assert expected in reason(raw)


def test_a_type_on_the_wrong_topic_is_dead_lettered() -> None:
    assert "not carried by topic 'loyalty.redemptions'" in reason(purchase(), TOPICS.redemptions)


def test_unknown_network_and_fractional_points_are_dead_lettered() -> None:
    share = {
        "event_id": "s",
        "type": "social_share",
        "occurred_at": AT,
        "member_id": "m",
        "network": "myspace",
    }
    assert "network 'myspace'" in reason(share, TOPICS.social_shares)
    redemption = {
        "event_id": "d",
        "type": "redemption",
        "occurred_at": AT,
        "member_id": "m",
        "points": 2.5,
        "reward": "mug",
    }
    assert "points" in reason(redemption, TOPICS.redemptions)
    assert "points" in reason({**redemption, "points": 0}, TOPICS.redemptions)


def test_an_empty_message_is_dead_lettered() -> None:
    with pytest.raises(InvalidEvent, match="empty message"):
        DECODER.decode(InputMessage(TOPICS.purchases, 0, 0, b"m1", None))


@pytest.mark.parametrize(
    ("occurred_at", "why"),
    [
        ("9999-12-31T23:30:00-01:00", "out of range"),  # past year 9999 in UTC
        ("0001-01-01T00:30:00+01:00", "out of range"),  # before year 1 in UTC
        ("9999-12-31T00:00:00Z", "out of range"),  # a lot dated here could never expire
        ("1969-12-31T23:59:59Z", "out of range"),
    ],
)
def test_instants_the_ledger_cannot_compute_with_are_out_of_range(
    occurred_at: str, why: str
) -> None:
    assert why in reason(purchase(occurred_at=occurred_at))


def test_the_range_of_instants_is_open_at_its_ends_as_documented() -> None:
    assert decode(purchase(occurred_at="1970-01-01T00:00:00Z"))
    assert decode(purchase(occurred_at="8999-12-31T23:59:59Z"))
    assert "out of range" in reason(purchase(occurred_at="9000-01-01T00:00:00Z"))


@pytest.mark.parametrize("amount", [1e30, 1e16, "1e30"])
def test_amounts_beyond_any_order_are_out_of_range_not_a_crash(amount: Any) -> None:
    for event in (purchase(amount=amount), purchase(type="refund", currency=None, amount=amount)):
        assert "amount" in reason(event)


def test_a_message_without_a_key_is_dead_lettered() -> None:
    with pytest.raises(InvalidEvent, match="message has no key: it must be the event's member_id"):
        DECODER.decode(keyed(purchase(), key=None))


@pytest.mark.parametrize("key", [b"m2", b"M1", b"m1 ", b"\xff\xfe"])
def test_a_message_keyed_by_another_member_is_dead_lettered(key: bytes) -> None:
    with pytest.raises(InvalidEvent, match="is not the event's member_id 'm1'"):
        DECODER.decode(keyed(purchase(), key=key))


def test_a_referral_is_keyed_by_its_referee() -> None:
    referral = {"event_id": "r", "type": "referral", "occurred_at": AT}
    referral |= {"referrer_id": "a", "referee_id": "b"}
    assert decode(referral, TOPICS.referrals)
    with pytest.raises(InvalidEvent, match="is not the event's referee_id 'b'"):
        DECODER.decode(keyed(referral, TOPICS.referrals, key=b"a"))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (purchase(member_id="a\u0000"), "member_id"),
        (purchase(order_id="\u0000"), "order_id"),
        (purchase(note={"deep": ["x", "y\u0000z"]}), "note.deep[1]"),
    ],
)
def test_text_holding_nul_is_dead_lettered(event: dict[str, Any], field: str) -> None:
    message = keyed(event, key=b"a\x00" if field == "member_id" else b"m1")
    with pytest.raises(InvalidEvent, match=rf"field '{re.escape(field)}' holds U\+0000"):
        DECODER.decode(message)


def test_escaped_backslash_u_zero_is_plain_text_not_nul() -> None:
    assert decode(purchase(order_id="\\u0000"))  # the six characters \u0000


@pytest.mark.parametrize("text", [b'"\\ud800"', b'"a\\udc00b"', b'"\\ud83d x"'])
def test_unpaired_surrogate_escapes_are_dead_lettered(text: bytes) -> None:
    raw = orjson.dumps(purchase()).replace(b'"o1"', text)
    with pytest.raises(InvalidEvent, match=r"not JSON.*surrogate"):
        DECODER.decode(keyed(raw, key=b"m1"))


def stamped(occurred_at: str, kafka_at: datetime) -> InputMessage:
    return keyed(purchase(occurred_at=occurred_at), timestamp_ms=int(kafka_at.timestamp() * 1000))


def test_an_event_dated_beyond_the_clock_skew_after_its_kafka_timestamp_is_dead_lettered() -> None:
    kafka_at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    # 60 minutes later is within the default skew, one second more is not
    assert DECODER.decode(stamped("2026-03-01T13:00:00Z", kafka_at))
    with pytest.raises(InvalidEvent, match="later than the message's Kafka timestamp"):
        DECODER.decode(stamped("2026-03-01T13:00:01Z", kafka_at))
    with pytest.raises(InvalidEvent, match="max_clock_skew_minutes \\(60\\)"):
        DECODER.decode(stamped("2062-01-01T00:00:00Z", kafka_at))
    # The past is any distance away: backfills of history are normal
    assert DECODER.decode(stamped("2001-01-01T00:00:00Z", kafka_at))


def test_the_clock_skew_comes_from_the_program(tmp_path: Path) -> None:
    text = DEFAULT_PROGRAM_PATH.read_text().replace(
        "max_clock_skew_minutes = 60", "max_clock_skew_minutes = 5"
    )
    (tmp_path / "p.toml").write_text(text)
    strict = Decoder(load_program(tmp_path / "p.toml"), TOPICS, REGISTRY)
    kafka_at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert strict.decode(stamped("2026-03-01T12:05:00Z", kafka_at))
    with pytest.raises(InvalidEvent, match="max_clock_skew_minutes \\(5\\)"):
        strict.decode(stamped("2026-03-01T12:05:01Z", kafka_at))


def test_a_reason_quoting_a_huge_value_keeps_the_error_header_within_1024_bytes() -> None:
    share = {"event_id": "s", "type": "social_share", "occurred_at": AT, "member_id": "m"}
    message = keyed({**share, "network": "é" * 300_000}, TOPICS.social_shares)
    with pytest.raises(InvalidEvent) as caught:
        DECODER.decode(message)
    assert len(str(caught.value)) < 300  # an excerpt of the value, not the value
    error = dict(DeadLetter(message, "x" + "é" * 5000).headers())["error"]
    assert len(error) <= MAX_ERROR_BYTES
    assert error.decode("utf-8").endswith("[...]")  # cut on a character boundary
