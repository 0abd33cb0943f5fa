"""`loyalty digest [--as-of T]`: one SHA-256 over every member's ledger (CONTRACT 5).

Members are folded from the notification log in one pass (no per-member queries); with
`as_of`, steps 1 and 2 (expiry, tier review) run in memory and nothing is written. Two
stores with equal digests hold the same ledgers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

from eventsourcing.domain import CanMutateProtocol

from services.domain.member import Member
from services.program import Program
from services.store.ledger import Ledger


def members(ledger: Ledger, page: int = 10_000) -> Iterator[Member]:
    """Every member as the store holds it, rebuilt from its events."""
    folded: dict[Any, Any] = {}
    position = 0
    to_event = ledger.mapper.to_domain_event
    while notifications := ledger.store.select_notifications(
        start=position, limit=page, inclusive_of_start=False
    ):
        for notification in notifications:
            event = cast(CanMutateProtocol[Any], to_event(notification))
            key = event.originator_id
            folded[key] = event.mutate(folded.get(key))
        position = notifications[-1].id
    for member in folded.values():
        assert isinstance(member, Member)
        yield member


def digest_lines(ledger: Ledger, program: Program, as_of: datetime | None = None) -> list[str]:
    lines = []
    for member in members(ledger):
        if as_of is not None:
            member.sweep(program, at=as_of)  # in memory only: never saved
        lines.append(
            f"{member.member_id}\t{member.balance}\t{member.tier_name(program)}\t"
            f"{member.lifetime_points}\n"
        )
    return sorted(lines)


def digest(ledger: Ledger, program: Program, as_of: datetime | None = None) -> str:
    sha = hashlib.sha256()
    for line in digest_lines(ledger, program, as_of):
        sha.update(line.encode())
    return sha.hexdigest()
