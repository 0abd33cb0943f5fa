"""`loyalty`: the one console script (README, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

from services import logs, telemetry
from services.bootstrap import Context, build
from services.config import Settings
from services.errors import OperatorError
from services.faults import Fault, backoff, fault_of, operator_error
from services.instants import parse_instant
from services.store.urls import mask_url


def _parse_time(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--as-of {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty", description="Event-sourced loyalty ledger")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run the ingest workers (faust) until stopped").set_defaults(
        func=_worker, follows=True
    )
    sub.add_parser(
        "projector", help="run the projection workers and the member-events relay until stopped"
    ).set_defaults(func=_projector, follows=True)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(func=_api, follows=True)
    publish = sub.add_parser("publish", help="send a JSON Lines file of events to their topics")
    publish.add_argument("file", type=Path)
    publish.set_defaults(func=_publish, needs_store=False)
    sweep = sub.add_parser("sweep", help="expiry and tier review of every member as of T")
    sweep.add_argument("--as-of", type=_parse_time, required=True, dest="as_of")
    sweep.set_defaults(func=_sweep)
    sub.add_parser(
        "status", help="store position, projection positions, consumer lag"
    ).set_defaults(func=_status)
    replay = sub.add_parser("replay", help="rebuild state").add_subparsers(
        dest="what", required=True
    )
    replay.add_parser(
        "projections", help="drop and rebuild every read model, with progress"
    ).set_defaults(func=_replay_projections)
    stream = replay.add_parser("stream", help="rebuild a fresh store from loyalty.member-events")
    stream.add_argument("--into", required=True, metavar="URL")
    stream.set_defaults(func=_replay_stream)
    reprocess = sub.add_parser(
        "reprocess", help="re-apply the input topics under the current program into a fresh store"
    )
    reprocess.add_argument("--into", required=True, metavar="URL")
    reprocess.add_argument("--show", type=int, default=50, help="members to list (default 50)")
    reprocess.set_defaults(func=_reprocess)
    digest = sub.add_parser("digest", help="SHA-256 over every member's ledger, as of T")
    digest.add_argument("--as-of", type=_parse_time, default=None, dest="as_of")
    digest.set_defaults(func=_digest)
    topics = sub.add_parser(
        "topics", help="create the ledger's Kafka topics that are missing, with their settings"
    )
    topics.add_argument("--partitions", type=int, default=4)
    topics.add_argument("--replication", type=int, default=1)
    topics.set_defaults(func=_topics, needs_store=False)
    demo = sub.add_parser("demo", help="write a generated demo stream as JSON Lines")
    demo.add_argument("file", type=Path)
    demo.add_argument("--members", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=_demo, needs_store=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        logs.configure(os.environ.get("LOYALTY_LOG_FORMAT"))
    except ValueError as exc:
        print(f"loyalty: {exc}", file=sys.stderr)
        return 2
    try:
        if not getattr(args, "needs_store", True):
            return int(args.func(args))
        context = _build(follows=getattr(args, "follows", False))
        return int(args.func(context, args))
    except OperatorError as exc:
        print(f"loyalty: {exc}", file=sys.stderr)
        return 2


def _build(follows: bool) -> Context:
    """The composition root's context. A process that follows the store until stopped
    waits for a store that is not up yet (a supervisor may start it first); a one-off
    command says at once that it cannot reach it."""
    attempt = 0
    while True:
        try:
            return build()
        except ValueError as exc:  # ProgramError, a bad URL or setting: one line
            raise OperatorError(str(exc)) from None
        except Exception as exc:
            fault = fault_of(exc)
            if fault is Fault.OPERATOR or (fault is Fault.OUTAGE and not follows):
                raise operator_error(exc, "opening the event store") from None
            if fault is not Fault.OUTAGE:
                raise
            attempt += 1
            delay = backoff(attempt)
            logging.getLogger("loyalty").error(
                "the event store is unavailable (%s); retrying in %.1fs", exc, delay
            )
            time.sleep(delay)


def _demo(args: argparse.Namespace) -> int:
    from services.demo import write_demo

    n = write_demo(args.file, members=args.members, seed=args.seed, now=datetime.now(UTC))
    print(f"demo: {n} events written to {args.file}")
    return 0


def _settings() -> Settings:
    """The settings of a command that opens no store (`build` says the others' bad ones)."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise OperatorError(str(exc)) from None


def _publish(args: argparse.Namespace) -> int:
    from services.publish import publish_file

    settings = _settings()
    report = publish_file(
        args.file, settings.kafka_bootstrap, settings.topics, settings.kafka_security
    )
    print(f"publish: {report.sent} events sent, {report.unroutable} lines without a known type")
    return 0 if report.unroutable == 0 else 1


def _topics(args: argparse.Namespace) -> int:
    from services.topics import check_dead_letter_room, ensure_topics, topic_configs

    settings = _settings()
    topics, security = settings.topics, settings.kafka_security

    async def create() -> list[str]:
        created = await ensure_topics(
            settings.kafka_bootstrap, topics, args.partitions, args.replication, security=security
        )
        await check_dead_letter_room(
            settings.kafka_bootstrap, topics.inputs, topics.dead_letters, security=security
        )
        return created

    created = asyncio.run(create())
    present = [name for name in topic_configs(topics) if name not in created]
    print(f"topics: created {', '.join(created) or 'none'}; present {', '.join(present) or 'none'}")
    return 0


def _worker(context: Context, args: argparse.Namespace) -> int:
    from services.ingest.worker import run_worker

    sys.argv = [sys.argv[0], "worker"]
    telemetry.serve("worker", context.settings.metrics_port, _metrics_host(context.settings))
    run_worker(context)
    return 0


def _sweep(context: Context, args: argparse.Namespace) -> int:
    from services.replay import Progress

    service = context.ingest_service()
    progress = Progress("sweep", unit="members")
    written = service.sweep(context.ledger.member_ids(), args.as_of, progress=progress)
    progress.close()
    print(f"sweep as of {args.as_of.isoformat()}: {written} events")
    return 0


def _replay_projections(context: Context, args: argparse.Namespace) -> int:
    from services.replay import replay_projections

    progress = replay_projections(context)
    print(f"replay projections: {progress.done} events, {progress.rate:,.0f} events/s")
    return 0


def _replay_stream(context: Context, args: argparse.Namespace) -> int:
    from services.digest import digest as ledger_digest
    from services.replay import replay_stream

    progress = replay_stream(context, args.into)
    rebuilt = build(replace(context.settings, database_url=args.into))
    live, copy = (ledger_digest(c.ledger, c.program) for c in (context, rebuilt))
    print(f"replay stream: {progress.done} messages into {mask_url(args.into)}")
    print(f"digest live    {live}\ndigest rebuilt {copy}")
    print("equal: the rebuilt store holds the same ledgers" if live == copy else "DIFFERENT")
    return 0 if live == copy else 1


def _reprocess(context: Context, args: argparse.Namespace) -> int:
    from services.replay import reprocess

    diff = reprocess(context, args.into)
    delta = sum(d.points_delta for d in diff.differences)
    print(
        f"reprocess: {diff.messages} input messages into {mask_url(args.into)}; "
        f"{len(diff.differences)} members differ from the live store, "
        f"points delta {delta:+d}"
    )
    for campaign_id, (reached, events) in sorted(diff.campaigns.items()):
        print(f"  campaign {campaign_id}: {events} events of {reached} members rewarded")
    for d in diff.differences[: args.show]:
        by = f"; campaigns {', '.join(d.campaigns)}" if d.campaigns else ""
        print(f"  {d.member_id}: {d.live} -> {d.reprocessed} ({d.points_delta:+d} points{by})")
    if len(diff.differences) > args.show:
        print(f"  ... and {len(diff.differences) - args.show} more")
    return 0


def _digest(context: Context, args: argparse.Namespace) -> int:
    from services.digest import digest as ledger_digest

    print(ledger_digest(context.ledger, context.program, args.as_of))
    return 0


def _status(context: Context, args: argparse.Namespace) -> int:
    from services.status import gather_status

    runner = context.projection_runner()
    status = asyncio.run(
        gather_status(
            context.ledger,
            runner.positions(),
            context.settings.kafka_bootstrap,
            context.settings.topics.inputs,
            context.settings.kafka_security,
        )
    )
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
    return 0


def _metrics_host(settings: Settings) -> str:
    return settings.metrics_host or settings.api_host


def _projector(context: Context, args: argparse.Namespace) -> int:
    telemetry.serve("projector", context.settings.metrics_port, _metrics_host(context.settings))
    asyncio.run(_follow_the_store(context))
    return 0


async def _follow_the_store(context: Context) -> None:
    """The store's followers: every projection, and the member-events relay. Should
    either fail (outages they wait out), the other is stopped and the process exits
    with the error, for its supervisor to restart it."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    runner = context.projection_runner()
    followers = [
        asyncio.create_task(context.relay().run(stopping)),
        asyncio.create_task(asyncio.to_thread(runner.run_forever, stopping.is_set)),
    ]
    logging.getLogger("loyalty.projector").info("projector following the event store")
    try:
        await asyncio.wait(followers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stopping.set()
        await asyncio.gather(*followers)


def _api(context: Context, args: argparse.Namespace) -> int:
    from aiohttp import web

    from services.api.app import create_app

    settings = context.settings
    host = settings.api_host
    if settings.api_token is None and host not in ("127.0.0.1", "localhost"):
        # Read models name members and their spending: without a token, only this host.
        logging.getLogger("loyalty.api").warning(
            "no LOYALTY_API_TOKEN: serving on 127.0.0.1 only, not %s", host
        )
        host = "127.0.0.1"
    elif settings.api_token is None:
        logging.getLogger("loyalty.api").info(
            "no LOYALTY_API_TOKEN: serving on 127.0.0.1 only; set one to serve other hosts"
        )
    telemetry.serve("api", settings.metrics_port, settings.metrics_host or host)
    runner = context.projection_runner()
    app = create_app(context, context.database(), runner)
    logging.getLogger("loyalty.api").info("serving http://%s:%d", host, settings.api_port)
    web.run_app(app, host=host, port=settings.api_port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
