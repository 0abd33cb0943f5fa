"""Reads a program file: TOML an operator edits, checked key by key at start-up.

A file need only hold what it changes: every key it leaves out keeps the default
program's value (services/programs/default.toml). A key the default program does not
know, a value of the wrong kind, a campaign that ends before it starts, a duplicate id,
a multiplier below 1: each stops start-up with one line naming the key.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from services.instants import parse_instant
from services.program import (
    BADGE_KINDS,
    CAMPAIGN_KINDS,
    Badge,
    Campaign,
    Program,
    ProgramError,
    Tier,
)

DEFAULT_PROGRAM_PATH = Path(__file__).resolve().parent / "programs" / "default.toml"
# Tables of arrays whose items have keys of their own (the default program lists none of
# campaigns or badges, so their keys are named here).
ITEM_KEYS = {
    "tiers": {"name", "min_qualifying_points", "multiplier"},
    "campaigns": {
        "id",
        "starts",
        "ends",
        "applies_to",
        "multiplier",
        "bonus",
        "tiers",
        "min_amount",
        "max_per_member",
    },
    "badges": {"id", "type", "count", "within_days", "bonus"},
}
ID_LENGTH = 64


def load_program(path: Path | None = None) -> Program:
    defaults = _read(DEFAULT_PROGRAM_PATH)
    if path is None or path.resolve() == DEFAULT_PROGRAM_PATH:
        return _Reader(DEFAULT_PROGRAM_PATH, defaults).program()
    data = _read(path)
    _refuse_unknown_keys(path, data, defaults)
    return _Reader(path, _merged(defaults, data)).program()


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProgramError(f"program file {path}: cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProgramError(f"program file {path}: not valid TOML: {exc}") from None


def _merged(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    # Tables merge key by key; anything else (arrays of tiers, say) is replaced whole.
    merged = dict(defaults)
    for key, value in data.items():
        base = merged.get(key)
        merged[key] = (
            _merged(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
        )
    return merged


def _refuse_unknown_keys(path: Path, data: dict[str, Any], defaults: dict[str, Any]) -> None:
    def walk(node: dict[str, Any], known: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if key in ITEM_KEYS and not prefix:
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        if isinstance(item, dict):
                            for item_key in item:
                                if item_key not in ITEM_KEYS[key]:
                                    raise _fail(
                                        path,
                                        f"{name}[{i}].{item_key}",
                                        "is not a key a program may have",
                                    )
                continue
            if key not in known:
                raise _fail(path, name, "is not a key a program may have")
            if isinstance(known[key], dict) and isinstance(value, dict):
                walk(value, known[key], f"{name}.")

    walk(data, defaults, "")


def _fail(path: Path, key: str, problem: str) -> ProgramError:
    return ProgramError(f"program file {path.name}: {key} {problem}")


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self._path = path
        self._data = data

    def _fail(self, key: str, problem: str) -> ProgramError:
        return _fail(self._path, key, problem)

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

    def _decimal(self, key: str, value: Any = None, minimum: Decimal = Decimal(0)) -> Decimal:
        value = self._get(key) if value is None else value
        problem = f'must be a decimal string or number such as "1.25", not {value!r}'
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._fail(key, problem)
        try:
            # str() first: a TOML float 1.25 becomes Decimal("1.25"), not its binary expansion.
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise self._fail(key, problem) from None
        if not number.is_finite() or number < minimum:
            raise self._fail(key, f"must be a decimal >= {minimum}, not {value!r}")
        return number

    def _instant(self, key: str, value: Any) -> datetime:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise self._fail(key, f"needs a UTC offset, e.g. 2026-12-01T00:00:00Z, not {value}")
            return value.astimezone(UTC)
        if isinstance(value, str):
            try:
                return parse_instant(value)
            except ValueError as exc:
                raise self._fail(key, str(exc)) from None
        raise self._fail(
            key, f"must be an RFC 3339 instant such as 2026-12-01T00:00:00Z, not {value!r}"
        )

    def _id(self, key: str, value: Any, seen: set[str]) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= ID_LENGTH:
            raise self._fail(key, f"must be a string of 1-{ID_LENGTH} characters, not {value!r}")
        if value in seen:
            raise self._fail(key, f"{value!r} is a duplicate id")
        seen.add(value)
        return value

    def _items(self, key: str) -> list[dict[str, Any]]:
        raw = self._data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            raise self._fail(key, "must be an array of tables ([[" + key + "]])")
        return raw

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

    def _campaigns(self, tiers: tuple[Tier, ...]) -> tuple[Campaign, ...]:
        seen: set[str] = set()
        names = {t.name for t in tiers}
        campaigns = []
        for i, item in enumerate(self._items("campaigns")):
            key = f"campaigns[{i}]"
            for required in ("id", "starts", "ends", "applies_to"):
                if required not in item:
                    raise self._fail(f"{key}.{required}", "is missing")
            campaign_id = self._id(f"{key}.id", item["id"], seen)
            starts = self._instant(f"{key}.starts", item["starts"])
            ends = self._instant(f"{key}.ends", item["ends"])
            if ends <= starts:
                raise self._fail(f"{key}.ends", f"must be after starts ({item['starts']})")
            applies_to = item["applies_to"]
            if applies_to not in CAMPAIGN_KINDS:
                raise self._fail(
                    f"{key}.applies_to",
                    f"must be one of {', '.join(CAMPAIGN_KINDS)}, not {applies_to!r}",
                )
            tiers_of = item.get("tiers")
            if tiers_of is not None and (
                not isinstance(tiers_of, list) or not tiers_of or not set(tiers_of) <= names
            ):
                raise self._fail(
                    f"{key}.tiers",
                    f"must be a non-empty list of the program's tiers {sorted(names)}",
                )
            min_amount = item.get("min_amount")
            if min_amount is not None and applies_to != "purchase":
                raise self._fail(f"{key}.min_amount", "applies to purchases only")
            max_per_member = item.get("max_per_member")
            campaigns.append(
                Campaign(
                    id=campaign_id,
                    starts=starts,
                    ends=ends,
                    applies_to=applies_to,
                    multiplier=self._decimal(
                        f"{key}.multiplier", item.get("multiplier", "1"), minimum=Decimal(1)
                    ),
                    bonus=self._int(f"{key}.bonus", item.get("bonus", 0)),
                    tiers=None if tiers_of is None else frozenset(tiers_of),
                    min_amount=None
                    if min_amount is None
                    else self._decimal(f"{key}.min_amount", min_amount),
                    max_per_member=None
                    if max_per_member is None
                    else self._int(f"{key}.max_per_member", max_per_member, minimum=1),
                )
            )
        return tuple(campaigns)

    def _badges(self) -> tuple[Badge, ...]:
        seen: set[str] = set()
        badges = []
        for i, item in enumerate(self._items("badges")):
            key = f"badges[{i}]"
            for required in ("id", "type", "count"):
                if required not in item:
                    raise self._fail(f"{key}.{required}", "is missing")
            kind = item["type"]
            if kind not in BADGE_KINDS:
                raise self._fail(
                    f"{key}.type", f"must be one of {', '.join(BADGE_KINDS)}, not {kind!r}"
                )
            within = item.get("within_days")
            badges.append(
                Badge(
                    id=self._id(f"{key}.id", item["id"], seen),
                    kind=kind,
                    count=self._int(f"{key}.count", item["count"], minimum=1),
                    within_days=None
                    if within is None
                    else self._int(f"{key}.within_days", within, minimum=1),
                    bonus=self._int(f"{key}.bonus", item.get("bonus", 0)),
                )
            )
        return tuple(badges)

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
        tiers = self._tiers()
        return Program(
            currency=currency,
            earn_rate=self._decimal("earn_rate"),
            tiers=tiers,
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
            max_clock_skew_minutes=self._int("max_clock_skew_minutes"),
            pending_days=self._int("pending_days"),
            welcome_bonus=self._int("enrolment.welcome_bonus"),
            birthday_bonus=self._int("enrolment.birthday_bonus"),
            review_points=self._int("reviews.points_per_review"),
            rewarded_reviews_per_day=self._int("reviews.rewarded_reviews_per_day"),
            campaigns=self._campaigns(tiers),
            badges=self._badges(),
        )
