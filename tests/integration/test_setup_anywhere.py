"""The set-up works from a clone anywhere, and a set-up that fails stops what it started.

A new user's clone often sits in a private folder (mode 700, like a home folder). Run as root,
PostgreSQL runs as its own user, who cannot enter such a folder: pg.sh must then keep the
server's state where that user can, and `pg.sh destroy` must take it all away again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests import infra
from tests.e2e.processes import alive, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PG = ROOT / "deploy" / "postgres" / "pg.sh"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _pg(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(PG), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"pg.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_postgres_runs_from_a_private_folder_and_destroy_leaves_nothing() -> None:
    private = Path(tempfile.mkdtemp(prefix="loyalty-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    home = private / f"pg-anywhere-{uuid.uuid4().hex[:8]}"
    log = ROOT / ".local" / "logs" / f"{home.name}.log"
    port = free_port()
    env = {"PG_HOME": str(home), "PG_PORT": str(port)}
    try:
        out = _pg("start", str(port), env=env, cwd=private)
        url = out.stdout.strip().splitlines()[-1]
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        pointer = home / "elsewhere"
        if os.geteuid() == 0:
            # Root owns `private` (mode 700): the server's user cannot enter it.
            state = Path(pointer.read_text().strip())
            assert not state.is_relative_to(private)
            owner = pwd.getpwnam("loyalty-pg").pw_uid
            assert state.stat().st_uid == owner
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
        else:
            assert not pointer.exists()
            state = home
        pid = int((state / "data" / "postmaster.pid").read_text().split()[0])
        assert alive(pid)
        # Later invocations on the same PG_HOME find the server.
        assert _pg("status", env=env, cwd=private).stdout.strip() == url
        assert _pg("url", env=env, cwd=private).stdout.strip() == url
        assert "ready to accept connections" in log.read_text()

        _pg("destroy", env=env, cwd=private)
        assert not alive(pid)
        assert not _accepts(port)
        assert not state.exists()
        assert not home.exists()
        assert "ready to accept connections" in log.read_text(), "the log outlives the data"
    finally:
        subprocess.run(["bash", str(PG), "destroy"], env={**os.environ, **env}, capture_output=True)
        shutil.rmtree(private, ignore_errors=True)
        log.unlink(missing_ok=True)


def test_a_failed_set_up_stops_the_broker_it_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kafka_port = free_port()
    monkeypatch.delenv("LOYALTY_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("LOYALTY_DATABASE_URL", raising=False)
    monkeypatch.setenv("LOYALTY_TEST_KAFKA_PORT", str(kafka_port))
    # A PostgreSQL with no initdb: pg.sh fails, after the broker is up.
    monkeypatch.setenv("PG_BIN", str(tmp_path))

    kafka_homes: list[Path] = []
    at_postgres: list[tuple[bool, int]] = []  # (the broker answered, its pid)
    script = infra._script

    def watching(*args: str, env: dict[str, str] | None = None) -> str:
        # Only looks: what the broker looked like when PostgreSQL's turn came.
        if args[:2] == ("deploy/kafka/kafka.sh", "start"):
            kafka_homes.append(Path((env or {})["KAFKA_HOME"]))
        if args[0] == "deploy/postgres/pg.sh" and not at_postgres:
            pid = int((kafka_homes[-1] / "kafka.pid").read_text())
            at_postgres.append((_accepts(kafka_port), pid))
        return script(*args, env=env)

    monkeypatch.setattr(infra, "_script", watching)
    with pytest.raises(RuntimeError, match="has no initdb"):
        infra.start_services(docker=False)

    [(answered, pid)] = at_postgres
    assert answered, "the broker was up when PostgreSQL failed"
    assert not alive(pid)
    assert not _accepts(kafka_port)
    assert not kafka_homes[-1].exists()
