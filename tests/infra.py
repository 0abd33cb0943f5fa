"""Where the tests' Kafka and PostgreSQL come from; the one place that decides.

1. `LOYALTY_KAFKA_BOOTSTRAP` / `LOYALTY_DATABASE_URL` (a postgresql:// URL) point at
   existing services: use them.
2. Else, where a Docker engine answers: testcontainers' Kafka and PostgreSQL modules.
3. Else: the project's own scripts start the Apache Kafka jars and Debian's PostgreSQL
   under `.local/` (what CI and these Docker-less machines do).
Whatever this module started, it stops at the end of the session, or at once when the
set-up fails midway.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Services:
    kafka_bootstrap: str
    postgres_url: str  # a server URL; tests create their own databases in it
    stops: list[Callable[[], None]] = field(default_factory=list)
    # A server given by LOYALTY_DATABASE_URL outlives the session: the databases made in
    # it are dropped at the end. Servers the session started go, with their data, anyway.
    postgres_is_shared: bool = False

    def stop(self) -> None:
        """Every stop runs, even after one fails; the first failure is raised at the end."""
        failure: BaseException | None = None
        while self.stops:
            try:
                self.stops.pop()()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


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


def _stop(script: str, command: str, env: dict[str, str]) -> None:
    _script(script, command, env=env)


KAFKA_IMAGE = "apache/kafka:4.1.1"  # the same Apache Kafka as deploy/kafka/pom.xml


def _kafka_container(services: Services) -> str:
    """The official Apache Kafka image, one KRaft node. testcontainers' KafkaContainer
    drives Confluent's images only, so this configures the Apache one as its docs show.
    The client port is bound to the same port on the host: the broker must advertise
    the address clients reach it at, and that is only known before it starts this way."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
    host = container.get_container_host_ip()
    for key, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        container.with_env(key, value)
    container.start()
    services.stops.append(container.stop)
    wait_for_logs(container, "Kafka Server started", timeout=120)
    return f"{host}:{port}"


def start_services(*, docker: bool | None = None) -> Services:
    """docker: False keeps to the project's scripts even where a Docker engine answers;
    None asks the engine."""
    kafka = os.environ.get("LOYALTY_KAFKA_BOOTSTRAP")
    database = os.environ.get("LOYALTY_DATABASE_URL", "")
    postgres = database if database.startswith("postgres") else None
    services = Services(
        kafka_bootstrap=kafka or "", postgres_url=postgres or "", postgres_is_shared=bool(postgres)
    )
    if docker is None:
        docker = (kafka is None or postgres is None) and _docker_available()
    try:
        _start(services, kafka is None, postgres is None, docker)
    except BaseException:
        # A broker left running by a failed set-up outlives pytest and holds its port.
        try:
            services.stop()
        except Exception as exc:
            print(f"tests/infra.py: stopping after a failed set-up failed: {exc}", file=sys.stderr)
        raise
    return services


# A port found free may be taken before the server binds it (another session's server, or
# a client's outgoing connection on loopback): a start that failed on that is tried again
# on other ports.
PORT_ATTEMPTS = 3


def _started_on_free_ports(
    script: str, port: int, env: dict[str, str], attempt: int, fixed: str | None
) -> str:
    """The script's output, or "" when the port was taken and another try is due."""
    try:
        return _script(script, "start", str(port), env=env) or "started"
    except RuntimeError as exc:
        taken = "already in use" in str(exc).lower() or "is taken" in str(exc)
        if fixed or not taken or attempt == PORT_ATTEMPTS:
            raise
        print(f"tests/infra.py: {script} found a port taken; trying others", file=sys.stderr)
        return ""


def _start(services: Services, kafka: bool, postgres: bool, docker: bool) -> None:
    if kafka:
        if docker:
            services.kafka_bootstrap = _kafka_container(services)
        else:
            home = _session_home("kafka", services)
            fixed = os.environ.get("LOYALTY_TEST_KAFKA_PORT")
            for attempt in range(1, PORT_ATTEMPTS + 1):
                port = int(fixed or _free_port())
                env = {
                    "KAFKA_PORT": str(port),
                    "KAFKA_CONTROLLER_PORT": str(_free_port()),
                    "KAFKA_HOME": home,
                }
                # Before the start: a start that fails midway may leave a broker behind.
                services.stops.append(partial(_stop, "deploy/kafka/kafka.sh", "stop", env))
                if _started_on_free_ports("deploy/kafka/kafka.sh", port, env, attempt, fixed):
                    break
            services.kafka_bootstrap = f"127.0.0.1:{port}"
    if postgres:
        if docker:
            from testcontainers.postgres import PostgresContainer

            pg = PostgresContainer("postgres:15", driver=None)
            pg.start()
            services.postgres_url = pg.get_connection_url()
            services.stops.append(pg.stop)
        else:
            home = _session_home("pg", services)
            fixed = os.environ.get("LOYALTY_TEST_PG_PORT")
            for attempt in range(1, PORT_ATTEMPTS + 1):
                port = int(fixed or _free_port())
                env = {"PG_PORT": str(port), "PG_HOME": home}
                # destroy, not stop: run as root from a private folder, the server's data
                # lives outside PG_HOME (see pg.sh), where removing PG_HOME would leave it.
                services.stops.append(partial(_stop, "deploy/postgres/pg.sh", "destroy", env))
                _script("deploy/postgres/pg.sh", "install", env=env)
                out = _started_on_free_ports("deploy/postgres/pg.sh", port, env, attempt, fixed)
                if out:
                    break
            services.postgres_url = out.strip().splitlines()[-1]
