"""The worker's daily sweep: scheduled unless LOYALTY_DAILY_SWEEP=off, as of 00:00 UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.bootstrap import build
from services.config import Settings
from services.ingest.messages import InputMessage
from services.ingest.worker import create_app, midnight_sweep

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sweep", [True, False])
def test_the_worker_schedules_the_sweep_unless_it_is_off(
    sweep: bool, postgres_url: str, kafka_bootstrap: str
) -> None:
    context = build(
        Settings(database_url=postgres_url, kafka_bootstrap=kafka_bootstrap, daily_sweep=sweep)
    )
    app = create_app(context)
    tasks = [task.__name__ for task in app._app_tasks]
    assert "ingest" in tasks
    assert ("daily_sweep" in tasks) is sweep


def test_the_sweep_runs_as_of_the_last_midnight_utc(postgres_url: str) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    service = context.ingest_service()
    purchase = {
        "event_id": "p1",
        "type": "purchase",
        "occurred_at": "2025-03-01T15:00:00Z",  # its lot expires 2026-03-01T15:00:00Z
        "member_id": "ann",
        "order_id": "o1",
        "amount": "100",
        "currency": "EUR",
    }
    topic = context.settings.topics.purchases
    service.commit(*service.decode([InputMessage(topic, 0, 0, b"ann", orjson.dumps(purchase))]))

    # Late on the day it expires: the sweep is as of that day's 00:00, when nothing was due.
    assert midnight_sweep(context, datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == 0
    # Just after the next midnight: the lot expires and the purchase leaves the window.
    assert midnight_sweep(context, datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)) == 2
    ann = context.ledger.member("ann")
    assert ann is not None
    assert (ann.balance, ann.qualifying_points) == (0, 0)
    assert midnight_sweep(context, datetime(2026, 3, 2, 8, tzinfo=UTC)) == 0  # once a day
