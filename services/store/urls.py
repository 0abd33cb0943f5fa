"""LOYALTY_DATABASE_URL -> how to reach the store (README, "Command line").

A postgresql:// URL is libpq's: its query options (`sslmode`, `sslrootcert`,
`application_name`, `connect_timeout`, ...) are libpq keywords, and reach every
connection the project makes. A URL shown in a message is `masked` (or `mask_url`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import orjson
import psycopg
from psycopg.conninfo import make_conninfo

MASK = "***"
# libpq keywords whose values are as secret as the password.
SECRET_OPTIONS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
# libpq takes these as query options too (`postgresql://@/db?host=/var/run/postgresql`),
# overriding the URL's own parts; they become those parts here.
URL_PART_OPTIONS = ("host", "port", "user", "password", "dbname")
# eventsourcing's datastore knows five keywords: the rest go to our factory through its env.
POSTGRES_FACTORY_TOPIC = "services.store.postgres_factory:Factory"
LIBPQ_OPTIONS = "POSTGRES_LIBPQ_OPTIONS"  # a JSON object of keyword -> value


@dataclass(frozen=True)
class DatabaseUrl:
    scheme: str  # "postgresql" or "sqlite"
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    options: tuple[tuple[str, str], ...] = ()  # libpq keyword, value; in the URL's order

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        try:
            return cls._parse(url)
        except ValueError as exc:
            raise ValueError(f"database URL {mask_url(url)}: {exc}") from None

    @classmethod
    def _parse(cls, url: str) -> DatabaseUrl:
        parts = urlsplit(url)
        if parts.scheme in {"postgresql", "postgres"}:
            return cls._postgres(parts.netloc, parts.path, parts.query)
        if parts.scheme == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
            path = url[len("sqlite:///") :]
            if not path:
                raise ValueError("a sqlite URL needs a file path")
            return cls(scheme="sqlite", path=path)
        raise ValueError("LOYALTY_DATABASE_URL must be postgresql://... or sqlite:///...")

    @classmethod
    def _postgres(cls, netloc: str, path: str, query: str) -> DatabaseUrl:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        host, port = _host_and_port(hostinfo)
        options = _query_options(query)
        given = {key: options.pop(key) for key in URL_PART_OPTIONS if key in options}
        _check_keywords(options)
        return cls(
            scheme="postgresql",
            host=given.get("host", host) or "localhost",
            port=_port(given.get("port", port)),
            user=given.get("user", _decode(user)),
            password=given.get("password", _decode(password)),
            dbname=given.get("dbname", _decode(path.lstrip("/"))),
            options=tuple(options.items()),
        )

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"

    @property
    def is_postgres(self) -> bool:
        return self.scheme == "postgresql"

    @property
    def masked(self) -> str:
        """The URL with its password and secret options as `***`: for messages."""
        return self._render(mask=True)

    def render(self) -> str:
        """The URL itself, password included: for a process's settings, never a message."""
        return self._render(mask=False)

    def libpq_params(self) -> dict[str, str]:
        """Every connection parameter, as libpq keywords."""
        params = {"host": self.host, "port": str(self.port), "dbname": self.dbname}
        if self.user:
            params["user"] = self.user
        if self.password:
            params["password"] = self.password
        return {**params, **dict(self.options)}

    def conninfo(self) -> str:
        # Quoted by psycopg: a password may hold spaces, quotes and backslashes.
        return make_conninfo(**self.libpq_params())

    def eventsourcing_env(self) -> dict[str, str]:
        if self.is_postgres:
            return {
                "PERSISTENCE_MODULE": POSTGRES_FACTORY_TOPIC,
                "APPLICATION_RECORDER_TOPIC": "services.store.recorders:LedgerPostgresRecorder",
                "POSTGRES_DBNAME": self.dbname,
                "POSTGRES_HOST": self.host,
                "POSTGRES_PORT": str(self.port),
                "POSTGRES_USER": self.user,
                "POSTGRES_PASSWORD": self.password,
                LIBPQ_OPTIONS: orjson.dumps(dict(self.options)).decode(),
                # FACTS: the DB functions misroute events between applications sharing a schema.
                "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
                # Connections a process keeps open: the worker writes one batch while it
                # decides the next (two), and the pool grows for bursts (the rebalance
                # listener beside both).
                "POSTGRES_POOL_SIZE": "2",
            }
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "APPLICATION_RECORDER_TOPIC": "services.store.recorders:LedgerSQLiteRecorder",
            "SQLITE_DBNAME": self.path,
            "SQLITE_LOCK_TIMEOUT": "30",
        }

    def _render(self, *, mask: bool) -> str:
        if not self.is_postgres:
            return f"sqlite:///{self.path}"
        userinfo = _encode(self.user)
        if self.password:
            userinfo += ":" + (MASK if mask else _encode(self.password))
        options = list(self.options)
        if self.host.startswith("/"):  # a socket directory: libpq's URLs say it as an option
            options.insert(0, ("host", self.host))
            server = f":{self.port}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
            server = f"{host}:{self.port}"
        url = f"postgresql://{userinfo + '@' if userinfo else ''}{server}/{_encode(self.dbname)}"
        if options:
            url += "?" + "&".join(_render_option(key, value, mask) for key, value in options)
        return url


