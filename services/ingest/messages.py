"""Input messages as the ingest service sees them, free of any Kafka client type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from services.commands import Command

# docs/RULES.md, section 2: the `error` header is an excerpt, so that a dead letter is never
# much larger than the message it carries (which the input topic already accepted).
MAX_ERROR_BYTES = 1024
# What the four headers add to a dead letter at most: the dead-letter topic must accept
# messages this much larger than the input topics do.
DEAD_LETTER_HEADROOM = 2048


# Tuples: one of each is built per input message, and a frozen dataclass costs
# several times as much to construct.
class InputMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # Kafka's timestamp (ms since the epoch): occurred_at may not run ahead of it by more
    # than the program's max_clock_skew. None only for messages that never were on Kafka.
    timestamp_ms: int | None = None
    # Of the partition: it counts the times its offsets started over (a re-created topic).
    incarnation: int = 0


def excerpt(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    marker = " [...]"
    return data[: limit - len(marker)].decode("utf-8", errors="ignore") + marker


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: InputMessage
    error: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("error", excerpt(self.error).encode("utf-8", errors="replace")),
            ("source.topic", self.message.topic.encode()),
            ("source.partition", str(self.message.partition).encode()),
            ("source.offset", str(self.message.offset).encode()),
        ]


class Decoded(NamedTuple):
    message: InputMessage
    command: Command
