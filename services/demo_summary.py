"""Waits for the demo stream to land, then prints what the API serves (for `make run`)."""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


def _settled(status: dict[str, Any]) -> bool:
    inputs = status.get("inputs", {})
    lag_zero = all(t.get("consumer_lag") == 0 for t in inputs.values())
    behind = [p["behind"] for p in status.get("projections", {}).values()]
    seen = sum(sum(v for k, v in t.items() if k != "consumer_lag" and v) for t in inputs.values())
    return lag_zero and seen > 0 and all(b == 0 for b in behind)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait", type=float, default=180)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{os.environ.get('LOYALTY_API_PORT', '8080')}"
    deadline = time.monotonic() + args.wait
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = _get(base, "/status")
            if _settled(status):
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    else:
        print(f"the stream did not settle within {args.wait:.0f}s; last status: {status}")
        return 1
    print("\n== Loyalty ledger: demo stream landed ==")
    for topic, counts in status["inputs"].items():
        print(
            f"  {topic:<24} applied {counts['applied']:>5}  duplicate {counts['duplicate']:>3}  "
            f"rejected {counts['rejected']:>3}  dead-lettered {counts['dead_lettered']:>3}"
        )
    print("  (loyalty.members: enrolments, a second one rejected as already_enrolled;")
    print("   loyalty.reviews: product reviews, 25 points for a new product, two a day)")
    print(f"  store position {status['store_position']}")
    if any(t["duplicate"] for t in status["inputs"].values()):
        print("  (duplicates: this demo stream was published by an earlier `make run` too; its")
        print(
            "   event_ids were recognised and nothing was applied twice. `make clean` starts over.)"
        )
    print("\nTop balances")
    for m in _get(base, "/members?limit=5")["members"]:
        print(
            f"  {m['member_id']:<16} {m['balance']:>7} points  {m['tier']:<7} "
            f"(qualifying {m['qualifying_points']}, lifetime {m['lifetime_points']})"
        )
    print("\nMembers per tier")
    for tier, n in _get(base, "/metrics/tiers")["members_per_tier"].items():
        print(f"  {tier:<8} {n}")
    churn = _get(base, "/metrics/churn?months=3")
    members = churn["members"]
    print(
        f"\nChurn as of {churn['as_of']} (active <= {churn['windows']['active_days']} days, "
        f"churned > {churn['windows']['at_risk_days']} days)"
    )
    print(
        f"  active {members['active']}, at risk {members['at_risk']}, churned "
        f"{members['churned']}, never purchased {members['never_purchased']}; "
        f"repeat purchase rate {churn['repeat_purchase_rate']}"
    )
    for month in churn["months"]:
        print(
            f"  {month['month']}: churn rate {month['churn_rate']}, reactivations "
            f"{month['reactivations']}, tier upgrades {month['tier_upgrades']}, "
            f"downgrades {month['tier_downgrades']}"
        )
    campaigns = _get(base, "/metrics/campaigns")["campaigns"]
    if campaigns:
        print("\nCampaigns (members reached, events rewarded, points they added)")
        for c in campaigns:
            print(
                f"  {c['id']:<22} {c['applies_to'] or '':<13} {c['members_reached']:>5} members "
                f"{c['events_rewarded']:>6} events {c['points_issued']:>8} points"
            )
    member = _get(base, "/members?limit=1")["members"]
    if member:
        shown = _get(base, f"/members/{member[0]['member_id']}")
        badges = ", ".join(b["id"] for b in shown["badges"]) or "none"
        print(
            f"\n{shown['member_id']}: enrolled {shown['enrolled_at'] or 'never'}, born "
            f"{shown['birth_date'] or 'unknown'}, badges {badges}, "
            f"{shown['pending_points']} points pending"
        )
    liability = _get(base, "/metrics/liability")
    print(
        f"\nPoints liability: {liability['points_outstanding']} points "
        f"({liability['value_outstanding']} {liability['currency']}), "
        f"{liability['expiring_within_30_days']} expiring within 30 days"
    )
    print(f"\nAPI: {base}  (e.g. {base}/members/shopper-00001, {base}/status)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
