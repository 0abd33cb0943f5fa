"""`member_balances`: one row per member, what `GET /members/{id}` returns."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from projections.base import Projection, iso
from services.store.database import Cursor

UPSERT_MEMBER = (
    "INSERT INTO member_balances (aggregate_id, member_id, balance, tier, qualifying_points, "
    "lifetime_points, last_event_at, position) VALUES (?, ?, 0, ?, 0, 0, NULL, ?) "
    "ON CONFLICT (aggregate_id) DO NOTHING"
)
SET_BALANCE = (
    "UPDATE member_balances SET balance = ?, lifetime_points = lifetime_points + ?, position = ? "
    "WHERE aggregate_id = ?"
)
SET_LAST_EVENT_AT = (
    "UPDATE member_balances SET last_event_at = ? "
    "WHERE aggregate_id = ? AND (last_event_at IS NULL OR last_event_at < ?)"
)
SET_QUALIFYING = "UPDATE member_balances SET qualifying_points = ? WHERE aggregate_id = ?"
SET_TIER = (
    "UPDATE member_balances SET tier = ?, qualifying_points = ?, position = ? "
    "WHERE aggregate_id = ?"
)

# Credits and clawbacks that count toward lifetime points (expiries and redemptions do not).
LIFETIME_EVENTS = frozenset(
    {
        "PurchaseRecorded",
        "RefundRecorded",
        "ReferralRewarded",
        "ReferrerBonusEarned",
        "SocialShareRecorded",
    }
)


class BalancesProjection(Projection):
    name: ClassVar[str] = "balances"
    tables: ClassVar[tuple[str, ...]] = ("member_balances",)
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS member_balances ("
        "aggregate_id TEXT PRIMARY KEY, member_id TEXT NOT NULL UNIQUE, balance BIGINT NOT NULL, "
        "tier TEXT NOT NULL, qualifying_points BIGINT NOT NULL, lifetime_points BIGINT NOT NULL, "
        "last_event_at TEXT, position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS member_balances_tier ON member_balances (tier)",
    )

    def __init__(self, lowest_tier: str) -> None:
        self._lowest_tier = lowest_tier

    def handle(self, cur: Cursor, aggregate_id: UUID, event: Any, position: int) -> None:
        kind = type(event).__name__
        key = str(aggregate_id)
        if kind == "Registered":
            cur.execute(UPSERT_MEMBER, (key, event.member_id, self._lowest_tier, position))
            return
        if kind == "TierChanged":
            cur.execute(SET_TIER, (event.to_tier, event.qualifying_points, position, key))
            return
        balance = getattr(event, "balance", None)
        if balance is not None:
            lifetime = int(event.points) if kind in LIFETIME_EVENTS else 0
            cur.execute(SET_BALANCE, (balance, lifetime, position, key))
        # Sweeps (expiries, tier reviews) are not the member's own events: no event_id.
        if getattr(event, "event_id", None) is not None:
            at = iso(event.at)
            cur.execute(SET_LAST_EVENT_AT, (at, key, at))
        qualifying = getattr(event, "qualifying_points", None)
        if qualifying is not None:
            cur.execute(SET_QUALIFYING, (qualifying, key))