def mask_url(text: str) -> str:
    """`text` with what could be a password as `***`, for text that may not parse.

    The user info runs to the last "@": a malformed URL's password may hold "@", "/" or
    "?" unencoded, and hiding too much is safe where hiding too little is not."""
    scheme, separator, rest = text.partition("://")
    head = scheme + separator if separator else ""
    userinfo, at, rest = (rest if separator else text).rpartition("@")
    user, colon, _ = userinfo.partition(":")
    masked_userinfo = f"{user}:{MASK}@" if colon else userinfo + at
    before_query, question, query = rest.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        fields = [_mask_field(field) for field in query.split("&")]
        before_query += question + "&".join(fields) + hash_ + fragment
    return f"{head}{masked_userinfo}{before_query}"


def _mask_field(field: str) -> str:
    key, equals, _ = field.partition("=")
    return f"{key}={MASK}" if equals and unquote(key) in SECRET_OPTIONS else field


def _host_and_port(hostinfo: str) -> tuple[str, str]:
    if hostinfo.startswith("["):  # IPv6; urlsplit has checked the brackets pair up
        host, _, port = hostinfo[1:].partition("]")
        return _decode(host), port.removeprefix(":")
    host, _, port = hostinfo.partition(":")
    return _decode(host), port


def _port(text: str) -> int:
    if not text:
        return 5432
    # Not echoed: in a URL with an unencoded "/" or "?" in its password, this is part of it.
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(
            "the port must be a number from 1 to 65535 (a password's / ? # @ : characters "
            "must be percent-encoded)"
        )
    return int(text)


def _query_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for field in filter(None, query.split("&")):
        key, equals, value = field.partition("=")
        if not equals or not key:
            raise ValueError(f"query options must be keyword=value, not {_decode(key)!r}")
        options[_decode(key)] = _decode(value)
    return options


def _check_keywords(options: dict[str, str]) -> None:
    try:
        make_conninfo(**options)
    except psycopg.ProgrammingError as exc:  # libpq's message names the option
        raise ValueError(
            f"{str(exc).strip()}; query options are libpq connection keywords"
        ) from None


def _decode(text: str) -> str:
    # libpq decodes %XX and nothing else: unlike a form, "+" stays a "+".
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("percent-encoded bytes must be UTF-8") from None


def _encode(text: str) -> str:
    return quote(text, safe="")


def _render_option(key: str, value: str, mask: bool) -> str:
    shown = MASK if mask and key in SECRET_OPTIONS else quote(value, safe="/:")
    return f"{_encode(key)}={shown}"
