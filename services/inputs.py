"""The ledger's input types, one record each: the one place a kind of input is added.

Validation, the topics' routing, `loyalty publish`, the worker's dispatch, `loyalty
topics` and the tests all read from the registry; a record missing its handler or its
schema stops start-up, never a message. To add an input type:
  1. its JSON Schema as schemas/<type>.json (what upstream reads);
  2. its command in services/commands.py, and the Member method deciding it;
  3. a decode function in services/validation.py for what a schema cannot say;
  4. its record below (a new topic also takes a line in config.INPUT_TOPICS);
  5. a test of each rule (tests/unit/test_member_rules.py) and the docs (docs/RULES.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from services import validation
from services.commands import (
    Command,
    Enrolment,
    Purchase,
    Redemption,
    Referral,
    Refund,
    Review,
    SocialShare,
)
from services.config import INPUT_TOPICS, Topics
from services.domain.member import Member, Outcome
from services.program import Program

Decode = Callable[[validation.Fields, datetime, Program], Command]
Handle = Callable[[Member, Program, Any], Outcome]


@dataclass(frozen=True)
class InputType:
    name: str  # the events' `type`
    topic: str  # the setting of the topic that carries it (config.INPUT_TOPICS)
    key_field: str  # the field the message key must equal: the member it concerns
    command: type[Any]  # what `decode` makes, and what the worker dispatches on
    decode: Decode
    handle: Handle | None  # the aggregate's method deciding the command


class RegistryError(RuntimeError):
    """The registry itself is incomplete: a defect of the code, found at start-up."""


class Registry:
    def __init__(self, types: tuple[InputType, ...]) -> None:
        self._types = types
        self._by_name = {t.name: t for t in types}
        self._by_command = {t.command: t for t in types}

    def __iter__(self) -> Iterator[InputType]:
        return iter(self._types)

    def check(self, schemas: Path = validation.SCHEMAS_DIR) -> Registry:
        """Stops start-up on a record that could only fail per message later."""
        if len(self._by_name) != len(self._types) or len(self._by_command) != len(self._types):
            raise RegistryError("two input types share a name or a command")
        for t in self._types:
            if t.handle is None:
                raise RegistryError(f"input type {t.name!r} has no handler")
            if t.topic not in INPUT_TOPICS:
                raise RegistryError(f"input type {t.name!r}: no input topic {t.topic!r}")
            if not (schemas / f"{t.name}.json").is_file():
                raise RegistryError(f"input type {t.name!r}: no schema {t.name}.json in {schemas}")
        return self

    def by_name(self, name: str) -> InputType | None:
        return self._by_name.get(name)

    def by_command(self, command: Command) -> InputType:
        return self._by_command[type(command)]

    def carried_by(self, topics: Topics, topic: str) -> frozenset[str]:
        """The types the topic named `topic` may carry; anything else is dead-lettered."""
        return self._carried(topics).get(topic, frozenset())

    def topic_of(self, topics: Topics, name: str) -> str | None:
        t = self._by_name.get(name)
        return None if t is None else topics.names[t.topic]

    def handlers(self) -> dict[type, Handle]:
        """Each command type's handler, for a caller that handles many commands."""
        return {t.command: t.handle for t in self._types if t.handle is not None}

    def handle(self, member: Member, program: Program, command: Command) -> Outcome:
        handle = self._by_command[type(command)].handle
        assert handle is not None  # check() saw to it
        return handle(member, program, command)

    def _carried(self, topics: Topics) -> dict[str, frozenset[str]]:
        key = tuple(topics.names.items())
        cache = self._carried_cache
        if key not in cache:
            carried: dict[str, set[str]] = {}
            for t in self._types:
                carried.setdefault(topics.names[t.topic], set()).add(t.name)
            cache[key] = {topic: frozenset(names) for topic, names in carried.items()}
        return cache[key]

    @cached_property
    def _carried_cache(self) -> dict[tuple[tuple[str, str], ...], dict[str, frozenset[str]]]:
        return {}


def _purchase(member: Member, program: Program, c: Purchase) -> Outcome:
    return member.purchase(
        program, event_id=c.event_id, order_id=c.order_id, amount=c.amount, at=c.at
    )


def _refund(member: Member, program: Program, c: Refund) -> Outcome:
    return member.refund(
        program, event_id=c.event_id, order_id=c.order_id, amount=c.amount, at=c.at
    )


def _referral(member: Member, program: Program, c: Referral) -> Outcome:
    return member.record_referral(program, event_id=c.event_id, referrer_id=c.referrer_id, at=c.at)


def _social_share(member: Member, program: Program, c: SocialShare) -> Outcome:
    return member.share(program, event_id=c.event_id, network=c.network, url=c.url, at=c.at)


def _redemption(member: Member, program: Program, c: Redemption) -> Outcome:
    return member.redeem(program, event_id=c.event_id, points=c.points, reward=c.reward, at=c.at)


def _enrolment(member: Member, program: Program, c: Enrolment) -> Outcome:
    return member.enrol(
        program, event_id=c.event_id, birth_date=c.birth_date, channel=c.channel, at=c.at
    )


def _review(member: Member, program: Program, c: Review) -> Outcome:
    return member.review(
        program,
        event_id=c.event_id,
        product_id=c.product_id,
        rating=c.rating,
        order_id=c.order_id,
        at=c.at,
    )


REGISTRY = Registry(
    (
        InputType(
            "purchase", "purchases", "member_id", Purchase, validation.decode_purchase, _purchase
        ),
        InputType("refund", "purchases", "member_id", Refund, validation.decode_refund, _refund),
        InputType(
            "referral", "referrals", "referee_id", Referral, validation.decode_referral, _referral
        ),
        InputType(
            "social_share",
            "social_shares",
            "member_id",
            SocialShare,
            validation.decode_social_share,
            _social_share,
        ),
        InputType(
            "redemption",
            "redemptions",
            "member_id",
            Redemption,
            validation.decode_redemption,
            _redemption,
        ),
        InputType(
            "member_enrolled",
            "members",
            "member_id",
            Enrolment,
            validation.decode_member_enrolled,
            _enrolment,
        ),
        InputType("review", "reviews", "member_id", Review, validation.decode_review, _review),
    )
)
