"""eventsourcing's PostgreSQL persistence, connecting with every libpq option of the URL."""

from __future__ import annotations

import orjson
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType

from services.store.urls import LIBPQ_OPTIONS


class Factory(PostgresFactory):
    """PostgresDatastore builds its pool's keywords from five settings (dbname, host,
    port, user, password) and takes no others; the pool opens at its first use, so
    the URL's other options join those keywords here, before any connection."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        keywords = self.datastore.pool.kwargs
        if not isinstance(keywords, dict):
            raise TypeError(f"eventsourcing's pool keywords are a {type(keywords)}, not a dict")
        keywords.update(orjson.loads(self.env.get(LIBPQ_OPTIONS) or "{}"))
