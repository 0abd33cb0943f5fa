"""Turns raw input bytes into commands, or into the reason they cannot be understood.

The steps every message takes are here (JSON, an object, a known type carried by its
topic, its JSON Schema from `schemas/`, a valid instant, a key naming its member, a
date no later than Kafka saw it); what each input type adds is its decode function
below, named by its record in the input registry (services/inputs.py). Schemas are
compiled once with fastjsonschema, and once more to msgspec structs
(services/schema_structs.py): a fast path that a message passes, or that hands it to
the slow one, which says what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import fastjsonschema
import orjson

from services.commands import (
    Command,
    Enrolment,
    Purchase,
    Redemption,
    Referral,
    Refund,
    Review,
    SocialShare,
)
from services.config import Topics
from services.ingest.messages import InputMessage
from services.instants import parse_instant, parse_matched_instant
from services.named_tuples import maker
from services.program import Program
from services.schema_structs import compile_schema, matches_instants, message_decoder

if TYPE_CHECKING:
    from services.inputs import Registry

SCHEMAS_DIR = Path(
    os.environ.get("LOYALTY_SCHEMAS_DIR", Path(__file__).resolve().parents[1] / "schemas")
)
MAX_PURCHASE_AMOUNT = Decimal("1000000")
# The schema's decimal strings have at most 16 integer digits; a JSON number beyond
# them cannot be an amount either (and exact cents need the precision).
MAX_AMOUNT = Decimal("1e16")
CENT = Decimal("0.01")
# Instants the ledger can compute with: a lot's expiry, a tier window or a churn window
# around an event must stay representable. Anything outside is "out of range".
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
EPOCH = EARLIEST
_MICROSECOND = timedelta(microseconds=1)
EARLIEST_BIRTH_DATE = date(1900, 1, 1)


class Fields(Protocol):
    """A message's body as the types' decode functions read it: orjson's dict on the
    slow path, a schema's struct on the fast one (services/schema_structs.py)."""

    def __getitem__(self, name: str, /) -> Any: ...

    def get(self, name: str, /) -> Any: ...


class InvalidEvent(ValueError):
    """The message cannot be understood; its text is the dead-letter `error` header."""


def load_schema(name: str, directory: Path = SCHEMAS_DIR) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads((directory / f"{name}.json").read_bytes())
    return schema


