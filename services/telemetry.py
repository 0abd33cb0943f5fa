"""Prometheus metrics of the long-running processes, served on a port of each one's own.

`loyalty worker`, `loyalty projector` and `loyalty api` each serve their metrics on
LOYALTY_METRICS_PORT (default 9101, 9102 and 9103; `off` serves none), on
LOYALTY_METRICS_HOST (default: the API's host). deploy/grafana/loyalty-dashboard.json is
built on exactly these names.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"worker": 9101, "projector": 9102, "api": 9103}

INGEST_MESSAGES = Counter(
    "loyalty_ingest_messages",
    "Input messages taken in, by topic and outcome (applied, duplicate, rejected, "
    "dead_lettered, skipped)",
    ["topic", "outcome"],
)
INGEST_BATCH = Histogram(
    "loyalty_ingest_batch_messages",
    "Messages in a batch the worker took",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
INGEST_WRITE = Histogram(
    "loyalty_ingest_write_seconds",
    "A batch's store write: events, positions, receipts and counts in one transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "loyalty_ingest_consumer_lag",
    "Input messages not yet in the store, per partition this worker owns",
    ["topic", "partition"],
)
DEAD_LETTERS = Counter("loyalty_dead_letters", "Dead letters published, by input topic", ["topic"])
OUTAGE_RETRIES = Counter(
    "loyalty_outage_retries",
    "Tries again after the store or the broker was unavailable",
    ["process", "stage"],
)
STORE_POSITION = Gauge("loyalty_store_position", "The event store's last notification id")
PROJECTION_POSITION = Gauge(
    "loyalty_projection_position", "How far each projection has read the log", ["projection"]
)
PROJECTION_LAG = Gauge(
    "loyalty_projection_lag_events", "Stored events a projection has not applied", ["projection"]
)
RELAY_POSITION = Gauge(
    "loyalty_relay_position", "How far loyalty.member-events has published the log"
)
RELAY_LAG = Gauge("loyalty_relay_lag_events", "Stored events not yet on loyalty.member-events")
API_REQUESTS = Counter(
    "loyalty_api_requests", "API requests, by route and status", ["route", "status"]
)
API_SECONDS = Histogram(
    "loyalty_api_request_seconds",
    "API request latency, by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def metrics_port(process: str, setting: str | None) -> int | None:
    """The port `process` serves its metrics on: the setting, its default, or None."""
    if setting is None or setting == "":
        return DEFAULT_PORTS[process]
    if setting.strip().lower() == "off":
        return None
    if not setting.isascii() or not setting.isdigit() or not 0 < int(setting) < 65536:
        raise ValueError(f"LOYALTY_METRICS_PORT must be a port number or off, not {setting!r}")
    return int(setting)


def serve(process: str, setting: str | None, host: str) -> None:
    port = metrics_port(process, setting)
    if port is None:
        log.info("metrics: off")
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        # Another process of the same kind on this host has it (two workers on one
        # machine): metrics are not worth refusing to work for.
        log.warning(
            "metrics: not served, port %d is taken (%s); set LOYALTY_METRICS_PORT", port, exc
        )
        return
    log.info("metrics: http://%s:%d/metrics", host, port)


def positions(store: int, projections: dict[str, int], relay: int | None = None) -> None:
    STORE_POSITION.set(store)
    for name, position in projections.items():
        PROJECTION_POSITION.labels(name).set(position)
        PROJECTION_LAG.labels(name).set(max(store - position, 0))
    if relay is not None:
        RELAY_POSITION.set(relay)
        RELAY_LAG.set(max(store - relay, 0))
