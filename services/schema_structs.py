"""The input schemas compiled to msgspec structs: the fast path of validation.

fastjsonschema checks a dict that orjson has already made, in Python: about 2.8 us of a
message's 7 us of decoding (issue 19). msgspec checks the same keywords while it parses,
in C, straight into a struct. It is only the fast path: a message it refuses is decoded
again the whole way (orjson, fastjsonschema, the type's own checks) by
`validation.Decoder`, which finds the reason its dead letter gives. So what this module
must get right is narrow: never to accept a message its schema refuses. A schema that
uses a keyword outside the few compiled below gets no struct, and its type is always
checked by fastjsonschema (a custom schema in LOYALTY_SCHEMAS_DIR may do so).

Where the two parsers could read one text differently, the struct refuses it and the
slow path decides: integers beyond 64 bits (orjson makes floats of them), and any text
with an escaped U+0000 (the slow path refuses it with its field's name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Union, cast

import msgspec
import msgspec.inspect
from msgspec import UNSET, Meta, UnsetType

from services.instants import RFC3339

# Keywords that only describe: they check nothing.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
_TOP = _ANNOTATIONS | {"type", "required", "properties", "$defs"}
_STRING = _ANNOTATIONS | {"type", "minLength", "maxLength", "pattern"}
_NUMBER = _ANNOTATIONS | {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_BOUNDS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt"}
# orjson reads an integer literal outside these as a float; msgspec as an int.
_INT64 = (-(2**63), 2**63 - 1)
_DOLLAR = re.compile(r"(?<!\\)\$")
_LOCAL_REF = re.compile(r"#/\$defs/([A-Za-z0-9_]+)")
_INSTANT = f"^{RFC3339}\\Z"  # as `_string` compiles the schemas' own pattern


class Unsupported(Exception):
    """The schema uses a keyword (or a shape) this module does not compile."""


class Message(msgspec.Struct, gc=False):
    """A message that passed its schema: read like the dict orjson would have made
    (`message["field"]`, `message.get("optional")`) by the types' decode functions."""

    def __getitem__(self, name: str) -> Any:
        value = getattr(self, name)
        if value is UNSET:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = getattr(self, name, default)
        return default if value is UNSET else value


def compile_schema(name: str, schema: Mapping[str, Any]) -> type[Message] | None:
    """The struct that accepts no message the schema refuses, tagged by `type`; None
    when the schema uses something not compiled here."""
    try:
        struct = _compile(name, schema)
        msgspec.json.Decoder(struct)  # where msgspec checks the constraints it takes
    except (Unsupported, TypeError, ValueError):  # msgspec refusing a bound or a pattern
        return None
    return struct


def message_decoder(structs: Iterable[type[Message]]) -> msgspec.json.Decoder[Any] | None:
    """One decoder for every compiled type, which picks the struct by `type`."""
    union = tuple(structs)
    if not union:
        return None
    return msgspec.json.Decoder(Union[union])  # noqa: UP007


def matches_instants(struct: type[Message]) -> bool:
    """Whether the struct's `occurred_at` holds only texts that match the instants' RFC
    3339 pattern (services/instants.py): what the schemas say, so that decoding need
    not match it again."""
    info = msgspec.inspect.type_info(struct)
    if not isinstance(info, msgspec.inspect.StructType):
        return False
    for field in info.fields:
        if field.name == "occurred_at":
            kind = field.type
            return isinstance(kind, msgspec.inspect.StrType) and kind.pattern == _INSTANT
    return False


