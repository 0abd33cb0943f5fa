"""The schemas' structs (services/schema_structs.py) are a fast path only: whatever a
message is, the decoder with them says exactly what the decoder without them says."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.commands import Command
from services.config import Topics
from services.inputs import REGISTRY
from services.program_file import load_program
from services.schema_structs import compile_schema, matches_instants
from services.validation import Decoder, InvalidEvent, load_schema

TOPICS = Topics()
PROGRAM = load_program(None)
FAST = Decoder(PROGRAM, TOPICS, REGISTRY)
SLOW = Decoder(PROGRAM, TOPICS, REGISTRY, fast=False)
AT = "2026-03-01T12:00:00Z"
PURCHASES = TOPICS.purchases

VALID: dict[str, dict[str, Any]] = {
    "purchase": {"member_id": "m1", "order_id": "o1", "amount": "10.50", "currency": "EUR"},
    "refund": {"member_id": "m1", "order_id": "o1", "amount": 3},
    "referral": {"referrer_id": "a", "referee_id": "b"},
    "social_share": {"member_id": "m1", "network": "instagram", "url": "https://x"},
    "redemption": {"member_id": "m1", "points": 5, "reward": "mug"},
    "member_enrolled": {"member_id": "m1", "birth_date": "1990-02-28", "channel": "web"},
    "review": {"member_id": "m1", "product_id": "p1", "rating": 4, "order_id": "o1"},
}
# Values at the schemas' edges, and those two JSON parsers might read differently.
# fmt: off
EDGES: list[Any] = [
    None, True, False, 0, 1, -1, 5, 6, 0.0, -0.0, 1e-7, 0.07, 10.005, 1e2, 1.5,
    1000000, 1000000.01, 999999.99, 2**53, 2**63 - 1, 2**63, 2**64, 10**23, 1e23, 1e308,
    "", "a", "a" * 64, "a" * 65, "a" * 128, "a" * 129, "a" * 2049, "é" * 64, "😀" * 65,
    "EUR", "USD", "eur", "EUR\n", "0", "0.00", "10.5", "10.555", "1e3", " 12", "+5",
    "1_000", "12.", ".5", "9999999999999999", "99999999999999999", "10.50\n",
    AT, AT + "\n", "2026-03-01t12:00:00z", "2026-03-01T12:00:00+02:00",
    "2026-02-30T12:00:00Z", "2026-03-01T12:00:00", "0001-01-01T00:00:00+01:00",
    "1990-02-28", "1899-12-31", "2026-03-02", "1990-02-30", "1990-02-28\n",
    "instagram", "x", "purchase", "refund", [], {}, [1], {"a": 1},
]
# fmt: on
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)
VALUES = st.sampled_from(EDGES) | JSON
FIELDS = sorted({"type", "event_id", "occurred_at", "extra"}.union(*VALID.values()))


def outcome(decoder: Decoder, topic: str, raw: bytes) -> tuple[str, Command | str]:
    try:
        return "command", decoder.decode_value(topic, raw)
    except InvalidEvent as exc:
        return "dead letter", str(exc)


def valid(name: str) -> dict[str, Any]:
    return {"event_id": "e1", "type": name, "occurred_at": AT, **VALID[name]}


def topic_of(name: str) -> str:
    topic = REGISTRY.topic_of(TOPICS, name)
    assert topic is not None
    return topic


def purchase_text(field: str) -> bytes:
    """A valid purchase's JSON text with one more field written after the others (a
    field given twice: the last one counts)."""
    return json.dumps(valid("purchase")).encode()[:-1] + f", {field}}}".encode()


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid message of some type, then up to three fields set, added or dropped,
    maybe a key twice, maybe on another type's topic."""
    name = draw(st.sampled_from(sorted(VALID)))
    body = valid(name)
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            body[field] = draw(VALUES)
        else:
            body.pop(field, None)
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    if body and draw(st.integers(0, 4)) == 0:  # a field twice: the last one counts
        field = draw(st.sampled_from(FIELDS))
        text = text[:-1] + f', "{field}": {json.dumps(draw(VALUES))}}}'
    topic = topic_of(draw(st.sampled_from(sorted(VALID))) if draw(st.booleans()) else name)
    return topic, text.encode()


def test_every_shipped_schema_has_its_fast_path() -> None:
    assert FAST.fast_types == {t.name for t in REGISTRY}
    assert SLOW.fast_types == frozenset()


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_valid_message_makes_the_same_command_on_both_paths(name: str) -> None:
    raw = json.dumps(valid(name)).encode()
    fast = outcome(FAST, topic_of(name), raw)
    assert fast[0] == "command"
    assert fast == outcome(SLOW, topic_of(name), raw)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
