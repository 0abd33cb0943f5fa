"""deploy/docker-compose.yml stays valid for users with Docker (no engine runs here), and the
set-up scripts stop what they started when the set-up fails. The scripts run for real; the
scripts they call are stand-ins that record the calls, so no broker or server starts here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from services.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_whole_system_with_the_contract_environment() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "worker", "projector", "api"} <= set(services)
    for name in ("worker", "projector", "api"):
        service = services[name]
        env = service["environment"]
        assert env["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["LOYALTY_DATABASE_URL"].startswith("postgresql://")
        assert env["LOYALTY_DAILY_SWEEP"] in {"on", "off"}
        assert service["command"] == [name]
        assert (
            Settings.from_env({k: str(v) for k, v in env.items()}).database_url
            == env["LOYALTY_DATABASE_URL"]
        )
    assert "8080" in " ".join(str(p) for p in services["api"]["ports"])
    assert (ROOT / services["worker"]["build"]["dockerfile"]).exists()


def test_the_image_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    sources = [line.split()[1] for line in dockerfile if line.startswith("COPY ")]
    assert sources, "the image copies the package"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def _sandbox(tmp_path: Path, script: str, stand_ins: dict[str, str]) -> Path:
    """A copy of deploy/<script> in a repo of its own whose other scripts are stand-ins."""
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / script, tmp_path / "deploy" / script)
    for path, body in stand_ins.items():
        target = tmp_path / "deploy" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        record = 'echo "$(basename "$(dirname "$0")")/$(basename "$0") $*" >>"$CALLS"\n'
        target.write_text("#!/usr/bin/env bash\n" + record + body)
    return tmp_path / "deploy" / script


def _env(**extra: str) -> dict[str, str]:
    # The scripts' defaults, whatever the ports of the shell running the tests.
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_PORT", "PG_PORT"}}
    return {**env, **extra}


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_run_stops_what_a_failed_local_up_started(tmp_path: Path) -> None:
    # `local.sh up` fails after Kafka came up: `make run` must still call `down`.
    run = _sandbox(tmp_path, "run.sh", {"local.sh": "[[ $1 == up ]] && exit 1\nexit 0\n"})
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(run)],
        env=_env(CALLS=str(calls)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert _calls(calls) == ["deploy/local.sh up", "deploy/local.sh down"], result.stderr


def test_run_interrupted_during_local_up_stops_and_goes_no_further(tmp_path: Path) -> None:
    up_then_wait = "[[ $1 == up ]] && exec sleep 30\nexit 0\n"
    run = _sandbox(tmp_path, "run.sh", {"local.sh": up_then_wait})
    calls = tmp_path / "calls"
    proc = subprocess.Popen(
        ["bash", str(run)],
        env=_env(CALLS=str(calls)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _calls(calls) != ["deploy/local.sh up"]:
            assert time.monotonic() < deadline, "run.sh never called local.sh up"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # as a terminal's Ctrl-C reaches the whole group
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, output
    assert _calls(calls) == ["deploy/local.sh up", "deploy/local.sh down"], output


LOCAL_STAND_INS = {
    "kafka/kafka.sh": 'case $1 in status) exit "$KAFKA_STATUS" ;; start) echo kafka: up ;; esac\n',
    "postgres/pg.sh": "case $1 in status | start) exit 1 ;; esac\n",
}


def test_local_up_stops_kafka_when_postgres_fails(tmp_path: Path) -> None:
    local = _sandbox(tmp_path, "local.sh", LOCAL_STAND_INS)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(local), "up"],
        env=_env(CALLS=str(calls), KAFKA_STATUS="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    made = [c for c in _calls(calls) if " status" not in c]
    assert made[:3] == [
        "kafka/kafka.sh fetch",
        "kafka/kafka.sh start 9092",
        "kafka/kafka.sh topics 9092",
    ]
    assert made[3:] == [
        "postgres/pg.sh install",
        "postgres/pg.sh start 55432",
        "kafka/kafka.sh stop",
        "postgres/pg.sh stop",
    ], result.stderr


def test_local_up_leaves_a_broker_that_already_ran_when_postgres_fails(tmp_path: Path) -> None:
    local = _sandbox(tmp_path, "local.sh", LOCAL_STAND_INS)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(local), "up"],
        env=_env(CALLS=str(calls), KAFKA_STATUS="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "postgres/pg.sh start 55432" in _calls(calls)
    assert "kafka/kafka.sh stop" not in _calls(calls), result.stderr