def _compile(name: str, schema: Mapping[str, Any]) -> type[Message]:
    _only(schema, _TOP)
    if schema.get("type") != "object":
        raise Unsupported("not an object")
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = schema.get("required", [])
    if properties.get("type") != {"const": name} or "type" not in required:
        raise Unsupported("no required `type` const naming the type")
    if any(field not in properties for field in required):
        raise Unsupported("a required field without its schema")
    defs: Mapping[str, Any] = schema.get("$defs", {})
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field, subschema in properties.items():
        if field == "type":
            continue
        if not field.isidentifier() or field.startswith("_"):
            raise Unsupported(f"field name {field!r}")
        annotation = _value(_resolve(subschema, defs))
        if field in required:
            fields.append((field, annotation))
        else:
            fields.append((field, Union[annotation, UnsetType], UNSET))  # noqa: UP007
    # A struct's fields with defaults (the optional ones) come after the others.
    fields.sort(key=lambda spec: len(spec) == 3)
    struct = msgspec.defstruct(
        f"{name.title().replace('_', '')}Message",
        fields,
        bases=(Message,),
        tag_field="type",
        tag=name,
        gc=False,
    )
    return cast(type[Message], struct)


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" not in schema:
        return schema
    _only(schema, _ANNOTATIONS | {"$ref"})
    match = _LOCAL_REF.fullmatch(schema["$ref"])
    if match is None or match.group(1) not in defs:
        raise Unsupported(f"reference {schema['$ref']!r}")
    return _resolve(defs[match.group(1)], defs)


def _value(schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "string":
        _only(schema, _STRING)
        return _string(schema)
    if kind == "integer":
        _only(schema, _NUMBER)
        return _integer(schema)
    if kind == "number":
        _only(schema, _NUMBER)
        return Union[_integer(schema), _float(schema)]  # noqa: UP007
    if kind == ["string", "number"]:
        return _string_or_number(schema)
    raise Unsupported(f"type {kind!r}")


def _string_or_number(schema: Mapping[str, Any]) -> Any:
    """The one conditional the schemas use: a string with its own checks ("then"), or
    a number with others ("else")."""
    _only(schema, _ANNOTATIONS | {"type", "if", "then", "else"})
    if schema.get("if") != {"type": "string"}:
        raise Unsupported("a condition other than the value being a string")
    strings = {"type": "string", **schema.get("then", {})}
    numbers = {"type": "number", **schema.get("else", {})}
    return Union[_value(strings), _value(numbers)]  # noqa: UP007


def _string(schema: Mapping[str, Any]) -> Any:
    meta: dict[str, Any] = {}
    if "minLength" in schema:
        meta["min_length"] = _count(schema["minLength"])
    if "maxLength" in schema:
        meta["max_length"] = _count(schema["maxLength"])
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise Unsupported("a pattern that is not a string")
        # Both search with Python's re; fastjsonschema makes each unescaped `$` an end
        # of the text (`\Z`), as in the schemas' own regex dialect, where Python's `$`
        # would also match before a final newline ("10.50\n").
        meta["pattern"] = _DOLLAR.sub(r"\\Z", schema["pattern"])
    return Annotated[str, Meta(**meta)] if meta else str


def _integer(schema: Mapping[str, Any]) -> Any:
    low, high = _INT64
    for value, bound in _bounds(schema):
        if bound in ("ge", "gt"):
            low = max(low, value + (bound == "gt"))
        else:
            high = min(high, value - (bound == "lt"))
    return Annotated[int, Meta(ge=low, le=high)]


def _float(schema: Mapping[str, Any]) -> Any:
    meta: dict[str, Any] = {bound: value for value, bound in _bounds(schema)}
    return Annotated[float, Meta(**meta)] if meta else float


def _bounds(schema: Mapping[str, Any]) -> list[tuple[int, str]]:
    bounds = []
    for keyword, bound in _BOUNDS.items():
        if keyword in schema:
            value = schema[keyword]
            # A bound a double holds exactly means the same to both; others may not.
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**53:
                raise Unsupported(f"{keyword} {value!r}")
            bounds.append((value, bound))
    return bounds


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unsupported(f"a length of {value!r}")
    return value


def _only(schema: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    if not isinstance(schema, Mapping):
        raise Unsupported("a schema that is not an object")
    extra = set(schema) - set(allowed)
    if extra:
        raise Unsupported(f"keywords {sorted(extra)}")
