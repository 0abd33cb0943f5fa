"""Customer value, retention cohorts, RFM segments and breakage, as of any instant.

Every figure is read from the read models (projections/README.md documents the tables)
and defined in one sentence in the README, exactly as computed here. Amounts are summed
in integer cents, so that both backends add exactly.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from projections.base import iso
from services.program import Program
from services.store.database import Database

CENT = Decimal("0.01")

# Each member's purchases and refunds up to T: orders, net spend, first and last purchase.
CUSTOMERS = (
    "SELECT p.aggregate_id, p.orders, p.spent - COALESCE(r.back, 0) AS net, p.first_at, "
    "p.last_at FROM (SELECT aggregate_id, COUNT(*) AS orders, SUM(amount_cents) AS spent, "
    "MIN(at) AS first_at, MAX(at) AS last_at FROM member_purchases WHERE at <= ? "
    "GROUP BY aggregate_id) AS p LEFT JOIN (SELECT aggregate_id, SUM(amount_cents) AS back "
    "FROM member_refunds WHERE at <= ? GROUP BY aggregate_id) AS r "
    "ON r.aggregate_id = p.aggregate_id"
)
SELECT_VALUE = (
    f"SELECT COUNT(*), COALESCE(SUM(orders), 0), COALESCE(SUM(net), 0) FROM ({CUSTOMERS}) AS c"
)
SELECT_CLV_BY_COHORT = (
    "SELECT substr(b.enrolled_at, 1, 7) AS month, COUNT(*), COALESCE(SUM(c.net), 0) "
    f"FROM member_balances AS b LEFT JOIN ({CUSTOMERS}) AS c ON c.aggregate_id = b.aggregate_id "
    "WHERE b.enrolled_at IS NOT NULL AND b.enrolled_at <= ? GROUP BY month ORDER BY month"
)
SELECT_CUSTOMERS_PAGE = (
    f"SELECT b.member_id, c.orders, c.net, c.first_at, c.last_at FROM ({CUSTOMERS}) AS c "
    "JOIN member_balances AS b ON b.aggregate_id = c.aggregate_id "
    "WHERE b.member_id > ? ORDER BY b.member_id LIMIT ?"
)
# (member, month) with a purchase up to T; and each member's enrolment month
SELECT_PURCHASE_MONTHS = (
    "SELECT aggregate_id, substr(at, 1, 7) FROM member_purchases WHERE at <= ? "
    "GROUP BY aggregate_id, substr(at, 1, 7)"
)
SELECT_ENROLMENT_MONTHS = (
    "SELECT aggregate_id, substr(enrolled_at, 1, 7) FROM member_balances "
    "WHERE enrolled_at IS NOT NULL AND enrolled_at <= ?"
)

# RFM: quintiles (1-5) by rank among the members with a purchase up to T; ties are split
# by member id, so that scores are repeatable. Recency ranks by the last purchase's
# instant (most recent: 5); frequency by orders; monetary by net spend.
RFM = (
    "SELECT c.aggregate_id, c.orders, c.net, c.last_at, "
    "NTILE(5) OVER (ORDER BY c.last_at, c.aggregate_id) AS r, "
    "NTILE(5) OVER (ORDER BY c.orders, c.aggregate_id) AS f, "
    "NTILE(5) OVER (ORDER BY c.net, c.aggregate_id) AS m FROM ({customers}) AS c"
)
# The first rule that holds names the member's segment (README, "Segments").
SEGMENT_RULES: dict[str, tuple[str, str]] = {
    "new": ("orders = 1 AND r = 5", "one purchase, and among the most recent fifth"),
    "champions": ("r >= 4 AND f >= 4 AND m >= 4", "recency, frequency and monetary 4 or 5"),
    "loyal": ("f >= 4 AND r >= 3", "frequency 4 or 5, recency 3 or more"),
    "at_risk": ("r <= 2 AND f >= 3", "recency 1 or 2, frequency 3 or more"),
    "hibernating": ("r <= 2 AND f <= 2", "recency 1 or 2, frequency 1 or 2"),
}
OTHERS = "others"
SEGMENTS = (*SEGMENT_RULES, OTHERS)
_CASE = (
    "CASE "
    + " ".join(f"WHEN {rule} THEN '{name}'" for name, (rule, _) in SEGMENT_RULES.items())
    + f" ELSE '{OTHERS}' END"
)
SEGMENTED = (
    "SELECT s.*, b.member_id, "
    + _CASE
    + " AS segment FROM ({rfm}) AS s JOIN member_balances AS b ON b.aggregate_id = s.aggregate_id"
)


def segmented(customers: str = CUSTOMERS) -> str:
    """Every member with a purchase, its scores and its segment, for `customers`' rows."""
    return SEGMENTED.format(rfm=RFM.format(customers=customers))


SELECT_SEGMENT_COUNTS = f"SELECT segment, COUNT(*) FROM ({segmented()}) AS x GROUP BY segment"
SELECT_SEGMENT_PAGE = (
    f"SELECT member_id, r, f, m, orders, net, last_at FROM ({segmented()}) AS x "
    "WHERE segment = ? AND member_id > ? ORDER BY member_id LIMIT ?"
)
# The views analysts query with SQL: as of now (every row), the same rules.
NOW_CUSTOMERS = CUSTOMERS.replace("WHERE at <= ? ", "")
VIEWS = {
    "member_rfm": segmented(NOW_CUSTOMERS),
    **{
        f"segment_{name}": f"SELECT * FROM member_rfm WHERE segment = '{name}'" for name in SEGMENTS
    },
}

