"""The dashboard at `GET /` of `loyalty api`, in a real browser (Debian's Chromium, driven by
Playwright; deploy/browser.sh installs it): every chart holds what the API answers for the
chosen day, the as_of picker reloads every figure, a failing endpoint shows an error line,
and the page asks nothing of any host but the API's."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from services.bootstrap import build
from services.config import Settings
from tests.conftest import new_database
from tests.e2e.processes import free_port, get_json, running, wait_for
from tests.infra import Services
from tests.integration.harness import commit_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BROWSER_SH = ROOT / "deploy" / "browser.sh"
SEASONAL = ROOT / "services" / "programs" / "seasonal.toml"
# Chromium's own services (updates, sync, field trials) would reach the internet: off, so
# that every request the test sees is the page's.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LATE, EARLY = "2026-06-30", "2026-01-31"
CHARTS = (
    "chart-tiers",
    "chart-activity",
    "chart-churn",
    "chart-tier-moves",
    "chart-clv",
    "chart-liability",
    "chart-segments",
    "chart-campaigns",
)


def _at(day: str) -> str:
    return f"{day}T12:00:00Z"


def _enrol(member: str, day: str) -> dict[str, Any]:
    return {"type": "member_enrolled", "member_id": member, "occurred_at": _at(day)}


def _buy(member: str, n: int, day: str, amount: str) -> dict[str, Any]:
    return {
        "type": "purchase",
        "member_id": member,
        "order_id": f"{member}-o{n}",
        "amount": amount,
        "currency": "EUR",
        "occurred_at": _at(day),
    }


def _refund(member: str, n: int, day: str, amount: str) -> dict[str, Any]:
    order = {"member_id": member, "order_id": f"{member}-o{n}", "amount": amount}
    return {"type": "refund", **order, "occurred_at": _at(day)}


# Eight members over a year, under the seasonal program: ann, bob and cy buy in the
# double-December campaign, five baskets of 150.00 or more take the big-basket bonus, hal
# comes back after seven months (a reactivation), eve after five and redeems, bob lapses,
# dee never buys, gus returns his only order within the return window.
EVENTS: list[dict[str, Any]] = sorted(
    [
        _enrol("hal", "2025-07-01"),
        _buy("hal", 1, "2025-07-02", "75.00"),
        _buy("hal", 2, "2026-02-10", "35.00"),
        _enrol("ann", "2025-10-05"),
        _buy("ann", 1, "2025-10-10", "200.00"),
        _buy("ann", 2, "2025-12-05", "1000.00"),
        _buy("ann", 3, "2026-03-10", "100.00"),
        _buy("ann", 4, "2026-06-15", "80.00"),
        _enrol("bob", "2025-11-02"),
        _buy("bob", 1, "2025-11-03", "40.00"),
        _buy("bob", 2, "2025-12-20", "60.00"),
        _enrol("cy", "2025-12-01"),
        _buy("cy", 1, "2025-12-02", "30.00"),
        _buy("cy", 2, "2026-02-14", "25.00"),
        _buy("cy", 3, "2026-05-01", "20.00"),
        _enrol("dee", "2026-01-15"),
        {
            "type": "social_share",
            "member_id": "dee",
            "network": "x",
            "occurred_at": _at("2026-01-16"),
        },
        _buy("eve", 1, "2025-11-20", "500.00"),
        _buy("eve", 2, "2026-04-20", "500.00"),
        {
            "type": "redemption",
            "member_id": "eve",
            "points": 300,
            "reward": "voucher",
            "occurred_at": _at("2026-05-01"),
        },
        _enrol("fay", "2026-02-01"),
        _buy("fay", 1, "2026-02-02", "150.00"),
        {
            "type": "review",
            "member_id": "fay",
            "product_id": "p1",
            "rating": 5,
            "occurred_at": _at("2026-06-03"),
        },
        _enrol("gus", "2026-03-01"),
        _buy("gus", 1, "2026-03-05", "45.00"),
        _refund("gus", 1, "2026-03-08", "45.00"),
    ],
    key=lambda e: str(e["occurred_at"]),
)
for _n, _event in enumerate(EVENTS):
    _event["event_id"] = f"e{_n}"
MEMBERS = sorted({str(e["member_id"]) for e in EVENTS})


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's executable: installed when missing. No browser is a failure, not a
    skip: the dashboard would go untested on every machine that lacks one."""
    install = subprocess.run(
        ["bash", str(BROWSER_SH), "install"], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, f"deploy/browser.sh install failed:\n{install.stderr}"
    found = subprocess.run(
        ["bash", str(BROWSER_SH), "path"], capture_output=True, text=True, timeout=30
    )
    assert found.returncode == 0, f"deploy/browser.sh path failed:\n{found.stderr}"
    return found.stdout.strip()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        yield _launch(playwright, chromium)


def _launch(playwright: Playwright, executable: str) -> Browser:
    # Playwright's own temporary profile is a fresh --user-data-dir, removed on close.
    return playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS, timeout=60_000)


