"""Input messages as the ingest service sees them, free of any Kafka client type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from services.commands import Command


# Tuples: one of each is built per input message, and a frozen dataclass costs
# several times as much to construct.
class InputMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: InputMessage
    error: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("error", self.error.encode()),
            ("source.topic", self.message.topic.encode()),
            ("source.partition", str(self.message.partition).encode()),
            ("source.offset", str(self.message.offset).encode()),
        ]


class Decoded(NamedTuple):
    message: InputMessage
    command: Command
