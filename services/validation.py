"""Turns raw input bytes into commands, or into the reason they cannot be understood.

Validation is against the JSON Schemas in `schemas/` (the contract upstream reads),
compiled once with fastjsonschema, then the checks a schema cannot express portably:
decimals of an amount, a real calendar date, the program's currency and networks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from services.commands import Command, Purchase, Redemption, Referral, Refund, SocialShare
from services.ingest.messages import InputMessage
from services.program import Program

SCHEMAS_DIR = Path(
    os.environ.get("LOYALTY_SCHEMAS_DIR", Path(__file__).resolve().parents[1] / "schemas")
)
EVENT_TYPES = ("purchase", "refund", "referral", "social_share", "redemption")
MAX_PURCHASE_AMOUNT = Decimal("1000000")
# The schema's decimal strings have at most 16 integer digits; a JSON number beyond
# them cannot be an amount either (and exact cents need the precision).
MAX_AMOUNT = Decimal("1e16")
CENT = Decimal("0.01")
# Instants the ledger can compute with: a lot's expiry, a tier window or a churn window
# around an event must stay representable. Anything outside is "out of range".
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH = EARLIEST
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


# The command field the message key must equal (CONTRACT section 1): the member it concerns.
KEY_FIELDS: dict[type, str] = {Referral: "referee_id"}


class InvalidEvent(ValueError):
    """The message cannot be understood; its text is the dead-letter `error` header."""


def load_schemas(directory: Path = SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    return {t: orjson.loads((directory / f"{t}.json").read_bytes()) for t in EVENT_TYPES}


class Decoder:
    """Decodes one input message for one topic; raises InvalidEvent with a precise reason."""

    def __init__(
        self,
        program: Program,
        carried_types: Callable[[str], frozenset[str]],
        schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._program = program
        self._carried_types = carried_types
        self._validators = {
            name: fastjsonschema.compile(schema)
            for name, schema in (schemas or load_schemas()).items()
        }

    def decode(self, message: InputMessage) -> Command:
        """The message's command, once its body, its key and its timing all hold up."""
        command = self.decode_value(message.topic, message.value)
        _check_key(message.key, command)
        if message.timestamp_ms is not None:
            self._check_clock(command.at, message.timestamp_ms)
        return command

    def _check_clock(self, at: datetime, timestamp_ms: int) -> None:
        # A typo in a year would date the event ahead of all others and expire every lot
        # of its member (CONTRACT section 2): it cannot be later than Kafka saw it, give
        # or take the producers' clock skew.
        stamped = EPOCH + timedelta(milliseconds=timestamp_ms)
        if at > stamped + self._program.max_clock_skew:
            raise InvalidEvent(
                f"field 'occurred_at' {at:%Y-%m-%dT%H:%M:%SZ} is later than the message's "
                f"Kafka timestamp {stamped:%Y-%m-%dT%H:%M:%SZ} by more than the program's "
                f"max_clock_skew_minutes ({self._program.max_clock_skew_minutes})"
            )

    def decode_value(self, topic: str, value: bytes | None) -> Command:
        if value is None:
            raise InvalidEvent("empty message (no value)")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidEvent(f"not a JSON object but {type(data).__name__}")
        # Only an escape can put U+0000 in JSON text: most messages skip the walk.
        if b"\\u0000" in value:
            _refuse_nul(data, "")
        event_type = data.get("type")
        if not isinstance(event_type, str):
            raise InvalidEvent("missing or ill-typed field 'type' (a string is required)")
        validator = self._validators.get(event_type)
        if validator is None:
            raise InvalidEvent(f"unknown event type {_show(event_type)}")
        if event_type not in self._carried_types(topic):
            raise InvalidEvent(f"event type {event_type!r} is not carried by topic {topic!r}")
        try:
            validator(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidEvent(f"{event_type}: {_field_message(exc)}") from None
        at = _timestamp(data["occurred_at"])
        if event_type == "purchase":
            amount = _amount(data["amount"], upper=MAX_PURCHASE_AMOUNT)
            if data["currency"] != self._program.currency:
                raise InvalidEvent(
                    f"purchase: currency {_show(data['currency'])} is not the program currency "
                    f"{self._program.currency!r}"
                )
            return Purchase(data["event_id"], data["member_id"], data["order_id"], amount, at)
        if event_type == "refund":
            amount = _amount(data["amount"])
            return Refund(data["event_id"], data["member_id"], data["order_id"], amount, at)
        if event_type == "referral":
            return Referral(data["event_id"], data["referee_id"], data["referrer_id"], at)
        if event_type == "social_share":
            if data["network"] not in self._program.networks:
                raise InvalidEvent(
                    f"social_share: network {_show(data['network'])} is not one of "
                    f"{sorted(self._program.networks)}"
                )
            return SocialShare(
                data["event_id"], data["member_id"], data["network"], data.get("url"), at
            )
        points = data["points"]
        if isinstance(points, bool) or not isinstance(points, int):
            raise InvalidEvent("redemption: field 'points' must be an integer")
        return Redemption(data["event_id"], data["member_id"], points, data["reward"], at)


def _show(value: object, limit: int = 80) -> str:
    """A value as an error message quotes it: an excerpt, however large the value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _check_key(key: bytes | None, command: Command) -> None:
    # Every event of a member must reach the member's one partition, or its events lose
    # their order: the key is what Kafka partitions by.
    field = KEY_FIELDS.get(type(command), "member_id")
    if key is None:
        raise InvalidEvent(
            f"message has no key: it must be the event's {field} {_show(command.member_id)}"
        )
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text != command.member_id:
        shown = _show(text) if text is not None else f"{_show(key)} (not UTF-8)"
        raise InvalidEvent(
            f"message key {shown} is not the event's {field} {_show(command.member_id)}"
        )


def _refuse_nul(value: Any, path: str) -> None:
    # PostgreSQL's text cannot hold U+0000: stored, it would stop every reader later.
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidEvent(f"field '{path or '?'}' holds U+0000 (NUL), which text may not")
    elif isinstance(value, dict):
        for name, item in value.items():
            if "\x00" in name:
                raise InvalidEvent(f"a field name holds U+0000 (NUL): {_show(name)}")
            _refuse_nul(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nul(item, f"{path}[{i}]")


def _field_message(exc: fastjsonschema.JsonSchemaValueException) -> str:
    # fastjsonschema names the path as data.field; upstream knows fields, not "data".
    message = str(exc.message)
    return (
        message.replace("data.", "field '", 1).replace(" must", "' must", 1)
        if message.startswith("data.")
        else message
    )


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise InvalidEvent(
            f"field 'occurred_at' is not a valid RFC 3339 timestamp: {_show(text)}"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"field 'occurred_at' has no UTC offset: {_show(text)}")
    try:
        at = parsed.astimezone(UTC)
    except OverflowError:  # an offset that moves the instant past year 1 or 9999
        at = None
    if at is None or not EARLIEST <= at < LATEST:
        raise InvalidEvent(
            f"field 'occurred_at' is out of range: {text!r} (from {EARLIEST:%Y-%m-%d} "
            f"up to, not including, {LATEST:%Y-%m-%d})"
        )
    return at


def _amount(raw: object, *, upper: Decimal | None = None) -> Decimal:
    # JSON numbers arrive as floats; their shortest repr is the literal upstream wrote
    # for any amount up to 1,000,000 with 2 decimals, so str() recovers it exactly.
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidEvent(f"field 'amount' is not a decimal number: {raw!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidEvent(f"field 'amount' must be > 0, got {raw!r}")
    if amount >= MAX_AMOUNT:
        raise InvalidEvent(f"field 'amount' is out of range: {raw!r}")
    if amount != amount.quantize(CENT):
        raise InvalidEvent(f"field 'amount' has more than 2 decimals: {raw!r}")
    if upper is not None and amount > upper:
        raise InvalidEvent(f"field 'amount' must be at most {upper}, got {raw!r}")
    return amount.quantize(CENT)
