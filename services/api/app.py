"""`loyalty api`: the read models as HTTP JSON (README, "Read models and metrics").

Handlers only read."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from projections import analytics
from projections.base import iso
from projections.metrics import (
    campaign_results,
    churn_metrics,
    liability,
    liability_history,
    tier_metrics,
)
from projections.runner import ProjectionRunner
from services import telemetry
from services.api import openapi
from services.api.dashboard import add_dashboard
from services.bootstrap import Context
from services.domain.member import Member
from services.faults import Fault, fault_of
from services.instants import parse_instant
from services.status import gather_status
from services.store.database import Database

MEMBER_COLUMNS = (
    "member_id, balance, tier, qualifying_points, lifetime_points, last_event_at, "
    "pending_points, enrolled_at, birth_date"
)
SELECT_MEMBER = f"SELECT {MEMBER_COLUMNS} FROM member_balances WHERE aggregate_id = ?"
SELECT_BADGES = (
    "SELECT badge_id, earned_at FROM member_badges WHERE aggregate_id = ? ORDER BY earned_at, "
    "badge_id"
)
# A page of a member's ledger after a version; one row more than asked for tells
# whether another page follows.
SELECT_LEDGER_PAGE = (
    "SELECT at, kind, points, balance, event_id, detail, version, pending FROM ledger_entries "
    "WHERE aggregate_id = ? AND version > ? ORDER BY version LIMIT ?"
)
SELECT_TOP = (
    f"SELECT {MEMBER_COLUMNS} FROM member_balances ORDER BY balance DESC, member_id LIMIT ?"
)

# ASCII digits only: str.isdigit() also takes "²" and "٣", which int() then refuses
# or reads as 3. Nineteen digits cover every value a BIGINT column can hold.
ASCII_NUMBER = re.compile(r"[0-9]{1,19}")
MAX_VERSION = 2**63 - 1  # ledger_entries.version is a BIGINT
# Windows reach years either side of as_of (months, lot lifetimes, expiry horizons):
# kept this far inside datetime's range, their arithmetic never overflows.
EARLIEST_AS_OF = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_AS_OF = datetime(9000, 1, 1, tzinfo=UTC)

log = logging.getLogger(__name__)

# Instants as the read models write them (projections.base.iso): UTC, "Z", to the second.
INSTANTS_AS_TEXT = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS

OPENAPI = orjson.dumps(openapi.document())

CONTEXT = web.AppKey("context", Context)
DATABASE = web.AppKey("database", Database)
RUNNER = web.AppKey("runner", ProjectionRunner)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )


def _shown(raw: str) -> str:
    """A parameter as an error message quotes it: a few dozen characters at most."""
    return repr(raw if len(raw) <= 40 else f"{raw[:40]}...")


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """The query parameter `name` as an integer from `low` to `high`; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not ASCII_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise _bad_request(f"{name} must be an integer from {low} to {high}, not {_shown(raw)}")
    return int(raw)


