"""LOYALTY_LOG_FORMAT=json: one JSON object a line, errors with their traceback."""

from __future__ import annotations

import logging
import subprocess
import sys

import orjson
import pytest

from services.logs import JsonLines, configure


def test_a_record_is_one_json_line_with_its_traceback() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord(
            "loyalty.x", logging.ERROR, "f", 1, "failed %s", ("it",), sys.exc_info()
        )
    line = JsonLines().format(record)
    assert "\n" not in line
    body = orjson.loads(line)
    assert (body["level"], body["logger"], body["message"]) == ("error", "loyalty.x", "failed it")
    assert "ValueError: bad" in body["error"]
    assert body["at"].endswith("+00:00")


def test_a_bad_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text or json"):
        configure("xml")


def test_the_cli_logs_json_lines_when_asked(tmp_path: object) -> None:
    # status with no broker to reach: the Kafka client logs why, as JSON lines
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "status"],
        env={
            "PATH": "/usr/bin:/bin",
            "LOYALTY_LOG_FORMAT": "json",
            "LOYALTY_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(orjson.loads(line)["level"] for line in lines), (done.stderr, done.stdout)
    assert orjson.loads(done.stdout)["inputs"]  # the answer itself stays on stdout
    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "digest"],
        env={"PATH": "/usr/bin:/bin", "LOYALTY_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("loyalty: LOYALTY_LOG_FORMAT")
