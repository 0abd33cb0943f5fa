"""A message that makes processing fail is dead-lettered alone; its neighbours commit."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from services.commands import Command
from services.config import Topics
from services.domain.member import Member, Outcome
from services.ingest.consumer import IngestLoop
from services.ingest.service import IngestService
from services.inputs import REGISTRY, Registry
from services.program import Program
from services.validation import Decoder
from tests.integration.harness import context_for, event, read_to_end, send, wait_until

pytestmark = pytest.mark.integration


def fails_on_one_event() -> Registry:
    """The input types, with a purchase handler standing in for a bug the domain may one
    day have: it raises on one event_id."""
    purchase = REGISTRY.by_name("purchase")
    assert purchase is not None and purchase.handle is not None
    decide = purchase.handle

    def handle(member: Member, program: Program, command: Command) -> Outcome:
        if command.event_id == "boom":
            raise ZeroDivisionError("a bug in a rule")
        return decide(member, program, command)

    return Registry(tuple(replace(t, handle=handle) if t is purchase else t for t in REGISTRY))


async def test_the_failing_message_is_dead_lettered_and_the_worker_goes_on(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    records = [
        event(
            topics.purchases,
            event_id=eid,
            type="purchase",
            occurred_at="2026-01-01T00:00:00Z",
            member_id="ann",
            order_id=eid,
            amount="10",
            currency="EUR",
        )
        for eid in ("a", "b", "boom", "c", "d")
    ]
    # Undecodable neighbours: the halving that isolates "boom" must not publish them again.
    records.insert(1, (topics.purchases, b"ann", b"not json"))
    records.append((topics.purchases, b"ann", b"[]"))
    await send(kafka_bootstrap, records)
    loop = IngestLoop(
        bootstrap=kafka_bootstrap,
        group=context.settings.consumer_group,
        topics=topics.inputs,
        dead_letter_topic=topics.dead_letters,
        ledger=context.ledger,
        service=IngestService(
            context.ledger,
            context.program,
            Decoder(context.program, topics, REGISTRY),
            fails_on_one_event(),
        ),
        batch_max=100,
        batch_seconds=0.1,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    counts = await wait_until(
        lambda: (c := context.ledger.message_counts()) and sum(c.values()) == 7 and c,
        60,
        "all seven",
    )
    stopping.set()
    await task

    assert counts == {(topics.purchases, "applied"): 4, (topics.purchases, "dead_lettered"): 3}
    member = context.ledger.member("ann")
    assert member is not None and member.balance == 40
    letters = await read_to_end(kafka_bootstrap, topics.dead_letters)
    assert sorted(letter.value for letter in letters) == sorted(
        [b"not json", records[3][2], b"[]"]
    )  # each once, though the batch was committed in halves
    [boom] = [letter for letter in letters if letter.value == records[3][2]]
    assert dict(boom.headers)["error"] == b"processing failed: ZeroDivisionError: a bug in a rule"
