"""Whatever a message holds, decoding it ends in a command or a dead letter, never a crash."""

from __future__ import annotations

from pathlib import Path

import orjson

from services.config import Topics
from services.ingest.messages import InputMessage
from services.ingest.service import IngestService
from services.inputs import REGISTRY
from services.program_file import load_program
from services.store.ledger import Ledger
from services.validation import Decoder

TOPICS = Topics()
PROGRAM = load_program(None)


class BrokenDecoder(Decoder):
    """Stands in for a decoder bug not yet found: fails on one event id."""

    def decode(self, message: InputMessage) -> object:  # type: ignore[override]
        if message.value is not None and b'"trips"' in message.value:
            raise ArithmeticError("a bug in validation")
        return super().decode(message)


def test_a_decoder_bug_dead_letters_the_message_and_keeps_its_neighbours(tmp_path: Path) -> None:
    service = IngestService(
        Ledger.open(f"sqlite:///{tmp_path}/store.sqlite3"),
        PROGRAM,
        BrokenDecoder(PROGRAM, TOPICS, REGISTRY),
    )
    good = {
        "event_id": "fine",
        "type": "purchase",
        "occurred_at": "2026-03-01T12:00:00Z",
        "member_id": "ann",
        "order_id": "o1",
        "amount": "10",
        "currency": "EUR",
    }
    messages = [
        InputMessage(TOPICS.purchases, 0, offset, b"ann", orjson.dumps({**good, "event_id": eid}))
        for offset, eid in enumerate(["fine", "trips", "also-fine"])
    ]
    decoded, dead = service.decode(messages)
    assert [d.command.event_id for d in decoded] == ["fine", "also-fine"]
    [letter] = dead
    assert letter.message == messages[1]
    assert letter.error == "not understood: ArithmeticError: a bug in validation"
