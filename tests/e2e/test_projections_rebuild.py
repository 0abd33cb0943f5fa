"""Read models rebuilt from scratch equal the incrementally built ones, even when the
projector was killed mid-batch along the way."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psycopg
import pytest

from projections.runner import default_projections
from services.bootstrap import Context, build
from services.config import Settings, Topics
from services.demo import generate
from services.store.urls import DatabaseUrl
from tests.e2e.processes import wait_for
from tests.integration.harness import commit_events, read_models

pytestmark = pytest.mark.e2e


def store_with_demo(database_url: str, members: int = 150) -> Context:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    events = generate(members=members, seed=3, now=datetime(2026, 6, 1, tzinfo=UTC))
    commit_events(context, events, batch=300)
    return context


def test_a_rebuild_equals_the_incremental_build(postgres_url: str) -> None:
    context = store_with_demo(postgres_url)
    runner = context.projection_runner()
    runner.page = 37  # many small transactions, as a projector following a live store does
    runner.catch_up()
    incremental = read_models(context)
    assert len(incremental["member_balances"]) == 150

    runner.reset()
    assert read_models(context)["member_balances"] == []
    context.projection_runner().catch_up()
    assert read_models(context) == incremental


# "0": every projection commits each page. Unset: the balances hold their rows across
# the catch-up's pages (projections/README.md), so kills land while rows are held.
@pytest.mark.parametrize("hold_rows", ["0", None])
def test_a_projector_killed_mid_batch_counts_nothing_twice(
    postgres_url: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path, hold_rows: str | None
) -> None:
    # ~23,000 events in pages of 25: the projector is still catching up when kills land
    # (a life gets through ~3,000 before its kill).
    context = store_with_demo(postgres_url, members=3000)
    env = {
        "PATH": "/usr/bin:/bin",
        "LOYALTY_DATABASE_URL": postgres_url,
        "LOYALTY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LOYALTY_TOPIC_MEMBER_EVENTS": topics.member_events,
        "LOYALTY_PROJECTION_PAGE": "25",
    }
    if hold_rows is not None:
        env["LOYALTY_PROJECTION_HOLD_ROWS"] = hold_rows
    # A life has committed a page once a projection that commits each moved.
    moved = lowest_position if hold_rows == "0" else highest_position
    last = context.ledger.last_position()
    rng = random.Random(5)
    log = (tmp_path / "projector.log").open("ab")
    for _ in range(4):
        before = moved(context)
        projector = start_projector(env, log)
        try:
            # Once this life has committed a page, at a random instant: mid-transaction.
            wait_for(
                lambda b=before: True if moved(context) > b else None,  # type: ignore[misc]
                60,
                "the projector's first page",
                procs=[projector],
            )
            time.sleep(rng.uniform(0.0, 0.1))
        finally:
            projector.send_signal(signal.SIGKILL)
            projector.wait()
        assert projector.returncode == -signal.SIGKILL
        assert lowest_position(context) < last, "the projector caught up before the kill"
    projector = start_projector(env, log)
    try:
        wait_for(
            lambda: True if lowest_position(context) == last else None,
            120,
            "the projector to catch up",
            procs=[projector],
        )
    finally:
        projector.terminate()
        projector.wait(timeout=20)
    after_kills = read_models(context)

    context.projection_runner().reset()
    context.projection_runner().catch_up()
    assert read_models(context) == after_kills


def lowest_position(context: Context) -> int:
    return min(positions(context))


def highest_position(context: Context) -> int:
    return max(positions(context))


def positions(context: Context) -> list[int]:
    # One query on a connection of its own: the probe must not lag the projector it
    # races, and a runner would open a connection per projection and wait for their locks.
    names = [p.name for p in default_projections([t.name for t in context.program.tiers])]
    with psycopg.connect(DatabaseUrl.parse(context.settings.database_url).conninfo()) as conn:
        try:
            rows = dict(conn.execute("SELECT name, position FROM projection_positions").fetchall())
        except psycopg.errors.UndefinedTable:
            return [0]  # no projector has started yet
    return [int(rows.get(name, 0)) for name in names]


def start_projector(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "projector"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
