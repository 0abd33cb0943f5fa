"""The composition root: the one place that reads settings and builds clients.

Nothing connects at import time; each entry point calls one of these builders.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.sharedctypes import Synchronized

from projections.base import Projection
from projections.runner import ProjectionRunner, default_projections
from services.config import Settings
from services.ingest.consumer import IngestLoop
from services.ingest.service import IngestService
from services.inputs import REGISTRY
from services.program import Program
from services.program_file import load_program
from services.relay import RELAY_TRACKING_NAME, MemberEventRelay
from services.store.database import Database, connect
from services.store.leadership import leadership
from services.store.ledger import Ledger
from services.store.urls import DatabaseUrl
from services.validation import Decoder


@dataclass
class Context:
    settings: Settings
    program: Program
    ledger: Ledger

    def ingest_service(self) -> IngestService:
        decoder = Decoder(self.program, self.settings.topics, REGISTRY)
        return IngestService(self.ledger, self.program, decoder, REGISTRY)

    def ingest_loop(self) -> IngestLoop:
        settings = self.settings
        return IngestLoop(
            bootstrap=settings.kafka_bootstrap,
            group=settings.consumer_group,
            topics=settings.topics.inputs,
            dead_letter_topic=settings.topics.dead_letters,
            ledger=self.ledger,
            service=self.ingest_service(),
            batch_max=settings.batch_max_messages,
            batch_seconds=settings.batch_max_seconds,
            security=settings.kafka_security,
        )

    def projection_runner(self) -> ProjectionRunner:
        """Every read model, following this store, with its tables created."""
        settings = self.settings
        runner = ProjectionRunner(
            self.ledger,
            self.database,
            self.projections(),
            settings.projection_page,
            # SQLite takes one writer at a time: processes would only queue for it.
            processes=settings.projection_processes if _is_postgres(settings) else 1,
            apart=partial(catch_up_apart, settings),
            processes_from=settings.projection_processes_from,
            # SQLite takes one writer at a time: a transaction held open across pages
            # would keep the other projections from writing.
            hold_rows=settings.projection_hold_rows if _is_postgres(settings) else 0,
        )
        runner.setup()
        return runner

    def projections(self, names: Sequence[str] | None = None) -> list[Projection]:
        """Every read model, or those named."""
        every = default_projections([tier.name for tier in self.program.tiers])
        return every if names is None else [p for p in every if p.name in names]

    def database(self) -> Database:
        return connect(self.settings.database_url)

    def relay(self) -> MemberEventRelay:
        return MemberEventRelay(
            ledger=self.ledger,
            bootstrap=self.settings.kafka_bootstrap,
            topic=self.settings.topics.member_events,
            leadership=leadership(self.settings.database_url, RELAY_TRACKING_NAME),
            security=self.settings.kafka_security,
        )


def catch_up_apart(
    settings: Settings,
    names: tuple[str, ...],
    page: int,
    indexes_due: bool,
    parent: int,
    applied: Synchronized[int],
) -> None:
    """A process's share of a catch-up shared among processes (ProjectionRunner): the
    named projections, then their read indexes if due, until the log's end or until the
    process that started this one is gone (a replay killed mid-way must not leave
    helpers rebuilding behind the next)."""
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group: the parent decides when to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = build(settings)
    # Neither `setup` (the tables are there, and their read indexes wait for the end of
    # the load) nor processes of its own.
    runner = ProjectionRunner(
        context.ledger,
        context.database,
        context.projections(names),
        page,
        hold_rows=settings.projection_hold_rows,
    )
    runner.indexes_due = indexes_due

    def report(position: int, _: int) -> None:
        applied.value = position

    try:
        runner.catch_up(report, should_stop=lambda: os.getppid() != parent)
    finally:
        runner.close()


def _is_postgres(settings: Settings) -> bool:
    return DatabaseUrl.parse(settings.database_url).is_postgres


def build(settings: Settings | None = None) -> Context:
    REGISTRY.check()  # an incomplete input type stops start-up, never a message
    settings = settings or Settings.from_env()
    program = load_program(settings.program_path)
    return Context(settings=settings, program=program, ledger=Ledger.open(settings.database_url))
