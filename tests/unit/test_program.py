"""Programs are data; a malformed program file stops start-up naming the bad key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.program import DEFAULT_PROGRAM_PATH, ProgramError, load_program


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
        ("lot_lifetime_days = 365", "", "lot_lifetime_days is missing"),
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
