"""Tier, churn and liability figures on a small history whose answers are obvious."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Settings
from tests.integration.harness import commit_events, keyed_message

pytestmark = pytest.mark.integration
AS_OF = "2026-07-01T00:00:00Z"

# member: purchases (date, amount) - see each test for what follows from them
HISTORY = {
    "ann": [("2026-01-10", "1000"), ("2026-06-15", "100")],  # active, repeat, silver in Jan
    "bob": [("2026-02-01", "10")],  # 150 days before AS_OF: at risk; lapses in May
    "cy": [("2025-12-01", "20")],  # 212 days: churned
    "eve": [("2025-06-01", "40"), ("2026-06-20", "30")],  # back after a year: a reactivation
    "fay": [("2025-07-15", "50")],  # churned; its lot expires within 30 days of AS_OF
    "gus": [("2025-09-01", "20")],  # churned; its lot expires within 90 days
}


@pytest.fixture(params=["sqlite", "postgres"])
def context(request: pytest.FixtureRequest) -> Context:
    url = request.getfixturevalue(f"{request.param}_url")
    context = build(Settings(database_url=url, daily_sweep=False))
    service = context.ingest_service()
    topics = context.settings.topics
    messages = []
    for member, purchases in HISTORY.items():
        for n, (day, amount) in enumerate(purchases):
            body = {
                "event_id": f"{member}{n}",
                "type": "purchase",
                "member_id": member,
                "order_id": f"o{n}",
                "amount": amount,
                "currency": "EUR",
                "occurred_at": f"{day}T12:00:00Z",
            }
            messages.append(keyed_message(topics.purchases, len(messages), body))
    messages.sort(key=lambda m: orjson.loads(m.value or b"{}")["occurred_at"])
    messages = [m._replace(offset=i) for i, m in enumerate(messages)]
    messages.append(
        keyed_message(
            topics.social_shares,
            0,
            {
                "event_id": "dee0",
                "type": "social_share",
                "member_id": "dee",
                "network": "x",
                "occurred_at": "2026-06-30T12:00:00Z",
            },
        )
    )
    service.commit(*service.decode(messages))
    context.projection_runner().catch_up()
    return context


async def get(context: Context, path: str) -> tuple[int, Any]:
    app = create_app(context, context.database(), context.projection_runner())
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path)
        return response.status, await response.json()


async def test_members_are_active_at_risk_churned_or_never_purchased(context: Context) -> None:
    status, churn = await get(context, f"/metrics/churn?as_of={AS_OF}&months=3")
    assert status == 200
    assert churn["members"] == {"active": 2, "at_risk": 1, "churned": 3, "never_purchased": 1}
    assert churn["repeat_purchase_rate"] == round(2 / 6, 4)  # ann and eve of six buyers


async def test_monthly_churn_reactivations_and_tier_moves(context: Context) -> None:
    _, churn = await get(context, f"/metrics/churn?as_of={AS_OF}&months=7")
    months = {m["month"]: m for m in churn["months"]}
    assert list(months) == [
        "2026-01",
        "2026-02",
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-06",
        "2026-07",
    ]
    # On May 1st only bob had bought in the last 90 days; his 90 days ran out on May 2nd.
    assert (months["2026-05"]["active_at_start"], months["2026-05"]["churned"]) == (1, 1)
    assert months["2026-05"]["churn_rate"] == 1.0
    assert months["2026-06"]["active_at_start"] == 0
    assert months["2026-06"]["churn_rate"] is None
    assert months["2026-06"]["reactivations"] == 1  # eve, a year after her last purchase
    assert sum(m["reactivations"] for m in churn["months"]) == 1
    assert months["2026-01"]["tier_upgrades"] == 1  # ann's 1000 made her silver
    assert sum(m["tier_downgrades"] for m in churn["months"]) == 0
    _, tiers = await get(context, f"/metrics/tiers?as_of={AS_OF}")
    assert tiers["members_per_tier"] == {"bronze": 6, "silver": 1, "gold": 0}
    assert tiers["changes_per_month"] == [{"month": "2026-01", "upgrades": 1, "downgrades": 0}]


async def test_points_liability_and_what_expires_soon(context: Context) -> None:
    status, body = await get(context, f"/metrics/liability?as_of={AS_OF}")
    assert status == 200
    # eve's 2025 lot expired when she came back; ann's June purchase earned 125 at silver
    assert body["points_outstanding"] == 1000 + 125 + 10 + 20 + 30 + 50 + 20 + 10
    assert body["expiring_within_30_days"] == 50  # fay's, on 2026-07-15
    assert body["expiring_within_90_days"] == 70  # and gus's, on 2026-09-01
    assert (body["value_outstanding"], body["value_expiring_within_30_days"]) == ("12.65", "0.50")
    assert body["currency"] == "EUR"
    assert body["points_owed_by_members"] == 0


@pytest.fixture(params=["sqlite", "postgres"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Context:
    """ann buys, redeems, buys again; bob buys, spends it all, and returns the order
    (a debt); cy's purchase waits out a 14-day return window."""
    (tmp_path / "p.toml").write_text("pending_days = 14\n")
    url = request.getfixturevalue(f"{request.param}_url")
    context = build(Settings(database_url=url, daily_sweep=False))
    pending = build(Settings(database_url=url, daily_sweep=False, program_path=tmp_path / "p.toml"))

    def buy(eid: str, who: str, amount: str, day: str) -> dict[str, Any]:
        return {
            "event_id": eid,
            "type": "purchase",
            "member_id": who,
            "order_id": eid,
            "amount": amount,
            "currency": "EUR",
            "occurred_at": f"{day}T12:00:00Z",
        }

    def redeem(eid: str, who: str, points: int, day: str) -> dict[str, Any]:
        return {
            "event_id": eid,
            "type": "redemption",
            "member_id": who,
            "points": points,
            "reward": "mug",
            "occurred_at": f"{day}T12:00:00Z",
        }

    commit_events(
        context,
        [
            buy("a1", "ann", "100", "2026-01-01"),
            buy("b1", "bob", "100", "2026-01-01"),
            redeem("a2", "ann", 40, "2026-02-01"),
            redeem("b2", "bob", 100, "2026-02-10"),
            {
                "event_id": "b3",
                "type": "refund",
                "member_id": "bob",
                "order_id": "b1",
                "amount": "100",
                "occurred_at": "2026-02-15T12:00:00Z",
            },
            buy("a3", "ann", "50", "2026-03-01"),
        ],
    )
    commit_events(pending, [buy("c1", "cy", "70", "2026-03-05")], first_offset=100)
    context.projection_runner().catch_up()
    return context