@pytest.fixture(scope="module")
def api(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`loyalty api` on a free port, serving a store that took EVENTS in; its base URL."""
    url = new_database(services)
    context = build(Settings(database_url=url, daily_sweep=False, program_path=SEASONAL))
    try:
        commit_events(context, EVENTS)
        runner = context.projection_runner()
        runner.catch_up()
        runner.close()
    finally:
        context.ledger.close()
    port = free_port()
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": url,
        "LOYALTY_PROGRAM": str(SEASONAL),
        "LOYALTY_API_HOST": "127.0.0.1",
        "LOYALTY_API_PORT": str(port),
        "LOYALTY_DAILY_SWEEP": "off",
    }
    base = f"http://127.0.0.1:{port}"
    with running(["api"], env, tmp_path_factory.mktemp("dashboard")) as procs:
        wait_for(
            lambda: True if get_json(f"{base}/metrics/tiers")[0] == 200 else None,
            30,
            "loyalty api",
            procs,
        )
        yield base


@dataclass
class Watched:
    """What the page did: every request's URL, and every console error and page error."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _open(browser: Browser, url: str) -> tuple[Page, Watched]:
    # en-US and UTC: the figures' text is then known digit for digit (Intl formats them).
    page = browser.new_page(locale="en-US", timezone_id="UTC")
    watched = Watched()
    page.on("request", lambda r: watched.requests.append(r.url))
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.errors.append(f"page error: {e}"))
    page.goto(url)
    return page, watched


def _loaded(page: Page, day: str) -> None:
    page.wait_for_function(
        "day => document.body.dataset.state === 'ready' && document.body.dataset.asOf === day",
        arg=day,
        timeout=20_000,
    )


def _pick(page: Page, day: str) -> None:
    page.fill("#as-of", day)  # as a person picking a date: input and change events
    _loaded(page, day)


def _api(base: str, path: str, day: str, **params: str) -> Any:
    query = urllib.parse.urlencode({"as_of": f"{day}T23:59:59Z", **params})
    status, body = get_json(f"{base}{path}?{query}")
    assert status == 200, f"{path} answered {status}: {body}"
    return body


def _num(value: Any) -> float | None:
    """As the page reads a figure: decimal strings as numbers, null as null."""
    return None if value is None else float(value)


def _charts(page: Page) -> dict[str, Any]:
    """Every chart's labels and data, as its Chart.js instance holds them."""
    charts: dict[str, Any] = page.evaluate(
        """ids => Object.fromEntries(ids.map(id => {
            const canvas = document.getElementById(id);
            const chart = canvas && Chart.getChart(canvas);
            return [id, chart ? {
                labels: chart.data.labels,
                datasets: Object.fromEntries(chart.data.datasets.map(d => [d.label, d.data])),
            } : null];
        }))""",
        list(CHARTS),
    )
    return charts


