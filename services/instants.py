"""Instants as the ledger reads them, in one place: RFC 3339 with a UTC offset.

Input events, program files, `--as-of` and `?as_of=` all take the same text, so one
parser with one rule: a date, a time, an offset (`Z` or `+HH:MM`); returned in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339's date-time: "T" or "t" between, "Z", "z" or a numeric offset at the end.
RFC3339 = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339 = re.compile(RFC3339)


def parse_instant(text: str) -> datetime:
    """The instant `text` names, in UTC; ValueError says what is wrong with it."""
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError(
            f"is not a valid RFC 3339 timestamp with a UTC offset (e.g. 2026-03-01T12:00:00Z): "
            f"{_excerpt(text)}"
        )
    return parse_matched_instant(text)


def parse_matched_instant(text: str) -> datetime:
    """`parse_instant` of a text known to match RFC3339 already (a schema's pattern
    checked it: matching it twice was ~1% of the worker's CPU, issue 19)."""
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValueError(
            f"is not a valid RFC 3339 timestamp: {_excerpt(text)} (no such date or time)"
        ) from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset that moves the instant past year 1 or 9999
        raise ValueError(f"is out of range: {_excerpt(text)}") from None


def _excerpt(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"
