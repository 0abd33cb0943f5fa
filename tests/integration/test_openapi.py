"""/openapi.json against the API as it is: every route it serves is described, every
description has its route, and every answer it really gives (each status it can answer
with) validates against the schema described for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Settings
from services.program_file import DEFAULT_PROGRAM_PATH
from tests.integration.harness import buy, commit_events

pytestmark = pytest.mark.integration
SEASONAL = DEFAULT_PROGRAM_PATH.parent / "seasonal.toml"
AS_OF = "2026-07-01T00:00:00Z"


HISTORY = [
    {
        "event_id": "ann-e",
        "type": "member_enrolled",
        "member_id": "ann",
        "birth_date": "1990-03-15",
        "occurred_at": "2025-12-01T09:00:00Z",
    },
    buy("ann", "o1", "200.00", "2025-12-10"),  # double December, big basket
    buy("ann", "o2", "20.00", "2026-04-10"),
    {
        "event_id": "ann-v",
        "type": "review",
        "member_id": "ann",
        "product_id": "p",
        "rating": 5,
        "occurred_at": "2026-04-11T09:00:00Z",
    },
    buy("bob", "b1", "60.00", "2026-06-20"),
    {
        "event_id": "bob-r",
        "type": "refund",
        "member_id": "bob",
        "order_id": "b1",
        "amount": "60.00",
        "occurred_at": "2026-06-22T12:00:00Z",
    },  # debt: the points pending
    {
        "event_id": "cy-s",
        "type": "social_share",
        "member_id": "cy",
        "network": "x",
        "occurred_at": "2026-05-01T12:00:00Z",
    },
]


@pytest.fixture(scope="module")
def context(services: Any) -> Iterator[Context]:
    from tests.conftest import new_database

    context = build(
        Settings(database_url=new_database(services), daily_sweep=False, program_path=SEASONAL)
    )
    commit_events(context, HISTORY)
    runner = context.projection_runner()
    runner.catch_up()
    runner.close()
    yield context


@pytest.fixture(scope="module")
def document(context: Context) -> dict[str, Any]:
    status, body = call(context, "/openapi.json")
    assert status == 200
    return body


def call(context: Context, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async def fetch() -> tuple[int, Any]:
        app = create_app(context, context.database(), context.projection_runner())
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path, headers=headers or {})
            return response.status, await response.json()

    return asyncio.run(fetch())


def test_the_document_is_openapi_3_1_with_valid_schemas(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def served_routes(context: Context) -> set[str]:
    app = create_app(context, context.database(), context.projection_runner())
    paths = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method != "GET" or resource is None:
            continue
        path = resource.canonical
        if path == "/" or path.startswith("/static"):
            continue  # the dashboard's page and files: HTML and scripts, not the API
        paths.add(path)
    return paths


def test_every_route_is_described_and_every_description_is_a_route(
    context: Context, document: dict[str, Any]
) -> None:
    assert served_routes(context) == set(document["paths"])


# Requests meant to bring out every status each route answers with.
REQUESTS: list[tuple[str, int]] = [
    ("/members?limit=5", 200),
    ("/members?limit=0", 400),
    ("/members/ann", 200),
    (f"/members/ann?as_of={AS_OF}", 200),
    ("/members/ann?as_of=2020-01-01T00:00:00Z", 404),
    ("/members/ann?as_of=later", 400),
    ("/members/nobody", 404),
    ("/members/ann/ledger?limit=2", 200),
    ("/members/ann/ledger?after_version=x", 400),
    ("/members/nobody/ledger", 404),
    (f"/metrics/tiers?as_of={AS_OF}", 200),
    ("/metrics/tiers?as_of=x", 400),
    (f"/metrics/churn?as_of={AS_OF}&months=3", 200),
    ("/metrics/churn?months=0", 400),
    (f"/metrics/liability?as_of={AS_OF}", 200),
    ("/metrics/liability?as_of=1", 400),
    (f"/metrics/liability/history?as_of={AS_OF}&months=2", 200),
    ("/metrics/liability/history?months=99", 400),
    (f"/metrics/campaigns?as_of={AS_OF}", 200),
    ("/metrics/campaigns?as_of=", 400),
    (f"/metrics/value?as_of={AS_OF}", 200),
    ("/metrics/value?as_of=2026", 400),
    (f"/metrics/cohorts?as_of={AS_OF}&months=3&by=enrolment", 200),
    ("/metrics/cohorts?by=day", 400),
    (f"/customers?as_of={AS_OF}&limit=1", 200),
    ("/customers?limit=-1", 400),
    (f"/segments?as_of={AS_OF}", 200),
    ("/segments?as_of=x", 400),
    (f"/segments/others/members?as_of={AS_OF}", 200),
    ("/segments/vip/members", 404),
    ("/segments/new/members?limit=x", 400),
    ("/status", 200),
    ("/health", 200),
    ("/ready", 200),
    ("/openapi.json", 200),
]


def schema_for(document: dict[str, Any], path: str, status: int) -> dict[str, Any]:
    route = path.split("?")[0]
    for pattern, item in document["paths"].items():
        parts, wanted = pattern.strip("/").split("/"), route.strip("/").split("/")
        if len(parts) == len(wanted) and all(
            p == w or p.startswith("{") for p, w in zip(parts, wanted, strict=True)
        ):
            response = item["get"]["responses"][str(status)]
            # Refs point into the document's components: validate against the whole.
            return {
                "components": document["components"],
                **response["content"]["application/json"]["schema"],
            }
    raise AssertionError(f"{route} is not described")


@pytest.mark.parametrize(("path", "status"), REQUESTS)
def test_every_answer_validates_against_its_description(
    context: Context, document: dict[str, Any], path: str, status: int
) -> None:
    answered, body = call(context, path)
    assert answered == status, body
    Draft202012Validator(schema_for(document, path, status)).validate(body)


def test_the_token_and_readiness_answers_are_described_too(
    context: Context, document: dict[str, Any]
) -> None:
    guarded = replace(
        context,
        settings=replace(context.settings, api_token="s3cret", ready_max_behind=0),
    )
    status, body = call(guarded, "/members/ann")
    assert status == 401
    Draft202012Validator(schema_for(document, "/members/ann", 401)).validate(body)
    assert call(guarded, "/members/ann", {"Authorization": "Bearer s3cret"})[0] == 200
    assert call(guarded, "/members/ann", {"Authorization": "Bearer wrong"})[0] == 401
    assert call(guarded, "/health")[0] == 200  # probes never need the token
    # A projection behind the store by more than the bound: not ready, and it says why
    more = [buy("dee", "d1", "5.00", "2026-06-30")]
    commit_events(context, more, first_offset=len(HISTORY))
    status, body = call(guarded, "/ready")
    assert status == 503 and body["reasons"], body
    Draft202012Validator(schema_for(document, "/ready", 503)).validate(body)
    runner = context.projection_runner()
    runner.catch_up()
    runner.close()
    assert call(guarded, "/ready")[0] == 200