# Points expired and redeemed in the trailing 365 days up to T.
SELECT_BREAKAGE = (
    "SELECT COALESCE(SUM(CASE WHEN kind = 'PointsExpired' THEN -points ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN kind = 'PointsRedeemed' THEN -points ELSE 0 END), 0) "
    "FROM ledger_entries WHERE at > ? AND at <= ? AND kind IN ('PointsExpired', 'PointsRedeemed')"
)


def amount(cents: int) -> str:
    return str((Decimal(cents) * CENT).quantize(CENT))


def value(db: Database, program: Program, as_of: datetime) -> dict[str, Any]:
    at = iso(as_of)
    members, orders, net = (int(v) for v in db.query(SELECT_VALUE, (at, at))[0])
    cohorts = [
        {
            "month": month,
            "members": int(n),
            "clv_average": amount(round(int(total) / int(n))) if n else None,
        }
        for month, n, total in db.query(SELECT_CLV_BY_COHORT, (at, at, at))
    ]
    return {
        "as_of": at,
        "currency": program.currency,
        "members_with_purchases": members,
        "orders": orders,
        "net_spend": amount(net),
        "average_order_value": amount(round(net / orders)) if orders else None,
        "clv_average": amount(round(net / members)) if members else None,
        "clv_by_enrolment_month": cohorts,
    }


def customers(
    db: Database, program: Program, as_of: datetime, after: str, limit: int
) -> dict[str, Any]:
    at = iso(as_of)
    rows = db.query(SELECT_CUSTOMERS_PAGE, (at, at, after, limit + 1))
    page = [
        {
            "member_id": member_id,
            "orders": int(orders),
            "net_spend": amount(int(net)),
            "average_order_value": amount(round(int(net) / int(orders))),
            "first_purchase_at": first,
            "last_purchase_at": last,
            "clv": amount(int(net)),
        }
        for member_id, orders, net, first, last in rows[:limit]
    ]
    more = len(rows) > limit
    return {"as_of": at, "customers": page, "next_after": page[-1]["member_id"] if more else None}


def _months(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    months = []
    while f"{year:04d}-{month:02d}" <= last:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def cohorts(db: Database, as_of: datetime, months: int, by: str) -> dict[str, Any]:
    at = iso(as_of)
    active: dict[str, set[str]] = defaultdict(set)  # month -> members with a purchase
    first_purchase: dict[str, str] = {}
    for aggregate_id, month in db.query(SELECT_PURCHASE_MONTHS, (at,)):
        active[month].add(aggregate_id)
        if aggregate_id not in first_purchase or month < first_purchase[aggregate_id]:
            first_purchase[aggregate_id] = month
    joined: dict[str, str] = (
        dict(db.query(SELECT_ENROLMENT_MONTHS, (at,))) if by == "enrolment" else first_purchase
    )
    this_month = at[:7]
    window = _months(_months_back(this_month, months - 1), this_month)
    members: dict[str, set[str]] = defaultdict(set)
    for aggregate_id, month in joined.items():
        if month >= window[0]:
            members[month].add(aggregate_id)
    rows = []
    for cohort in window:
        who = members.get(cohort, set())
        retention = [
            round(len(who & active.get(month, set())) / len(who), 4) if who else None
            for month in _months(cohort, this_month)
        ]
        rows.append({"cohort": cohort, "members": len(who), "retention": retention})
    return {"as_of": at, "by": by, "months": window, "cohorts": rows}


def _months_back(month: str, n: int) -> str:
    year, m = int(month[:4]), int(month[5:7])
    total = year * 12 + (m - 1) - n
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def segments(db: Database, as_of: datetime) -> dict[str, Any]:
    at = iso(as_of)
    counts = {name: 0 for name in SEGMENTS}
    for name, n in db.query(SELECT_SEGMENT_COUNTS, (at, at)):
        counts[name] = int(n)
    return {
        "as_of": at,
        "segments": [{"name": name, "members": counts[name]} for name in SEGMENTS],
        "rules": {
            **{name: text for name, (_, text) in SEGMENT_RULES.items()},
            OTHERS: "every other member with a purchase",
        },
    }


def segment_members(
    db: Database, program: Program, as_of: datetime, name: str, after: str, limit: int
) -> dict[str, Any]:
    at = iso(as_of)
    rows = db.query(SELECT_SEGMENT_PAGE, (at, at, name, after, limit + 1))
    page = [
        {
            "member_id": member_id,
            "recency_score": int(r),
            "frequency_score": int(f),
            "monetary_score": int(m),
            "orders": int(orders),
            "net_spend": amount(int(net)),
            "last_purchase_at": last,
        }
        for member_id, r, f, m, orders, net, last in rows[:limit]
    ]
    more = len(rows) > limit
    return {
        "as_of": at,
        "segment": name,
        "members": page,
        "next_after": page[-1]["member_id"] if more else None,
    }


def breakage(db: Database, program: Program, as_of: datetime) -> float | None:
    """Points expired over points expired or redeemed, in the trailing 365 days."""
    since = iso(as_of - timedelta(days=365))
    expired, redeemed = (int(v) for v in db.query(SELECT_BREAKAGE, (since, iso(as_of)))[0])
    return round(expired / (expired + redeemed), 4) if expired + redeemed else None
