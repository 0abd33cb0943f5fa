"""The composition root: the one place that reads settings and builds clients.

Nothing connects at import time; each entry point calls one of these builders.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.config import Settings
from services.ingest.service import IngestService
from services.program import Program, load_program
from services.store.ledger import Ledger
from services.validation import Decoder


@dataclass
class Context:
    settings: Settings
    program: Program
    ledger: Ledger

    def ingest_service(self) -> IngestService:
        decoder = Decoder(self.program, self.settings.topics.carried_types)
        return IngestService(self.ledger, self.program, decoder)


def build(settings: Settings | None = None) -> Context:
    settings = settings or Settings.from_env()
    program = load_program(settings.program_path)
    return Context(settings=settings, program=program, ledger=Ledger.open(settings.database_url))
