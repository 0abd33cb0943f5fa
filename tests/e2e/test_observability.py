"""What an operator sees of running processes: Prometheus metrics on each one's port,
JSON log lines, probes, and an API that wants its token."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.config import Topics
from services.publish import publish_lines
from tests.e2e.processes import free_port, get_json, loyalty_env, running, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "observability-test-token"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_each_process_reports_what_it_did_on_its_own_metrics_port(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, tmp_path: Path
) -> None:
    api_port = free_port()
    base = loyalty_env(kafka_bootstrap, postgres_url, topics, api_port, f"g-{uuid.uuid4().hex[:8]}")
    base["LOYALTY_API_TOKEN"] = TOKEN
    base["LOYALTY_LOG_FORMAT"] = "json"
    ports = {command: free_port() for command in ("worker", "projector", "api")}
    lines = [
        orjson.dumps(
            {
                "event_id": "obs-1",
                "type": "purchase",
                "occurred_at": "2026-03-01T12:00:00Z",
                "member_id": "olga",
                "order_id": "o-1",
                "amount": "40.00",
                "currency": "EUR",
            }
        ),
        b'{"event_id": "obs-2", "type": "purchase", "member_id": "olga"}',  # no amount
    ]
    logs = {command: tmp_path / command for command in ports}
    for folder in logs.values():
        folder.mkdir()
    with (
        running(
            ["worker"], {**base, "LOYALTY_METRICS_PORT": str(ports["worker"])}, logs["worker"]
        ) as worker,
        running(
            ["projector"],
            {**base, "LOYALTY_METRICS_PORT": str(ports["projector"])},
            logs["projector"],
        ) as projector,
        running(["api"], {**base, "LOYALTY_METRICS_PORT": str(ports["api"])}, logs["api"]) as api,
    ):
        procs = worker + projector + api
        asyncio.run(publish_lines(lines, kafka_bootstrap, topics))

        def served() -> dict[str, Any] | None:
            status, body = get_json(f"http://127.0.0.1:{api_port}/members/olga", TOKEN)
            return body if status == 200 and body["balance"] == 40 else None

        wait_for(served, timeout=90, what="olga's balance through the API", procs=procs)

        # Without the token the read models are refused; the probes never need it.
        assert get_json(f"http://127.0.0.1:{api_port}/members/olga", None)[0] == 401
        assert get_json(f"http://127.0.0.1:{api_port}/members/olga", "wrong")[0] == 401
        assert get_json(f"http://127.0.0.1:{api_port}/health")[0] == 200
        wait_for(
            lambda: True if get_json(f"http://127.0.0.1:{api_port}/ready")[0] == 200 else None,
            timeout=30,
            what="/ready",
            procs=procs,
        )

        purchases = topics.purchases
        counted = "loyalty_ingest_messages_total"
        applied = (counted, (("outcome", "applied"), ("topic", purchases)))
        dead = (counted, (("outcome", "dead_lettered"), ("topic", purchases)))

        def worker_done() -> Samples | None:
            m = scrape(ports["worker"])
            if not m or m.get(applied) != 1 or m.get(dead) != 1:
                return None
            lags = [v for (n, _), v in m.items() if n == "loyalty_ingest_consumer_lag"]
            # Every owned partition reports its lag, and the worker has read them all.
            return m if lags and all(v == 0 for v in lags) else None

        worker_metrics = wait_for(worker_done, timeout=30, what="the worker's counts", procs=procs)
        assert worker_metrics[("loyalty_dead_letters_total", (("topic", purchases),))] == 1
        owned = {
            dict(labels)["topic"]
            for (name, labels) in worker_metrics
            if name == "loyalty_ingest_consumer_lag"
        }
        assert purchases in owned

        def caught_up() -> Samples | None:
            m = scrape(ports["projector"])
            if not m or m.get(("loyalty_store_position", ())) in (None, 0):
                return None
            lags = [v for (n, _), v in m.items() if n == "loyalty_projection_lag_events"]
            relayed = m.get(("loyalty_relay_position", ()))
            if lags and all(v == 0 for v in lags) and relayed == m[("loyalty_store_position", ())]:
                return m
            return None

        projector_metrics = wait_for(
            caught_up, timeout=60, what="the projector's metrics", procs=procs
        )
        assert projector_metrics[("loyalty_relay_lag_events", ())] == 0
        api_metrics = scrape(ports["api"])
        assert api_metrics is not None
        assert (
            api_metrics[
                (
                    "loyalty_api_requests_total",
                    (("route", "/members/{member_id}"), ("status", "200")),
                )
            ]
            >= 1
        )
        assert (
            api_metrics[
                (
                    "loyalty_api_requests_total",
                    (("route", "/members/{member_id}"), ("status", "401")),
                )
            ]
            == 2
        )

    for command, folder in logs.items():
        text = (folder / f"{command}.log").read_text().splitlines()
        records = [json.loads(line) for line in text if line.strip()]
        assert records, f"{command} logged nothing"
        assert all({"at", "level", "logger", "message"} <= r.keys() for r in records), command
