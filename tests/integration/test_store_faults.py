"""What PostgreSQL says decides whose fault a failure is (services/faults.py), and what the
worker does about it: an outage is waited out and never blamed on a message; an operator's
error stops the worker with one line; neither dead-letters a valid message."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from eventsourcing.persistence import InternalError
from prometheus_client import REGISTRY
from psycopg import sql

from services.config import Topics
from services.errors import OperatorError
from services.faults import Fault, fault_of
from services.ingest.worker import sweep_until_done
from services.store.urls import DatabaseUrl
from tests.infra import Services
from tests.integration.harness import context_for, event, ingesting, read_to_end, send, wait_until

pytestmark = pytest.mark.integration


def admin_of(database_url: str) -> str:
    """The tests' superuser, connected to the server's maintenance database: never made
    read-only with the database under test."""
    url = DatabaseUrl.parse(database_url)
    return DatabaseUrl(**{**url.__dict__, "dbname": "postgres"}).conninfo()


def run(conninfo: str, statement: str, *params: object) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(statement, params or None)


def raised(conninfo: str, *statements: str, pause: float = 0.0) -> BaseException:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            for i, statement in enumerate(statements):
                if i and pause:
                    time.sleep(pause)
                conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    raise AssertionError(f"{statements} did not fail")


def terminate_others(conninfo: str, dbname: str) -> None:
    run(
        conninfo,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        dbname,
    )


def test_what_postgres_says_decides_whose_fault_it_is(postgres_url: str) -> None:
    conninfo = DatabaseUrl.parse(postgres_url).conninfo()
    read_only = raised(
        conninfo,
        "BEGIN",
        "SET TRANSACTION READ ONLY",
        "CREATE TABLE t (x int)",
    )
    idle_timeout = raised(
        conninfo,
        "SET idle_in_transaction_session_timeout = '100ms'",
        "BEGIN",
        "SELECT 1",
        pause=0.5,
    )
    with psycopg.connect(conninfo, autocommit=True) as victim:
        run(conninfo, "SELECT pg_terminate_backend(%s)", victim.info.backend_pid)
        try:
            victim.execute("SELECT 1")
            raise AssertionError("a terminated session answered")
        except psycopg.Error as exc:
            shut_down = exc
    no_table = raised(conninfo, "SELECT * FROM no_such_table")
    data = raised(conninfo, "SELECT 1/0")

    assert fault_of(read_only) is Fault.OUTAGE, read_only.sqlstate
    assert fault_of(idle_timeout) is Fault.OUTAGE
    assert fault_of(shut_down) is Fault.OUTAGE
    assert fault_of(no_table) is Fault.OPERATOR
    assert fault_of(data) is Fault.MESSAGE
    # eventsourcing re-raises psycopg's errors as its own: the cause still decides
    try:
        raise InternalError(str(read_only)) from read_only
    except InternalError as wrapped:
        assert fault_of(wrapped) is Fault.OUTAGE


def purchases(topics: Topics, prefix: str, n: int) -> list[object]:
    return [
        event(
            topics.purchases,
            event_id=f"{prefix}{i}",
            type="purchase",
            occurred_at="2026-03-01T12:00:00Z",
            member_id=f"m{i % 5}",
            order_id=f"{prefix}{i}",
            amount="10",
            currency="EUR",
        )
        for i in range(n)
    ]


def accounted(context: object) -> int:
    """Messages the store has accounted for; -1 while the probe's own session is cut."""
    try:
        return sum(context.ledger.message_counts().values())  # type: ignore[attr-defined]
    except Exception as exc:
        if fault_of(exc) is not Fault.OUTAGE:
            raise
        return -1


def outage_retries(process: str, stage: str | None = None) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "loyalty_outage_retries"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels["process"] == process
        and stage in (None, sample.labels["stage"])
    )


