"""Programs are data; a malformed program file stops start-up naming the bad key."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.program import ProgramError, Tier
from services.program_file import DEFAULT_PROGRAM_PATH, load_program


def test_the_default_program_holds_the_contract_numbers() -> None:
    program = load_program(None)
    assert program.currency == "EUR"
    assert [(t.name, t.min_qualifying_points, t.multiplier) for t in program.tiers] == [
        ("bronze", 0, Decimal("1")),
        ("silver", 1000, Decimal("1.25")),
        ("gold", 5000, Decimal("1.5")),
    ]
    assert (program.lot_lifetime_days, program.qualifying_window_days) == (365, 365)
    assert (program.referral_window_days, program.referee_bonus, program.referrer_bonus) == (
        90,
        250,
        500,
    )
    assert (program.share_points, program.shares_per_day) == (10, 3)
    assert program.networks == {"facebook", "instagram", "x", "tiktok", "pinterest", "linkedin"}


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_PROGRAM_PATH.read_text()
    assert old in text
    path = tmp_path / "program.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('multiplier = "1.25"', 'multiplier = "fast"', "tiers[1].multiplier"),
        (
            "min_qualifying_points = 1000",
            "min_qualifying_points = -3",
            "tiers[1].min_qualifying_points",
        ),
        (
            "min_qualifying_points = 5000",
            "min_qualifying_points = 500",
            "tiers[2].min_qualifying_points",
        ),
        ('currency = "EUR"', 'currency = "euro"', "currency"),
        ("referee_bonus = 250", "referee_bonus = 2.5", "referral.referee_bonus"),
        ("lot_lifetime_days = 365", "lot_lifetime_days = 0", "lot_lifetime_days"),
        ("pending_days = 0", "pending_days = -1", "pending_days"),
        ("welcome_bonus = 100", 'welcome_bonus = "lots"', "enrolment.welcome_bonus"),
        (
            "rewarded_reviews_per_day = 2",
            "rewarded_reviews_per_day = 1.5",
            "reviews.rewarded_reviews_per_day",
        ),
        ('earn_rate = "1"', "earn_rate = [1]", "earn_rate"),
        ("at_risk_days = 180", "at_risk_days = 30", "analytics.at_risk_days"),
    ],
)
def test_a_malformed_program_names_the_bad_key(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    with pytest.raises(ProgramError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_program(edited(tmp_path, old, new))


def test_not_toml_and_a_missing_file_say_so(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("currency = ")
    with pytest.raises(ProgramError, match="not valid TOML"):
        load_program(broken)
    with pytest.raises(ProgramError, match="cannot be read"):
        load_program(tmp_path / "absent.toml")


def test_an_edited_program_changes_the_numbers(tmp_path: Path) -> None:
    program = load_program(edited(tmp_path, 'earn_rate = "1"', 'earn_rate = "2"'))
    assert program.earn_rate == Decimal("2")


SEASONAL = DEFAULT_PROGRAM_PATH.parent / "seasonal.toml"


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


def test_a_program_file_holds_only_what_it_changes(tmp_path: Path) -> None:
    program = load_program(
        written(tmp_path, "pending_days = 14\n[reviews]\npoints_per_review = 5\n")
    )
    assert program.pending_days == 14
    assert program.review_points == 5
    assert program.rewarded_reviews_per_day == 2  # the rest of [reviews] keeps the default
    assert program == replace(load_program(None), pending_days=14, review_points=5)


def test_the_keys_of_sections_2_and_6_to_8_have_their_contract_defaults() -> None:
    program = load_program(None)
    assert program.max_clock_skew_minutes == 60
    assert program.pending_days == 0
    assert (program.welcome_bonus, program.birthday_bonus) == (100, 200)
    assert (program.review_points, program.rewarded_reviews_per_day) == (25, 2)
    assert program.campaigns == () and program.badges == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("pending_dayz = 3", "pending_dayz is not a key a program may have"),
        ("[referral]\nwindow_dayz = 3", "referral.window_dayz is not a key"),
        ("[enrolments]\nwelcome_bonus = 3", "enrolments is not a key"),
        (
            "[[tiers]]\nname = 'b'\nmin_qualifying_points = 0\nmultiplier = '1'\ncolour = 'red'",
            "tiers[0].colour is not a key",
        ),
        (
            "[[campaigns]]\nid = 'x'\nstarts = 2026-01-01T00:00:00Z\nends = 2026-02-01T00:00:00Z\n"
            "applies_to = 'purchase'\nmultipler = '2'",
            r"campaigns[0].multipler is not a key",
        ),
        (
            "[[badges]]\nid = 'b'\ntype = 'review'\ncount = 2\nwithin = 3",
            "badges[0].within is not a key",
        ),
    ],
)
def test_an_unknown_key_stops_start_up_naming_it(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(named)):
        load_program(written(tmp_path, text))


CAMPAIGN = (
    "[[campaigns]]\nid = {id}\nstarts = {starts}\nends = {ends}\napplies_to = '{applies_to}'\n"
)


def campaign(**fields: str) -> str:
    base = {
        "id": '"c1"',
        "starts": "2026-12-01T00:00:00Z",
        "ends": "2027-01-01T00:00:00Z",
        "applies_to": "purchase",
    }
    extra = {k: v for k, v in fields.items() if k not in base}
    text = CAMPAIGN.format(**{**base, **{k: v for k, v in fields.items() if k in base}})
    return text + "".join(f"{k} = {v}\n" for k, v in extra.items())


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (campaign(ends="2026-12-01T00:00:00Z"), "campaigns[0].ends must be after starts"),
        (campaign(ends="2026-11-01T00:00:00Z"), "campaigns[0].ends must be after starts"),
        (campaign() + campaign(), "campaigns[1].id 'c1' is a duplicate id"),
        (campaign(multiplier='"0.99"'), "campaigns[0].multiplier must be a decimal >= 1"),
        (campaign(multiplier='"-2"'), "campaigns[0].multiplier"),
        (campaign(applies_to="refund"), "campaigns[0].applies_to must be one of"),
        (campaign(tiers='["platinum"]'), "campaigns[0].tiers"),
        (
            campaign(applies_to="review", min_amount='"10"'),
            "campaigns[0].min_amount applies to purchases only",
        ),
        (campaign(max_per_member="0"), "campaigns[0].max_per_member must be an integer >= 1"),
        (campaign(bonus="-5"), "campaigns[0].bonus"),
        (campaign(id='""'), "campaigns[0].id must be a string of 1-64 characters"),
        (campaign(id='"' + "x" * 65 + '"'), "campaigns[0].id must be a string of 1-64"),
        (campaign(starts='"yesterday"'), "campaigns[0].starts"),
        (campaign(starts="2026-12-01T00:00:00"), "campaigns[0].starts needs a UTC offset"),
        (
            "[[campaigns]]\nid = 'x'\napplies_to = 'purchase'\nends = 2027-01-01T00:00:00Z",
            "campaigns[0].starts is missing",
        ),
        (
            "[[badges]]\nid = 'b'\ntype = 'review'\ncount = 2\n" * 2,
            "badges[1].id 'b' is a duplicate id",
        ),
        ("[[badges]]\nid = 'b'\ntype = 'redemption'\ncount = 2", "badges[0].type must be one of"),
        (
            "[[badges]]\nid = 'b'\ntype = 'review'\ncount = 0",
            "badges[0].count must be an integer >= 1",
        ),
        (
            "[[badges]]\nid = 'b'\ntype = 'review'\ncount = 2\nwithin_days = 0",
            "badges[0].within_days",
        ),
    ],
)
def test_a_malformed_campaign_or_badge_stops_start_up_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ProgramError, match=re.escape(named)):
        load_program(written(tmp_path, text))


def test_a_campaign_reads_its_keys_and_defaults(tmp_path: Path) -> None:
    program = load_program(
        written(
            tmp_path,
            campaign(
                id='"xmas"', tiers='["silver", "gold"]', min_amount='"50.00"', max_per_member="3"
            )
            + campaign(id='"plain"', starts='"2026-12-01T01:00:00+01:00"', applies_to="enrolment"),
        )
    )
    xmas, plain = program.campaigns
    assert (xmas.multiplier, xmas.bonus, xmas.tiers, xmas.min_amount, xmas.max_per_member) == (
        Decimal(1),
        0,
        frozenset({"silver", "gold"}),
        Decimal("50.00"),
        3,
    )
    assert plain.starts == datetime(2026, 12, 1, tzinfo=UTC)  # a string with an offset, in UTC
    assert plain.applies_to == "enrolment" and plain.tiers is None and plain.max_per_member is None


def test_the_seasonal_program_shows_campaigns_badges_and_a_return_window() -> None:
    program = load_program(SEASONAL)
    assert program.pending_days == 14
    assert [c.id for c in program.campaigns] == [
        "double-december-2025",
        "double-december-2026",
        "big-basket",
        "review-week",
    ]
    assert [(b.id, b.kind, b.count, b.within_days, b.bonus) for b in program.badges] == [
        ("regular", "purchase", 5, 30, 100),
        ("critic", "review", 3, None, 75),
    ]
    assert program.tiers == load_program(None).tiers


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 5_000), min_size=1, max_size=5),
    st.integers(-10, 6_000),
)
def test_a_tier_is_found_as_by_a_walk_over_the_tiers(minimums: list[int], points: int) -> None:
    # Rising minimums (every program file's) take the bisection; any other order the walk.
    tiers = tuple(Tier(f"t{i}", m, Decimal(1)) for i, m in enumerate(minimums))
    program = replace(load_program(None), tiers=tiers)
    walked = tiers[0]
    for tier in tiers:
        if points >= tier.min_qualifying_points:
            walked = tier
    assert program.tier_for(points) == walked
    assert program.tier_named(walked.name) == walked
    assert program.multiplier(walked.name) == walked.multiplier
    assert program.lowest_tier == tiers[0].name
