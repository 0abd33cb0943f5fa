"""Failures of the infrastructure, which are nobody's input: the broker or the store is
unreachable or failing. What was being done is retried once they are back, and never
blamed on a message."""

import eventsourcing.persistence
import psycopg
from aiokafka.errors import KafkaError

OUTAGES: tuple[type[BaseException], ...] = (
    KafkaError,
    OSError,
    psycopg.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)
