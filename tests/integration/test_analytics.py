"""Customer value, retention cohorts, RFM segments and breakage on hand-built histories,
each expected number worked out here (README, "Read models and metrics")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Settings
from services.domain.member import Member
from tests.integration.harness import buy, commit_events

pytestmark = pytest.mark.integration
AS_OF = "2026-07-01T00:00:00Z"


def enrol(who: str, day: str) -> dict[str, Any]:
    return {
        "event_id": f"{who}-enrol",
        "type": "member_enrolled",
        "member_id": who,
        "occurred_at": f"{day}T09:00:00Z",
    }


HISTORY = [
    enrol("ann", "2026-01-05"),
    buy("ann", "o1", "100.00", "2026-01-10"),
    enrol("bob", "2026-01-20"),
    buy("bob", "b1", "200.00", "2026-01-25"),
    enrol("dee", "2026-02-01"),  # never buys: CLV 0 in the February cohort
    buy("ann", "o2", "50.00", "2026-02-10"),
    {
        "event_id": "ann-r2",
        "type": "refund",
        "member_id": "ann",
        "order_id": "o2",
        "amount": "20.00",
        "occurred_at": "2026-02-12T12:00:00Z",
    },
    *[
        buy("cy", f"c{i}", "10.00", day)
        for i, day in enumerate(
            ["2026-03-01", "2026-03-15", "2026-04-01", "2026-05-01", "2026-06-01"]
        )
    ],
    buy("fay", "f1", "40.00", "2025-05-01"),  # its lot expires on 2026-05-01...
    {
        "event_id": "fay-s",
        "type": "social_share",
        "member_id": "fay",
        "network": "x",
        "occurred_at": "2026-06-01T12:00:00Z",
    },  # ...recorded here: 40 points expired
    buy("ann", "o3", "30.00", "2026-06-20"),
    {
        "event_id": "ann-d",
        "type": "redemption",
        "member_id": "ann",
        "points": 50,
        "reward": "mug",
        "occurred_at": "2026-06-21T12:00:00Z",
    },  # 50 points redeemed
    buy("eve", "e1", "75.00", "2026-06-25"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def context(request: pytest.FixtureRequest) -> Iterator[Context]:
    url = request.getfixturevalue(f"{request.param}_url")
    context = build(Settings(database_url=url, daily_sweep=False))
    commit_events(context, HISTORY)
    runner = context.projection_runner()
    runner.catch_up()
    runner.close()
    yield context


def get(context: Context, path: str) -> tuple[int, Any]:
    async def fetch() -> tuple[int, Any]:
        app = create_app(context, context.database(), context.projection_runner())
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, await response.json()

    return asyncio.run(fetch())


def test_customer_value_and_clv_by_enrolment_cohort(context: Context) -> None:
    status, value = get(context, f"/metrics/value?as_of={AS_OF}")
    assert status == 200
    # ann 100 + 50 + 30 - 20 = 160, bob 200, cy 5 x 10 = 50, eve 75, fay 40: 525 in 11 orders
    assert (value["members_with_purchases"], value["orders"], value["net_spend"]) == (
        5,
        11,
        "525.00",
    )
    assert value["average_order_value"] == "47.73"  # 525 / 11 = 47.727...
    assert value["clv_average"] == "105.00"  # 525 / 5
    assert value["clv_by_enrolment_month"] == [
        {"month": "2026-01", "members": 2, "clv_average": "180.00"},  # ann 160, bob 200
        {"month": "2026-02", "members": 1, "clv_average": "0.00"},  # dee
    ]
    # As of the end of January: ann and bob only
    _, january = get(context, "/metrics/value?as_of=2026-01-31T23:59:59Z")
    assert (january["members_with_purchases"], january["net_spend"]) == (3, "340.00")  # + fay
    status, page = get(context, f"/customers?as_of={AS_OF}&limit=2")
    assert [c["member_id"] for c in page["customers"]] == ["ann", "bob"]
    assert page["customers"][0] == {
        "member_id": "ann",
        "orders": 3,
        "net_spend": "160.00",
        "average_order_value": "53.33",
        "first_purchase_at": "2026-01-10T12:00:00Z",
        "last_purchase_at": "2026-06-20T12:00:00Z",
        "clv": "160.00",
    }
    assert page["next_after"] == "bob"
    _, rest = get(context, f"/customers?as_of={AS_OF}&after=bob")
    assert [c["member_id"] for c in rest["customers"]] == ["cy", "eve", "fay"]
    assert rest["next_after"] is None


def test_retention_cohorts_by_first_purchase_and_by_enrolment(context: Context) -> None:
    status, body = get(context, f"/metrics/cohorts?as_of={AS_OF}&months=7")
    assert status == 200
    assert body["months"] == [f"2026-{m:02d}" for m in range(1, 8)]
    cohorts = {c["cohort"]: c for c in body["cohorts"]}
    # January: ann and bob. February ann buys again (1 of 2), June ann again, July nobody.
    assert cohorts["2026-01"]["members"] == 2
    assert cohorts["2026-01"]["retention"] == [1.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0]
    assert cohorts["2026-03"]["retention"] == [1.0, 1.0, 1.0, 1.0, 0.0]  # cy, every month
    assert cohorts["2026-06"]["retention"] == [1.0, 0.0]  # eve
    assert cohorts["2026-02"] == {"cohort": "2026-02", "members": 0, "retention": [None] * 6}
    _, enrolled = get(context, f"/metrics/cohorts?as_of={AS_OF}&months=7&by=enrolment")
    by_enrolment = {c["cohort"]: c for c in enrolled["cohorts"]}
    assert by_enrolment["2026-01"]["retention"][:2] == [1.0, 0.5]  # ann and bob enrolled
    assert by_enrolment["2026-02"]["retention"] == [0.0] * 6  # dee never bought


def test_breakage_and_the_expected_cost(context: Context) -> None:
    _, body = get(context, f"/metrics/liability?as_of={AS_OF}")
    # trailing 365 days: 40 expired (fay), 50 redeemed (ann)
    assert body["breakage_rate"] == round(40 / 90, 4)
    outstanding = body["points_outstanding"]
    # the cost is the outstanding points not expected to lapse, at 0.01 EUR a point
    expected = (outstanding * (1 - round(40 / 90, 4))) * 0.01
    assert abs(float(body["expected_cost"]) - expected) < 0.01
    _, early = get(context, "/metrics/liability?as_of=2026-01-31T00:00:00Z")
    assert early["breakage_rate"] is None  # nothing expired or redeemed yet
    assert early["expected_cost"] == early["value_outstanding"]
    _, history = get(context, f"/metrics/liability/history?as_of={AS_OF}&months=3")
    assert [m["month"] for m in history["months"]] == ["2026-05", "2026-06", "2026-07"]
    assert history["months"][1]["at"] == "2026-06-30T23:59:59Z"
    assert history["months"][-1]["points_outstanding"] == outstanding


def ntiles(keys: list[tuple[Any, ...]]) -> dict[Any, int]:
    """NTILE(5) by the sort of `keys` (the last item names the row): the first
    len % 5 tiles take one row more."""
    ordered = sorted(keys)
    n = len(ordered)
    size, extra = divmod(n, 5)
    tiles: dict[Any, int] = {}
    i = 0
    for tile in range(1, 6):
        for _ in range(size + (1 if tile <= extra else 0)):
            tiles[ordered[i][-1]] = tile
            i += 1
    return tiles


def test_rfm_segments_agree_with_an_independent_model(postgres_url: str) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    events = []
    spend: dict[str, tuple[int, int, str]] = {}  # member -> (orders, cents, last at)
    for i in range(23):
        who = f"m{i:02d}"
        orders = 1 + (i * 7) % 6
        for k in range(orders):
            day = f"2026-{1 + (i + k) % 6:02d}-{1 + (i * 3 + k) % 27:02d}"
            cents = 1000 + ((i * 37 + k * 11) % 50) * 100
            events.append(buy(who, f"o{k}", f"{cents / 100:.2f}", day))
            last = max(spend.get(who, (0, 0, ""))[2], f"{day}T12:00:00Z")
            spend[who] = (
                spend.get(who, (0, 0, ""))[0] + 1,
                spend.get(who, (0, 0, ""))[1] + cents,
                last,
            )
    commit_events(context, events)
    context.projection_runner().catch_up()
    key = {who: str(Member.create_id(who)) for who in spend}
    r = ntiles([(last, key[w], w) for w, (_, _, last) in spend.items()])
    f = ntiles([(orders, key[w], w) for w, (orders, _, _) in spend.items()])
    m = ntiles([(cents, key[w], w) for w, (_, cents, _) in spend.items()])

    def segment(w: str) -> str:
        if spend[w][0] == 1 and r[w] == 5:
            return "new"
        if r[w] >= 4 and f[w] >= 4 and m[w] >= 4:
            return "champions"
        if f[w] >= 4 and r[w] >= 3:
            return "loyal"
        if r[w] <= 2 and f[w] >= 3:
            return "at_risk"
        if r[w] <= 2 and f[w] <= 2:
            return "hibernating"
        return "others"

    expected: dict[str, list[str]] = {}
    for w in sorted(spend):
        expected.setdefault(segment(w), []).append(w)
    _, body = get(context, f"/segments?as_of={AS_OF}")
    counts = {s["name"]: s["members"] for s in body["segments"]}
    assert counts == {name: len(expected.get(name, [])) for name in counts}
    assert sum(counts.values()) == 23 and len([n for n in counts.values() if n]) >= 3
    for name, members in expected.items():
        listed, after = [], ""
        while True:
            _, page = get(context, f"/segments/{name}/members?as_of={AS_OF}&limit=2&after={after}")
            listed += [row["member_id"] for row in page["members"]]
            for row in page["members"]:
                w = row["member_id"]
                assert (row["recency_score"], row["frequency_score"], row["monetary_score"]) == (
                    r[w],
                    f[w],
                    m[w],
                )
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert listed == members
    # the SQL views say the same, as of now
    db = context.database()
    for name, members in expected.items():
        rows = db.query(f"SELECT member_id FROM segment_{name} ORDER BY member_id")
        assert [row[0] for row in rows] == members


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/metrics/cohorts?by=week", "by must be purchase or enrolment"),
        ("/metrics/cohorts?months=37", "months must be an integer from 1 to 36"),
        ("/metrics/liability/history?months=0", "months must be an integer from 1 to 36"),
        ("/customers?limit=1001", "limit must be an integer from 1 to 1000"),
        ("/customers?after=" + "x" * 65, "after must be a member id"),
        ("/segments?as_of=yesterday", "as_of must be an RFC 3339 timestamp"),
        ("/segments/champions/members?limit=²", "limit must be an integer"),
        ("/metrics/value?as_of=2026-07-01", "as_of must be an RFC 3339 timestamp"),
    ],
)
def test_bad_parameters_get_a_400(context: Context, path: str, message: str) -> None:
    status, body = get(context, path)
    assert status == 400 and message in body["error"]
    assert get(context, "/segments/vip/members")[0] == 404
