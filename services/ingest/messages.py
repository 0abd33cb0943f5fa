"""Input messages as the ingest service sees them, free of any Kafka client type."""

from __future__ import annotations

from dataclasses import dataclass

from services.commands import Command


@dataclass(frozen=True, slots=True)
class InputMessage:
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


@dataclass(frozen=True, slots=True)
class Decoded:
    message: InputMessage
    command: Command
