"""What every Kafka client of the ledger is made with to reach a broker that wants TLS or
SASL (README, "Kafka security"), and the one line an operator reads when the broker
refuses them.

aiokafka reports any failed bootstrap as a bare "Unable to bootstrap" connection error,
the real cause (a wrong password, an untrusted certificate) only in its log, and that
reads as an outage to be waited out. So a client that cannot bootstrap is followed by one
connection of our own to each bootstrap broker, which raises the real cause.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from services.config import KafkaSecurity
from services.errors import OperatorError
from services.faults import Fault, fault_of, operator_error

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

PLAINTEXT = KafkaSecurity()
PROBE_SECONDS = 10.0


class Startable(Protocol):
    async def start(self) -> None: ...


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """The keyword arguments every aiokafka client (producer, consumer, admin) takes."""
    security = security or PLAINTEXT
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.ssl:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


# One context per process and settings: the files are read once, and every client shares it.
@functools.lru_cache(maxsize=8)
def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=security.ssl_cafile, certfile=security.ssl_certfile, keyfile=security.ssl_keyfile
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise OperatorError(
            "cannot load the Kafka TLS files (LOYALTY_KAFKA_SSL_CAFILE, "
            f"LOYALTY_KAFKA_SSL_CERTFILE, LOYALTY_KAFKA_SSL_KEYFILE): {exc}"
        ) from exc
    context.check_hostname = security.ssl_check_hostname
    return context


def faust_credentials(security: KafkaSecurity | None = None) -> CredentialsT | None:
    """faust.App(broker_credentials=...): the same settings, for faust's own clients."""
    import faust  # the worker's only: the other commands start faster without it

    security = security or PLAINTEXT
    context = ssl_context(security) if security.ssl else None
    if security.sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


async def start(client: Startable, security: KafkaSecurity | None, bootstrap: str) -> None:
    """`client.start()`; a broker that refuses the credentials or the TLS handshake raises an
    OperatorError saying so, any other failure is aiokafka's own."""
    try:
        await client.start()
    except KafkaConnectionError:
        if (security or PLAINTEXT).protocol == "PLAINTEXT":
            raise  # nothing a broker could refuse: an outage, as before
        refused = await refusal(security, bootstrap)
        if refused is not None:
            raise refused from refused.__cause__
        raise


async def refusal(security: KafkaSecurity | None, bootstrap: str) -> OperatorError | None:
    """Why the bootstrap brokers refuse these settings, or None when one accepts them or
    none answers (an outage, not a setting)."""
    security = security or PLAINTEXT
    options = client_options(security)
    for host, port, _ in collect_hosts(bootstrap, randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(PROBE_SECONDS * 1000), **options),
                PROBE_SECONDS,
            )
        except Exception as exc:
            if fault_of(exc) is Fault.OPERATOR:
                error = explain(exc, security, f"{host}:{port}")
                error.__cause__ = exc
                return error
            continue
        conn.close()
        return None
    return None


async def check_access(security: KafkaSecurity | None, bootstrap: str) -> None:
    """Raises the OperatorError of a broker that refuses these settings; nothing otherwise."""
    refused = await refusal(security, bootstrap)
    if refused is not None:
        raise refused from refused.__cause__


def explain(exc: BaseException, security: KafkaSecurity, where: str) -> OperatorError:
    """One line: what the broker at `where` refused, and which setting it concerns."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = security.ssl_cafile or "the system's CAs"
        hint = (
            "LOYALTY_KAFKA_SSL_CHECK_HOSTNAME"
            if "hostname" in str(exc.verify_message).lower()
            else "LOYALTY_KAFKA_SSL_CAFILE"
        )
        return OperatorError(
            f"Kafka at {where} presented a TLS certificate this client does not trust "
            f"(trusted: {trusted}): {exc.verify_message} ({hint})"
        )
    if isinstance(exc, ssl.SSLError):
        return OperatorError(
            f"Kafka at {where} failed the TLS handshake ({security.protocol}): "
            f"{exc.reason or exc} (LOYALTY_KAFKA_SSL_*)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return OperatorError(
            f"Kafka at {where} does not offer SASL {security.sasl_mechanism} on this listener "
            "(LOYALTY_KAFKA_SASL_MECHANISM)"
        )
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        given = exc.args[0] if exc.args else None
        detail = given if isinstance(given, str) else "authentication failed"
        sasl = f"SASL {security.sasl_mechanism} user {security.sasl_username!r}"
        return OperatorError(f"Kafka at {where} refused the credentials ({sasl}): {detail}")
    return operator_error(exc, f"connecting to Kafka at {where}")
