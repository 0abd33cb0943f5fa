"""Session-wide real services for integration and e2e tests (see tests/infra.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from services.config import Topics
from services.store.urls import DatabaseUrl
from services.topics import ensure_topics
from tests.infra import Services, start_services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    # A set-up that fails midway stops what it had started before raising (start_services).
    started = start_services()
    try:
        yield started
    finally:
        try:
            if started.postgres_is_shared:
                drop_databases(CREATED)
        finally:
            started.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


def _create_database(server_url: str, name: str) -> str:
    url = DatabaseUrl.parse(server_url)
    admin = DatabaseUrl(**{**url.__dict__, "dbname": "postgres"})
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    # Rendered, not pieced together: the server URL's password stays encoded and its
    # options (sslmode, ...) stay on.
    return DatabaseUrl(**{**url.__dict__, "dbname": name}).render()


# Databases made by this process: a test session (or the bench) drops them at its end.
CREATED: list[str] = []


def new_database(services: Services) -> str:
    """A fresh, empty PostgreSQL database on the tests' server; its URL."""
    url = _create_database(services.postgres_url, f"t_{uuid.uuid4().hex[:12]}")
    CREATED.append(url)
    return url


def drop_databases(urls: list[str]) -> None:
    """Drops them, closing what still holds them open; one that cannot be dropped stays."""
    while urls:
        url = DatabaseUrl.parse(urls.pop())
        admin = DatabaseUrl(**{**url.__dict__, "dbname": "postgres"})
        try:
            with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{url.dbname}" WITH (FORCE)')
        except psycopg.Error:
            pass


@pytest.fixture
def postgres_url(services: Services) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return new_database(services)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/ledger.sqlite3"


async def create_topics(bootstrap: str, topics: Topics, partitions: int = 4) -> None:
    """As an operator's `loyalty topics` does: with the settings each topic needs."""
    await ensure_topics(bootstrap, topics, partitions)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    """Fresh topics for one test, so tests sharing a broker never see each other's data."""
    suffix = uuid.uuid4().hex[:8]
    fresh = Topics.prefixed(f"t{suffix}")
    asyncio.run(create_topics(kafka_bootstrap, fresh))
    return fresh
