"""`make bench`: the pipeline's throughput, measured honestly against a baseline in one run.

Publishes a generated stream to fresh topics, then measures, each from first to last event:
  ingest       the real `loyalty worker`: Kafka to committed domain events in PostgreSQL
  pipe         the ceiling: plain aiokafka consuming the same messages and COPYing as many
               rows into PostgreSQL, offsets in the same transaction
  projections  catch-up rate of every projection from an empty read side
  replay       `loyalty replay projections`, its own figure (start-up excluded)
and the worker's peak RSS. Figures go to bench-results/ as JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer

from services.bootstrap import build
from services.config import Settings, Topics
from services.demo import generate
from services.publish import publish_lines
from services.store.urls import DatabaseUrl
from tests.conftest import CREATED, create_topics, drop_databases, new_database
from tests.infra import start_services

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results"
PY_SPY = [
    str(Path(sys.executable).with_name("py-spy")),
    "record",
    "--format",
    "raw",
    "--rate",
    "200",
    "--nonblocking",
    "--gil",  # only the thread that holds the GIL: waiting for it is not work
]


def interpreter() -> str:
    """The interpreter behind the virtualenv: the figures are its build's as well."""
    return os.path.realpath(sys.executable)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def stream(events: int, seed: int = 42) -> list[bytes]:
    # ~7 events per shopper: tens of thousands of members for 200,000 events
    lines = [orjson.dumps(e) for e in generate(events // 7 + 1, seed, datetime.now(UTC), days=700)]
    return lines[:events]


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(database_url: str) -> None:
    """Each phase starts on a checkpointed server: otherwise it pays for writing out the
    dirty pages the phase before it left (hundreds of MB after an ingest)."""
    try:
        with psycopg.connect(DatabaseUrl.parse(database_url).conninfo(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        log("no privilege to CHECKPOINT: phases may pay for the writes of the one before")


def process_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LOYALTY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LOYALTY_DATABASE_URL": settings.database_url,
        "LOYALTY_CONSUMER_GROUP": settings.consumer_group,
        "LOYALTY_DAILY_SWEEP": "off",
        "LOYALTY_METRICS_PORT": "off",
        **settings.topics.env(),
    }


def measure_ingest(
    settings: Settings,
    total: int,
    timeline: list[tuple[float, int]],
    profile: bool = False,
    workers: int = 1,
) -> tuple[float, float, float]:
    """Events/s from the first commit to the last, the workers' peak RSS (the largest), and
    their CPU share (the mean): `workers` processes in one consumer group."""
    env = process_env(settings)
    ledger = build(settings).ledger
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker"],
            env=env,
            stdout=(RESULTS / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(workers)
    ]
    worker = processes[0]
    # py-spy samples the worker from outside: the figures stay the worker's own.
    sampler = (
        subprocess.Popen(
            [*PY_SPY, "--pid", str(worker.pid), "--output", str(RESULTS / "ingest-profile.txt")],
            stdout=subprocess.DEVNULL,
            stderr=(RESULTS / "py-spy.log").open("wb"),
        )
        if profile
        else None
    )
    first = last = None
    first_done = 0
    first_cpu = 0.0
    busy = 0.0
    rss = 0.0
    try:
        while True:
            done = sum(ledger.message_counts().values())
            now = time.monotonic()
            rss = max([rss, *(peak_rss_mb(p.pid) for p in processes)])
            if done and first is None:
                first, first_done = now, done
                first_cpu = sum(cpu_seconds(p.pid) for p in processes)
            if first is not None:
                timeline.append((now - first, done))
            if done >= total and first is not None:
                last = now
                used = sum(cpu_seconds(p.pid) for p in processes) - first_cpu
                busy = used / max(now - first, 1e-6) / workers
                log(f"ingest: each worker was on a CPU {busy:.0%} of the time")
                break
            for p in processes:
                if p.poll() is not None:
                    raise RuntimeError(f"a worker exited with {p.returncode}; see its log")
            time.sleep(0.1)
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=30)
    assert first is not None and last is not None
    # From the first commit seen to the last: the messages of that first commit are
    # not counted, as their time is not either.
    elapsed = max(last - first, 1e-6)
    return (total - first_done) / elapsed, rss, busy


async def measure_pipe(settings: Settings, database_url: str, total: int) -> float:
    """The ceiling: consume the same messages, decode them, COPY as many rows, offsets alike."""
    url = DatabaseUrl.parse(database_url)
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE pipe_rows (event_id TEXT, member_id TEXT, body BYTEA, "
            "PRIMARY KEY (event_id, member_id))"
        )
        conn.execute(
            "CREATE TABLE pipe_offsets (topic TEXT, part INT, next BIGINT, "
            "PRIMARY KEY (topic, part))"
        )
    consumer = AIOKafkaConsumer(
        *settings.topics.inputs,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"pipe-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    done, first = 0, None
    with psycopg.connect(url.conninfo()) as conn:
        try:
            while done < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                if not batch:
                    continue
                first = first or time.monotonic()
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy("COPY pipe_rows (event_id, member_id, body) FROM STDIN") as copy:
                        for rows in batch.values():
                            for r in rows:
                                body = orjson.loads(r.value)
                                copy.write_row(
                                    (
                                        f"{body['event_id']}:{r.offset}",
                                        body.get("member_id") or body.get("referee_id"),
                                        r.value,
                                    )
                                )
                    cur.executemany(
                        "INSERT INTO pipe_offsets VALUES (%s, %s, %s) ON CONFLICT (topic, part) "
                        "DO UPDATE SET next = excluded.next",
                        [
                            (tp.topic, tp.partition, rows[-1].offset + 1)
                            for tp, rows in batch.items()
                        ],
                    )
                done += sum(len(rows) for rows in batch.values())
        finally:
            await consumer.stop()
    assert first is not None
    return total / (time.monotonic() - first)


def measure_projections(settings: Settings) -> tuple[float, int]:
    context = build(settings)
    runner = context.projection_runner()
    runner.reset()
    stored = context.ledger.last_position()
    started = time.monotonic()
    runner.catch_up()  # every projection from the first event: stored events each
    return stored / (time.monotonic() - started), stored


def measure_projectors(settings: Settings, projectors: int) -> tuple[float, int]:
    """Catch-up from an empty read side by `projectors` processes of `loyalty projector`
    (they share the work by the projections' locks): stored events/s."""
    context = build(settings)
    runner = context.projection_runner()
    runner.reset()
    stored = context.ledger.last_position()
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "projector"],
            env=process_env(settings),
            stdout=(RESULTS / f"projector-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(projectors)
    ]
    try:
        while min(runner.positions().values()) < stored:
            for p in processes:
                if p.poll() is not None:
                    raise RuntimeError(f"a projector exited with {p.returncode}; see its log")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=30)
        runner.close()
    return stored / elapsed, stored


def measure_replay(settings: Settings) -> float:
    """The command's own figure: events over the time from its first read of the store
    to its last write (interpreter start-up and imports are not replaying)."""
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": settings.database_url,
        "LOYALTY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", "projections"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    found = re.search(r"replay projections: (\d+) events, ([\d,]+) events/s", done.stdout)
    if found is None:
        raise RuntimeError(f"replay projections printed no rate: {done.stdout!r}")
    events, rate = int(found[1]), float(found[2].replace(",", ""))
    log(f"replay: {events:,} events, {rate:,.0f} events/s ({events / wall:,.0f} with start-up)")
    return rate


LONG_MEMBER_EVENTS = 10_000


def long_member_history(n: int = LONG_MEMBER_EVENTS) -> list[dict[str, Any]]:
    """One member's n input events over ~3 years: purchases, refunds, shares, reviews,
    redemptions (a member with thousands of events: the case snapshots are for)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    for i in range(n):
        at = (start + timedelta(hours=2.6 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        base = {"event_id": f"long-{i}", "member_id": "long", "occurred_at": at}
        kind = i % 10
        if kind < 5:
            events.append(
                {
                    **base,
                    "type": "purchase",
                    "order_id": f"o{i}",
                    "amount": f"{10 + i % 90}.50",
                    "currency": "EUR",
                }
            )
        elif kind == 5:
            events.append({**base, "type": "refund", "order_id": f"o{i - 1}", "amount": "5.00"})
        elif kind < 8:
            events.append({**base, "type": "social_share", "network": "x"})
        elif kind == 8:
            events.append({**base, "type": "review", "product_id": f"p{i}", "rating": 5})
        else:
            events.append({**base, "type": "redemption", "points": 50, "reward": "mug"})
    return events


def measure_as_of(settings: Settings) -> dict[str, float]:
    """GET /members/{id}?as_of=T for a member with 10,000 events, through HTTP, at 40
    instants over its history and beyond: median and 95th percentile, in ms."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.api.app import create_app
    from tests.integration.harness import commit_events

    context = build(settings)
    history = long_member_history()
    commit_events(context, history, batch=500)
    stored = context.ledger.member("long")
    assert stored is not None
    first = datetime.fromisoformat(history[0]["occurred_at"])
    last = datetime.fromisoformat(history[-1]["occurred_at"])
    instants = [first + (last - first) * (k / 35) for k in range(36)]
    instants += [last + timedelta(days=d) for d in (1, 30, 200, 400)]

    async def timed() -> list[float]:
        app = create_app(context, context.database(), context.projection_runner())
        took = []
        async with TestClient(TestServer(app)) as client:
            for at in instants:
                params = {"as_of": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
                began = time.perf_counter()
                response = await client.get("/members/long", params=params)
                await response.read()
                took.append((time.perf_counter() - began) * 1000)
                assert response.status == 200, await response.text()
        return took

    asyncio.run(timed())  # warm: connections, caches
    took = sorted(asyncio.run(timed()))
    median, p95 = took[len(took) // 2], took[int(len(took) * 0.95)]
    log(
        f"as-of: a member with {len(history):,} input events ({stored.version:,} stored): "
        f"median {median:.1f} ms, p95 {p95:.1f} ms over {len(took)} instants"
    )
    return {"as_of_median_ms": round(median, 1), "as_of_p95_ms": round(p95, 1)}


ANALYTICS = (
    "/metrics/tiers",
    "/metrics/churn?months=12",
    "/metrics/liability",
    "/metrics/liability/history?months=12",
    "/metrics/value",
    "/metrics/cohorts?months=12",
    "/segments",
    "/segments/champions/members?limit=100",
    "/customers?limit=100",
    "/metrics/campaigns",
)


def measure_analytics(settings: Settings) -> dict[str, float]:
    """Each analytics endpoint over the bench's read models, through HTTP: seconds, the
    best of two (the first warms the server's caches)."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.api.app import create_app

    context = build(settings)

    async def timed() -> dict[str, float]:
        app = create_app(context, context.database(), context.projection_runner())
        took: dict[str, float] = {}
        async with TestClient(TestServer(app)) as client:
            for path in ANALYTICS:
                best = float("inf")
                for _ in range(2):
                    began = time.perf_counter()
                    response = await client.get(path)
                    await response.read()
                    assert response.status == 200, (path, await response.text())
                    best = min(best, time.perf_counter() - began)
                took[path] = round(best, 3)
        return took

    took = asyncio.run(timed())
    for path, seconds in took.items():
        log(f"analytics: {path} {seconds * 1000:,.0f} ms")
    return took


def summarise_profile(path: Path, top: int = 25) -> str:
    """Self and total time per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    lines = [f"{samples} samples; self% total%  function (file:line)"]
    for frame, n in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * n / samples:5.1f} {100 * total[frame] / samples:6.1f}  {frame}")
    return "\n".join(lines)


def plot(timeline: list[tuple[float, int]], figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Commits land every few tenths of a second: rates over whole seconds read better.
    points = [timeline[0]] if timeline else []
    for t, n in timeline[1:]:
        if t - points[-1][0] >= 1.0:
            points.append((t, n))
    times = [t for t, _ in points]
    rates = [0.0] + [(b - a) / max(tb - ta, 1e-6) for (ta, a), (tb, b) in pairwise(points)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(times, rates, label="ingest (events/s, per second)")
    ax.axhline(figures["pipe_events_per_s"], color="grey", linestyle="--", label="pipe baseline")
    ax.axhline(10_000, color="red", linestyle=":", label="target 10,000")
    ax.set_xlabel("seconds since the first committed event")
    ax.set_ylabel("events/s")
    ax.set_title(f"loyalty ingest, {figures['events']:,} events")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--profile", action="store_true", help="sample the worker with py-spy while it ingests"
    )
    parser.add_argument(
        "--ingest-only", action="store_true", help="stop after the ingest figure (for profiling)"
    )
    parser.add_argument(
        "--keep-stores", action="store_true", help="leave the bench's databases for a look"
    )
    parser.add_argument(
        "--as-of-only", action="store_true", help="only the as-of figure (a 10,000-event member)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (one consumer group), and as many projector processes",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    services = start_services()
    try:
        suffix = uuid.uuid4().hex[:6]
        topics = Topics.prefixed(f"bench{suffix}")
        asyncio.run(create_topics(services.kafka_bootstrap, topics))
        settings = Settings(
            kafka_bootstrap=services.kafka_bootstrap,
            database_url=new_database(services),
            topics=topics,
            consumer_group=f"bench-{suffix}",
            daily_sweep=False,
        )
        if args.as_of_only:
            measure_as_of(replace(settings, database_url=new_database(services)))
            return 0
        # Every figure is the interpreter's as much as the code's: an unoptimised build
        # (pyenv's default) ran the worker ~12% slower than a PGO and LTO one.
        log(f"interpreter: Python {platform.python_version()}, {interpreter()}")
        lines = stream(args.events)
        log(f"publishing {len(lines):,} events")
        asyncio.run(publish_lines(lines, services.kafka_bootstrap, topics))
        timeline: list[tuple[float, int]] = []
        log("ingest: the loyalty worker, Kafka to committed domain events")
        settle(settings.database_url)
        ingest, rss, busy = measure_ingest(
            settings, len(lines), timeline, args.profile, args.workers
        )
        # Messages per CPU-second of the workers: what a core of theirs does, whatever
        # else the machine ran meanwhile (Kafka, PostgreSQL, other tenants' steal).
        per_core = ingest / max(busy * args.workers, 1e-6)
        log(
            f"ingest {ingest:,.0f} events/s ({per_core:,.0f} per worker CPU-second), "
            f"worker peak rss {rss:,.0f} MB"
        )
        if args.profile:
            print(summarise_profile(RESULTS / "ingest-profile.txt"), file=sys.stderr)
        if args.ingest_only:
            return 0
        log("pipe baseline")
        settle(settings.database_url)
        pipe = asyncio.run(measure_pipe(settings, new_database(services), len(lines)))
        log(f"pipe {pipe:,.0f} events/s; projections")
        settle(settings.database_url)
        projections, stored = (
            measure_projections(settings)
            if args.workers == 1
            else measure_projectors(settings, args.workers)
        )
        log(f"projections {projections:,.0f} events/s over {stored:,} stored events; replay")
        settle(settings.database_url)
        replay = measure_replay(replace(settings))
        queries = measure_analytics(settings)
        heaviest = max(queries, key=queries.__getitem__)
        as_of = measure_as_of(replace(settings, database_url=new_database(services)))
        figures = {
            "events": len(lines),
            "workers": args.workers,
            "stored_events": stored,
            "ingest_events_per_s": round(ingest),
            "pipe_events_per_s": round(pipe),
            "ratio": round(ingest / pipe, 3),
            "ingest_per_cpu_second": round(per_core),
            "projections_events_per_s": round(projections),
            "replay_events_per_s": round(replay),
            "worker_peak_rss_mb": round(rss),
            "worker_cpu_share": round(busy, 2),
            **as_of,
            "analytics_seconds": queries,
            "heaviest_query": heaviest,
            "heaviest_query_seconds": queries[heaviest],
            "python": f"{platform.python_version()} {interpreter()}",
            "at": datetime.now(UTC).isoformat(),
        }
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"bench-{stamp}.json").write_text(
            json.dumps({**figures, "timeline": timeline}, indent=2)
        )
        plot(timeline, figures, RESULTS / f"bench-{stamp}.png")
        log(f"figures in {RESULTS}/bench-{stamp}.json and .png")
        print(
            f"bench: ingest {figures['ingest_events_per_s']} events/s "
            f"({figures['ingest_per_cpu_second']} per worker CPU-second), pipe "
            f"{figures['pipe_events_per_s']} events/s, ratio {figures['ratio']}, projections "
            f"{figures['projections_events_per_s']} events/s, replay "
            f"{figures['replay_events_per_s']} events/s, "
            f"worker rss {figures['worker_peak_rss_mb']} MB, "
            f"as-of {figures['as_of_median_ms']} ms (p95 {figures['as_of_p95_ms']} ms), "
            f"heaviest query {heaviest} {queries[heaviest]} s"
        )
        return 0
    finally:
        # Its stores (~1.5 GB at a million events) would otherwise stay on the server.
        if args.keep_stores:
            log(f"stores kept: {', '.join(CREATED)}")
        else:
            drop_databases(CREATED)
        services.stop()


if __name__ == "__main__":
    raise SystemExit(main())
