"""`loyalty digest [--as-of T]`: one SHA-256 over every member's ledger (docs/RULES.md, section 8).

Members are folded from the notification log in one pass (no per-member queries); with
`as_of`, steps 1 and 2 (expiry, tier review) run in memory and nothing is written. Two
stores with equal digests hold the same ledgers.
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
