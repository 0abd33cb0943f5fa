"""`loyalty digest [--as-of T]`: one SHA-256 over every member's ledger.

Members are folded from the notification log in one pass (no per-member queries). With
`as_of`, each member is what `GET /members/{id}?as_of=T` answers (docs/RULES.md, section
8): the prefix of its events dated at or before T, then steps 0 to 2 at T, in memory,
nothing written. Two stores with equal digests hold the same ledgers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime

from services.domain.member import Member
from services.program import Program
from services.store.ledger import Ledger


def members(ledger: Ledger) -> Iterator[Member]:
    """Every member as the store holds it, rebuilt from its events."""
    return ledger.all_members()


def line(member: Member, program: Program) -> str:
    """A member's line of the digest: member_id, balance, tier, lifetime points."""
    return (
        f"{member.member_id}\t{member.balance}\t{member.tier_name(program)}\t"
        f"{member.lifetime_points}\n"
    )


def digest_lines(ledger: Ledger, program: Program, as_of: datetime | None = None) -> list[str]:
    lines = []
    for member in ledger.all_members(as_of):
        if as_of is not None:
            member.sweep(program, at=as_of)  # in memory only: never saved
        lines.append(line(member, program))
    return sorted(lines)


def digest(ledger: Ledger, program: Program, as_of: datetime | None = None) -> str:
    sha = hashlib.sha256()
    for text in digest_lines(ledger, program, as_of):
        sha.update(text.encode())
    return sha.hexdigest()