async def _query(
    request: web.Request, sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(request.app[DATABASE].query, sql, params)


def _member_json(row: tuple[Any, ...]) -> dict[str, Any]:
    member_id, balance, tier, qp, lifetime, last_at, pending, enrolled_at, birth_date = row
    return {
        "member_id": member_id,
        "balance": int(balance),
        "tier": tier,
        "qualifying_points": int(qp),
        "lifetime_points": int(lifetime),
        "pending_points": int(pending),
        "last_event_at": last_at,
        "enrolled_at": enrolled_at,
        "birth_date": birth_date,
    }


async def get_member(request: web.Request) -> web.Response:
    member_id = request.match_info["member_id"]
    if "as_of" in request.query:
        return await _member_as_of(request, member_id, _as_of(request))
    aggregate_id = str(Member.create_id(member_id))
    rows = await _query(request, SELECT_MEMBER, (aggregate_id,))
    if not rows:
        return _error(404, f"unknown member {member_id!r}")
    badges = await _query(request, SELECT_BADGES, (aggregate_id,))
    return web.json_response(
        {
            **_member_json(rows[0]),
            "badges": [{"id": badge_id, "earned_at": at} for badge_id, at in badges],
        }
    )


async def _member_as_of(request: web.Request, member_id: str, at: datetime) -> web.Response:
    """From the event store, not the read models: the prefix of the member's events dated
    at or before `at`, then steps 0 to 2 at `at`, in memory (docs/RULES.md, section 8)."""
    context = request.app[CONTEXT]
    program = context.program
    member = await asyncio.to_thread(context.ledger.member_as_of, member_id, at)
    if member is None:
        return _error(404, f"member {member_id!r} has no event dated at or before {iso(at)}")
    member.sweep(program, at=at)  # never saved
    lifetime = program.lot_lifetime
    body = {
        "member_id": member_id,
        "as_of": at,
        "balance": member.balance,
        "tier": member.tier_name(program),
        "qualifying_points": member.qualifying_points,
        "pending_points": member.pending_points,
        "lifetime_points": member.lifetime_points,
        "enrolled_at": member.enrolled_at,
        "birth_date": member.birth_date,
        "badges": [{"id": b, "earned_at": t} for b, t in member.badges.items()],
        # A long member holds thousands of lots: orjson formats their instants in C.
        "lots": [
            {"points": lot.points, "dated": lot.date, "expires": lot.date + lifetime}
            for lot in member.lots
        ],
        "pending": [
            {"order_id": c.order_id, "points": c.points, "releases": c.release_at}
            for c in member.pending
        ],
    }
    return web.Response(
        body=orjson.dumps(body, option=INSTANTS_AS_TEXT), content_type="application/json"
    )


async def list_members(request: web.Request) -> web.Response:
    """Members by balance, highest first: `?limit=N` (1-1000, default 20)."""
    limit = _integer(request, "limit", 20, 1, 1000)
    rows = await _query(request, SELECT_TOP, (limit,))
    return web.json_response({"members": [_member_json(r) for r in rows]})


def _entry_json(row: tuple[Any, ...]) -> dict[str, Any]:
    at, kind, points, balance, event_id, detail, version, pending = row
    return {
        "at": at,
        "kind": kind,
        "points": int(points),
        "balance": int(balance),
        "pending": int(pending),
        "event_id": event_id,
        "detail": detail,
        "version": int(version),
    }


async def get_ledger(request: web.Request) -> web.Response:
    """A page of the member's entries, oldest first: `?limit=N` (1-1000, default 100)
    entries with a version above `?after_version=V` (default 0). `next_after_version`
    is the `after_version` of the next page, or null when this page is the last."""
    member_id = request.match_info["member_id"]
    limit = _integer(request, "limit", 100, 1, 1000)
    after_version = _integer(request, "after_version", 0, 0, MAX_VERSION)
    aggregate_id = str(Member.create_id(member_id))
    if not await _query(request, SELECT_MEMBER, (aggregate_id,)):
        return _error(404, f"unknown member {member_id!r}")
    rows = await _query(request, SELECT_LEDGER_PAGE, (aggregate_id, after_version, limit + 1))
    entries = [_entry_json(row) for row in rows[:limit]]
    more = len(rows) > limit
    return web.json_response(
        {
            "member_id": member_id,
            "entries": entries,
            "next_after_version": entries[-1]["version"] if more else None,
        }
    )


def _as_of(request: web.Request) -> datetime:
    raw = request.query.get("as_of")
    if raw is None:
        return datetime.now(UTC)
    try:
        parsed = parse_instant(raw)
    except ValueError:
        raise _bad_request(
            f"as_of must be an RFC 3339 timestamp with a UTC offset, e.g. "
            f"2026-03-01T00:00:00Z, not {_shown(raw)}"
        ) from None
    if not EARLIEST_AS_OF <= parsed < LATEST_AS_OF:
        raise _bad_request(
            f"as_of must be from {EARLIEST_AS_OF:%Y-%m-%d} to before {LATEST_AS_OF:%Y-%m-%d}, "
            f"not {_shown(raw)}"
        )
    return parsed


async def get_tiers(request: web.Request) -> web.Response:
    """Members per tier now; tier upgrades and downgrades per month up to `as_of`."""
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(tier_metrics, db, program, as_of))


