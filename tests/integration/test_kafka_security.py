"""Every Kafka client of the ledger over TLS with SASL (PLAIN and SCRAM-SHA-512), and the one
line an operator reads when the broker refuses a password or the client refuses the
broker's certificate (issue 18; README, "Kafka security").

A broker of its own (deploy/kafka/kafka.sh on free ports): a PLAINTEXT listener for the
controller and the inter-broker traffic, and a SASL_SSL one whose certificate, for
127.0.0.1 and localhost, is signed by a CA this module makes; the clients only ever
connect to the SASL_SSL one.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import SaslAuthenticationFailed
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services import member_events
from services.bootstrap import build
from services.config import KafkaSecurity, Settings, Topics
from services.errors import OperatorError
from services.faults import Fault, fault_of
from services.kafka_clients import refusal
from services.publish import publish_lines
from services.replay import _read
from services.status import gather_status
from services.topics import ensure_topics, topic_configs
from tests.infra import ROOT, _free_port, _script
from tests.integration.harness import context_for, ingesting, wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD, WRONG = "alice", "alice-secret", "not-alices-secret"


@dataclass
class SecureBroker:
    secure_port: int
    ca: Path  # signed the broker's certificate
    other_ca: Path  # did not

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.secure_port}"

    def security(
        self, mechanism: str = "SCRAM-SHA-512", password: str = PASSWORD, ca: Path | None = None
    ) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=USER,
            sasl_password=password,
            ssl_cafile=str(ca or self.ca),
        )

    def env(self, security: KafkaSecurity, database_url: str, topics: Topics) -> dict[str, str]:
        """A `loyalty` process's environment with these settings, and nothing of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
        return {
            **env,
            "LOYALTY_KAFKA_BOOTSTRAP": self.bootstrap,
            "LOYALTY_DATABASE_URL": database_url,
            "LOYALTY_DAILY_SWEEP": "off",
            "LOYALTY_METRICS_PORT": "off",
            "LOYALTY_KAFKA_SECURITY_PROTOCOL": security.protocol,
            "LOYALTY_KAFKA_SASL_MECHANISM": security.sasl_mechanism,
            "LOYALTY_KAFKA_SASL_USERNAME": security.sasl_username or "",
            "LOYALTY_KAFKA_SASL_PASSWORD": security.sasl_password or "",
            "LOYALTY_KAFKA_SSL_CAFILE": security.ssl_cafile or "",
            **topics.env(),
        }


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None = None,
) -> x509.Certificate:
    """A CA's own certificate (no issuer), or a server's for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    return builder.sign(signer, hashes.SHA256())


def _make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """(the broker's PEM keystore, the CA that signed it, a CA that did not)."""
    pem = serialization.Encoding.PEM
    ca_key, other_key, server_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)
    )
    ca = _certificate("loyalty test CA", ca_key)
    server = _certificate("localhost", server_key, (ca.subject, ca_key))
    keystore, ca_file, other_file = folder / "server.pem", folder / "ca.pem", folder / "other.pem"
    # Kafka reads a PEM keystore as an unencrypted PKCS#8 key and its certificate chain.
    keystore.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + server.public_bytes(pem)
    )
    ca_file.write_bytes(ca.public_bytes(pem))
    other_file.write_bytes(_certificate("some other CA", other_key).public_bytes(pem))
    return keystore, ca_file, other_file


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureBroker]:
    (ROOT / ".local").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="kafka-security-", dir=ROOT / ".local"))
    tls = home / "tls"
    tls.mkdir()
    keystore, ca, other = _make_tls(tls)
    port, secure_port = _free_port(), _free_port()
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(_free_port()),
        "KAFKA_HOME": str(home),
        "KAFKA_EXTRA_LISTENERS": f"SASL_SSL://127.0.0.1:{secure_port}",
        "KAFKA_EXTRA_PROTOCOL_MAP": "SASL_SSL:SASL_SSL",
        "KAFKA_SCRAM_USERS": f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
        "KAFKA_EXTRA_CONFIG": "\n".join(
            [
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "listener.name.sasl_ssl.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{USER}="{PASSWORD}";',
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
        ),
    }
    try:
        _script("deploy/kafka/kafka.sh", "start", str(port), env=env)
        yield SecureBroker(secure_port, ca, other)
    finally:
        try:
            _script("deploy/kafka/kafka.sh", "stop", env=env)
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _purchase(member: str, event_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "purchase",
            "occurred_at": "2026-03-01T12:00:00Z",
            "member_id": member,
            "order_id": f"o-{event_id}",
            "amount": "42.00",
            "currency": "EUR",
        }
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_every_client_works_over_sasl_ssl(
    broker: SecureBroker, sqlite_url: str, mechanism: str
) -> None:
    security, bootstrap = broker.security(mechanism), broker.bootstrap
    topics = Topics.prefixed(f"s{uuid.uuid4().hex[:8]}")

    # `loyalty topics`: the admin client creates them, with their settings.
    created = await ensure_topics(bootstrap, topics, 2, security=security)
    assert sorted(created) == sorted(topic_configs(topics))

    # `loyalty publish`: the producer.
    report = await publish_lines([_purchase("alice", "sec-1")], bootstrap, topics, security)
    assert report.sent == 1

    # The ingest loop: its start-up topic check (admin), its consumer and its producer.
    context = context_for(
        bootstrap, sqlite_url, topics, f"g-{uuid.uuid4().hex[:8]}", None, security
    )
    async with ingesting(context):
        await wait_until(
            lambda: context.ledger.message_counts().get((topics.purchases, "applied")) == 1,
            45,
            "the purchase taken in over SASL_SSL",
        )

    # `loyalty status`: the end offsets (admin and consumer); nothing left to read.
    status = await gather_status(context.ledger, {}, bootstrap, topics.inputs, security)
    assert "kafka_error" not in status
    assert status["inputs"][topics.purchases]["consumer_lag"] == 0
    assert status["inputs"][topics.purchases]["applied"] == 1

    # The relay's producer publishes the member's events ...
    relay = context.relay()
    await relay.start()
    try:
        published = await relay.pump()
    finally:
        await relay.stop()
    assert published == context.ledger.last_position() > 0

    # ... and `replay stream`'s reader reads them back.
    records: list[Any] = []
    await _read(
        bootstrap,
        (topics.member_events,),
        lambda batch, done, total: records.extend(batch),
        security,
    )
    assert len(records) == published
    assert {member_events.decode(r.value).member_id for r in records} == {"alice"}