@example((PURCHASES, purchase_text('"amount": 99999999999999999999999')))  # orjson: a float
@example((PURCHASES, purchase_text('"event_id": "e\\u0000"')))
@example((PURCHASES, purchase_text('"type": "refund"')))
def test_any_message_gets_the_same_command_or_reason_on_both_paths(
    message: tuple[str, bytes],
) -> None:
    topic, raw = message
    assert outcome(FAST, topic, raw) == outcome(SLOW, topic, raw)


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_field_at_each_edge_gets_the_same_command_or_reason_on_both_paths(
    name: str,
) -> None:
    topic = topic_of(name)
    for field in FIELDS:
        bodies = [{k: v for k, v in valid(name).items() if k != field}]
        bodies += [{**valid(name), field: value} for value in EDGES]
        for body in bodies:
            raw = json.dumps(body, ensure_ascii=False).encode()
            assert outcome(FAST, topic, raw) == outcome(SLOW, topic, raw), raw


def test_bytes_that_are_not_json_get_the_same_reason() -> None:
    for raw in (b"", b"{", b"[1]", b'"x"', b"\xff", b'{"type": "purchase"} x', b"null"):
        assert outcome(FAST, "loyalty.purchases", raw) == outcome(SLOW, "loyalty.purchases", raw)


@pytest.mark.parametrize(
    "change",
    [
        {"additionalProperties": False},
        {"properties": {"currency": {"type": "string", "enum": ["EUR"]}}},
        {"properties": {"amount": {"type": "number", "multipleOf": 0.01}}},
        {"properties": {"order_id": {"type": "string", "format": "uuid"}}},
        {"properties": {"amount": {"type": "number", "minimum": 0.5}}},
        {"properties": {"order_id": {"$ref": "other.json#/x"}}},
    ],
)
def test_a_schema_using_a_keyword_not_compiled_gets_no_fast_path(change: dict[str, Any]) -> None:
    schema = load_schema("purchase")
    for key, value in change.items():
        schema[key] = {**schema[key], **value} if isinstance(value, dict) else value
    assert compile_schema("purchase", schema) is None


def test_a_custom_schema_without_a_fast_path_is_still_enforced() -> None:
    schemas = {t.name: load_schema(t.name) for t in REGISTRY}
    currency = {"type": "string", "enum": ["GBP"]}
    schemas["purchase"]["properties"]["currency"] = currency
    decoder = Decoder(PROGRAM, TOPICS, REGISTRY, schemas=schemas)
    assert "purchase" not in decoder.fast_types
    assert "refund" in decoder.fast_types
    raw = json.dumps(valid("purchase")).encode()
    kind, reason = outcome(decoder, topic_of("purchase"), raw)
    assert kind == "dead letter"
    assert "currency" in str(reason) and "GBP" in str(reason)


def test_the_shipped_schemas_check_occurred_at_as_the_instants_parser_does() -> None:
    for t in REGISTRY:
        struct = compile_schema(t.name, load_schema(t.name))
        assert struct is not None and matches_instants(struct), t.name


@pytest.mark.parametrize(
    "occurred_at",
    [
        {"type": "string"},
        {"type": "string", "pattern": "^[0-9]{4}-.*$"},
        {"type": "string", "minLength": 1},
    ],
)
def test_a_looser_occurred_at_in_a_custom_schema_is_still_checked_as_an_instant(
    occurred_at: dict[str, Any],
) -> None:
    # Its fast path may not skip the instants' own pattern: it no longer holds by schema.
    schemas = {t.name: load_schema(t.name) for t in REGISTRY}
    schemas["purchase"]["properties"]["occurred_at"] = occurred_at
    struct = compile_schema("purchase", schemas["purchase"])  # fastjsonschema edits it
    assert struct is not None and not matches_instants(struct)
    slow = Decoder(PROGRAM, TOPICS, REGISTRY, schemas=json.loads(json.dumps(schemas)), fast=False)
    decoder = Decoder(PROGRAM, TOPICS, REGISTRY, schemas=schemas)
    assert "purchase" in decoder.fast_types
    for text in ("2026-03-01 12:00:00Z", "2026-03-01T12:00:00", "2026-03-01T12:00:00Z\n"):
        raw = json.dumps({**valid("purchase"), "occurred_at": text}).encode()
        kind, reason = outcome(decoder, PURCHASES, raw)
        assert kind == "dead letter" and "occurred_at" in str(reason), text
        assert (kind, reason) == outcome(slow, PURCHASES, raw)
    good = json.dumps(valid("purchase")).encode()
    assert outcome(decoder, PURCHASES, good) == outcome(FAST, PURCHASES, good)
