"""Ops rebuild state and prove it is the same (README, "Operations"; deploy/RUNBOOK.md)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Topics
from services.program_file import DEFAULT_PROGRAM_PATH
from tests.conftest import new_database
from tests.e2e.chaos import stream
from tests.e2e.processes import alive, free_port, loyalty_env, spawned_by
from tests.infra import Services
from tests.integration.harness import context_for, ingest_all, read_models, wait_until

pytestmark = pytest.mark.e2e


async def api_get(context: Context, path: str) -> tuple[int, Any]:
    app = create_app(context, context.database(), context.projection_runner())
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path)
        return response.status, await response.json()


def loyalty(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def replay_in_background(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`loyalty replay projections`, started for a test to kill."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "replay", "projections"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def live_store(kafka_bootstrap: str, postgres_url: str, topics: Topics) -> Context:
    """A store fed from Kafka, its changelog published, its read models built."""
    context = context_for(kafka_bootstrap, postgres_url, topics, f"g-{uuid.uuid4().hex[:8]}")
    await ingest_all(context, stream(topics, seed=21, buyers=120, sharers=30))
    relay = context.relay()
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    last = context.ledger.last_position()
    await wait_until(lambda: relay.position() == last, 60, "the changelog")
    stopping.set()
    await task
    context.projection_runner().catch_up()
    return context


def a_replay_to_kill(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> tuple[Context, dict[str, list[Any]], dict[str, str]]:
    """A live store, its read models as built, and the environment of a replay of it
    that commits a transaction per event read, so that a kill lands mid-way."""
    context = asyncio.run(live_store(kafka_bootstrap, postgres_url, topics))
    env = loyalty_env(kafka_bootstrap, postgres_url, topics, free_port(), "unused")
    env["LOYALTY_PROJECTION_PAGE"] = "1"
    return context, read_models(context), env


async def test_replays_rebuild_the_same_state_and_reprocess_reports_rule_changes(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, services: Services, tmp_path: Path
) -> None:
    context = await live_store(kafka_bootstrap, postgres_url, topics)
    env = loyalty_env(kafka_bootstrap, postgres_url, topics, free_port(), "unused")
    before = read_models(context)

    replayed = loyalty("replay", "projections", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "replay projections:" in replayed.stdout
    assert "events/s" in replayed.stderr  # the progress line
    assert read_models(context) == before

    copy = new_database(services)
    rebuilt = loyalty("replay", "stream", "--into", copy, env=env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "equal: the rebuilt store holds the same ledgers" in rebuilt.stdout
    live_digest = loyalty("digest", env=env).stdout
    assert loyalty("digest", env={**env, "LOYALTY_DATABASE_URL": copy}).stdout == live_digest
    restored = build(replace(context.settings, database_url=copy))
    assert restored.relay().position() == restored.ledger.last_position() > 0  # not again
    again = loyalty("replay", "stream", "--into", copy, env=env)
    assert again.returncode == 2 and "already holds events" in again.stderr

    same = loyalty("reprocess", "--into", new_database(services), env=env)
    assert same.returncode == 0, same.stderr
    assert "0 members differ from the live store" in same.stdout

    doubled = tmp_path / "double.toml"
    doubled.write_text(
        DEFAULT_PROGRAM_PATH.read_text().replace('earn_rate = "1"', 'earn_rate = "2"')
    )
    changed = loyalty(
        "reprocess",
        "--into",
        new_database(services),
        "--show",
        "1000",
        env={**env, "LOYALTY_PROGRAM": str(doubled)},
    )
    assert changed.returncode == 0, changed.stderr
    listed = {line.split(":")[0].strip() for line in changed.stdout.splitlines()[1:]}
    assert listed == {f"buyer-{b:04d}" for b in range(120)}  # sharers earn the same

    # Under the seasonal program: which members its campaigns would have changed, and how
    seasonal = loyalty(
        "reprocess",
        "--into",
        new_database(services),
        "--show",
        "1000",
        env={**env, "LOYALTY_PROGRAM": str(DEFAULT_PROGRAM_PATH.parent / "seasonal.toml")},
    )
    assert seasonal.returncode == 0, seasonal.stderr
    lines = seasonal.stdout.splitlines()
    reached = [line for line in lines if line.strip().startswith("campaign big-basket:")]
    assert reached and "members rewarded" in reached[0]
    changed_by = [line for line in lines if "; campaigns " in line and "big-basket" in line]
    assert changed_by, seasonal.stdout[:2000]
    assert all(line.strip().startswith("buyer-") for line in changed_by)


def test_an_interrupted_replay_says_so_and_a_rerun_ends_in_the_same_state(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    # A query per event read: the kill lands with ~100 of ~1,700 events rebuilt, where
    # pages of 20 (merged by projections that fall behind) were sometimes all done.
    context, before, env = a_replay_to_kill(kafka_bootstrap, postgres_url, topics)
    runner = context.projection_runner()
    # The kill must land while rows are missing: it comes as soon as the rebuild is said
    # and the read models were dropped, not once every projection has a position, which
    # on a quick machine came with every row back (pending pages are merged into one
    # transaction). The flag stays set after a kill: a retry waits for its own drop.
    for _ in range(5):
        proc = replay_in_background(env)
        asyncio.run(
            wait_until(
                lambda: runner.rebuilding() and read_models(context) != before,
                60,
                "a rebuild under way",
            )
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if read_models(context) != before:
            break
    assert runner.rebuilding()
    assert read_models(context) != before
    status, body = asyncio.run(api_get(context, "/members/buyer-0001"))
    assert status == 503
    assert "read models are being rebuilt" in body["error"]
    status, body = asyncio.run(api_get(context, "/status"))
    assert (status, body["rebuilding"]) == (200, True)

    rerun = loyalty("replay", "projections", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert not runner.rebuilding()
    assert read_models(context) == before
    status, body = asyncio.run(api_get(context, "/members/buyer-0001"))
    assert status == 200 and body["member_id"] == "buyer-0001"


def test_a_replay_shared_among_processes_killed_mid_way_leaves_no_helper_rebuilding(
    kafka_bootstrap: str, postgres_url: str, topics: Topics
) -> None:
    context, before, env = a_replay_to_kill(kafka_bootstrap, postgres_url, topics)
    env["LOYALTY_PROJECTION_PROCESSES"] = "2"
    env["LOYALTY_PROJECTION_PROCESSES_FROM"] = "0"
    # A transaction per event in every projection: the balances would otherwise hold
    # their rows to the end, and the test tells helpers under way by moved positions.
    env["LOYALTY_PROJECTION_HOLD_ROWS"] = "0"
    runner = context.projection_runner()

    helpers: list[int] = []
    last = context.ledger.last_position()
    # The kill must land before the helpers are done; on a machine quick enough to
    # finish first, the next attempt starts the rebuild over.
    for _ in range(5):
        replay = replay_in_background(env)

        def sharing(pid: int = replay.pid) -> bool:
            helpers[:] = spawned_by(pid)
            return len(helpers) == 2 and min(runner.positions().values()) > 0

        asyncio.run(wait_until(sharing, 60, "two helpers under way"))
        replay.send_signal(signal.SIGKILL)
        replay.wait()
        # Each helper stops at its next page once its parent is gone.
        asyncio.run(wait_until(lambda: not any(alive(h) for h in helpers), 30, "helpers to stop"))
        stopped_at = runner.positions()
        if min(stopped_at.values()) < last:
            break
    assert runner.rebuilding()
    assert min(stopped_at.values()) < last
    asyncio.run(asyncio.sleep(1))
    assert runner.positions() == stopped_at  # nobody rebuilds behind the next replay

    rerun = loyalty("replay", "projections", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "exited with" not in rerun.stderr  # both helpers did their share
    assert not runner.rebuilding()
    assert read_models(context) == before
