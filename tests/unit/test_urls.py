"""Database URLs: parsing, libpq options, quoting, and masking the password everywhere."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from eventsourcing.utils import Environment
from psycopg.conninfo import conninfo_to_dict

from services.config import Settings
from services.errors import OperatorError
from services.store.postgres_factory import Factory
from services.store.urls import DatabaseUrl, mask_url

HOSTILE = "p a'ss\\w@rd:/%?#&=é ü"
ENCODED = quote(HOSTILE, safe="")
SECRET = "s3cr3t-Pa55"
OPTIONS = "sslmode=require&sslrootcert=/etc/ssl/root.crt&application_name=x&connect_timeout=5"


def test_an_encoded_password_is_decoded_exactly_once() -> None:
    url = DatabaseUrl.parse(f"postgresql://ann:{ENCODED}@db.internal:6543/loyalty")
    assert (url.user, url.password, url.host, url.port, url.dbname) == (
        "ann",
        HOSTILE,
        "db.internal",
        6543,
        "loyalty",
    )
    assert DatabaseUrl.parse("postgresql://ann:a%2520b@h/d").password == "a%20b"


def test_the_conninfo_quotes_what_libpq_would_split() -> None:
    url = DatabaseUrl.parse(f"postgresql://{quote('a n', safe='')}:{ENCODED}@h:5433/my%20db")
    assert conninfo_to_dict(url.conninfo()) == {
        "host": "h",
        "port": "5433",
        "dbname": "my db",
        "user": "a n",
        "password": HOSTILE,
    }


def test_every_query_option_reaches_the_conninfo() -> None:
    url = DatabaseUrl.parse(f"postgresql://ann:{SECRET}@h/loyalty?{OPTIONS}")
    parsed = conninfo_to_dict(url.conninfo())
    assert {k: parsed[k] for k in ("sslmode", "sslrootcert", "application_name")} == {
        "sslmode": "require",
        "sslrootcert": "/etc/ssl/root.crt",
        "application_name": "x",
    }
    assert parsed["connect_timeout"] == "5"


def test_option_values_are_percent_decoded_but_plus_stays_a_plus() -> None:
    # libpq decodes %XX in a URI and nothing else: "+" is not a space there.
    url = DatabaseUrl.parse("postgresql://h/d?application_name=a%20b+c&options=-c%20x%3D1")
    assert dict(url.options) == {"application_name": "a b+c", "options": "-c x=1"}


def test_url_parts_given_as_query_options_win_as_in_libpq() -> None:
    url = DatabaseUrl.parse("postgresql://ann@/loyalty?host=/var/run/postgresql&port=5499")
    assert (url.host, url.port, url.options) == ("/var/run/postgresql", 5499, ())
    assert conninfo_to_dict(url.conninfo())["host"] == "/var/run/postgresql"


def test_the_eventsourcing_pool_gets_every_option_before_it_connects() -> None:
    url = DatabaseUrl.parse(f"postgresql://ann:{ENCODED}@h/loyalty?{OPTIONS}")
    env = url.eventsourcing_env()
    assert all(SECRET not in value for value in env.values())
    factory = Factory(Environment("Ledger", env))
    try:
        kwargs = factory.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        assert kwargs["password"] == HOSTILE
        assert {k: kwargs[k] for k in ("sslmode", "application_name", "connect_timeout")} == {
            "sslmode": "require",
            "application_name": "x",
            "connect_timeout": "5",
        }
        assert factory.datastore.pool.closed  # nothing has connected yet
    finally:
        factory.close()


def test_a_url_without_options_gives_the_pool_eventsourcings_keywords_only() -> None:
    env = DatabaseUrl.parse("postgresql://ann@h/loyalty").eventsourcing_env()
    factory = Factory(Environment("Ledger", env))
    try:
        kwargs = factory.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        assert set(kwargs) == {
            "dbname",
            "host",
            "port",
            "user",
            "password",
            "row_factory",
        }
    finally:
        factory.close()


def test_an_unknown_option_is_refused_by_name_without_the_password() -> None:
    with pytest.raises(ValueError, match="sslmod") as refused:
        DatabaseUrl.parse(f"postgresql://ann:{SECRET}@h/loyalty?sslmod=require")
    assert SECRET not in str(refused.value)
    assert "postgresql://ann:***@h/loyalty?sslmod=require" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://ann:{SECRET}@h/loyalty",
        f"postgresql://ann:{SECRET}@h:port/loyalty",
        f"postgresql://ann:{SECRET}@h:99999/loyalty",
        f"postgresql://ann:{SECRET}@[::1/loyalty",
        f"postgresql://ann:{SECRET}/with/slash@h/loyalty",
        f"postgresql://ann:{SECRET}?x@h/loyalty",
        f"postgresql://ann:{SECRET}@h/loyalty?sslmode",
        f"postgresql://ann:{SECRET}@h/loyalty?port=x",
        f"postgresql://ann:{SECRET}@h/loyalty?application_name=%FF",
        f"postgresql://ann:{SECRET}%FF@h/loyalty",
        f"postgresql://ann@h/loyalty?password={SECRET}&bogus=1",
        f"postgresql://ann@h/loyalty?sslpassword={SECRET}&bogus=1",
        f"postgresql+psycopg://ann:{SECRET}@h/loyalty",
        f"postgres://ann:{SECRET}@h/loyalty?=x",
    ],
)
def test_a_malformed_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        DatabaseUrl.parse(url)
    assert SECRET not in str(refused.value)
    assert "***" in str(refused.value)


def test_the_masked_form_hides_every_secret_and_keeps_the_rest() -> None:
    url = DatabaseUrl.parse(
        f"postgresql://ann:{ENCODED}@db:5433/loyalty?sslpassword={SECRET}&application_name=x"
    )
    assert url.masked == "postgresql://ann:***@db:5433/loyalty?sslpassword=***&application_name=x"
    assert SECRET not in repr(url) and HOSTILE not in repr(url)
    assert DatabaseUrl.parse("postgresql://ann@db/loyalty").masked == (
        "postgresql://ann@db:5432/loyalty"
    )
    assert DatabaseUrl.parse("sqlite:///var/lib/l.sqlite3").masked == "sqlite:///var/lib/l.sqlite3"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (f"postgresql://ann:{SECRET}@h/d", "postgresql://ann:***@h/d"),
        (f"postgresql://:{SECRET}@h/d", "postgresql://:***@h/d"),
        (f"postgresql://ann:{SECRET}/x@y@h/d", "postgresql://ann:***@h/d"),
        (f"ann:{SECRET}@h/d", "ann:***@h/d"),
        (f"weird://ann:{SECRET}@h/d?password={SECRET}", "weird://ann:***@h/d?password=***"),
        (f"postgresql://h/d?a=1&sslpassword={SECRET}#f", "postgresql://h/d?a=1&sslpassword=***#f"),
        ("postgresql://ann@h/d?application_name=a", "postgresql://ann@h/d?application_name=a"),
        ("sqlite:///tmp/x.sqlite3", "sqlite:///tmp/x.sqlite3"),
    ],
)
def test_mask_url_works_on_text_that_does_not_parse(raw: str, masked: str) -> None:
    assert mask_url(raw) == masked


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://ann:{ENCODED}@db.internal:6543/loyalty?{OPTIONS}",
        "postgresql://ann@/loyalty?host=/var/run/postgresql",
        "postgresql://ann@[::1]:5433/loyalty",
        f"postgresql://{quote('a@n:', safe='')}@h/my%20db",
        "sqlite:///var/lib/loyalty.sqlite3",
    ],
)
def test_a_rendered_url_parses_back_to_itself(url: str) -> None:
    parsed = DatabaseUrl.parse(url)
    assert DatabaseUrl.parse(parsed.render()) == parsed


def test_another_database_on_the_same_server_keeps_user_password_and_options() -> None:
    url = DatabaseUrl.parse(f"postgresql://ann:{ENCODED}@h/loyalty?application_name=x")
    other = DatabaseUrl.parse(replace(url, dbname="postgres").render())
    assert (other.dbname, other.password, other.options) == (
        "postgres",
        HOSTILE,
        (("application_name", "x"),),
    )


def test_the_cli_says_a_bad_option_in_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli  # the whole application: imported by this test alone

    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"postgresql://ann:{SECRET}@h/loyalty?bogus=1")
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loyalty: ") and err.count("\n") == 1
    assert "bogus" in err and SECRET not in err


def test_replay_into_a_store_with_events_says_so_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services import replay

    busy: Any = SimpleNamespace(ledger=SimpleNamespace(last_position=lambda: 7))
    monkeypatch.setattr(replay, "build", lambda settings: busy)
    context: Any = SimpleNamespace(settings=Settings())
    with pytest.raises(OperatorError) as refused:
        replay.fresh_target(context, f"postgresql://ann:{SECRET}@h/target")
    assert SECRET not in str(refused.value)
    assert "postgresql://ann:***@h/target" in str(refused.value)


def test_the_options_travel_to_eventsourcing_as_json() -> None:
    env = DatabaseUrl.parse(f"postgresql://ann@h/loyalty?{OPTIONS}").eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "services.store.postgres_factory:Factory"
    assert orjson.loads(env["POSTGRES_LIBPQ_OPTIONS"]) == {
        "sslmode": "require",
        "sslrootcert": "/etc/ssl/root.crt",
        "application_name": "x",
        "connect_timeout": "5",
    }
