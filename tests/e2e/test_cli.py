"""The `loyalty` console script's one-shot commands, run as a user would."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.bootstrap import build
from services.config import Settings
from tests.integration.harness import keyed_message

pytestmark = pytest.mark.e2e


def loyalty(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def sha256_of(lines: list[str]) -> str:
    """The digest (README, "Operations"), computed here independently: sorted lines of
    member_id, balance, tier, lifetime points."""
    return hashlib.sha256("".join(f"{line}\n" for line in sorted(lines)).encode()).hexdigest()


def test_sweep_as_of_expires_and_reviews_every_member(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    service = build(Settings(database_url=postgres_url)).ingest_service()
    topic = Settings().topics.purchases
    service.commit(
        *service.decode(
            [
                keyed_message(
                    topic,
                    i,
                    {
                        "event_id": f"p{i}",
                        "type": "purchase",
                        "occurred_at": "2026-01-01T00:00:00Z",
                        "member_id": member,
                        "order_id": "o",
                        "amount": amount,
                        "currency": "EUR",
                    },
                )
                for i, (member, amount) in enumerate([("ann", "1500"), ("bob", "20")])
            ]
        )
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "LOYALTY_DATABASE_URL": postgres_url,
        "LOYALTY_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }

    # digest --as-of applies steps 1 and 2 in memory: it foresees the sweep, writes nothing.
    position = build(Settings(database_url=postgres_url)).ledger.last_position()
    now = loyalty("digest", env=env).stdout.strip()
    foreseen = loyalty("digest", "--as-of", "2027-01-01T00:00:00Z", env=env).stdout.strip()
    assert now == sha256_of(["ann\t1500\tsilver\t1500", "bob\t20\tbronze\t20"])
    assert foreseen == sha256_of(["ann\t0\tbronze\t1500", "bob\t0\tbronze\t20"])
    assert build(Settings(database_url=postgres_url)).ledger.last_position() == position

    early = loyalty("sweep", "--as-of", "2026-06-01T00:00:00Z", env=env)
    assert early.returncode == 0, early.stderr
    assert "0 events" in early.stdout
    late = loyalty("sweep", "--as-of", "2027-01-01T00:00:00Z", env=env)
    assert late.returncode == 0, late.stderr
    # Two expiries, ann's downgrade, and bob's qualifying points leaving the window.
    assert "4 events" in late.stdout

    ledger = build(Settings(database_url=postgres_url)).ledger
    ann, bob = ledger.member("ann"), ledger.member("bob")
    assert ann is not None and bob is not None
    assert (ann.balance, ann.tier, bob.balance) == (0, "bronze", 0)
    assert (ann.qualifying_points, bob.qualifying_points) == (0, 0)
    assert loyalty("digest", env=env).stdout.strip() == foreseen

    status = loyalty("status", env=env)
    assert status.returncode == 0, status.stderr
    body = orjson.loads(status.stdout)
    assert body["store_position"] == ledger.last_position()
    assert body["inputs"][topic]["applied"] == 2


def test_bad_arguments_and_a_bad_program_say_what_is_wrong(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    no_offset = loyalty("sweep", "--as-of", "2027-01-01T00:00:00", env=env)
    assert no_offset.returncode == 2
    assert "with a UTC offset" in no_offset.stderr
    program = tmp_path / "p.toml"
    program.write_text('currency = "EUR"\npending_dayz = 3\n')
    bad = loyalty("status", env={**env, "LOYALTY_PROGRAM": str(program)})
    assert bad.returncode == 2
    assert bad.stderr.startswith("loyalty: program file p.toml: ")
    assert "pending_dayz is not a key a program may have" in bad.stderr
    assert "Traceback" not in bad.stderr
