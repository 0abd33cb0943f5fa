"""Runs `loyalty` processes for end-to-end tests and waits on what they serve."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from services.config import Topics

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    # A zombie is gone for our purposes: it holds no port and no files.
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def spawned_by(pid: int) -> list[int]:
    """The processes `pid` started through multiprocessing's spawn (not its resource
    tracker): a shared catch-up's helpers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat(entry.name)[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def loyalty_env(
    bootstrap: str, database_url: str, topics: Topics, api_port: int, group: str
) -> dict[str, str]:
    return {
        **os.environ,
        "LOYALTY_KAFKA_BOOTSTRAP": bootstrap,
        "LOYALTY_DATABASE_URL": database_url,
        "LOYALTY_API_PORT": str(api_port),
        "LOYALTY_CONSUMER_GROUP": group,
        "LOYALTY_DAILY_SWEEP": "off",
        # Tests run several processes of a kind on one host: none serves metrics.
        "LOYALTY_METRICS_PORT": "off",
        **topics.env(),
    }


@contextmanager
def running(
    commands: list[str], env: dict[str, str], logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for command in commands:
            log = (logs / f"{command}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", command],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    """Status and JSON body (0, None when nothing answers), with a bearer token if given."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    procs: list[subprocess.Popen[bytes]] = (),  # type: ignore[assignment]
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{proc.args} exited with {proc.returncode} while waiting for {what}"
                )
        value = probe()
        if value is not None:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