async def test_a_read_only_store_after_a_failover_is_waited_out_not_dead_lettered(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    url = DatabaseUrl.parse(postgres_url)
    conninfo = admin_of(postgres_url)
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    first, second = purchases(topics, "a", 20), purchases(topics, "b", 20)
    await send(kafka_bootstrap, first)
    async with ingesting(context) as loop:
        await wait_until(lambda: accounted(context) == 20, 60, "the first part")
        # A failover: the sessions are cut, and the server the workers reach is read-only.
        run(conninfo, f'ALTER DATABASE "{url.dbname}" SET default_transaction_read_only = on')
        terminate_others(conninfo, url.dbname)
        retried = outage_retries("worker")
        await send(kafka_bootstrap, second)
        await asyncio.sleep(6)
        assert accounted(context) == 20
        assert outage_retries("worker") > retried, "the wait shows on the metrics"
        run(conninfo, f'ALTER DATABASE "{url.dbname}" RESET default_transaction_read_only')
        terminate_others(conninfo, url.dbname)
        await wait_until(lambda: accounted(context) == 40, 90, "the rest, once writable")
        assert loop.totals.get("dead_lettered", 0) == 0
    assert context.ledger.message_counts() == {(topics.purchases, "applied"): 40}
    assert await read_to_end(kafka_bootstrap, topics.dead_letters) == []


@pytest.fixture
def owned_database(services: Services) -> Iterator[tuple[str, str, str]]:
    """(url, role, superuser conninfo): a database whose tables a login role of its own
    will own, as a worker's role would in production; dropped afterwards."""
    server = DatabaseUrl.parse(services.postgres_url)
    admin = DatabaseUrl(**{**server.__dict__, "dbname": "postgres"}).conninfo()
    role, dbname, password = f"w_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:12]}", "pw"
    run(
        admin,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
        .format(sql.Identifier(role), sql.Literal(password))
        .as_string(),
    )
    run(admin, f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    own = DatabaseUrl(**{**server.__dict__, "dbname": dbname})
    url = f"postgresql://{role}:{password}@{server.host}:{server.port}/{dbname}"
    try:
        yield url, role, own.conninfo()
    finally:
        run(admin, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        run(admin, f'DROP ROLE IF EXISTS "{role}"')


async def test_a_missing_privilege_stops_the_worker_with_one_line_and_dead_letters_nothing(
    kafka_bootstrap: str, owned_database: tuple[str, str, str], topics: Topics
) -> None:
    url, role, admin = owned_database
    context = context_for(kafka_bootstrap, url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await send(kafka_bootstrap, purchases(topics, "a", 10))
    async with ingesting(context):
        await wait_until(lambda: accounted(context) == 10, 60, "the first part")
    # An operator's change of grants goes wrong
    run(admin, f'REVOKE INSERT ON ALL TABLES IN SCHEMA public FROM "{role}"')
    await send(kafka_bootstrap, purchases(topics, "b", 10))

    loop = context.ingest_loop()
    with pytest.raises(OperatorError) as stopped:
        await asyncio.wait_for(loop.run(asyncio.Event()), 120)

    line = str(stopped.value)
    assert "\n" not in line
    assert "permission denied" in line and "42501" in line
    assert loop.totals.get("dead_lettered", 0) == 0
    assert await read_to_end(kafka_bootstrap, topics.dead_letters) == []
    assert context.ledger.message_counts() == {(topics.purchases, "applied"): 10}


async def test_the_midnight_sweep_waits_out_an_outage_and_then_sweeps(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    url = DatabaseUrl.parse(postgres_url)
    conninfo = admin_of(postgres_url)
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await send(kafka_bootstrap, purchases(topics, "a", 5))
    async with ingesting(context):
        await wait_until(lambda: accounted(context) == 5, 60, "the purchases")
    run(conninfo, f'ALTER DATABASE "{url.dbname}" SET default_transaction_read_only = on')
    terminate_others(conninfo, url.dbname)

    # A year and a day later every lot has expired: the sweep has events to write.
    stopping = asyncio.Event()
    sweep = asyncio.create_task(
        sweep_until_done(context, datetime(2027, 3, 2, 0, 0, 5, tzinfo=UTC), stopping)
    )
    await asyncio.sleep(4)
    assert not sweep.done()  # waiting, not failed, not exited
    assert outage_retries("worker", "sweep") >= 1
    run(conninfo, f'ALTER DATABASE "{url.dbname}" RESET default_transaction_read_only')
    terminate_others(conninfo, url.dbname)
    written = await asyncio.wait_for(sweep, 120)

    assert written is not None and written >= 5
    member = context.ledger.member("m0")
    assert member is not None and member.balance == 0