@pytest.mark.parametrize(
    ("as_of", "outstanding", "owed", "pending"),
    [
        ("2025-12-31T00:00:00Z", 0, 0, 0),
        ("2026-01-15T00:00:00Z", 200, 0, 0),  # both purchases
        ("2026-02-12T00:00:00Z", 60, 0, 0),  # ann redeemed 40, bob all 100
        ("2026-02-20T00:00:00Z", 60, 100, 0),  # bob's refund took 100 he had spent
        ("2026-03-10T00:00:00Z", 110, 100, 70),  # ann's 50 more; cy's 70 pending
        ("2026-03-19T12:00:00Z", 110, 100, 0),  # cy's window closed: no longer pending
        # A year on: the January lots expired. (cy's 70 became a lot when released; a
        # release is counted once recorded, by cy's next event or the daily sweep.)
        ("2027-02-01T00:00:00Z", 50, 100, 0),
    ],
)
async def test_the_liability_as_of_a_past_date_counts_the_lots_as_they_were(
    history: Context, as_of: str, outstanding: int, owed: int, pending: int
) -> None:
    status, body = await get(history, f"/metrics/liability?as_of={as_of}")
    assert status == 200
    assert (body["points_outstanding"], body["points_owed_by_members"]) == (outstanding, owed)
    assert body["points_pending"] == pending


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/metrics/churn?as_of=yesterday", "as_of must be an RFC 3339 timestamp"),
        ("/metrics/churn?as_of=2026-07-01T00:00:00", "with a UTC offset"),
        ("/metrics/churn?months=0", "months must be an integer from 1 to 120"),
        ("/metrics/liability?as_of=2026-13-01T00:00:00Z", "as_of must be"),
        ("/metrics/tiers?as_of=", "as_of must be"),
        ("/members?limit=x", "limit must be an integer"),
    ],
)
async def test_bad_parameters_get_a_400_that_says_why(
    context: Context, path: str, message: str
) -> None:
    status, body = await get(context, path)
    assert status == 400
    assert message in body["error"]


async def test_requests_in_parallel_each_get_their_answer(context: Context) -> None:
    # Handlers run in a pool of threads: each needs a connection of its own.
    app = create_app(context, context.database(), context.projection_runner())
    paths = ["/members/ann", "/metrics/churn?as_of=2026-07-01T00:00:00Z", "/metrics/tiers"] * 20
    async with TestClient(TestServer(app)) as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
        assert [r.status for r in responses] == [200] * len(paths)
        bodies = [await r.json() for r in responses]
    assert all(body == bodies[i % 3] for i, body in enumerate(bodies))
