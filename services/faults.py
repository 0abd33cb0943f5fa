"""Whose fault a failure is: an outage's, an operator's, or the message's being processed.

The answer decides what a long-running process does with it:
- an **outage** (the broker or the store unreachable, restarting, read-only after a
  failover, a connection cut by the server) is nobody's input: what was being done is
  retried with backoff, for as long as it lasts, and never blamed on a message;
- an **operator's error** (a missing privilege, a wrong password, a missing table or
  topic, a topic too small for its messages) will not mend itself: the process stops
  with one line saying what to fix;
- anything else raised while processing a message is that **message**'s: it is
  narrowed down to the one message and dead-lettered with the reason.

PostgreSQL's SQLSTATE codes carry the distinction; eventsourcing wraps psycopg's errors
in its own (the original is the `__cause__`), so the chain is walked for one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from enum import StrEnum

import eventsourcing.persistence
import psycopg
from aiokafka import errors as kafka

from services.errors import OperatorError


class Contention(Exception):
    """Other writers kept winning the same members: the store's doing, not a message's."""


class Fault(StrEnum):
    OUTAGE = "outage"
    OPERATOR = "operator"
    MESSAGE = "message"


# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_OUTAGE_CLASSES = ("08", "53", "58")  # connection exception, insufficient resources, system
_OUTAGE_CODES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby, or a primary after a failover
        "25P03",  # idle_in_transaction_session_timeout
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "55006",  # object_in_use
        "57014",  # query_canceled (statement_timeout, or a cancel by an administrator)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting or recovering
        "57P05",  # idle_session_timeout
    }
)
# Authorization, catalog, access rules; and internal errors (XX: corrupted data or index),
# which need a person, not a retry or a dead letter.
_OPERATOR_CLASSES = ("28", "3D", "42", "0L", "0P", "3F", "XX")
_OPERATOR_CODES = frozenset({"57P04"})  # database_dropped

_KAFKA_OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.SaslAuthenticationFailed,
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.UnsupportedSaslMechanismError,
    kafka.KafkaConfigurationError,
    # Only dead letters and member events are produced: a topic too small for them is
    # a setting to change, and retrying would stall the stream behind it.
    kafka.MessageSizeTooLargeError,
    kafka.RecordTooLargeError,
    kafka.RecordListTooLargeError,
    kafka.InvalidTopicError,
    kafka.PolicyViolationError,
)


# A TLS handshake that fails on a certificate (one this client does not trust, one for
# another host, or the broker refusing the client's) is a setting to change; one cut short
# (ECONNRESET, EOF) is an outage like any other broken connection.
_TLS_OPERATOR_REASONS = ("CERTIFICATE", "UNKNOWN_CA")


def _tls_refused(exc: BaseException) -> bool:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    return isinstance(reason, str) and any(word in reason for word in _TLS_OPERATOR_REASONS)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def sqlstate(exc: BaseException) -> str | None:
    for link in _chain(exc):
        if isinstance(link, psycopg.Error) and link.sqlstate:
            return str(link.sqlstate)
    return None


def fault_of(exc: BaseException) -> Fault:
    if isinstance(exc, OperatorError):
        return Fault.OPERATOR
    if isinstance(exc, Contention):
        return Fault.OUTAGE
    code = sqlstate(exc)
    if code is not None:
        if code in _OUTAGE_CODES or code.startswith(_OUTAGE_CLASSES):
            return Fault.OUTAGE
        if code in _OPERATOR_CODES or code.startswith(_OPERATOR_CLASSES):
            return Fault.OPERATOR
        return Fault.MESSAGE  # data exceptions (22...), integrity (23...), limits (54...)
    for link in _chain(exc):
        if isinstance(link, _KAFKA_OPERATOR_ERRORS) or _tls_refused(link):
            return Fault.OPERATOR
        if isinstance(
            link,
            kafka.KafkaError
            | OSError
            | TimeoutError
            # No SQLSTATE: the connection failed or broke (psycopg_pool's PoolTimeout
            # is an OperationalError too).
            | psycopg.OperationalError
            | psycopg.InterfaceError
            | eventsourcing.persistence.OperationalError
            | eventsourcing.persistence.InterfaceError,
        ):
            return Fault.OUTAGE
    return Fault.MESSAGE


def is_outage(exc: BaseException) -> bool:
    return fault_of(exc) is Fault.OUTAGE


def operator_error(exc: BaseException, doing: str) -> OperatorError:
    """The one line an operator reads when a process stops: what failed, and where."""
    if isinstance(exc, OperatorError):
        return exc
    code = sqlstate(exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f" (SQLSTATE {code})" if code else f" ({type(exc).__name__})"
    return OperatorError(f"{doing}: {detail}{where}")


def backoff(attempt: int, cap: float = 30.0) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...) of something an outage stopped."""
    return float(min(cap, 0.5 * 2 ** min(attempt, 10)))
