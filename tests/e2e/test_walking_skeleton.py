"""A purchase published to the real broker comes back as a balance over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from services import member_events
from services.config import Topics
from services.publish import publish_lines
from tests.e2e.processes import free_port, get_json, loyalty_env, running, wait_for
from tests.integration.harness import read_all

pytestmark = pytest.mark.e2e


def test_purchase_through_kafka_store_and_projection_is_served_by_the_api(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, tmp_path: Path
) -> None:
    port = free_port()
    env = loyalty_env(kafka_bootstrap, postgres_url, topics, port, f"g-{uuid.uuid4().hex[:8]}")
    purchase = {
        "event_id": "e2e-1",
        "type": "purchase",
        "occurred_at": "2026-03-01T12:00:00Z",
        "member_id": "alice",
        "order_id": "o-1",
        "amount": "123.45",
        "currency": "EUR",
    }
    with running(["worker", "projector", "api"], env, tmp_path) as procs:
        report = asyncio.run(publish_lines([orjson.dumps(purchase)], kafka_bootstrap, topics))
        assert report.sent == 1

        def credited() -> dict[str, Any] | None:
            status, body = get_json(f"http://127.0.0.1:{port}/members/alice")
            return body if status == 200 and body["balance"] == 123 else None

        member = wait_for(credited, timeout=90, what="alice's balance through the API", procs=procs)
        assert member == {
            "member_id": "alice",
            "balance": 123,
            "tier": "bronze",
            "qualifying_points": 123,
            "lifetime_points": 123,
            "pending_points": 0,
            "last_event_at": "2026-03-01T12:00:00Z",
            "enrolled_at": None,
            "birth_date": None,
            "badges": [],
        }
        status, body = get_json(f"http://127.0.0.1:{port}/members/nobody")
        assert status == 404
        status, body = get_json(f"http://127.0.0.1:{port}/status")
        assert status == 200
        assert body["inputs"][topics.purchases]["applied"] == 1
        assert body["inputs"][topics.purchases]["duplicate"] == 0
        assert body["inputs"][topics.purchases]["consumer_lag"] == 0
        # The projector's relay publishes the member's domain events on the changelog.
        changelog = asyncio.run(read_all(kafka_bootstrap, topics.member_events, expected=2))
        assert [
            member_events.decode(r.value).stored.topic.rsplit(".", 1)[-1] for r in changelog
        ] == [
            "Registered",
            "PurchaseRecorded",
        ]

        def relayed() -> dict[str, Any] | None:
            status, body = get_json(f"http://127.0.0.1:{port}/status")
            return body if status == 200 and body["member_events"]["behind"] == 0 else None

        body = wait_for(relayed, timeout=30, what="the relay's position in /status", procs=procs)
        assert body["member_events"]["position"] == body["store_position"] == 2
