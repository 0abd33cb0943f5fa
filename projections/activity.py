"""`member_purchases`, `tier_changes` and `member_badges`: the histories the metrics and the
member endpoint read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from projections.analytics import VIEWS
from projections.base import Projection
from projections.events import Event, cents
from services.store.database import Cursor, Row

PURCHASE_COLUMNS = ("aggregate_id", "version", "at", "order_id", "amount_cents")
REFUND_COLUMNS = ("aggregate_id", "version", "at", "order_id", "amount_cents")
BADGE_COLUMNS = ("aggregate_id", "badge_id", "earned_at", "event_id", "version")
REWARD_COLUMNS = ("aggregate_id", "version", "campaign_id", "kind", "at", "points", "order_id")
TIER_CHANGE_COLUMNS = (
    "aggregate_id",
    "version",
    "at",
    "month",
    "from_tier",
    "to_tier",
    "direction",
)


class ActivityProjection(Projection):
    name: ClassVar[str] = "activity"
    cost: ClassVar[float] = 1.0
    tables: ClassVar[tuple[str, ...]] = (
        "member_purchases",
        "tier_changes",
        "member_badges",
        "campaign_rewards",
        "member_refunds",
    )
    create_statements: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS member_purchases ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "order_id TEXT NOT NULL, amount_cents BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS member_refunds ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "order_id TEXT NOT NULL, amount_cents BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS tier_changes ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL, "
        "month TEXT NOT NULL, from_tier TEXT NOT NULL, to_tier TEXT NOT NULL, "
        "direction TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS member_badges ("
        "aggregate_id TEXT NOT NULL, badge_id TEXT NOT NULL, earned_at TEXT NOT NULL, "
        "event_id TEXT, version BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS campaign_rewards ("
        "aggregate_id TEXT NOT NULL, version BIGINT NOT NULL, campaign_id TEXT NOT NULL, "
        "kind TEXT NOT NULL, at TEXT NOT NULL, points BIGINT NOT NULL, order_id TEXT)",
    )
    # Their keys too: nothing they write reads them (see Projection.index_statements).
    index_statements: ClassVar[tuple[str, ...]] = (
        "CREATE UNIQUE INDEX IF NOT EXISTS member_purchases_pkey ON member_purchases "
        "(aggregate_id, version)",
        "CREATE UNIQUE INDEX IF NOT EXISTS member_refunds_pkey ON member_refunds "
        "(aggregate_id, version)",
        "CREATE UNIQUE INDEX IF NOT EXISTS tier_changes_pkey ON tier_changes "
        "(aggregate_id, version)",
        "CREATE UNIQUE INDEX IF NOT EXISTS member_badges_pkey ON member_badges "
        "(aggregate_id, badge_id)",
        "CREATE UNIQUE INDEX IF NOT EXISTS campaign_rewards_pkey ON campaign_rewards "
        "(aggregate_id, version, campaign_id)",
        "CREATE INDEX IF NOT EXISTS member_purchases_at ON member_purchases (at)",
        "CREATE INDEX IF NOT EXISTS member_purchases_order "
        "ON member_purchases (aggregate_id, order_id)",
        "CREATE INDEX IF NOT EXISTS member_refunds_order "
        "ON member_refunds (aggregate_id, order_id)",
        "CREATE INDEX IF NOT EXISTS tier_changes_month ON tier_changes (month)",
        "CREATE INDEX IF NOT EXISTS campaign_rewards_campaign ON campaign_rewards (campaign_id)",
    )

    views: ClassVar[Mapping[str, str]] = VIEWS

    def __init__(self, tier_order: Sequence[str]) -> None:
        self._rank = {name: i for i, name in enumerate(tier_order)}

    def apply(self, cur: Cursor, events: Sequence[Event], since: int) -> None:
        purchases: list[Row] = []
        tier_changes: list[Row] = []
        badges: list[Row] = []
        rewards: list[Row] = []
        refunds: list[Row] = []
        for e in events:
            kind = e.kind
            campaigns = e.data.campaigns
            if campaigns:
                order_id = e.data.order_id
                rewards.extend(
                    (e.aggregate_id, e.version, campaign_id, kind, e.at, points, order_id)
                    for campaign_id, points in campaigns.items()
                )
            if kind == "PurchaseRecorded":
                purchases.append(
                    (e.aggregate_id, e.version, e.at, e.data.order_id, cents(e.data.amount))
                )
            elif kind == "RefundRecorded":
                refunds.append(
                    (e.aggregate_id, e.version, e.at, e.data.order_id, cents(e.data.amount))
                )
            elif kind == "TierChanged":
                tier_changes.append(self._tier_change(e))
            elif kind == "BadgeEarned":
                badges.append((e.aggregate_id, e.data.badge_id, e.at, e.data.event_id, e.version))
        cur.insert("member_purchases", PURCHASE_COLUMNS, purchases)
        cur.insert("member_refunds", REFUND_COLUMNS, refunds)
        cur.insert("tier_changes", TIER_CHANGE_COLUMNS, tier_changes)
        cur.insert("member_badges", BADGE_COLUMNS, badges)
        cur.insert("campaign_rewards", REWARD_COLUMNS, rewards)

    def _tier_change(self, e: Event) -> Row:
        from_tier, to_tier = e.data.from_tier, e.data.to_tier
        up = self._rank.get(to_tier, 0) > self._rank.get(from_tier, 0)
        at = e.at
        return (
            e.aggregate_id,
            e.version,
            at,
            at[:7],
            from_tier,
            to_tier,
            "upgrade" if up else "downgrade",
        )
