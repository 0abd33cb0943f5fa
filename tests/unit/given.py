"""given(events).when(command).then(...) for the member aggregate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.domain.member import Member, Outcome
from services.program import Program
from services.program_file import load_program

PROGRAM = load_program(None)
START = datetime(2026, 1, 1, 12, tzinfo=UTC)
Command = Callable[[Member, Program], Outcome]

_ids = iter(range(1, 10**9))


def day(n: float) -> datetime:
    return START + timedelta(days=n)


def purchase(order: str, amount: str, at: datetime) -> Command:
    return lambda m, p: m.purchase(
        p, event_id=f"e{next(_ids)}", order_id=order, amount=Decimal(amount), at=at
    )


def refund(order: str, amount: str, at: datetime) -> Command:
    return lambda m, p: m.refund(
        p, event_id=f"e{next(_ids)}", order_id=order, amount=Decimal(amount), at=at
    )


def referral(referrer: str, at: datetime) -> Command:
    return lambda m, p: m.record_referral(p, event_id=f"e{next(_ids)}", referrer_id=referrer, at=at)


def share(at: datetime, network: str = "instagram") -> Command:
    return lambda m, p: m.share(p, event_id=f"e{next(_ids)}", network=network, url=None, at=at)


def redeem(points: int, at: datetime) -> Command:
    return lambda m, p: m.redeem(p, event_id=f"e{next(_ids)}", points=points, reward="mug", at=at)


def enrol(at: datetime, birth_date: date | None = None, channel: str | None = "web") -> Command:
    return lambda m, p: m.enrol(
        p, event_id=f"e{next(_ids)}", birth_date=birth_date, channel=channel, at=at
    )


def review(product: str, at: datetime, rating: int = 5) -> Command:
    return lambda m, p: m.review(
        p, event_id=f"e{next(_ids)}", product_id=product, rating=rating, order_id=None, at=at
    )


def referrer_bonus(referee: str, at: datetime) -> Command:
    return lambda m, p: m.earn_referrer_bonus(
        p, event_id=f"e{next(_ids)}", referee_id=referee, at=at
    )


def sweep(at: datetime) -> Command:
    def run(m: Member, p: Program) -> Outcome:
        m.sweep(p, at=at)
        return Outcome()

    return run


class Then:
    def __init__(self, member: Member, outcome: Outcome, events: list[Any]) -> None:
        self.member = member
        self.outcome = outcome
        self.events = events

    @property
    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def all(self, kind: str) -> list[Any]:
        return [e for e in self.events if type(e).__name__ == kind]

    def event(self, kind: str) -> Any:
        matches = [e for e in self.events if type(e).__name__ == kind]
        assert len(matches) == 1, f"expected one {kind} in {self.kinds}"
        return matches[0]


class given:  # lower case: reads as a sentence, given(...).when(...)
    def __init__(self, *history: Command, member_id: str = "ann", program: Program = PROGRAM):
        self.program = program
        self.member = Member.register(member_id)
        for command in history:
            command(self.member, program)
        self.member.collect_events()

    def when(self, command: Command) -> Then:
        outcome = command(self.member, self.program)
        return Then(self.member, outcome, list(self.member.collect_events()))
