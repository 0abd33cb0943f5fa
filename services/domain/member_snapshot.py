"""A member's state as one value: what a snapshot stores, to skip folding old events.

Stored beside the events (`member_snapshots`), one every SNAPSHOT_EVERY versions, kept
for answers as of a date. A snapshot is a cache: losing one costs a longer fold, never
a ledger. Versioned: a change to the Member's state bumps FORMAT, and snapshots of
another format are ignored (the events are the truth).
"""

from __future__ import annotations

import gc
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from services.domain.lots import Lot, Order, PendingCredit, Referral
from services.domain.member import Member
from services.domain.window import OrderWindow

FORMAT = 1
NOTHING = Decimal(0)  # Decimals are immutable: every unrefunded order may share it
SNAPSHOT_EVERY = 250  # versions: at most this many events folded on top of one


def _at(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def instant_text(at: datetime) -> str:
    """An instant as snapshots index it: fixed-width UTC text, which sorts as instants do."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(member: Member) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "id": member.id.hex,
            "version": member.version,
            "created_on": _at(member.created_on),
            "modified_on": _at(member.modified_on),
            "member_id": member.member_id,
            "tier": member.tier,
            "qualifying_points": member.qualifying_points,
            "lifetime_points": member.lifetime_points,
            "last_event_at": _at(member.last_event_at),
            "latest_at": _at(member.latest_at),
            "debt": member.debt,
            "orders": [
                [k, _at(o.at), str(o.amount), o.earned, o.base, str(o.refunded), o.base_removed]
                for k, o in member.orders.items()
            ],
            "referral": None
            if member.referral is None
            else [member.referral.referrer_id, _at(member.referral.at), member.referral.settled],
            "shares_by_day": member.shares_by_day,
            "lots": [[_at(lot.date), lot.points] for lot in member.lots],
            "enrolled_at": _at(member.enrolled_at),
            "birth_date": None if member.birth_date is None else member.birth_date.isoformat(),
            "last_birthday": _at(member.last_birthday),
            "reviewed_products": sorted(member.reviewed_products),
            "rewarded_reviews_by_day": member.rewarded_reviews_by_day,
            "share_times": [_at(t) for t in member.share_times],
            "review_times": [_at(t) for t in member.review_times],
            "campaign_uses": member.campaign_uses,
            "badges": {k: _at(v) for k, v in member.badges.items()},
            "pending": [[c.order_id, _at(c.release_at), c.points] for c in member.pending],
        },
        option=orjson.OPT_PASSTHROUGH_DATETIME,
    )


def decode(data: bytes) -> Member | None:
    """The member a snapshot holds; None when its format is not this code's."""
    # A long member's state is thousands of small objects, freed by reference counting:
    # the cyclic collector would walk the heap again and again while they are made.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decode(data)
    finally:
        if collecting:
            gc.enable()


def _decode(data: bytes) -> Member | None:
    state: dict[str, Any] = orjson.loads(data)
    if state.get("format") != FORMAT:
        return None
    member = object.__new__(Member)
    member._id = UUID(hex=state["id"])
    member._version = state["version"]
    member._created_on = _when(state["created_on"])
    member._modified_on = _when(state["modified_on"])
    member._pending_events = []
    member.member_id = state["member_id"]
    member.tier = state["tier"]
    member.qualifying_points = state["qualifying_points"]
    member.lifetime_points = state["lifetime_points"]
    member.last_event_at = _instant(state["last_event_at"])
    member.latest_at = _instant(state["latest_at"])
    member.debt = state["debt"]
    member.orders = {
        k: Order(
            _when(at),
            Decimal(amount),
            earned,
            base,
            NOTHING if refunded == "0" else Decimal(refunded),
            removed,
        )
        for k, at, amount, earned, base, refunded, removed in state["orders"]
    }
    member._window = OrderWindow()
    for order in member.orders.values():
        member._window.add(order.at, order.base - order.base_removed)
    referral = state["referral"]
    member.referral = (
        None if referral is None else Referral(referral[0], _when(referral[1]), referral[2])
    )
    member.shares_by_day = state["shares_by_day"]
    member._lots = [Lot(_when(d), p) for d, p in state["lots"]]
    member._held = sum(lot.points for lot in member._lots)
    member.enrolled_at = _instant(state["enrolled_at"])
    born = state["birth_date"]
    member.birth_date = None if born is None else date.fromisoformat(born)
    member.last_birthday = _instant(state["last_birthday"])
    member.reviewed_products = set(state["reviewed_products"])
    member.rewarded_reviews_by_day = state["rewarded_reviews_by_day"]
    member.share_times = [_when(t) for t in state["share_times"]]
    member.review_times = [_when(t) for t in state["review_times"]]
    member.campaign_uses = state["campaign_uses"]
    member.badges = {k: _when(v) for k, v in state["badges"].items()}
    member._pending = [PendingCredit(o, _when(r), p) for o, r, p in state["pending"]]
    return member