class Decoder:
    """Decodes one input message; raises InvalidEvent with a precise reason."""

    def __init__(
        self,
        program: Program,
        topics: Topics,
        registry: Registry,
        schemas: Mapping[str, dict[str, Any]] | None = None,
        fast: bool = True,
    ) -> None:
        self._program = program
        self._topics = topics
        self._registry = registry
        if schemas is None:
            schemas = {t.name: load_schema(t.name) for t in registry}
        # The fast path (services/schema_structs.py) for the types whose schemas compile;
        # before fastjsonschema, which rewrites a schema's references as it compiles it.
        structs = {
            struct: t
            for t in registry
            if fast and (struct := compile_schema(t.name, schemas[t.name])) is not None
        }
        self._validators = {t.name: fastjsonschema.compile(schemas[t.name]) for t in registry}
        self.fast_types = frozenset(t.name for t in structs.values())
        self._fast_decoder = message_decoder(structs)
        self._struct_types = structs
        self._instants_matched = frozenset(s for s in structs if matches_instants(s))
        # Fixed for the decoder's life: worked out once, not per message.
        self._carried = {
            topics.names[t.topic]: registry.carried_by(topics, topics.names[t.topic])
            for t in registry
        }
        self._max_skew_us = program.max_clock_skew // _MICROSECOND

    def decode(self, message: InputMessage) -> Command:
        """The message's command, once its body, its key and its timing all hold up."""
        command = self.decode_value(message.topic, message.value)
        self._check_key(message.key, command)
        if message.timestamp_ms is not None:
            self._check_clock(command.at, message.timestamp_ms)
        return command

    def decode_value(self, topic: str, value: bytes | None) -> Command:
        """The body's command; InvalidEvent says what is wrong with the body."""
        if self._fast_decoder is not None and value is not None and b"\\u0000" not in value:
            try:
                message = self._fast_decoder.decode(value)
                input_type = self._struct_types[type(message)]
                if input_type.name in self._carried.get(topic, ()):
                    at = _timestamp(message.occurred_at, type(message) in self._instants_matched)
                    return input_type.decode(message, at, self._program)
            except Exception:  # the slow path below finds what is wrong, and says it
                pass
        return self._decode_value(topic, value)

    def _decode_value(self, topic: str, value: bytes | None) -> Command:
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
        input_type = self._registry.by_name(event_type)
        if input_type is None:
            raise InvalidEvent(f"unknown event type {_show(event_type)}")
        if event_type not in self._carried.get(topic, ()):
            raise InvalidEvent(f"event type {event_type!r} is not carried by topic {topic!r}")
        try:
            self._validators[event_type](data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidEvent(f"{event_type}: {_field_message(exc)}") from None
        return input_type.decode(data, _timestamp(data["occurred_at"]), self._program)

    def _check_key(self, key: bytes | None, command: Command) -> None:
        # Every event of a member must reach the member's one partition, or its events
        # lose their order: the key is what Kafka partitions by.
        if key is not None and key == command.member_id.encode():
            return
        field = self._registry.by_command(command).key_field
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

    def _check_clock(self, at: datetime, timestamp_ms: int) -> None:
        # A typo in a year would date the event ahead of all others and expire every lot
        # of its member: it cannot be later than Kafka saw it, give or take the
        # producers' clock skew.
        # In whole microseconds since the epoch: exact, and a third of building the
        # timedelta and datetime of the Kafka timestamp for every message.
        if (at - EPOCH) // _MICROSECOND > timestamp_ms * 1000 + self._max_skew_us:
            stamped = EPOCH + timedelta(milliseconds=timestamp_ms)
            raise InvalidEvent(
                f"field 'occurred_at' {at:%Y-%m-%dT%H:%M:%SZ} is later than the message's "
                f"Kafka timestamp {stamped:%Y-%m-%dT%H:%M:%SZ} by more than the program's "
                f"max_clock_skew_minutes ({self._program.max_clock_skew_minutes})"
            )


# ---- what each input type adds (named by its registry record) ------------------------

# The commands, one a message: made by tuple.__new__ (services/named_tuples.py).
_purchase = maker(Purchase)
_refund = maker(Refund)
_referral = maker(Referral)
_social_share = maker(SocialShare)
_redemption = maker(Redemption)
_enrolment = maker(Enrolment)
_review = maker(Review)


def decode_purchase(data: Fields, at: datetime, program: Program) -> Command:
    amount = _amount(data["amount"], upper=MAX_PURCHASE_AMOUNT)
    if data["currency"] != program.currency:
        raise InvalidEvent(
            f"purchase: currency {_show(data['currency'])} is not the program currency "
            f"{program.currency!r}"
        )
    return _purchase((data["event_id"], data["member_id"], data["order_id"], amount, at))


def decode_refund(data: Fields, at: datetime, program: Program) -> Command:
    amount = _amount(data["amount"])
    return _refund((data["event_id"], data["member_id"], data["order_id"], amount, at))


def decode_referral(data: Fields, at: datetime, program: Program) -> Command:
    return _referral((data["event_id"], data["referee_id"], data["referrer_id"], at))


def decode_social_share(data: Fields, at: datetime, program: Program) -> Command:
    if data["network"] not in program.networks:
        raise InvalidEvent(
            f"social_share: network {_show(data['network'])} is not one of "
            f"{sorted(program.networks)}"
        )
    return _social_share(
        (data["event_id"], data["member_id"], data["network"], data.get("url"), at)
    )


def decode_redemption(data: Fields, at: datetime, program: Program) -> Command:
    points = data["points"]
    if isinstance(points, bool) or not isinstance(points, int):
        raise InvalidEvent("redemption: field 'points' must be an integer")
    return _redemption((data["event_id"], data["member_id"], points, data["reward"], at))


def decode_member_enrolled(data: Fields, at: datetime, program: Program) -> Command:
    raw = data.get("birth_date")
    birth_date = None
    if raw is not None:
        try:
            birth_date = date.fromisoformat(raw)
        except ValueError:
            raise InvalidEvent(
                f"member_enrolled: field 'birth_date' is not a real date: {_show(raw)}"
            ) from None
        latest = at.astimezone(UTC).date()
        if not EARLIEST_BIRTH_DATE <= birth_date <= latest:
            raise InvalidEvent(
                f"member_enrolled: field 'birth_date' {raw} is out of range (from "
                f"{EARLIEST_BIRTH_DATE} up to the UTC date of occurred_at, {latest})"
            )
    return _enrolment((data["event_id"], data["member_id"], birth_date, data.get("channel"), at))


def decode_review(data: Fields, at: datetime, program: Program) -> Command:
    rating = data["rating"]
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise InvalidEvent("review: field 'rating' must be an integer from 1 to 5")
    return _review(
        (data["event_id"], data["member_id"], data["product_id"], rating, data.get("order_id"), at)
    )


# ---- checks every type shares -----------------------------------------------------


def _show(value: object, limit: int = 80) -> str:
    """A value as an error message quotes it: an excerpt, however large the value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


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


def _timestamp(text: str, matched: bool = False) -> datetime:
    try:
        at = parse_matched_instant(text) if matched else parse_instant(text)
    except ValueError as exc:
        raise InvalidEvent(f"field 'occurred_at' {exc}") from None
    if not EARLIEST <= at < LATEST:
        raise InvalidEvent(
            f"field 'occurred_at' is out of range: {_show(text)} (from {EARLIEST:%Y-%m-%d} "
            f"up to, not including, {LATEST:%Y-%m-%d})"
        )
    return at


def _amount(raw: object, *, upper: Decimal | None = None) -> Decimal:
    # JSON numbers arrive as floats; their shortest repr is the literal upstream wrote
    # for any amount up to 1,000,000 with 2 decimals, so str() recovers it exactly.
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidEvent(f"field 'amount' is not a decimal number: {_show(raw)}") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidEvent(f"field 'amount' must be > 0, got {_show(raw)}")
    if amount >= MAX_AMOUNT:
        raise InvalidEvent(f"field 'amount' is out of range: {_show(raw)}")
    cents = amount.quantize(CENT)
    if amount != cents:
        raise InvalidEvent(f"field 'amount' has more than 2 decimals: {_show(raw)}")
    if upper is not None and amount > upper:
        raise InvalidEvent(f"field 'amount' must be at most {upper}, got {_show(raw)}")
    return cents