def test_the_worker_with_its_faust_app_ingests_over_sasl_ssl(
    broker: SecureBroker, tmp_path: Path
) -> None:
    security = broker.security("SCRAM-SHA-512")
    topics = Topics.prefixed(f"w{uuid.uuid4().hex[:8]}")
    database_url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    asyncio.run(ensure_topics(broker.bootstrap, topics, 2, security=security))
    store = build(Settings(database_url=database_url))
    env = broker.env(security, database_url, topics)
    env["LOYALTY_CONSUMER_GROUP"] = f"g-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        asyncio.run(publish_lines([_purchase("bob", "sec-w1")], broker.bootstrap, topics, security))

        async def applied() -> None:
            await wait_until(
                lambda: (
                    worker.poll() is not None
                    or store.ledger.message_counts().get((topics.purchases, "applied")) == 1
                ),
                60,
                "the worker to take the purchase in",
            )

        asyncio.run(applied())
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        store.ledger.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _loyalty(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with an operator's error: exit 2, no traceback, one `loyalty:`
    line (the rest of stderr is the log)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("loyalty: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_wrong_password_stops_each_command_with_one_line(
    broker: SecureBroker, tmp_path: Path
) -> None:
    topics = Topics.prefixed(f"p{uuid.uuid4().hex[:8]}")
    env = broker.env(broker.security(password=WRONG), f"sqlite:///{tmp_path}/l.sqlite3", topics)
    events = tmp_path / "events.jsonl"
    events.write_bytes(_purchase("carol", "sec-p1") + b"\n")
    refused = (
        f"loyalty: Kafka at {broker.bootstrap} refused the credentials "
        f"(SASL SCRAM-SHA-512 user '{USER}'): "
    )
    for args in (["publish", str(events)], ["status"], ["topics"], ["worker"]):
        result = _loyalty(env, *args)
        line = _the_one_line(result)
        assert line.startswith(refused), line
        assert "authentication failed" in line.lower(), line
        assert WRONG not in result.stdout + result.stderr


def test_a_client_that_does_not_trust_the_brokers_ca_stops_with_one_line(
    broker: SecureBroker, tmp_path: Path
) -> None:
    topics = Topics.prefixed(f"c{uuid.uuid4().hex[:8]}")
    security = broker.security(ca=broker.other_ca)
    env = broker.env(security, f"sqlite:///{tmp_path}/l.sqlite3", topics)
    untrusted = (
        f"loyalty: Kafka at {broker.bootstrap} presented a TLS certificate this client does "
        f"not trust (trusted: {broker.other_ca}): "
    )
    for args in (["topics"], ["status"]):
        line = _the_one_line(_loyalty(env, *args))
        assert line.startswith(untrusted), line
        assert line.endswith("(LOYALTY_KAFKA_SSL_CAFILE)"), line


async def test_what_aiokafka_raises_is_an_operators_fault(broker: SecureBroker) -> None:
    """aiokafka's bootstrap says only "Unable to bootstrap"; the one connection behind the
    line raises the real causes, and both are the operator's to fix, never an outage."""
    wrong = await refusal(broker.security(password=WRONG), broker.bootstrap)
    assert isinstance(wrong, OperatorError)
    assert isinstance(wrong.__cause__, SaslAuthenticationFailed)
    assert fault_of(wrong.__cause__) is Fault.OPERATOR

    untrusted = await refusal(broker.security(ca=broker.other_ca), broker.bootstrap)
    assert isinstance(untrusted, OperatorError)
    assert fault_of(untrusted.__cause__ or untrusted) is Fault.OPERATOR
    assert type(untrusted.__cause__).__name__ == "SSLCertVerificationError"

    assert await refusal(broker.security(), broker.bootstrap) is None


def test_settings_from_the_environment_never_show_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = Settings.from_env(
        {
            "LOYALTY_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "LOYALTY_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "LOYALTY_KAFKA_SASL_USERNAME": USER,
            "LOYALTY_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "LOYALTY_KAFKA_SSL_CHECK_HOSTNAME": "off",
        }
    )
    security = settings.kafka_security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert security.sasl_password == "from-a-file"
    assert not security.ssl_check_hostname
    assert "from-a-file" not in repr(settings) and "sasl_password='***'" in repr(settings)
    assert Settings.from_env({}).kafka_security == KafkaSecurity()

    for env, says in [
        ({"LOYALTY_KAFKA_SECURITY_PROTOCOL": "TLS"}, "LOYALTY_KAFKA_SECURITY_PROTOCOL must be"),
        (
            {"LOYALTY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOYALTY_KAFKA_SASL_USERNAME": USER},
            "needs LOYALTY_KAFKA_SASL_USERNAME and LOYALTY_KAFKA_SASL_PASSWORD",
        ),
        ({"LOYALTY_KAFKA_SASL_USERNAME": USER}, "is PLAINTEXT: set it to SASL_SSL"),
        (
            {"LOYALTY_KAFKA_SECURITY_PROTOCOL": "SSL", "LOYALTY_KAFKA_SSL_CAFILE": "/nowhere"},
            "LOYALTY_KAFKA_SSL_CAFILE: cannot read /nowhere",
        ),
    ]:
        with pytest.raises(ValueError, match=says):
            Settings.from_env(env)
    # ... and a command says a bad one in one line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    line = _the_one_line(
        _loyalty({**env, "LOYALTY_KAFKA_SECURITY_PROTOCOL": "TLS"}, "publish", str(secret))
    )
    assert line.startswith("loyalty: LOYALTY_KAFKA_SECURITY_PROTOCOL must be one of"), line