async def get_churn(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    months = _integer(request, "months", 12, 1, 120)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(churn_metrics, db, program, as_of, months))


async def get_liability(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(liability, db, program, as_of))


async def get_campaigns(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(campaign_results, db, program, as_of))


async def get_liability_history(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    months = _integer(request, "months", 12, 1, 36)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(liability_history, db, program, as_of, months))


async def get_cohorts(request: web.Request) -> web.Response:
    """Retention by cohort: `?by=purchase` (the month of the first purchase, the default)
    or `enrolment`; `?months=N` cohorts (1-36, default 12) up to `as_of`'s month."""
    as_of = _as_of(request)
    months = _integer(request, "months", 12, 1, 36)
    by = request.query.get("by", "purchase")
    if by not in ("purchase", "enrolment"):
        raise _bad_request(f"by must be purchase or enrolment, not {_shown(by)}")
    db = request.app[DATABASE]
    return web.json_response(await asyncio.to_thread(analytics.cohorts, db, as_of, months, by))


async def get_value(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(analytics.value, db, program, as_of))


def _after(request: web.Request) -> str:
    """`?after=member_id`: a page starts after it (member ids are 1-64 characters)."""
    after = request.query.get("after", "")
    if len(after) > 64:
        raise _bad_request(f"after must be a member id (1-64 characters), not {_shown(after)}")
    return after


