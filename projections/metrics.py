"""Analytics over the read models: tiers, churn and points liability, as of any instant.

Each figure is defined in one sentence in the README, exactly as computed here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from projections.analytics import amount, breakage
from projections.base import iso
from services.program import Program
from services.store.database import Database

SELECT_TIERS = "SELECT tier, COUNT(*) FROM member_balances GROUP BY tier"
SELECT_TIER_MOVES = (
    "SELECT month, direction, COUNT(*) FROM tier_changes WHERE at <= ? GROUP BY month, direction"
)
SELECT_PURCHASES = (
    "SELECT aggregate_id, at FROM member_purchases WHERE at <= ? ORDER BY aggregate_id, at"
)
SELECT_MEMBERS = "SELECT COUNT(*) FROM member_balances"
# The lots as they stood at T: every movement of each lot up to T, the lots not yet
# expired at T (dated after T - lifetime); then what of them falls due within 30 and 90 days.
SELECT_LOTS_AS_OF = (
    "SELECT COALESCE(SUM(points), 0), "
    "COALESCE(SUM(CASE WHEN lot_date <= ? THEN points ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN lot_date <= ? THEN points ELSE 0 END), 0) "
    "FROM lot_movements WHERE at <= ? AND lot_date > ?"
)
# Each member's balance after its latest entry dated at or before T: below zero, a debt.
# Only members whose balance ever went below zero can owe (ledger_entries_debt).
SELECT_OWED_AS_OF = (
    "SELECT COALESCE(SUM(-balance), 0) FROM (SELECT balance, ROW_NUMBER() OVER "
    "(PARTITION BY aggregate_id ORDER BY version DESC) AS latest FROM ledger_entries "
    "WHERE at <= ? AND aggregate_id IN "
    "(SELECT aggregate_id FROM ledger_entries WHERE balance < 0)) AS last "
    "WHERE latest = 1 AND balance < 0"
)
# Each order's points still pending at T: held at its purchase, less refunds up to T, when
# its release time is after T.
SELECT_PENDING_AS_OF = (
    "SELECT COALESCE(SUM(held), 0) FROM (SELECT MAX(release_at) AS release_at, "
    "SUM(points) AS held FROM pending_moves WHERE at <= ? GROUP BY aggregate_id, order_id) "
    "AS credits WHERE release_at > ? AND held > 0"
)


def tier_metrics(db: Database, program: Program, as_of: datetime) -> dict[str, Any]:
    per_tier = {tier.name: 0 for tier in program.tiers}
    for tier, n in db.query(SELECT_TIERS):
        per_tier[tier] = int(n)
    months: dict[str, dict[str, int]] = defaultdict(lambda: {"upgrades": 0, "downgrades": 0})
    for month, direction, n in db.query(SELECT_TIER_MOVES, (iso(as_of),)):
        months[month][f"{direction}s"] += int(n)
    return {
        "members_per_tier": per_tier,
        "changes_per_month": [{"month": m, **months[m]} for m in sorted(months)],
    }


@dataclass(frozen=True)
class Month:
    label: str
    start: datetime
    end: datetime  # exclusive, or as_of for the current month


def months_before(as_of: datetime, count: int) -> list[Month]:
    first = as_of.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = [first]
    while len(starts) < count:
        previous = starts[-1] - timedelta(days=1)
        starts.append(previous.replace(day=1))
    starts.reverse()
    ends = [*starts[1:], as_of]
    return [Month(s.strftime("%Y-%m"), s, min(e, as_of)) for s, e in zip(starts, ends, strict=True)]


def churn_metrics(
    db: Database, program: Program, as_of: datetime, months: int = 12
) -> dict[str, Any]:
    active_window = timedelta(days=program.active_days)
    churn_window = timedelta(days=program.at_risk_days)
    histories: dict[str, list[datetime]] = defaultdict(list)
    for aggregate_id, at in db.query(SELECT_PURCHASES, (iso(as_of),)):
        histories[aggregate_id].append(_parse(at))
    members = int(db.query(SELECT_MEMBERS)[0][0])
    status = {"active": 0, "at_risk": 0, "churned": 0}
    for purchases in histories.values():
        since = as_of - purchases[-1]
        key = (
            "active"
            if since <= active_window
            else "at_risk"
            if since <= churn_window
            else "churned"
        )
        status[key] += 1
    repeaters = sum(1 for p in histories.values() if len(p) >= 2)
    tiers = {m["month"]: m for m in tier_metrics(db, program, as_of)["changes_per_month"]}
    calendar = months_before(as_of, months)
    counts = [[0, 0, 0] for _ in calendar]  # per month: active at start, lapsed, reactivated
    # Gone before the first month began (no purchase inside the active window of its
    # start, none after it): neither active at a month's start nor back in one.
    gone_by = calendar[0].start - active_window
    for purchases in histories.values():
        if purchases[-1] <= gone_by:
            continue
        moves = _month_by_month(purchases, calendar, active_window, churn_window)
        for tally, (was_active, lapsed, returned) in zip(counts, moves, strict=True):
            tally[0] += was_active
            tally[1] += lapsed
            tally[2] += returned
    report = []
    for month, (active_at_start, lapsed, reactivated) in zip(calendar, counts, strict=True):
        moves = tiers.get(month.label, {"upgrades": 0, "downgrades": 0})
        report.append(
            {
                "month": month.label,
                "active_at_start": active_at_start,
                "churned": lapsed,
                "churn_rate": round(lapsed / active_at_start, 4) if active_at_start else None,
                "reactivations": reactivated,
                "tier_upgrades": moves["upgrades"],
                "tier_downgrades": moves["downgrades"],
            }
        )
    return {
        "as_of": iso(as_of),
        "windows": {"active_days": program.active_days, "at_risk_days": program.at_risk_days},
        "members": {**status, "never_purchased": members - len(histories)},
        "repeat_purchase_rate": round(repeaters / len(histories), 4) if histories else None,
        "months": report,
    }


def liability(db: Database, program: Program, as_of: datetime) -> dict[str, Any]:
    lifetime = timedelta(days=program.lot_lifetime_days)
    unexpired_after = iso(as_of - lifetime)
    due_30 = iso(as_of - lifetime + timedelta(days=30))
    due_90 = iso(as_of - lifetime + timedelta(days=90))
    at = iso(as_of)
    outstanding, in_30, in_90 = (
        int(v) for v in db.query(SELECT_LOTS_AS_OF, (due_30, due_90, at, unexpired_after))[0]
    )
    debt = int(db.query(SELECT_OWED_AS_OF, (at,))[0][0])
    pending = int(db.query(SELECT_PENDING_AS_OF, (at, at))[0][0])

    def money(points: int | Decimal) -> str:
        return str((program.point_value * points).quantize(program.point_value))

    rate = breakage(db, program, as_of)
    return {
        "as_of": iso(as_of),
        "point_value": str(program.point_value),
        "currency": program.currency,
        "points_outstanding": outstanding,
        "expiring_within_30_days": in_30,
        "expiring_within_90_days": in_90,
        "value_outstanding": money(outstanding),
        "value_expiring_within_30_days": money(in_30),
        "value_expiring_within_90_days": money(in_90),
        "points_owed_by_members": debt,
        "points_pending": pending,
        "value_pending": money(pending),
        "breakage_rate": rate,
        # What the outstanding points are expected to cost: those not expected to lapse.
        "expected_cost": money(Decimal(outstanding) * (1 - Decimal(str(rate or 0)))),
    }


def liability_history(
    db: Database, program: Program, as_of: datetime, months: int
) -> dict[str, Any]:
    """The liability at the end of each of the last `months` months up to `as_of` (the
    current month's figure as of `as_of` itself)."""
    rows = []
    chosen = months_before(as_of, months)
    for month in chosen:
        # A month's last second; for the month as_of falls in, as_of itself.
        at = as_of if month is chosen[-1] else month.end - timedelta(seconds=1)
        figures = liability(db, program, at)
        rows.append(
            {
                "month": month.label,
                "at": iso(at),
                **{
                    key: figures[key]
                    for key in (
                        "points_outstanding",
                        "points_pending",
                        "points_owed_by_members",
                        "breakage_rate",
                        "expected_cost",
                    )
                },
            }
        )
    return {"as_of": iso(as_of), "currency": program.currency, "months": rows}


def _parse(text: str) -> datetime:
    # iso()'s fixed-width text; fromisoformat reads its "Z" as UTC, at a tenth of strptime's cost
    return datetime.fromisoformat(text)


def _month_by_month(
    purchases: list[datetime], months: list[Month], active: timedelta, churn: timedelta
) -> list[tuple[int, int, int]]:
    """For one member, by month (1 or 0 each): active at the month's start; lapsed during
    it (active at its start, and at some instant before its end no purchase in the
    trailing `active` window); reactivated in it (a purchase in the month whose previous
    purchase was over `churn` before). `purchases` in time order. Bisection, not a scan
    per month: at a million events the months x members loop was the endpoint's cost."""
    moves = []
    for month in months:
        start, end = month.start, month.end
        after_start = bisect_right(purchases, start)  # purchases[after_start:] are > start
        before_end = bisect_left(purchases, end)  # purchases[:before_end] are < end
        was_active = after_start > 0 and purchases[after_start - 1] > start - active
        lapsed = False
        if was_active:
            last = purchases[after_start - 1]
            for bought in purchases[after_start:before_end]:
                if bought - last > active:
                    lapsed = True
                    break
                last = bought
            else:
                lapsed = last + active < end
        returned = any(
            purchases[k] - purchases[k - 1] > churn
            for k in range(max(bisect_left(purchases, start), 1), before_end)
        )
        moves.append((int(was_active), int(lapsed), int(returned)))
    return moves


SELECT_CAMPAIGNS = (
    "SELECT campaign_id, COUNT(DISTINCT aggregate_id), COUNT(*), COALESCE(SUM(points), 0) "
    "FROM campaign_rewards WHERE at <= ? GROUP BY campaign_id"
)
# The rewarded purchases' amounts, less their refunds up to T, in cents.
SELECT_CAMPAIGN_SPEND = (
    "SELECT r.campaign_id, COALESCE(SUM(p.amount_cents - COALESCE(b.back, 0)), 0) "
    "FROM campaign_rewards AS r JOIN member_purchases AS p "
    "ON p.aggregate_id = r.aggregate_id AND p.order_id = r.order_id "
    "LEFT JOIN (SELECT aggregate_id, order_id, SUM(amount_cents) AS back FROM member_refunds "
    "WHERE at <= ? GROUP BY aggregate_id, order_id) AS b "
    "ON b.aggregate_id = r.aggregate_id AND b.order_id = r.order_id "
    "WHERE r.kind = 'PurchaseRecorded' AND r.at <= ? GROUP BY r.campaign_id"
)


def campaign_results(db: Database, program: Program, as_of: datetime) -> dict[str, Any]:
    """Per campaign of the program (and any in the history that left it): members reached,
    events rewarded and points it added, up to `as_of`."""
    found = {
        campaign_id: (int(members), int(events), int(points))
        for campaign_id, members, events, points in db.query(SELECT_CAMPAIGNS, (iso(as_of),))
    }
    at = iso(as_of)
    spent = {
        campaign_id: int(cents) for campaign_id, cents in db.query(SELECT_CAMPAIGN_SPEND, (at, at))
    }
    defined = {c.id: c for c in program.campaigns}
    results = []
    for campaign_id in [*defined, *sorted(set(found) - set(defined))]:
        members, events, points = found.get(campaign_id, (0, 0, 0))
        campaign = defined.get(campaign_id)
        results.append(
            {
                "id": campaign_id,
                "applies_to": campaign.applies_to if campaign else None,
                "starts": iso(campaign.starts) if campaign else None,
                "ends": iso(campaign.ends) if campaign else None,
                "members_reached": members,
                "events_rewarded": events,
                "points_issued": points,
                "net_spend": amount(spent.get(campaign_id, 0)),
            }
        )
    return {"as_of": iso(as_of), "campaigns": results}