def _expected_charts(base: str, day: str) -> dict[str, Any]:
    """What each chart must hold for `day`: the endpoints' answers, read as the page reads."""
    tiers = _api(base, "/metrics/tiers", day)
    churn = _api(base, "/metrics/churn", day, months="12")
    value = _api(base, "/metrics/value", day)
    history = _api(base, "/metrics/liability/history", day, months="12")
    segments = _api(base, "/segments", day)["segments"]
    campaigns = _api(base, "/metrics/campaigns", day)["campaigns"]
    statuses = ["active", "at_risk", "churned", "never_purchased"]
    months = [m["month"] for m in churn["months"]]
    return {
        "chart-tiers": {
            "labels": list(tiers["members_per_tier"]),
            "datasets": {"Members": list(tiers["members_per_tier"].values())},
        },
        "chart-activity": {
            "labels": statuses,
            "datasets": {"Members": [churn["members"][s] for s in statuses]},
        },
        "chart-churn": {
            "labels": months,
            "datasets": {
                "Churned": [m["churned"] for m in churn["months"]],
                "Reactivations": [m["reactivations"] for m in churn["months"]],
                "Churn rate": [m["churn_rate"] for m in churn["months"]],
            },
        },
        "chart-tier-moves": {
            "labels": months,
            "datasets": {
                "Upgrades": [m["tier_upgrades"] for m in churn["months"]],
                "Downgrades": [m["tier_downgrades"] for m in churn["months"]],
            },
        },
        "chart-clv": {
            "labels": [m["month"] for m in value["clv_by_enrolment_month"]],
            "datasets": {
                "Average customer value by enrolment month": [
                    _num(m["clv_average"]) for m in value["clv_by_enrolment_month"]
                ]
            },
        },
        "chart-liability": {
            "labels": [m["month"] for m in history["months"]],
            "datasets": {
                "Points outstanding": [m["points_outstanding"] for m in history["months"]],
                "Points pending": [m["points_pending"] for m in history["months"]],
                "Points owed by members": [m["points_owed_by_members"] for m in history["months"]],
                "Expected cost": [_num(m["expected_cost"]) for m in history["months"]],
            },
        },
        "chart-segments": {
            "labels": [s["name"] for s in segments],
            "datasets": {"Members": [s["members"] for s in segments]},
        },
        "chart-campaigns": {
            "labels": [c["id"] for c in campaigns],
            "datasets": {
                "Points issued": [c["points_issued"] for c in campaigns],
                "Net spend": [_num(c["net_spend"]) for c in campaigns],
            },
        },
    }


def _figure(page: Page, figures: str, label: str) -> str:
    text: str = (
        page.locator(f"#{figures} div", has=page.locator("dt", has_text=label))
        .locator("dd")
        .inner_text()
    )
    return text


def _cohort_cells(page: Page) -> dict[str, list[float]]:
    cells: dict[str, list[float]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#cohorts tbody tr')].map(
            row => [row.dataset.cohort, [...row.querySelectorAll('td.cell[data-value]')].map(
                td => Number(td.dataset.value))]))"""
    )
    return cells


def _check_day(page: Page, base: str, day: str) -> dict[str, Any]:
    """Every chart, figure and cohort cell on the page is the API's answer for `day`."""
    expected = _expected_charts(base, day)
    assert _charts(page) == expected
    liability = _api(base, "/metrics/liability", day)
    assert _figure(page, "figures-liability", "Points outstanding") == (
        f"{liability['points_outstanding']:,}"
    )
    assert _figure(page, "figures-liability", "Value outstanding") == (
        f"€{float(liability['value_outstanding']):,.2f}"
    )
    cohorts = _api(base, "/metrics/cohorts", day, months="12", by="purchase")["cohorts"]
    assert _cohort_cells(page) == {
        c["cohort"]: [r for r in c["retention"] if r is not None] for c in cohorts
    }
    return expected


def _segment_members(page: Page, base: str, day: str, name: str) -> list[str]:
    """The members the page lists for the segment: its first page, as the API pages it."""
    expected = [
        m["member_id"] for m in _api(base, f"/segments/{name}/members", day, limit="20")["members"]
    ]
    page.wait_for_function(
        """ids => JSON.stringify([...document.querySelectorAll(
            '#segment-members tbody td:first-child')].map(td => td.textContent)) === ids""",
        arg=json.dumps(expected, separators=(",", ":")),
        timeout=10_000,
    )
    return expected


def _no_error_lines(page: Page) -> None:
    shown = page.locator(".error:visible").all_inner_texts()
    assert shown == [], shown


