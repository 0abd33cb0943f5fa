"""Settings read from the environment, once, at start-up (README, "Configuration")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///.local/loyalty.sqlite3"


# Input topics by setting (LOYALTY_TOPIC_<SETTING> names another): which input types each
# carries is the input registry's to say (services/inputs.py).
INPUT_TOPICS: dict[str, str] = {
    "purchases": "loyalty.purchases",
    "referrals": "loyalty.referrals",
    "social_shares": "loyalty.social-shares",
    "redemptions": "loyalty.redemptions",
    "members": "loyalty.members",
    "reviews": "loyalty.reviews",
}
OUTPUT_TOPICS: dict[str, str] = {
    "member_events": "loyalty.member-events",
    "dead_letters": "loyalty.dead-letters",
}
DEFAULT_TOPICS = {**INPUT_TOPICS, **OUTPUT_TOPICS}


@dataclass(frozen=True)
class Topics:
    """Every topic's name by its setting: `topics.purchases`, `topics.dead_letters`."""

    names: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))

    @classmethod
    def named(cls, **names: str) -> Topics:
        unknown = set(names) - set(DEFAULT_TOPICS)
        if unknown:
            raise ValueError(f"no such topic setting: {', '.join(sorted(unknown))}")
        return cls({**DEFAULT_TOPICS, **names})

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """Every topic under a prefix of its own: `<prefix>.purchases`, ... (tests, bench)."""
        return cls({s: f"{prefix}.{name.split('.', 1)[1]}" for s, name in DEFAULT_TOPICS.items()})

    def __getattr__(self, setting: str) -> str:
        try:
            return self.__dict__["names"][setting]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(setting) from None

    @property
    def member_events(self) -> str:
        return self.names["member_events"]

    @property
    def dead_letters(self) -> str:
        return self.names["dead_letters"]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.names[setting] for setting in INPUT_TOPICS)

    def setting_of(self, topic: str) -> str | None:
        return next((s for s, name in self.names.items() if name == topic), None)

    def env(self) -> dict[str, str]:
        """The environment that names these topics for another process."""
        return {f"LOYALTY_TOPIC_{s.upper()}": name for s, name in self.names.items()}


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of the ledger encrypts and authenticates (README, "Kafka
    security"); services/kafka_clients.py turns it into aiokafka's and faust's options."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None  # None: the system's CAs
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"LOYALTY_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"not {self.protocol!r}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"LOYALTY_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                f"not {self.sasl_mechanism!r}"
            )
        if self.sasl:
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(
                    f"LOYALTY_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                    "LOYALTY_KAFKA_SASL_USERNAME and LOYALTY_KAFKA_SASL_PASSWORD (or "
                    "LOYALTY_KAFKA_SASL_PASSWORD_FILE)"
                )
        elif self.sasl_username or self.sasl_password is not None:
            # Credentials given to a client that would not send them: a protocol forgotten.
            raise ValueError(
                f"Kafka SASL credentials are set but LOYALTY_KAFKA_SECURITY_PROTOCOL is "
                f"{self.protocol}: set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        files = {
            "LOYALTY_KAFKA_SSL_CAFILE": self.ssl_cafile,
            "LOYALTY_KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "LOYALTY_KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        given = [name for name, path in files.items() if path]
        if given and not self.ssl:
            raise ValueError(
                f"{', '.join(given)} set but LOYALTY_KAFKA_SECURITY_PROTOCOL is "
                f"{self.protocol}: set it to SSL or SASL_SSL"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("LOYALTY_KAFKA_SSL_KEYFILE needs LOYALTY_KAFKA_SSL_CERTFILE")
        for name in given:
            path = Path(files[name] or "")
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ValueError(f"{name}: cannot read {path}")

    @property
    def ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def __repr__(self) -> str:
        shown = {
            name: "***" if name == "sasl_password" and value is not None else value
            for name, value in self.__dict__.items()
        }
        return f"KafkaSecurity({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        def get(name: str) -> str | None:
            return env.get(f"LOYALTY_KAFKA_{name}", "").strip() or None

        password = env.get("LOYALTY_KAFKA_SASL_PASSWORD") or None
        password_file = get("SASL_PASSWORD_FILE")
        if password is not None and password_file:
            raise ValueError(
                "set LOYALTY_KAFKA_SASL_PASSWORD or LOYALTY_KAFKA_SASL_PASSWORD_FILE, not both"
            )
        if password_file:
            try:
                # A mounted secret usually ends with a newline that is not the password's.
                password = Path(password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(
                    f"LOYALTY_KAFKA_SASL_PASSWORD_FILE: cannot read {password_file}: "
                    f"{exc.strerror or exc}"
                ) from None
        check = (get("SSL_CHECK_HOSTNAME") or "on").lower()
        if check not in {"on", "off"}:
            raise ValueError(
                f"LOYALTY_KAFKA_SSL_CHECK_HOSTNAME must be 'on' or 'off', not {check!r}"
            )
        return cls(
            protocol=(get("SECURITY_PROTOCOL") or cls.protocol).upper(),
            sasl_mechanism=(get("SASL_MECHANISM") or cls.sasl_mechanism).upper(),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=password,
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
            ssl_check_hostname=check == "on",
        )


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    database_url: str = DEFAULT_DATABASE_URL
    program_path: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # A bearer token every API request but /health and /ready must carry; without one
    # the API serves 127.0.0.1 only.
    api_token: str | None = field(default=None, repr=False)
    # Events a projection may be behind the store while /ready still says ready.
    ready_max_behind: int = 10_000
    metrics_port: str | None = None  # LOYALTY_METRICS_PORT: a port, or off (telemetry.py)
    # LOYALTY_METRICS_HOST: the address metrics are served on. They name no member, so a
    # worker can be scraped from other hosts (0.0.0.0) while the API keeps to 127.0.0.1.
    metrics_host: str | None = None
    daily_sweep: bool = True
    consumer_group: str = "loyalty-ledger"
    batch_max_messages: int = 5000
    batch_max_seconds: float = 0.2
    projection_page: int = 5000
    # Processes a long catch-up of the read models (a replay, a projector far behind) is
    # shared among, PostgreSQL only: one per core, at most one per projection group.
    projection_processes: int = field(default_factory=lambda: _default_processes())
    # Events the slowest projection must be behind before its catch-up is shared.
    projection_processes_from: int = 200_000
    # Rows a projection may hold in memory across a catch-up's pages (~400 bytes each),
    # to write each once when the transaction commits (PostgreSQL only; 0: a
    # transaction per page).
    projection_hold_rows: int = 250_000
    topics: Topics = field(default_factory=Topics)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        program = env.get("LOYALTY_PROGRAM")
        sweep = env.get("LOYALTY_DAILY_SWEEP", "on").strip().lower()
        if sweep not in {"on", "off"}:
            raise ValueError(f"LOYALTY_DAILY_SWEEP must be 'on' or 'off', not {sweep!r}")
        topics = Topics(
            {
                setting: env.get(f"LOYALTY_TOPIC_{setting.upper()}", default)
                for setting, default in DEFAULT_TOPICS.items()
            }
        )
        return cls(
            kafka_bootstrap=env.get("LOYALTY_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            database_url=env.get("LOYALTY_DATABASE_URL", cls.database_url),
            program_path=Path(program) if program else None,
            api_host=env.get("LOYALTY_API_HOST", cls.api_host),
            api_port=int(env.get("LOYALTY_API_PORT", str(cls.api_port))),
            api_token=env.get("LOYALTY_API_TOKEN") or None,
            ready_max_behind=int(env.get("LOYALTY_READY_MAX_BEHIND", str(cls.ready_max_behind))),
            metrics_port=env.get("LOYALTY_METRICS_PORT"),
            metrics_host=env.get("LOYALTY_METRICS_HOST") or None,
            daily_sweep=sweep == "on",
            consumer_group=env.get("LOYALTY_CONSUMER_GROUP", cls.consumer_group),
            batch_max_messages=int(env.get("LOYALTY_BATCH_MAX", str(cls.batch_max_messages))),
            batch_max_seconds=float(env.get("LOYALTY_BATCH_SECONDS", str(cls.batch_max_seconds))),
            projection_page=int(env.get("LOYALTY_PROJECTION_PAGE", str(cls.projection_page))),
            projection_processes=_at_least_one(
                "LOYALTY_PROJECTION_PROCESSES",
                env.get("LOYALTY_PROJECTION_PROCESSES", str(_default_processes())),
            ),
            projection_processes_from=int(
                env.get("LOYALTY_PROJECTION_PROCESSES_FROM", str(cls.projection_processes_from))
            ),
            projection_hold_rows=int(
                env.get("LOYALTY_PROJECTION_HOLD_ROWS", str(cls.projection_hold_rows))
            ),
            topics=topics,
            kafka_security=KafkaSecurity.from_env(env),
        )


def _at_least_one(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return number


def _default_processes() -> int:
    """The cores this process may run on (a cpuset's, not the host's, where one is set),
    at most 4: one per projection group."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))
