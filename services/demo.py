"""A generated, reproducible stream of shoppers for `make run` and the benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

NETWORKS = ("facebook", "instagram", "x", "tiktok", "pinterest", "linkedin")
CHANNELS = ("web", "app", "store")
REWARDS = ("coffee", "tote-bag", "gift-card-10", "free-delivery")


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(members: int, seed: int, now: datetime, days: int = 400) -> Iterator[dict[str, Any]]:
    """Events in occurred_at order: enrolments (with birth dates, now and then a second
    one), purchases, refunds, shares, reviews, referrals, redemptions."""
    rng = random.Random(seed)
    start = now - timedelta(days=days)
    events: list[tuple[datetime, int, dict[str, Any]]] = []
    seq = 0

    def add(at: datetime, body: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        body = {"event_id": f"demo-{seed}-{seq}", "occurred_at": _stamp(at), **body}
        events.append((at, seq, body))

    ids = [f"shopper-{i:05d}" for i in range(members)]
    for index, member_id in enumerate(ids):
        joined = start + timedelta(minutes=rng.randrange(days * 24 * 60 * 3 // 4))
        if rng.random() < 0.8:
            enrolment: dict[str, Any] = {
                "type": "member_enrolled",
                "member_id": member_id,
                "channel": rng.choice(CHANNELS),
            }
            if rng.random() < 0.7:
                born = date(rng.randrange(1950, 2006), rng.randrange(1, 13), rng.randrange(1, 29))
                enrolment["birth_date"] = born.isoformat()
            # some enrol on their first visit, others a few weeks into shopping
            enrolled = joined + timedelta(days=rng.choice((0, 0, 0, 20, 45)))
            add(enrolled, enrolment)
            if rng.random() < 0.03:  # a form sent twice: already_enrolled
                add(enrolled + timedelta(minutes=5), dict(enrolment))
        if index > 10 and rng.random() < 0.15:
            referrer = ids[rng.randrange(index)]
            add(joined, {"type": "referral", "referrer_id": referrer, "referee_id": member_id})
        heavy = rng.random() < 0.1
        at = joined + timedelta(hours=rng.randrange(1, 24 * 30))
        balance_guess = 0
        for order in range(rng.randrange(1, 25 if heavy else 8)):
            if at >= now:
                break
            amount = Decimal(rng.randrange(500, 60_000 if heavy else 20_000)) / 100
            order_id = f"{member_id}-o{order}"
            add(
                at,
                {
                    "type": "purchase",
                    "member_id": member_id,
                    "order_id": order_id,
                    "amount": str(amount),
                    "currency": "EUR",
                },
            )
            balance_guess += int(amount)
            if rng.random() < 0.08:
                refund = (amount * Decimal(rng.choice((25, 50, 100))) / 100).quantize(
                    Decimal("0.01")
                )
                add(
                    at + timedelta(days=rng.randrange(1, 20)),
                    {
                        "type": "refund",
                        "member_id": member_id,
                        "order_id": order_id,
                        "amount": str(refund),
                    },
                )
            if rng.random() < 0.3:
                add(
                    at + timedelta(hours=rng.randrange(1, 48)),
                    {
                        "type": "social_share",
                        "member_id": member_id,
                        "network": rng.choice(NETWORKS),
                        "url": f"https://shop.example/p/{rng.randrange(10_000)}",
                    },
                )
            if rng.random() < 0.25:
                add(
                    at + timedelta(days=rng.randrange(2, 15)),
                    {
                        "type": "review",
                        "member_id": member_id,
                        "product_id": f"sku-{rng.randrange(40)}",
                        "rating": rng.choice((3, 4, 4, 5, 5, 5, 1, 2)),
                        "order_id": order_id,
                    },
                )
            if balance_guess > 300 and rng.random() < 0.15:
                points = rng.choice((100, 200, 500))
                add(
                    at + timedelta(days=rng.randrange(1, 10)),
                    {
                        "type": "redemption",
                        "member_id": member_id,
                        "points": points,
                        "reward": rng.choice(REWARDS),
                    },
                )
                balance_guess -= points
            at += timedelta(hours=rng.randrange(12, 24 * (20 if heavy else 90)))
    events.sort(key=lambda item: (item[0], item[1]))
    for at, _, body in events:
        if at < now:
            yield body


def write_demo(path: Path, *, members: int, seed: int, now: datetime) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as out:
        for event in generate(members, seed, now):
            out.write(orjson.dumps(event) + b"\n")
            n += 1
    return n