def test_every_chart_holds_the_apis_answer_and_the_picker_reloads_them(
    browser: Browser, api: str
) -> None:
    page, watched = _open(browser, f"{api}/")
    try:
        today = datetime.now(UTC).date().isoformat()
        _loaded(page, today)
        assert page.input_value("#as-of") == today
        _no_error_lines(page)

        _pick(page, LATE)
        late = _check_day(page, api, LATE)
        # What the known history makes of it, whatever the API says.
        assert sum(late["chart-tiers"]["datasets"]["Members"]) == len(MEMBERS)
        assert sum(late["chart-activity"]["datasets"]["Members"]) == len(MEMBERS)
        assert late["chart-churn"]["labels"][-1] == "2026-06"
        assert {"double-december-2025", "big-basket"} <= set(late["chart-campaigns"]["labels"])
        cells = _cohort_cells(page)
        assert cells, "the cohort table has no cells"
        assert all(0 <= v <= 1 for row in cells.values() for v in row)
        assert page.locator("#cohorts td.cell[data-value]").count() > 0
        segments = {s["name"]: s["members"] for s in _api(api, "/segments", LATE)["segments"]}
        biggest = max(segments, key=lambda name: segments[name])
        page.select_option("#segment-pick", biggest)
        assert len(_segment_members(page, api, LATE, biggest)) == min(20, segments[biggest])
        _no_error_lines(page)

        _pick(page, EARLY)
        early = _check_day(page, api, EARLY)
        assert early["chart-churn"]["labels"][-1] == "2026-01"
        assert early["chart-liability"] != late["chart-liability"]
        early_outstanding = _api(api, "/metrics/liability", EARLY)["points_outstanding"]
        late_outstanding = _api(api, "/metrics/liability", LATE)["points_outstanding"]
        assert early_outstanding != late_outstanding, "the history must tell the dates apart"
        assert _figure(page, "figures-liability", "Points outstanding") == f"{early_outstanding:,}"
        _segment_members(page, api, EARLY, biggest)  # the list follows the date
        _no_error_lines(page)
        assert page.locator("#page-error").is_hidden()
    finally:
        page.close()

    assert watched.errors == []
    fetched = [urllib.parse.urlsplit(u) for u in watched.requests]
    elsewhere = [u.geturl() for u in fetched if u.scheme != "data" and u.hostname != "127.0.0.1"]
    assert elsewhere == [], elsewhere
    paths = {u.path for u in fetched}
    assert {
        "/",
        "/static/chart.umd.min.js",
        "/static/dashboard.js",
        "/static/dashboard.css",
    } <= paths
    # Every figure is read as of the end of the chosen day.
    for u in fetched:
        if u.path.startswith(("/metrics/", "/segments")):
            as_of = urllib.parse.parse_qs(u.query)["as_of"]
            assert as_of in ([f"{today}T23:59:59Z"], [f"{LATE}T23:59:59Z"], [f"{EARLY}T23:59:59Z"])


def test_a_failing_endpoint_shows_an_error_line_and_the_rest_still_draws(
    browser: Browser, api: str
) -> None:
    page = browser.new_page(locale="en-US", timezone_id="UTC")
    try:
        page.route(
            lambda url: urllib.parse.urlsplit(url).path == "/metrics/cohorts",
            lambda route: route.fulfill(
                status=500, content_type="application/json", body='{"error": "cohorts broke"}'
            ),
        )
        page.route(
            lambda url: urllib.parse.urlsplit(url).path == "/segments",
            lambda route: route.abort("connectionrefused"),
        )
        page.goto(f"{api}/?as_of={LATE}")
        _loaded(page, LATE)
        cohorts = page.locator("#card-cohorts > .error")
        assert cohorts.is_visible()
        assert "500" in cohorts.inner_text() and "cohorts broke" in cohorts.inner_text()
        segments = page.locator("#card-segments > .error")
        assert segments.is_visible()
        assert "no answer from the API" in segments.inner_text()
        assert "2 of 9 could not be shown" in page.inner_text("#status")
        assert page.locator(".error:visible").count() == 2
        assert _charts(page)["chart-tiers"] == _expected_charts(api, LATE)["chart-tiers"]
    finally:
        page.close()
