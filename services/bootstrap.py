"""The composition root: the one place that reads settings and builds clients.

Nothing connects at import time; each entry point calls one of these builders.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        tiers = [tier.name for tier in self.program.tiers]
        runner = ProjectionRunner(
            self.ledger, self.database, default_projections(tiers), self.settings.projection_page
        )
        runner.setup()
        return runner

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


def build(settings: Settings | None = None) -> Context:
    REGISTRY.check()  # an incomplete input type stops start-up, never a message
    settings = settings or Settings.from_env()
    program = load_program(settings.program_path)
    return Context(settings=settings, program=program, ledger=Ledger.open(settings.database_url))
