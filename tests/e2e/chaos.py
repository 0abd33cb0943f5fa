"""A stream whose ledgers depend only on partition order, and the clean run to compare with.

Each member's events stay on one topic (purchases and refunds, or shares), so any
correct processing - one worker, two, or one killed a hundred times - ends in the same
ledgers as applying each partition once, in order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.bootstrap import build
from services.config import Settings, Topics
from services.digest import digest
from services.ingest.messages import InputMessage

Record = tuple[str, bytes | None, bytes]


def stream(topics: Topics, seed: int, buyers: int = 250, sharers: int = 60) -> list[Record]:
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    records: list[Record] = []

    def add(topic: str, key: str, body: dict[str, Any]) -> None:
        records.append((topic, key.encode(), orjson.dumps(body)))

    for b in range(buyers):
        member, at = f"buyer-{b:04d}", t0 + timedelta(hours=rng.randrange(24 * 30))
        for n in range(rng.randrange(4, 14)):
            at += timedelta(hours=rng.randrange(1, 24 * 60))
            amount = f"{rng.randrange(100, 90_000) / 100:.2f}"
            body = {
                "event_id": f"{member}-p{n}",
                "type": "purchase",
                "member_id": member,
                "order_id": f"o{n}",
                "amount": amount,
                "currency": "EUR",
                "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            add(topics.purchases, member, body)
            if rng.random() < 0.1:
                add(topics.purchases, member, body)  # an upstream retry: a duplicate
            if rng.random() < 0.15:
                add(
                    topics.purchases,
                    member,
                    {
                        "event_id": f"{member}-r{n}",
                        "type": "refund",
                        "member_id": member,
                        "order_id": f"o{n}",
                        "amount": f"{float(amount) / 2:.2f}",
                        "occurred_at": (at + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                )
            if rng.random() < 0.02:  # missing fields: a dead letter
                add(
                    topics.purchases,
                    member,
                    {"event_id": f"{member}-x{n}", "type": "purchase", "member_id": member},
                )
    for s in range(sharers):
        member, at = f"sharer-{s:04d}", t0
        for n in range(rng.randrange(3, 12)):
            at += timedelta(hours=rng.randrange(1, 30))
            add(
                topics.social_shares,
                member,
                {
                    "event_id": f"{member}-s{n}",
                    "type": "social_share",
                    "member_id": member,
                    "network": rng.choice(["x", "tiktok"]),
                    "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
    return records


def clean_run(
    records: Sequence[Any], topics: Topics, database_url: str
) -> tuple[str, dict[tuple[str, str], int]]:
    """Applies each partition's records once, in order: what every crash must end in."""
    context = build(Settings(database_url=database_url, topics=topics, daily_sweep=False))
    service = context.ingest_service()
    messages = [InputMessage(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    for start in range(0, len(messages), 500):
        service.commit(*service.decode(messages[start : start + 500]))
    return digest(context.ledger, context.program), context.ledger.message_counts()


def cross_member_stream(
    topics: Topics, seed: int, buyers: int
) -> tuple[list[Record], list[Record]]:
    """Purchases, referrals, redemptions and their upstream retries across all four
    input topics: its ledgers depend on how topics interleave, so crash runs are checked
    by what exactly-once means, not against a clean run. Two phases, to be published one
    after the other has been taken in: the referrals and the buyers' purchases, then the
    redemptions and the referees' purchases, so that most referrals are rewarded and most
    redemptions meet the points they spend."""
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    records: list[Record] = []
    late: list[Record] = []

    def add(
        topic: str, key: str, body: dict[str, Any], retry: float = 0.0, into: list[Record] = records
    ) -> None:
        into.append((topic, key.encode(), orjson.dumps(body)))
        if rng.random() < retry:
            into.append((topic, key.encode(), orjson.dumps(body)))

    def stamp(at: datetime) -> str:
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def purchases(member: str, at: datetime, count: int, into: list[Record] = records) -> datetime:
        for n in range(count):
            body = {
                "event_id": f"{member}-p{n}",
                "type": "purchase",
                "member_id": member,
                "order_id": f"o{n}",
                "amount": f"{rng.randrange(100, 60_000) / 100:.2f}",
                "currency": "EUR",
                "occurred_at": stamp(at),
            }
            add(topics.purchases, member, body, retry=0.1, into=into)
            at += timedelta(hours=rng.randrange(1, 24 * 40))
        return at

    for b in range(buyers):
        member = f"buyer-{b:04d}"
        at = purchases(member, t0 + timedelta(hours=rng.randrange(24 * 30)), rng.randrange(3, 9))
        for n in range(rng.randrange(1, 4)):
            redemption = {
                "event_id": f"{member}-d{n}",
                "type": "redemption",
                "member_id": member,
                "points": rng.randrange(50, 3000),  # some beyond the balance: declined
                "reward": "voucher",
                "occurred_at": stamp(at + timedelta(days=n + 1)),
            }
            add(topics.redemptions, member, redemption, retry=0.1, into=late)
        if rng.random() < 0.3:
            friend = f"friend-{b:04d}"
            referred = t0 + timedelta(days=rng.randrange(0, 200))
            referral = {
                "event_id": f"{friend}-ref",
                "type": "referral",
                "referrer_id": member,
                "referee_id": friend,
                "occurred_at": stamp(referred),
            }
            add(topics.referrals, friend, referral, retry=0.1)
            # Day 1 to 120 after the referral: inside the 90-day window or not.
            purchases(friend, referred + timedelta(days=rng.randrange(1, 120)), 2, late)
    return records, late
