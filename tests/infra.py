"""Where the tests' Kafka and PostgreSQL come from; the one place that decides.

1. `LOYALTY_KAFKA_BOOTSTRAP` / `LOYALTY_DATABASE_URL` (a postgresql:// URL) point at
   existing services: use them.
2. Else, where a Docker engine answers: testcontainers' Kafka and PostgreSQL modules.
3. Else: the project's own scripts start the Apache Kafka jars and Debian's PostgreSQL
   under `.local/` (what CI and these Docker-less machines do).
Whatever this module started, it stops at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Services:
    kafka_bootstrap: str
    postgres_url: str  # a server URL; tests create their own databases in it
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["bash", *args], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _session_home(kind: str, services: Services) -> str:
    # A folder of this session's own: test sessions running side by side never share
    # (or stop) each other's broker or database. Removed when the session stops.
    (ROOT / ".local").mkdir(exist_ok=True)
    home = tempfile.mkdtemp(prefix=f"{kind}-test-", dir=ROOT / ".local")
    os.chmod(home, 0o755)  # PostgreSQL runs as its own user and must enter it
    services.stops.append(lambda: shutil.rmtree(home, ignore_errors=True))
    return home


def _stop(script: str, env: dict[str, str]) -> None:
    _script(script, "stop", env=env)


def start_services() -> Services:
    kafka = os.environ.get("LOYALTY_KAFKA_BOOTSTRAP")
    database = os.environ.get("LOYALTY_DATABASE_URL", "")
    postgres = database if database.startswith("postgres") else None
    services = Services(kafka_bootstrap=kafka or "", postgres_url=postgres or "")
    docker = (kafka is None or postgres is None) and _docker_available()
    if kafka is None:
        if docker:
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer("apache/kafka:4.1.1").with_kraft()
            container.start()
            services.kafka_bootstrap = container.get_bootstrap_server()
            services.stops.append(container.stop)
        else:
            port = int(os.environ.get("LOYALTY_TEST_KAFKA_PORT", _free_port()))
            env = {"KAFKA_PORT": str(port), "KAFKA_HOME": _session_home("kafka", services)}
            _script("deploy/kafka/kafka.sh", "start", str(port), env=env)
            services.kafka_bootstrap = f"127.0.0.1:{port}"
            services.stops.append(lambda env=env: _stop("deploy/kafka/kafka.sh", env))
    if postgres is None:
        if docker:
            from testcontainers.postgres import PostgresContainer

            pg = PostgresContainer("postgres:15", driver=None)
            pg.start()
            services.postgres_url = pg.get_connection_url()
            services.stops.append(pg.stop)
        else:
            port = int(os.environ.get("LOYALTY_TEST_PG_PORT", _free_port()))
            env = {"PG_PORT": str(port), "PG_HOME": _session_home("pg", services)}
            _script("deploy/postgres/pg.sh", "install", env=env)
            out = _script("deploy/postgres/pg.sh", "start", str(port), env=env)
            services.postgres_url = out.strip().splitlines()[-1]
            services.stops.append(lambda env=env: _stop("deploy/postgres/pg.sh", env))
    return services
