"""Outages of the parts the ledger stands on, end to end (docs/RULES.md, section 2): PostgreSQL
stopped for 30 seconds in the middle of a stream, with a second worker joining while it
is away (a rebalance during an outage), and the Kafka broker restarted in the middle of
the stream. Every process stays up, and the final ledgers and per-topic accounting are
those of a clean run.

These need a broker and a server of their own to stop and start, so they run the
project's own scripts (deploy/kafka/kafka.sh, deploy/postgres/pg.sh) on free ports.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.bootstrap import build
from services.config import Settings, Topics
from services.digest import digest
from services.faults import Fault, fault_of
from tests.conftest import create_topics
from tests.e2e.chaos import Record, clean_run, stream
from tests.e2e.processes import free_port, get_json, loyalty_env, running, wait_for
from tests.infra import ROOT, _script
from tests.integration.harness import read_to_end, send

pytestmark = pytest.mark.e2e
OUTAGE_SECONDS = 30


@dataclass
class OwnServices:
    kafka_port: int
    kafka_env: dict[str, str]
    pg_env: dict[str, str]
    postgres_url: str

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def stop_postgres(self) -> None:
        _script("deploy/postgres/pg.sh", "stop", env=self.pg_env)

    def start_postgres(self) -> None:
        _script("deploy/postgres/pg.sh", "start", self.pg_env["PG_PORT"], env=self.pg_env)

    def restart_kafka(self) -> None:
        _script("deploy/kafka/kafka.sh", "stop", env=self.kafka_env)
        _script("deploy/kafka/kafka.sh", "start", str(self.kafka_port), env=self.kafka_env)


@pytest.fixture
def own_services() -> Iterator[OwnServices]:
    (ROOT / ".local").mkdir(exist_ok=True)
    homes = [
        tempfile.mkdtemp(prefix=f"{kind}-outage-", dir=ROOT / ".local") for kind in ("kafka", "pg")
    ]
    for home in homes:
        Path(home).chmod(0o755)
    kafka_port, pg_port = free_port(), free_port()
    kafka_env = {
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_HOME": homes[0],
    }
    pg_env = {"PG_PORT": str(pg_port), "PG_HOME": homes[1]}
    try:
        _script("deploy/kafka/kafka.sh", "start", str(kafka_port), env=kafka_env)
        _script("deploy/postgres/pg.sh", "install", env=pg_env)
        server = _script("deploy/postgres/pg.sh", "start", str(pg_port), env=pg_env)
        yield OwnServices(kafka_port, kafka_env, pg_env, server.strip().splitlines()[-1])
    finally:
        for script, command, env in (
            ("deploy/kafka/kafka.sh", "stop", kafka_env),
            ("deploy/postgres/pg.sh", "destroy", pg_env),
        ):
            try:
                _script(script, command, env=env)
            except RuntimeError as exc:
                print(exc)
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def accounted(database_url: str) -> int | None:
    """Messages accounted for by the store; None while it is away."""
    try:
        return sum(build(Settings(database_url=database_url)).ledger.message_counts().values())
    except Exception as exc:
        if fault_of(exc) is Fault.OUTAGE:
            return None
        raise


def reached(database_url: str, n: int) -> bool | None:
    done = accounted(database_url)
    return True if done is not None and done >= n else None


def thirds(records: list[Record]) -> list[list[Record]]:
    size = len(records) // 3 + 1
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_postgres_stopped_and_kafka_restarted_mid_stream_end_as_a_clean_run(
    own_services: OwnServices, tmp_path: Path
) -> None:
    kafka, services = own_services.kafka_bootstrap, own_services
    suffix = uuid.uuid4().hex[:8]
    topics = Topics.prefixed(f"o{suffix}")
    asyncio.run(create_topics(kafka, topics))
    store = build(Settings(database_url=services.postgres_url))  # the schema, once
    store.ledger.close()
    api_port = free_port()
    env = loyalty_env(kafka, services.postgres_url, topics, api_port, f"g-{suffix}")
    env["LOYALTY_BATCH_MAX"] = "300"  # many commits: the outages land mid-stream
    first, second, third = thirds(stream(topics, seed=23, buyers=700, sharers=80))
    api = f"http://127.0.0.1:{api_port}"

    with running(["worker", "projector", "api"], env, tmp_path) as procs:
        asyncio.run(send(kafka, first))
        wait_for(
            lambda: reached(services.postgres_url, len(first) // 2),
            90,
            "half the first part",
            procs,
        )

        # PostgreSQL goes away for 30 s while the stream goes on, and a second worker
        # joins meanwhile: the partitions it is given are sought once the store is back.
        services.stop_postgres()
        stopped = time.monotonic()
        asyncio.run(send(kafka, second))
        status, body = get_json(f"{api}/members/buyer-0001")
        assert status == 503, (status, body)
        (tmp_path / "second").mkdir()
        with running(["worker"], env, tmp_path / "second") as second_worker:
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            for proc in [*procs, *second_worker]:
                assert proc.poll() is None, f"{proc.args} exited during the outage"
            services.start_postgres()
            wait_for(
                lambda: reached(services.postgres_url, len(first) + len(second)),
                180,
                "the first two parts, once the store is back",
                [*procs, *second_worker],
            )

        # The broker restarts while the third part is published and taken in.
        publishing = threading.Thread(target=publish_slowly, args=(kafka, third))
        publishing.start()
        wait_for(
            lambda: reached(services.postgres_url, len(first) + len(second) + 100),
            60,
            "the third part begun",
            procs,
        )
        services.restart_kafka()
        publishing.join()

        records = sorted(
            (
                r
                for topic in (topics.purchases, topics.social_shares)
                for r in asyncio.run(read_to_end(kafka, topic))
            ),
            key=lambda r: (r.topic, r.partition, r.offset),
        )
        wait_for(lambda: reached(services.postgres_url, len(records)), 180, "every message", procs)

        def caught_up() -> dict[str, Any] | None:
            status, body = get_json(f"{api}/status")
            if status != 200:
                return None
            behind = [p["behind"] for p in body["projections"].values()]
            return body if not any(behind) and body["member_events"]["behind"] == 0 else None

        final = wait_for(caught_up, 120, "projections and the relay caught up", procs)
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited"

    expected_digest, expected_counts = clean_run(
        records, topics, f"sqlite:///{tmp_path}/clean.sqlite3"
    )
    context = build(Settings(database_url=services.postgres_url))
    assert context.ledger.message_counts() == expected_counts
    assert digest(context.ledger, context.program) == expected_digest
    assert sum(final["inputs"][t]["dead_lettered"] for t in final["inputs"]) == sum(
        n for (_, outcome), n in expected_counts.items() if outcome == "dead_lettered"
    )
    # The changelog holds every stored event, each at least once (consumers dedupe on id)
    changelog = asyncio.run(read_to_end(kafka, topics.member_events))
    stored = 0
    position = 0
    while page := context.ledger.store.select_notifications(
        position, 5000, inclusive_of_start=False
    ):
        stored += len(page)
        position = page[-1].id
    assert len({orjson.loads(r.value)["id"] for r in changelog}) == stored


def publish_slowly(bootstrap: str, records: list[Record], chunk: int = 100) -> None:
    """A stream that goes on for seconds; a chunk the broker's restart broke is sent
    again (a repeated record is an upstream retry: the ledger counts it a duplicate)."""
    for start in range(0, len(records), chunk):
        for _ in range(60):
            try:
                asyncio.run(send(bootstrap, records[start : start + chunk]))
                break
            except Exception as exc:
                print(f"publishing: {exc}; again")
                time.sleep(1)
        time.sleep(0.2)