async def get_customers(request: web.Request) -> web.Response:
    """Each member's value (orders, net spend, average order value, first and last
    purchase), by member id: `?limit=N` (1-1000, default 100), `?after=member_id`."""
    as_of = _as_of(request)
    limit = _integer(request, "limit", 100, 1, 1000)
    after = _after(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(
        await asyncio.to_thread(analytics.customers, db, program, as_of, after, limit)
    )


async def get_segments(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    return web.json_response(
        await asyncio.to_thread(analytics.segments, request.app[DATABASE], as_of)
    )


async def get_segment_members(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in analytics.SEGMENTS:
        return _error(404, f"no segment {_shown(name)}: one of {', '.join(analytics.SEGMENTS)}")
    as_of = _as_of(request)
    limit = _integer(request, "limit", 100, 1, 1000)
    after = _after(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(
        await asyncio.to_thread(analytics.segment_members, db, program, as_of, name, after, limit)
    )


async def get_status(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    positions = await asyncio.to_thread(request.app[RUNNER].positions)
    settings = context.settings
    status = await gather_status(
        context.ledger,
        positions,
        settings.kafka_bootstrap,
        settings.topics.inputs,
        settings.kafka_security,
        refusal_as_error=True,
    )
    status["rebuilding"] = await asyncio.to_thread(request.app[RUNNER].rebuilding)
    return web.json_response(status)


@web.middleware
async def unavailable_during_outages(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The store away is not a bug of the request: 503 with a retry hint, not a 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if fault_of(exc) is not Fault.OUTAGE:
            raise
        log.warning("%s %s: the store is unavailable (%s)", request.method, request.path, exc)
        return web.json_response(
            {"error": "the store is unavailable; try again shortly"},
            status=503,
            headers={"Retry-After": "5"},
        )


# What anyone may ask without the token, and what no rebuild holds up: orchestrators'
# probes, the API's description, the dashboard's page (its data comes from the others).
PUBLIC = frozenset({"/health", "/ready", "/openapi.json", "/"})
UNGATED = PUBLIC | {"/status"}


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith("/static/")


@web.middleware
async def measured(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Requests and their latency by route: the route's pattern, never the member ids."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        telemetry.API_REQUESTS.labels(route, str(status)).inc()
        telemetry.API_SECONDS.labels(route).observe(time.perf_counter() - began)


@web.middleware
async def authorized(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With LOYALTY_API_TOKEN set, every request but the public ones carries it."""
    token = request.app[CONTEXT].settings.api_token
    if token is None or _public(request.path):
        return await handler(request)
    given = request.headers.get("Authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        return web.json_response(
            {"error": "this API needs a bearer token: Authorization: Bearer <LOYALTY_API_TOKEN>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="loyalty"'},
        )
    return await handler(request)


@web.middleware
async def refuse_while_rebuilding(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Half-rebuilt read models would mislead: say so instead (`loyalty replay projections`)."""
    if request.path not in UNGATED and not request.path.startswith("/static/"):
        runner = request.app[RUNNER]
        if await asyncio.to_thread(runner.rebuilding):
            store = await asyncio.to_thread(request.app[CONTEXT].ledger.last_position)
            # The read models' committed positions, averaged: the balances may hold all
            # their rows until the rebuild reaches the log's end (projections/README.md).
            positions = list((await asyncio.to_thread(runner.positions)).values())
            done = sum(positions) // max(len(positions), 1)
            percent = 100 * done // store if store else 100
            return web.json_response(
                {"error": f"read models are being rebuilt ({percent}% done); try again shortly"},
                status=503,
                headers={"Retry-After": "5"},
            )
    return await handler(request)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


async def get_health(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing else is asked: a store outage is waited
    out, and restarting the API would not end it."""
    return web.json_response({"status": "ok"})


async def get_ready(request: web.Request) -> web.Response:
    """Readiness: the store answers, no rebuild runs, and every projection is within
    LOYALTY_READY_MAX_BEHIND events of the store."""
    context, runner = request.app[CONTEXT], request.app[RUNNER]
    bound = context.settings.ready_max_behind
    reasons = []
    behind: dict[str, int] = {}
    try:
        store = await asyncio.to_thread(context.ledger.last_position)
        positions = await asyncio.to_thread(runner.positions)
        if await asyncio.to_thread(runner.rebuilding):
            reasons.append("read models are being rebuilt")
    except Exception as exc:
        if fault_of(exc) is not Fault.OUTAGE:
            raise
        return web.json_response(
            {"ready": False, "reasons": [f"the store is unavailable: {exc}"]}, status=503
        )
    behind = {name: max(store - position, 0) for name, position in positions.items()}
    reasons += [
        f"projection {n} is {b} events behind (more than {bound})"
        for n, b in behind.items()
        if b > bound
    ]
    body = {"ready": not reasons, "store_position": store, "behind": behind, "reasons": reasons}
    return web.json_response(body, status=200 if not reasons else 503)


def create_app(context: Context, database: Database, runner: ProjectionRunner) -> web.Application:
    app = web.Application(
        middlewares=[measured, authorized, unavailable_during_outages, refuse_while_rebuilding]
    )
    app[CONTEXT] = context
    app[DATABASE] = database
    app[RUNNER] = runner
    app.router.add_get("/members", list_members)
    app.router.add_get("/members/{member_id}", get_member)
    app.router.add_get("/members/{member_id}/ledger", get_ledger)
    app.router.add_get("/metrics/tiers", get_tiers)
    app.router.add_get("/metrics/churn", get_churn)
    app.router.add_get("/metrics/liability", get_liability)
    app.router.add_get("/metrics/campaigns", get_campaigns)
    app.router.add_get("/metrics/liability/history", get_liability_history)
    app.router.add_get("/metrics/cohorts", get_cohorts)
    app.router.add_get("/metrics/value", get_value)
    app.router.add_get("/customers", get_customers)
    app.router.add_get("/segments", get_segments)
    app.router.add_get("/segments/{name}/members", get_segment_members)
    app.router.add_get("/status", get_status)
    app.router.add_get("/health", get_health)
    app.router.add_get("/ready", get_ready)
    app.router.add_get("/openapi.json", get_openapi)
    add_dashboard(app)
    app.on_cleanup.append(_close)
    return app


async def _close(app: web.Application) -> None:
    """The app owns the read-side connections it was given: closed when it stops."""
    await asyncio.to_thread(app[RUNNER].close)
    await asyncio.to_thread(app[DATABASE].close)
