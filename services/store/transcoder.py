"""An orjson transcoder for stored events, in eventsourcing's own JSON format.

Stored forever: the tags are those of eventsourcing's JSONTranscoder ("decimal_str",
"datetime_iso", "uuid_hex"), so either transcoder reads what the other wrote. orjson
encodes about ten times faster than the standard library, which the ingest path feels.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "decimal_str": Decimal,
    "datetime_iso": datetime.fromisoformat,
    "uuid_hex": lambda data: UUID(hex=data),
}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"_type_": "decimal_str", "_data_": str(value)}
    if isinstance(value, datetime):
        return {"_type_": "datetime_iso", "_data_": value.isoformat()}
    if isinstance(value, UUID):
        return {"_type_": "uuid_hex", "_data_": value.hex}
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in an event: {value!r}")


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        tag = value.get("_type_")
        if tag is not None and len(value) == 2 and "_data_" in value:
            return _DECODERS[tag](value["_data_"])
        return {key: _restore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore(item) for item in value]
    return value


class OrjsonTranscoder(Transcoder):
    # UUIDs are passed through to `_default` so they keep their tag (orjson would
    # otherwise write them as bare strings and they would come back as str).
    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS

    def encode(self, obj: Any) -> bytes:
        # Event states rarely hold a UUID: copying them to tag one is the exception.
        if _holds_uuid((obj,)):
            obj = _tag_uuids(obj)
        return orjson.dumps(obj, default=_default, option=self._OPTIONS)

    def decode(self, data: bytes) -> Any:
        return _restore(orjson.loads(data))


def _holds_uuid(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    # Most containers (most states) hold plain values only: cleared without a Python loop.
    if _PLAIN.issuperset(map(type, items)):
        return False
    for item in items:
        kind = type(item)
        if kind in _PLAIN:
            continue
        if isinstance(item, UUID):
            return True
        if isinstance(item, dict | list | tuple) and _holds_uuid(item):
            return True
    return False


# What event states are made of: no UUID can hide in these.
_PLAIN = frozenset({str, int, bool, float, type(None), Decimal, datetime})


def _tag_uuids(value: Any) -> Any:
    if isinstance(value, UUID):
        return _default(value)
    if isinstance(value, dict):
        return {key: _tag_uuids(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tag_uuids(item) for item in value]
    return value
