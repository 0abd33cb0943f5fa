"""Every kind of input CONTRACT section 2 calls "could not be understood" gets a precise reason."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.commands import Purchase, Redemption, Referral, Refund, SocialShare
from services.config import Topics
from services.program import load_program
from services.validation import Decoder, InvalidEvent

TOPICS = Topics()
DECODER = Decoder(load_program(None), TOPICS.carried_types)
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


def decode(event: Any, topic: str = TOPICS.purchases) -> object:
    raw = event if isinstance(event, bytes) else orjson.dumps(event)
    return DECODER.decode(topic, raw)


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
        DECODER.decode(TOPICS.purchases, None)


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
