"""`loyalty api`: the read models as HTTP JSON (CONTRACT section 4). Handlers only read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from projections.metrics import churn_metrics, liability, tier_metrics
from projections.runner import ProjectionRunner
from services.bootstrap import Context
from services.domain.member import Member
from services.status import gather_status
from services.store.database import Database

SELECT_MEMBER = (
    "SELECT member_id, balance, tier, qualifying_points, lifetime_points, last_event_at "
    "FROM member_balances WHERE aggregate_id = ?"
)
SELECT_LEDGER = (
    "SELECT at, kind, points, balance, event_id, detail, version FROM ledger_entries "
    "WHERE aggregate_id = ? ORDER BY version"
)
SELECT_TOP = (
    "SELECT member_id, balance, tier, qualifying_points, lifetime_points, last_event_at "
    "FROM member_balances ORDER BY balance DESC, member_id LIMIT ?"
)

CONTEXT = web.AppKey("context", Context)
DATABASE = web.AppKey("database", Database)
RUNNER = web.AppKey("runner", ProjectionRunner)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _query(
    request: web.Request, sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(request.app[DATABASE].query, sql, params)


def _member_json(row: tuple[Any, ...]) -> dict[str, Any]:
    member_id, balance, tier, qp, lifetime, last_at = row
    return {
        "member_id": member_id,
        "balance": int(balance),
        "tier": tier,
        "qualifying_points": int(qp),
        "lifetime_points": int(lifetime),
        "last_event_at": last_at,
    }


async def get_member(request: web.Request) -> web.Response:
    member_id = request.match_info["member_id"]
    rows = await _query(request, SELECT_MEMBER, (str(Member.create_id(member_id)),))
    if not rows:
        return _error(404, f"unknown member {member_id!r}")
    return web.json_response(_member_json(rows[0]))


async def list_members(request: web.Request) -> web.Response:
    """Members by balance, highest first: `?limit=N` (1-1000, default 20)."""
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return _error(400, f"limit must be an integer from 1 to 1000, not {raw!r}")
    rows = await _query(request, SELECT_TOP, (int(raw),))
    return web.json_response({"members": [_member_json(r) for r in rows]})


async def get_ledger(request: web.Request) -> web.Response:
    member_id = request.match_info["member_id"]
    aggregate_id = str(Member.create_id(member_id))
    if not await _query(request, SELECT_MEMBER, (aggregate_id,)):
        return _error(404, f"unknown member {member_id!r}")
    rows = await _query(request, SELECT_LEDGER, (aggregate_id,))
    entries = [
        {
            "at": at,
            "kind": kind,
            "points": int(points),
            "balance": int(balance),
            "event_id": event_id,
            "detail": detail,
            "version": int(version),
        }
        for at, kind, points, balance, event_id, detail, version in rows
    ]
    return web.json_response({"member_id": member_id, "entries": entries})


def _as_of(request: web.Request) -> datetime:
    raw = request.query.get("as_of")
    if raw is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad_request(f"as_of must be an RFC 3339 timestamp, not {raw!r}") from None
    if parsed.tzinfo is None:
        raise _bad_request(f"as_of needs a UTC offset, e.g. 2026-03-01T00:00:00Z, not {raw!r}")
    return parsed.astimezone(UTC)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )


async def get_tiers(request: web.Request) -> web.Response:
    """Members per tier now; tier upgrades and downgrades per month up to `as_of`."""
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(tier_metrics, db, program, as_of))


async def get_churn(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    raw = request.query.get("months", "12")
    if not raw.isdigit() or not 1 <= int(raw) <= 120:
        raise _bad_request(f"months must be an integer from 1 to 120, not {raw!r}")
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(churn_metrics, db, program, as_of, int(raw)))


async def get_liability(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    db, program = request.app[DATABASE], request.app[CONTEXT].program
    return web.json_response(await asyncio.to_thread(liability, db, program, as_of))


async def get_status(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    positions = await asyncio.to_thread(request.app[RUNNER].positions)
    status = await gather_status(
        context.ledger, positions, context.settings.kafka_bootstrap, context.settings.topics.inputs
    )
    status["rebuilding"] = await asyncio.to_thread(request.app[RUNNER].rebuilding)
    return web.json_response(status)


@web.middleware
async def refuse_while_rebuilding(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Half-rebuilt read models would mislead: say so instead (`loyalty replay projections`)."""
    if request.path != "/status":
        runner = request.app[RUNNER]
        if await asyncio.to_thread(runner.rebuilding):
            store = await asyncio.to_thread(request.app[CONTEXT].ledger.last_position)
            done = min((await asyncio.to_thread(runner.positions)).values(), default=0)
            percent = 100 * done // store if store else 100
            return web.json_response(
                {"error": f"read models are being rebuilt ({percent}% done); try again shortly"},
                status=503,
                headers={"Retry-After": "5"},
            )
    return await handler(request)


def create_app(context: Context, database: Database, runner: ProjectionRunner) -> web.Application:
    app = web.Application(middlewares=[refuse_while_rebuilding])
    app[CONTEXT] = context
    app[DATABASE] = database
    app[RUNNER] = runner
    app.router.add_get("/members", list_members)
    app.router.add_get("/members/{member_id}", get_member)
    app.router.add_get("/members/{member_id}/ledger", get_ledger)
    app.router.add_get("/metrics/tiers", get_tiers)
    app.router.add_get("/metrics/churn", get_churn)
    app.router.add_get("/metrics/liability", get_liability)
    app.router.add_get("/status", get_status)
    app.on_cleanup.append(_close)
    return app


async def _close(app: web.Application) -> None:
    """The app owns the read-side connections it was given: closed when it stops."""
    await asyncio.to_thread(app[RUNNER].close)
    await asyncio.to_thread(app[DATABASE].close)
