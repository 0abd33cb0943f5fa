"""Errors an operator can fix, and failures of the infrastructure that are nobody's input."""

import eventsourcing.persistence
import psycopg
from aiokafka.errors import KafkaError


class OperatorError(ValueError):
    """A request or a setting that cannot be carried out as given."""


# The broker or the store is unreachable or failing: what was being done is retried
# once they are back, and never blamed on a message.
OUTAGES: tuple[type[BaseException], ...] = (
    KafkaError,
    OSError,
    psycopg.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)
