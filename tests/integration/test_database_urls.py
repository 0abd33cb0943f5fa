"""A URL's password, however odd, and its options reach every connection the project makes:
the schema lock of Ledger.open, the event store's pool, the read side and leadership."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from services.store.database import connect
from services.store.leadership import leadership
from services.store.ledger import SCHEMA_LOCK, Ledger
from services.store.recorders import LedgerPostgresRecorder
from services.store.urls import DatabaseUrl
from tests.conftest import _create_database
from tests.infra import Services

pytestmark = pytest.mark.integration
PASSWORD = "p a'ss\\w\"o@r:d/%é ü?#&="
APPLICATION = "loyalty-test-xyz"

CREATE_ROLE = "CREATE ROLE {} LOGIN CREATEDB PASSWORD {}"
CREATE_DATABASE = "CREATE DATABASE {} OWNER {}"
DROP_DATABASE = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
DROP_ROLE = "DROP ROLE IF EXISTS {}"
SELECT_SESSION = "SELECT current_setting('application_name'), current_user::text"
SELECT_WAITING_FOR_SCHEMA_LOCK = (
    "SELECT application_name, usename::text FROM pg_stat_activity "
    "WHERE datname = %s AND wait_event_type = 'Lock' AND query LIKE '%%pg_advisory_lock%%'"
)
SELECT_ADVISORY_HOLDERS = (
    "SELECT a.application_name, a.usename::text FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = %s"
)


@dataclass
class Role:
    name: str
    dbname: str
    url: str  # to its database, the password encoded, with application_name
    admin: DatabaseUrl  # the tests' superuser, in the role's database


def _execute(url: DatabaseUrl, statement: str, *names: str) -> None:
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(*map(sql.Identifier, names)))


@pytest.fixture
def role(services: Services) -> Iterator[Role]:
    """A role whose password holds every character a URL or a conninfo string treats
    specially, owning a database of its own; both dropped afterwards."""
    server = DatabaseUrl.parse(services.postgres_url)
    admin = DatabaseUrl(**{**server.__dict__, "dbname": "postgres"})
    name, dbname = f"r_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL(CREATE_ROLE).format(sql.Identifier(name), sql.Literal(PASSWORD)))
    _execute(admin, CREATE_DATABASE, dbname, name)
    host = f"[{server.host}]" if ":" in server.host else server.host
    url = (
        f"postgresql://{name}:{quote(PASSWORD, safe='')}@{host}:{server.port}/{dbname}"
        f"?application_name={APPLICATION}"
    )
    try:
        yield Role(name, dbname, url, DatabaseUrl(**{**server.__dict__, "dbname": dbname}))
    finally:
        _execute(admin, DROP_DATABASE, dbname)
        _execute(admin, DROP_ROLE, name)


def _rows(url: DatabaseUrl, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _open_while_watching_its_schema_lock(role: Role) -> tuple[Ledger, list[tuple[Any, ...]]]:
    """Ledger.open, held at its schema lock long enough to see who its connection is."""
    with psycopg.connect(role.admin.conninfo(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(Ledger.open, role.url)
            deadline = time.monotonic() + 30
            waiting: list[tuple[Any, ...]] = []
            while not waiting and time.monotonic() < deadline and not opening.done():
                waiting = _rows(role.admin, SELECT_WAITING_FOR_SCHEMA_LOCK, role.dbname)
                time.sleep(0.05)
            holder.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
            return opening.result(timeout=60), waiting


def test_every_connection_has_the_password_and_the_options(role: Role) -> None:
    ledger, waiting = _open_while_watching_its_schema_lock(role)
    database = connect(role.url)
    leader = leadership(role.url, "relay")
    try:
        assert waiting == [(APPLICATION, role.name)]  # Ledger.open's schema lock
        assert ledger.last_position() == 0
        store = cast(LedgerPostgresRecorder, ledger.store)
        with store.datastore.get_connection() as conn:  # the event store's pool
            row = conn.execute(SELECT_SESSION).fetchone()
            assert row is not None and list(row.values()) == [APPLICATION, role.name]
        assert database.query(SELECT_SESSION) == [(APPLICATION, role.name)]  # the read side
        assert leader.held()
        holders = _rows(role.admin, SELECT_ADVISORY_HOLDERS, role.dbname)
        assert holders == [(APPLICATION, role.name)]  # leadership's own connection
    finally:
        leader.release()
        database.close()
        ledger.close()


def test_the_tests_own_databases_keep_the_servers_password_and_options(role: Role) -> None:
    server_url = role.url.replace(f"/{role.dbname}?", "/postgres?")
    created = _create_database(server_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        assert _rows(DatabaseUrl.parse(created), SELECT_SESSION) == [(APPLICATION, role.name)]
    finally:
        _execute(role.admin, DROP_DATABASE, DatabaseUrl.parse(created).dbname)


def test_an_option_libpq_refuses_at_connect_says_so_without_the_password(role: Role) -> None:
    with pytest.raises(psycopg.Error, match="sslmode") as refused:
        Ledger.open(f"{role.url}&sslmode=bogus")
    assert PASSWORD not in str(refused.value)
    assert quote(PASSWORD, safe="") not in str(refused.value)
