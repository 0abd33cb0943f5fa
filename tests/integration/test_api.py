"""The HTTP API's parameters: hostile values get a 400 that says why, and a member's
ledger comes in pages chained by `next_after_version`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Settings
from services.ingest.messages import InputMessage
from tests.conftest import new_database

pytestmark = pytest.mark.integration
AS_OF = "2026-07-01T00:00:00Z"
ENTRIES = {"ann": 250, "bob": 100, "cy": 1}  # members and how many purchases each made


def _purchases(member: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{member}-{n}",
            "type": "purchase",
            "member_id": member,
            "order_id": f"o{n}",
            "amount": "1",
            "currency": "EUR",
            "occurred_at": f"2026-06-{1 + n // 100:02d}T{n % 100 // 60:02d}:{n % 60:02d}:00Z",
        }
        for n in range(count)
    ]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def context(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Context]:
    """One store for the module: the tests only read it."""
    if request.param == "postgres":
        url = new_database(request.getfixturevalue("services"))
    else:
        url = f"sqlite:///{Path(tmp_path_factory.mktemp('api')) / 'ledger.sqlite3'}"
    context = build(Settings(database_url=url, daily_sweep=False))
    service = context.ingest_service()
    events = [e for member, n in ENTRIES.items() for e in _purchases(member, n)]
    messages = [
        InputMessage(
            context.settings.topics.purchases, 0, i, e["member_id"].encode(), orjson.dumps(e)
        )
        for i, e in enumerate(events)
    ]
    service.commit(*service.decode(messages))
    runner = context.projection_runner()
    runner.catch_up()
    runner.close()
    yield context
    context.ledger.close()


async def get(context: Context, path: str, **params: str) -> tuple[int, Any]:
    app = create_app(context, context.database(), context.projection_runner())
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path, params=params)
        return response.status, await response.json()


async def pages(context: Context, member: str, limit: int) -> list[dict[str, Any]]:
    """Every page of the member's ledger, following `next_after_version` to the end."""
    found: list[dict[str, Any]] = []
    params = {"limit": str(limit)}
    while True:
        status, body = await get(context, f"/members/{member}/ledger", **params)
        assert status == 200, body
        found.append(body)
        if body["next_after_version"] is None:
            return found
        params["after_version"] = str(body["next_after_version"])


async def test_a_long_ledger_comes_in_pages_of_100_by_default(context: Context) -> None:
    status, whole = await get(context, "/members/ann/ledger", limit="1000")
    assert status == 200 and whole["next_after_version"] is None
    assert len(whole["entries"]) == 250
    versions = [entry["version"] for entry in whole["entries"]]
    assert versions == sorted(versions)

    first = (await get(context, "/members/ann/ledger"))[1]
    assert first["member_id"] == "ann"
    assert first["entries"] == whole["entries"][:100]
    assert first["next_after_version"] == versions[99]

    chained = await pages(context, "ann", 100)
    assert [len(page["entries"]) for page in chained] == [100, 100, 50]
    assert [page["next_after_version"] for page in chained] == [versions[99], versions[199], None]
    assert [entry for page in chained for entry in page["entries"]] == whole["entries"]


async def test_a_ledger_that_fills_its_last_page_exactly_says_there_is_no_next(
    context: Context,
) -> None:
    assert [len(p["entries"]) for p in await pages(context, "bob", 100)] == [100]
    assert [len(p["entries"]) for p in await pages(context, "bob", 50)] == [50, 50]
    assert [len(p["entries"]) for p in await pages(context, "cy", 1)] == [1]
    assert [len(p["entries"]) for p in await pages(context, "ann", 1000)] == [250]


async def test_a_page_starts_after_any_version_and_may_be_empty(context: Context) -> None:
    whole = (await get(context, "/members/ann/ledger", limit="1000"))[1]["entries"]
    last = whole[-1]["version"]
    _, tail = await get(context, "/members/ann/ledger", after_version=str(last - 3), limit="2")
    assert tail["entries"] == whole[-3:-1]
    assert tail["next_after_version"] == whole[-2]["version"]
    _, beyond = await get(context, "/members/ann/ledger", after_version=str(last))
    assert beyond == {"member_id": "ann", "entries": [], "next_after_version": None}
    _, far = await get(context, "/members/ann/ledger", after_version=str(2**63 - 1))
    assert far["entries"] == []


async def test_an_unknown_member_has_no_ledger(context: Context) -> None:
    status, body = await get(context, "/members/nobody/ledger", limit="10", after_version="5")
    assert status == 404
    assert "unknown member 'nobody'" in body["error"]


HOSTILE = ["²", "٣", "-1", "1e3", " 5", "5 ", "", "+5", "0x10", "9" * 5000, "1" * 20]

INTEGER_PARAMETERS = [
    ("/members", "limit", "limit must be an integer from 1 to 1000"),
    ("/members/ann/ledger", "limit", "limit must be an integer from 1 to 1000"),
    (
        "/members/ann/ledger",
        "after_version",
        f"after_version must be an integer from 0 to {2**63 - 1}",
    ),
    ("/metrics/churn", "months", "months must be an integer from 1 to 120"),
]


@pytest.mark.parametrize(("path", "name", "message"), INTEGER_PARAMETERS)
async def test_every_integer_parameter_refuses_hostile_values(
    context: Context, path: str, name: str, message: str
) -> None:
    for value in HOSTILE:
        status, body = await get(context, path, **{name: value})
        assert (status, message in body.get("error", "")) == (400, True), (value, body)
        assert len(body["error"]) < 200  # a long value is not echoed whole


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/members", "limit", "0"),
        ("/members", "limit", "1001"),
        ("/members/ann/ledger", "limit", "0"),
        ("/members/ann/ledger", "limit", "1001"),
        ("/members/ann/ledger", "after_version", str(2**63)),
        ("/metrics/churn", "months", "0"),
        ("/metrics/churn", "months", "121"),
    ],
)
async def test_integers_out_of_range_get_a_400(
    context: Context, path: str, name: str, value: str
) -> None:
    status, body = await get(context, path, **{name: value})
    assert status == 400
    assert f"{name} must be an integer" in body["error"]


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/members", "limit", "1000"),
        ("/members", "limit", "007"),
        ("/members/ann/ledger", "limit", "1"),
        ("/members/ann/ledger", "after_version", "0"),
        ("/metrics/churn", "months", "120"),
    ],
)
async def test_integers_in_range_are_taken(
    context: Context, path: str, name: str, value: str
) -> None:
    status, body = await get(context, path, **{name: value, "as_of": AS_OF})
    assert status == 200, body


@pytest.mark.parametrize("path", ["/metrics/tiers", "/metrics/churn", "/metrics/liability"])
async def test_as_of_refuses_hostile_values(context: Context, path: str) -> None:
    for value in [
        *HOSTILE,
        "٢٠٢٦-07-01T00:00:00Z",
        "2026-07-01",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:00",
        "9999-12-31T00:00:00Z",
        "1899-12-31T23:59:59Z",
    ]:
        status, body = await get(context, path, as_of=value)
        assert (status, body.get("error", "").startswith("as_of ")) == (400, True), (value, body)


@pytest.mark.parametrize("value", ["1900-01-01T00:00:00Z", "8999-12-31T23:59:59+00:00"])
async def test_as_of_far_from_now_still_answers(context: Context, value: str) -> None:
    for path in ["/metrics/tiers", "/metrics/liability"]:
        status, body = await get(context, path, as_of=value)
        assert status == 200, (path, body)
    status, body = await get(context, "/metrics/churn", as_of=value, months="120")
    assert status == 200, body
