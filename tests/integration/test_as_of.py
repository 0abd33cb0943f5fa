"""Members as of any date, and the snapshots that keep long members fast (docs/RULES.md,
section 8): a snapshot is taken when its batch is decided and written only once the batch
is stored; a member as of T folds the prefix of its events dated at or before T, from the
latest snapshot inside it; `loyalty digest --as-of T` agrees with the API for everyone."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import IntegrityError

from services.api.app import create_app
from services.bootstrap import Context, build
from services.config import Settings
from services.demo import generate
from services.digest import digest
from services.domain.member import Member
from services.domain.member_snapshot import SNAPSHOT_EVERY
from services.program_file import DEFAULT_PROGRAM_PATH
from tests.integration.harness import commit_events, ingest_service, keyed_message

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEASONAL = DEFAULT_PROGRAM_PATH.parent / "seasonal.toml"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def shares(member_id: str, n: int, start: datetime = T0, prefix: str = "s") -> list[dict[str, Any]]:
    """n shares, one every 8 hours: three a day, each rewarded."""
    return [
        {
            "event_id": f"{prefix}{i}",
            "type": "social_share",
            "member_id": member_id,
            "network": "x",
            "occurred_at": (start + timedelta(hours=8 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for i in range(n)
    ]


def folded(context: Context, member_id: str, at: datetime | None = None) -> Member | None:
    """An independent fold: every event of the member from the log, no snapshot."""
    found = [m for m in context.ledger.all_members(at) if m.member_id == member_id]
    return found[0] if found else None


def test_long_members_load_from_snapshots_written_once_their_batch_is_stored(
    database_url: str,
) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    commit_events(context, shares("ann", 2 * SNAPSHOT_EVERY + 100), batch=150)
    key = Member.create_id("ann")
    [(version, _)] = context.ledger.store.latest_snapshots([key]).values()
    assert version >= 2 * SNAPSHOT_EVERY

    loaded = context.ledger.member("ann")
    assert loaded is not None
    assert vars(loaded) == vars(folded(context, "ann"))  # snapshot + its tail = all events


def test_a_batch_the_store_refused_leaves_no_snapshot(database_url: str) -> None:
    ours, other = ingest_service(database_url), ingest_service(database_url)
    context = build(Settings(database_url=database_url, daily_sweep=False))
    topic = context.settings.topics.social_shares
    events = shares("ann", SNAPSHOT_EVERY - 10)
    messages = [keyed_message(topic, i, e) for i, e in enumerate(events)]
    ours.commit(*ours.decode(messages))
    # another worker writes ann; our batch crossing the snapshot version is refused
    late = shares("ann", 40, start=T0 + timedelta(days=200), prefix="late")
    other.commit(*other.decode([keyed_message(topic, 0, late[0])._replace(partition=1)]))
    prepared = ours.prepare(
        *ours.decode([keyed_message(topic, len(events) + i, e) for i, e in enumerate(late[1:])])
    )
    assert prepared.snapshots  # taken when decided...
    with pytest.raises(IntegrityError):
        ours.write(prepared)
    # ...and never written
    assert context.ledger.store.latest_snapshots([Member.create_id("ann")]) == {}


def test_a_member_as_of_folds_the_prefix_dated_at_or_before_it(database_url: str) -> None:
    context = build(Settings(database_url=database_url, daily_sweep=False))
    history = shares("ann", SNAPSHOT_EVERY + 200)
    # An event out of date order: the prefix ends at the first event dated after T.
    late = {**history[-1], "event_id": "backdated", "occurred_at": "2026-01-02T00:00:00Z"}
    commit_events(context, [*history, late], batch=100)
    last = datetime.fromisoformat(history[-1]["occurred_at"])
    ledger = context.ledger

    assert ledger.member_as_of("ann", T0 - timedelta(seconds=1)) is None  # before the first
    assert ledger.member_as_of("nobody", last) is None
    for at in (T0, T0 + timedelta(days=3, hours=1), T0 + timedelta(days=170), last):
        member = ledger.member_as_of("ann", at)
        assert member is not None
        assert vars(member) == vars(folded(context, "ann", at)), at
    everything = ledger.member_as_of("ann", last + timedelta(days=1))
    assert everything is not None and everything.version == ledger.member("ann").version  # type: ignore[union-attr]


async def test_the_api_answers_a_member_as_of_any_date(postgres_url: str) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False))
    commit_events(
        context,
        [
            {
                "event_id": "p1",
                "type": "purchase",
                "member_id": "ann",
                "order_id": "o1",
                "amount": "1200.00",
                "currency": "EUR",
                "occurred_at": "2026-01-10T12:00:00Z",
            },
            {
                "event_id": "p2",
                "type": "purchase",
                "member_id": "ann",
                "order_id": "o2",
                "amount": "30.00",
                "currency": "EUR",
                "occurred_at": "2026-02-10T12:00:00Z",
            },
        ],
    )
    runner = context.projection_runner()
    app = create_app(context, context.database(), runner)
    async with TestClient(TestServer(app)) as client:

        async def as_of(at: str) -> tuple[int, Any]:
            response = await client.get("/members/ann", params={"as_of": at})
            return response.status, await response.json()

        assert (await as_of("2026-01-10T11:59:59Z"))[0] == 404  # before the first event
        status, between = await as_of("2026-02-01T00:00:00Z")
        assert status == 200
        assert (between["balance"], between["tier"], between["qualifying_points"]) == (
            1200,
            "silver",
            1200,
        )
        assert between["lots"] == [
            {"points": 1200, "dated": "2026-01-10T12:00:00Z", "expires": "2027-01-10T12:00:00Z"}
        ]
        status, now = await as_of("2026-03-01T00:00:00Z")
        assert (now["balance"], now["lifetime_points"]) == (1200 + 37, 1237)  # floor(30 x 1.25)
        # A year on: both lots expired, qualifying points out of the window, tier fallen
        status, later = await as_of("2027-03-01T00:00:00Z")
        assert (later["balance"], later["tier"], later["qualifying_points"], later["lots"]) == (
            0,
            "bronze",
            0,
            [],
        )
        assert (await client.get("/members/ann", params={"as_of": "soon"})).status == 400
    runner.close()
    # Nothing was written by asking
    assert context.ledger.member("ann").version == 4  # type: ignore[union-attr]


async def test_digest_as_of_agrees_with_the_api_for_every_member(postgres_url: str) -> None:
    context = build(Settings(database_url=postgres_url, daily_sweep=False, program_path=SEASONAL))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    commit_events(context, list(generate(members=60, seed=5, now=now)))
    runner = context.projection_runner()
    app = create_app(context, context.database(), runner)
    ids = context.ledger.member_ids()
    instants = [
        now - timedelta(days=500),  # before any event
        now - timedelta(days=300),
        now - timedelta(days=90, hours=7),
        now,
        now + timedelta(days=400),  # the future: releases, birthdays, expiries, tiers falling
    ]
    async with TestClient(TestServer(app)) as client:
        for at in instants:
            lines = []
            for member_id in ids:
                response = await client.get(
                    f"/members/{member_id}", params={"as_of": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
                )
                if response.status == 404:
                    continue
                body = cast(dict[str, Any], await response.json())
                lines.append(
                    f"{member_id}\t{body['balance']}\t{body['tier']}\t{body['lifetime_points']}\n"
                )
            expected = hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
            assert digest(context.ledger, context.program, at) == expected, at
    runner.close()
