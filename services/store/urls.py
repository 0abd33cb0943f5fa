"""LOYALTY_DATABASE_URL -> how to reach the store (CONTRACT section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class DatabaseUrl:
    scheme: str  # "postgresql" or "sqlite"
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        parts = urlsplit(url)
        if parts.scheme in {"postgresql", "postgres"}:
            return cls(
                scheme="postgresql",
                host=parts.hostname or "localhost",
                port=parts.port or 5432,
                user=unquote(parts.username or ""),
                password=unquote(parts.password or ""),
                dbname=parts.path.lstrip("/"),
            )
        if parts.scheme == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
            path = url[len("sqlite:///") :]
            if not path:
                raise ValueError(f"sqlite URL needs a file path: {url!r}")
            return cls(scheme="sqlite", path=path)
        raise ValueError(
            f"LOYALTY_DATABASE_URL must be postgresql://... or sqlite:///..., not {url!r}"
        )

    @property
    def is_postgres(self) -> bool:
        return self.scheme == "postgresql"

    def conninfo(self) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={self.dbname}"]
        if self.user:
            parts.append(f"user={self.user}")
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join(parts)

    def eventsourcing_env(self) -> dict[str, str]:
        if self.is_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "APPLICATION_RECORDER_TOPIC": "services.store.recorders:LedgerPostgresRecorder",
                "POSTGRES_DBNAME": self.dbname,
                "POSTGRES_HOST": self.host,
                "POSTGRES_PORT": str(self.port),
                "POSTGRES_USER": self.user,
                "POSTGRES_PASSWORD": self.password,
                # FACTS: the DB functions misroute events between applications sharing a schema.
                "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
                # Connections a process keeps open: the worker writes one batch while it
                # decides the next (two), and the pool grows for bursts (the rebalance
                # listener beside both).
                "POSTGRES_POOL_SIZE": "2",
            }
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "APPLICATION_RECORDER_TOPIC": "services.store.recorders:LedgerSQLiteRecorder",
            "SQLITE_DBNAME": self.path,
            "SQLITE_LOCK_TIMEOUT": "30",
        }
