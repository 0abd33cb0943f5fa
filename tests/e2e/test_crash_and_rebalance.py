"""Exactly-once under SIGKILL, rebalances and redelivery (docs/RULES.md, section 2).

Each test compares the store the workers built with a clean run: every partition's
records applied once, in order, into a fresh store; a stream over all four topics, whose
ledgers depend on how topics interleave, is checked by what exactly-once means instead.
`make test` runs a quick variant; `make chaos` sets LOYALTY_CHAOS_KILLS=100.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from services.bootstrap import build
from services.config import Settings, Topics
from services.digest import digest
from services.ingest.messages import InputMessage
from tests.e2e.chaos import clean_run, cross_member_stream, stream
from tests.e2e.processes import free_port, loyalty_env, wait_for
from tests.integration.harness import read_to_end, send

pytestmark = pytest.mark.e2e
KILLS = int(os.environ.get("LOYALTY_CHAOS_KILLS", "4"))
# Each life of a killed worker takes in one to three thousand messages (more as ingest
# gets faster): the stream must outlast every kill, and last long enough for a second
# worker to join mid-stream.
BUYERS = max(1500, 300 * KILLS)
# The four-topic stream (about nine messages a buyer) is killed in two phases, three
# quarters of the kills in the first.
CROSS_BUYERS = max(2000, 400 * KILLS)
CROSS_KILLS = (max(3, KILLS * 3 // 4), max(1, KILLS - max(3, KILLS * 3 // 4)))
PURCHASE_RECORDED = "services.domain.member:Member.PurchaseRecorded"


class Published:
    def __init__(self, records: list[Any], expected_digest: str, expected_counts: dict[Any, int]):
        self.records = records
        self.digest = expected_digest
        self.counts = expected_counts


@pytest.fixture
def published(kafka_bootstrap: str, topics: Topics, sqlite_url: str) -> Published:
    asyncio.run(send(kafka_bootstrap, stream(topics, seed=11, buyers=BUYERS)))
    records = [
        r
        for topic in (topics.purchases, topics.social_shares)
        for r in asyncio.run(read_to_end(kafka_bootstrap, topic))
    ]
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    expected_digest, expected_counts = clean_run(records, topics, sqlite_url)
    assert expected_counts[(topics.purchases, "duplicate")] > 0
    assert expected_counts[(topics.purchases, "dead_lettered")] > 0
    return Published(records, expected_digest, expected_counts)


def worker_env(kafka_bootstrap: str, postgres_url: str, topics: Topics) -> dict[str, str]:
    env = loyalty_env(
        kafka_bootstrap, postgres_url, topics, free_port(), f"g-{uuid.uuid4().hex[:8]}"
    )
    env["LOYALTY_BATCH_MAX"] = "150"  # many small commits: more places for a kill to land
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def accounted(database_url: str) -> int:
    return sum(build(Settings(database_url=database_url)).ledger.message_counts().values())


def progressed(database_url: str, since: int) -> bool | None:
    return True if accounted(database_url) > since else None


def settle(database_url: str, expected: int, procs: list[subprocess.Popen[bytes]]) -> None:
    wait_for(
        lambda: True if accounted(database_url) >= expected else None,
        180,
        f"{expected} messages accounted for",
        procs=procs,
    )


def assert_same_as_clean_run(database_url: str, published: Published) -> None:
    context = build(Settings(database_url=database_url))
    counts = context.ledger.message_counts()
    assert counts == published.counts
    assert sum(counts.values()) == len(published.records)
    assert digest(context.ledger, context.program) == published.digest
    applied: Counter[str] = Counter()
    position = 0
    while page := context.ledger.store.select_notifications(
        position, 5000, topics=[PURCHASE_RECORDED], inclusive_of_start=False
    ):
        applied.update(context.ledger.mapper.to_domain_event(n).event_id for n in page)  # type: ignore[attr-defined]
        position = page[-1].id
    assert applied and max(applied.values()) == 1, "an event_id was applied twice"


def test_a_worker_killed_at_random_instants_ends_as_a_clean_run(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, published: Published, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, postgres_url, topics)
    total = len(published.records)
    mid_batch = kill_repeatedly(env, postgres_url, total, tmp_path / "worker.log", KILLS)
    print(
        f"{KILLS} kills ({mid_batch} after a commit of that life), {accounted(postgres_url)} "
        f"of {total} messages taken in before the last restart"
    )
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        settle(postgres_url, total, [worker])
    finally:
        stop(worker)
    assert_same_as_clean_run(postgres_url, published)


def test_referral_bonuses_and_redemptions_stay_exactly_once_under_sigkill(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, tmp_path: Path
) -> None:
    # Given a stream over all four topics, whose ledgers depend on how topics interleave
    early, late = cross_member_stream(topics, seed=17, buyers=CROSS_BUYERS)
    records = [*early, *late]
    env = worker_env(kafka_bootstrap, postgres_url, topics)
    log = tmp_path / "worker.log"

    # When a worker is killed mid-stream again and again in each phase, then left to finish
    for phase, kills in zip((early, late), CROSS_KILLS, strict=True):
        asyncio.run(send(kafka_bootstrap, phase))
        expected = accounted(postgres_url) + len(phase)
        kill_repeatedly(env, postgres_url, expected, log, kills)
        worker = start_worker(env, log)
        try:
            settle(postgres_url, expected, [worker])
        finally:
            stop(worker)

    # Then every message is counted once, every event_id decided once, and every
    # rewarded referral credited its referrer exactly once (a cross-member write)
    context = build(Settings(database_url=postgres_url))
    counts = context.ledger.message_counts()
    assert sum(counts.values()) == len(records)
    assert counts[(topics.purchases, "duplicate")] > 0
    assert counts[(topics.referrals, "duplicate")] > 0
    assert counts[(topics.redemptions, "duplicate")] > 0
    decided: dict[str, Counter[str]] = {}
    for event in stored_events(context):
        kind = type(event).__name__
        if kind not in {"Registered", "PointsExpired", "TierChanged", "QualifyingPointsChanged"}:
            decided.setdefault(kind, Counter())[event.event_id] += 1
    for kind, ids in decided.items():
        assert max(ids.values()) == 1, f"an event_id decided twice as {kind}"
    rewarded, credited = decided["ReferralRewarded"], decided["ReferrerBonusEarned"]
    assert rewarded and set(rewarded) == set(credited)
    assert decided["PointsRedeemed"] and decided["RedemptionDeclined"]
    print(
        f"{len(records)} messages, {len(rewarded)} referral bonuses, "
        f"{len(decided['PointsRedeemed'])} redemptions and "
        f"{len(decided['RedemptionDeclined'])} declined, each decided once"
    )
    receipts = sum(n for (_, outcome), n in counts.items() if outcome in {"applied", "rejected"})
    assert receipts == len({json.loads(value)["event_id"] for _, _, value in records})


def kill_repeatedly(
    env: dict[str, str], database_url: str, total: int, log: Path, kills: int
) -> int:
    """Starts a worker and SIGKILLs it, `kills` times: mostly at a random instant after
    that life's first commit, sometimes while it starts. Returns the former's count."""
    rng = random.Random(kills)
    mid_batch = 0
    for kill in range(kills):
        before = accounted(database_url)
        worker = start_worker(env, log)
        try:
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.2, 2.0))  # while it starts, joins the group or seeks
            else:
                # Once this life has committed, at a random instant: mostly mid-batch.
                wait_for(
                    partial(progressed, database_url, before),
                    60,
                    "the restarted worker's first commit",
                    [worker],
                )
                time.sleep(rng.uniform(0.0, 0.25))
                mid_batch += 1
        finally:
            worker.kill()
            worker.wait()
        assert worker.returncode == -signal.SIGKILL, log.read_text()[-3000:]
        done = accounted(database_url)
        assert done < total, f"the stream ended after {kill + 1} of {kills} kills: make it longer"
    return mid_batch


def stored_events(context: Any) -> list[Any]:
    events: list[Any] = []
    position = 0
    while page := context.ledger.store.select_notifications(
        position, 5000, inclusive_of_start=False
    ):
        events.extend(context.ledger.mapper.to_domain_event(n) for n in page)
        position = page[-1].id
    return events


def test_a_second_worker_joining_and_leaving_mid_stream_changes_nothing(
    kafka_bootstrap: str, postgres_url: str, topics: Topics, published: Published, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, postgres_url, topics)
    env["LOYALTY_BATCH_MAX"] = "10"  # slower: the stream must last well past the join
    total = len(published.records)
    first = start_worker(env, tmp_path / "first.log")
    second = None
    try:
        wait_for(
            lambda: True if accounted(postgres_url) > 0 else None, 60, "first commits", [first]
        )
        second_log = tmp_path / "second.log"
        second = start_worker(env, second_log)
        assigned = wait_for(
            lambda: partitions_assigned(second_log) or None,
            60,
            "the second worker's share of the partitions",
            [first, second],
        )
        joined_at = accounted(postgres_url)
        print(f"the second worker joined after {joined_at} of {total} messages")
        assert joined_at + 1000 < total, "the stream nearly ended before the second worker joined"
        wait_for(
            lambda: True if accounted(postgres_url) > joined_at + 1000 else None,
            120,
            "both workers taking messages in",
            [first, second],
        )
        stop(second)
        settle(postgres_url, total, [first])
    finally:
        for worker in (second, first):
            if worker is not None:
                stop(worker)
    assert assigned, "the second worker was given partitions"
    assert_same_as_clean_run(postgres_url, published)


def partitions_assigned(log: Path) -> list[tuple[str, int]]:
    """The partitions the worker logged as assigned to it, at its latest assignment."""
    marker = "services.ingest.consumer INFO assigned ["
    lines = [line for line in log.read_text().splitlines() if marker in line]
    if not lines:
        return []
    latest = lines[-1].split(marker, 1)[1]
    return [(topic, int(p)) for topic, p in re.findall(r"\('([^']+)', (\d+)\)", latest)]


def test_a_batch_read_again_after_a_crash_before_the_kafka_commit_changes_nothing(
    postgres_url: str, topics: Topics, published: Published
) -> None:
    service = build(Settings(database_url=postgres_url, topics=topics)).ingest_service()
    messages = [
        InputMessage(r.topic, r.partition, r.offset, r.key, r.value) for r in published.records
    ]
    for start in range(0, len(messages), 400):
        service.commit(*service.decode(messages[start : start + 400]))
    # Kafka never heard of those commits: a restarted worker is handed everything again
    restarted = build(Settings(database_url=postgres_url, topics=topics)).ingest_service()
    report = restarted.commit(*restarted.decode(messages))
    assert report.skipped == len(messages)
    assert report.outcomes == {}
    assert_same_as_clean_run(postgres_url, published)
