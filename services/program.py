"""A loyalty program: the numbers the rules use, read from a TOML file an operator edits."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any

from services.errors import OperatorError

DEFAULT_PROGRAM_PATH = Path(__file__).resolve().parent / "programs" / "default.toml"


class ProgramError(OperatorError):
    """A program file that cannot be used; the message names the file and the bad key."""


@dataclass(frozen=True)
class Tier:
    name: str
    min_qualifying_points: int
    multiplier: Decimal


@dataclass(frozen=True)
class Program:
    currency: str
    earn_rate: Decimal
    tiers: tuple[Tier, ...]
    lot_lifetime_days: int
    qualifying_window_days: int
    referral_window_days: int
    referee_bonus: int
    referrer_bonus: int
    share_points: int
    shares_per_day: int
    networks: frozenset[str]
    active_days: int
    at_risk_days: int
    point_value: Decimal
    max_clock_skew_minutes: int = 60

    def tier_for(self, qualifying_points: int) -> Tier:
        chosen = self.tiers[0]
        for tier in self.tiers:
            if qualifying_points >= tier.min_qualifying_points:
                chosen = tier
        return chosen

    def tier_named(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def multiplier(self, tier_name: str) -> Decimal:
        return self.tier_named(tier_name).multiplier

    @property
    def lowest_tier(self) -> str:
        return self.tiers[0].name

    # The rules ask for these on every event: built once.
    @cached_property
    def lot_lifetime(self) -> timedelta:
        return timedelta(days=self.lot_lifetime_days)

    @cached_property
    def qualifying_window(self) -> timedelta:
        return timedelta(days=self.qualifying_window_days)

    @cached_property
    def referral_window(self) -> timedelta:
        return timedelta(days=self.referral_window_days)

    @cached_property
    def max_clock_skew(self) -> timedelta:
        return timedelta(minutes=self.max_clock_skew_minutes)


def load_program(path: Path | None = None) -> Program:
    path = path or DEFAULT_PROGRAM_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProgramError(f"program file {path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError(f"program file {path}: not valid TOML: {exc}") from None
    return _Reader(path, data).program()


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self._path = path
        self._data = data

    def _fail(self, key: str, problem: str) -> ProgramError:
        return ProgramError(f"program file {self._path.name}: {key} {problem}")

    def _get(self, key: str) -> Any:
        node: Any = self._data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise self._fail(key, "is missing")
            node = node[part]
        return node

    def _int(self, key: str, value: Any = None, minimum: int = 0) -> int:
        value = self._get(key) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"must be an integer >= {minimum}, not {value!r}")
        return value

    def _decimal(self, key: str, value: Any = None) -> Decimal:
        value = self._get(key) if value is None else value
        problem = f'must be a decimal string or number such as "1.25", not {value!r}'
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._fail(key, problem)
        try:
            # str() first: a TOML float 1.25 becomes Decimal("1.25"), not its binary expansion.
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise self._fail(key, problem) from None
        if not number.is_finite() or number < 0:
            raise self._fail(key, f"must be a non-negative decimal, not {value!r}")
        return number

    def _tiers(self) -> tuple[Tier, ...]:
        raw = self._get("tiers")
        if not isinstance(raw, list) or not raw:
            raise self._fail("tiers", "must be a non-empty array of tables")
        tiers = []
        for i, item in enumerate(raw):
            key = f"tiers[{i}]"
            if not isinstance(item, dict):
                raise self._fail(key, "must be a table")
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise self._fail(f"{key}.name", "must be a non-empty string")
            for field in ("min_qualifying_points", "multiplier"):
                if field not in item:
                    raise self._fail(f"{key}.{field}", "is missing")
            tiers.append(
                Tier(
                    name,
                    self._int(f"{key}.min_qualifying_points", item["min_qualifying_points"]),
                    self._decimal(f"{key}.multiplier", item["multiplier"]),
                )
            )
        if tiers[0].min_qualifying_points != 0:
            raise self._fail("tiers[0].min_qualifying_points", "must be 0: every member has a tier")
        for i in range(1, len(tiers)):
            if tiers[i].min_qualifying_points <= tiers[i - 1].min_qualifying_points:
                raise self._fail(
                    f"tiers[{i}].min_qualifying_points", "must be above the previous tier's"
                )
        if len({t.name for t in tiers}) != len(tiers):
            raise self._fail("tiers", "names must be unique")
        return tuple(tiers)

    def program(self) -> Program:
        currency = self._get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            raise self._fail(
                "currency", f'must be an ISO 4217 code such as "EUR", not {currency!r}'
            )
        networks = self._get("social.networks")
        if not isinstance(networks, list) or not all(isinstance(n, str) and n for n in networks):
            raise self._fail("social.networks", "must be an array of network names")
        active = self._int("analytics.active_days", minimum=1)
        at_risk = self._int("analytics.at_risk_days", minimum=1)
        if at_risk <= active:
            raise self._fail("analytics.at_risk_days", "must be above analytics.active_days")
        return Program(
            currency=currency,
            earn_rate=self._decimal("earn_rate"),
            tiers=self._tiers(),
            lot_lifetime_days=self._int("lot_lifetime_days", minimum=1),
            qualifying_window_days=self._int("qualifying_window_days", minimum=1),
            referral_window_days=self._int("referral.window_days"),
            referee_bonus=self._int("referral.referee_bonus"),
            referrer_bonus=self._int("referral.referrer_bonus"),
            share_points=self._int("social.points_per_share"),
            shares_per_day=self._int("social.rewarded_shares_per_day"),
            networks=frozenset(networks),
            active_days=active,
            at_risk_days=at_risk,
            point_value=self._decimal("analytics.point_value"),
            max_clock_skew_minutes=self._int(
                "max_clock_skew_minutes", self._data.get("max_clock_skew_minutes", 60)
            ),
        )
