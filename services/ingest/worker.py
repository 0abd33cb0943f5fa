"""`loyalty worker`: a faust application hosting the ingest loop and the daily sweep.

The member-events relay is not here: it follows the store from `loyalty projector`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import faust

from services import telemetry
from services.bootstrap import Context
from services.errors import OperatorError
from services.faults import Fault, backoff, fault_of
from services.ingest.consumer import HEARTBEAT_S, SESSION_TIMEOUT_S
from services.kafka_clients import check_access, faust_credentials

log = logging.getLogger(__name__)


def create_app(context: Context, stopped_by: list[OperatorError] | None = None) -> faust.App:
    settings = context.settings
    # faust's own consumer group must not be ours: our loop joins `loyalty-ledger`
    # with aiokafka's assignor, which faust's assignor would refuse to share a group with.
    app = faust.App(
        f"{settings.consumer_group}-worker",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings.kafka_security),
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=1,
        producer_acks=-1,
        # A crashed worker's place in the group is given up after the session timeout:
        # faust's default of 60 s kept a restarted worker waiting that long to start.
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_S,
        # faust keeps table state in a data directory (we keep none): not the working
        # directory, which may be a read-only image or a repository checkout.
        datadir=str(_state_root() / "{conf.name}"),
    )
    stopping = asyncio.Event()
    loop = context.ingest_loop()

    @app.task  # type: ignore[untyped-decorator]
    async def ingest() -> None:
        try:
            await loop.run(stopping)
        except OperatorError as exc:
            # Not a message's fault, and no retry will mend it: the worker stops, cleanly
            # (SIGTERM runs faust's own shutdown), and says why in one line.
            log.critical("stopping: %s", exc)
            if stopped_by is not None:
                stopped_by.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop(app: faust.App, **_: object) -> None:
        stopping.set()

    if settings.daily_sweep:

        @app.crontab("0 0 * * *", timezone=UTC, on_leader=True)
        async def daily_sweep() -> None:
            await sweep_until_done(context, datetime.now(UTC), stopping)

    return app


def midnight_sweep(context: Context, now: datetime) -> int:
    """Steps 1 and 2 for every member as of the last 00:00 UTC at or before `now`;
    returns the events written. Its own members, not the ingest loop's: the two run in
    different threads, and optimistic concurrency reconciles what both touch."""
    at = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sweeper = context.ingest_service()
    written = sweeper.sweep(context.ledger.member_ids(), at)
    log.info("sweep as of %s: %d events", at.isoformat(), written)
    return written


async def sweep_until_done(
    context: Context, now: datetime, stopping: asyncio.Event, attempts: int = 12
) -> int | None:
    """The midnight sweep, waiting out outages (a sweep as of the same instant may run
    again: what it did already, it finds done). A sweep that fails otherwise is logged,
    and the worker goes on ingesting: a crashed worker would not sweep either."""
    for attempt in range(1, attempts + 1):
        try:
            return await asyncio.to_thread(midnight_sweep, context, now)
        except Exception as exc:
            if fault_of(exc) is not Fault.OUTAGE:
                log.exception("the sweep as of %s failed; the next one is at midnight", now)
                return None
            telemetry.OUTAGE_RETRIES.labels("worker", "sweep").inc()
            delay = backoff(attempt, cap=300.0)
            log.error("the sweep as of %s paused (%s); retrying in %.0fs", now, exc, delay)
            try:
                await asyncio.wait_for(stopping.wait(), delay)
                return None
            except TimeoutError:
                continue
    log.error("the sweep as of %s gave up after %d attempts", now, attempts)
    return None


def _state_root() -> Path:
    root = Path(tempfile.gettempdir()) / "loyalty-faust"
    root.mkdir(exist_ok=True)  # faust creates only the last level
    return root


def run_worker(context: Context) -> None:
    # A worker keeps every active member in memory and allocates a few objects per
    # event: at the default thresholds the cyclic collector walked that heap so often it
    # cost a sixth of ingestion (make bench). Reference counting frees nearly all of it;
    # the collector now waits for 1,000,000 net allocations, and what start-up built is
    # frozen out of its walks. Nearly every object it walks survives (members' state), so
    # fewer, larger walks cost less: at a million events 100,000 made 46 young and 2
    # middle collections, 4.4-5.0 s of the worker's CPU; 1,000,000 a handful, ~1 s, each
    # pause under 0.6 s (heartbeats go every 2 s; the session lasts 6).
    gc.freeze()
    gc.set_threshold(1_000_000, 20, 10)
    settings = context.settings
    if settings.kafka_security.protocol != "PLAINTEXT":
        # faust's own clients would meet a refusal first, and retry it or die with a
        # traceback: a wrong password or certificate is said here, in one line. Its own
        # loop, not asyncio.run, which leaves none behind for faust's.
        checking = asyncio.new_event_loop()
        try:
            checking.run_until_complete(
                check_access(settings.kafka_security, settings.kafka_bootstrap)
            )
        finally:
            checking.close()
    stopped_by: list[OperatorError] = []
    app = create_app(context, stopped_by)
    # The CLI has set up logging (lines or JSON lines, LOYALTY_LOG_FORMAT): faust keeps it.
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
    # faust disables its terminal spinner only when it sets up logging itself; left on,
    # it writes cursor escapes into the log (and breaks LOYALTY_LOG_FORMAT=json lines).
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if stopped_by:
            raise stopped_by[0] from None
        raise
