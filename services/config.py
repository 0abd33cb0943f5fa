"""Settings read from the environment, once, at start-up (CONTRACT section 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///.local/loyalty.sqlite3"


@dataclass(frozen=True)
class Topics:
    purchases: str = "loyalty.purchases"
    referrals: str = "loyalty.referrals"
    social_shares: str = "loyalty.social-shares"
    redemptions: str = "loyalty.redemptions"
    member_events: str = "loyalty.member-events"
    dead_letters: str = "loyalty.dead-letters"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.purchases, self.referrals, self.social_shares, self.redemptions)

    def carried_types(self, topic: str) -> frozenset[str]:
        # Which event types each input topic may carry; anything else is dead-lettered.
        return self._carried.get(topic, frozenset())

    @cached_property
    def _carried(self) -> dict[str, frozenset[str]]:
        return {
            self.purchases: frozenset({"purchase", "refund"}),
            self.referrals: frozenset({"referral"}),
            self.social_shares: frozenset({"social_share"}),
            self.redemptions: frozenset({"redemption"}),
        }

    def for_type(self, event_type: str) -> str | None:
        return {
            "purchase": self.purchases,
            "refund": self.purchases,
            "referral": self.referrals,
            "social_share": self.social_shares,
            "redemption": self.redemptions,
        }.get(event_type)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    database_url: str = DEFAULT_DATABASE_URL
    program_path: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    daily_sweep: bool = True
    consumer_group: str = "loyalty-ledger"
    batch_max_messages: int = 5000
    batch_max_seconds: float = 0.2
    projection_page: int = 5000
    topics: Topics = field(default_factory=Topics)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        program = env.get("LOYALTY_PROGRAM")
        sweep = env.get("LOYALTY_DAILY_SWEEP", "on").strip().lower()
        if sweep not in {"on", "off"}:
            raise ValueError(f"LOYALTY_DAILY_SWEEP must be 'on' or 'off', not {sweep!r}")
        defaults = Topics()
        topics = Topics(
            purchases=env.get("LOYALTY_TOPIC_PURCHASES", defaults.purchases),
            referrals=env.get("LOYALTY_TOPIC_REFERRALS", defaults.referrals),
            social_shares=env.get("LOYALTY_TOPIC_SOCIAL_SHARES", defaults.social_shares),
            redemptions=env.get("LOYALTY_TOPIC_REDEMPTIONS", defaults.redemptions),
            member_events=env.get("LOYALTY_TOPIC_MEMBER_EVENTS", defaults.member_events),
            dead_letters=env.get("LOYALTY_TOPIC_DEAD_LETTERS", defaults.dead_letters),
        )
        return cls(
            kafka_bootstrap=env.get("LOYALTY_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            database_url=env.get("LOYALTY_DATABASE_URL", cls.database_url),
            program_path=Path(program) if program else None,
            api_host=env.get("LOYALTY_API_HOST", cls.api_host),
            api_port=int(env.get("LOYALTY_API_PORT", str(cls.api_port))),
            daily_sweep=sweep == "on",
            consumer_group=env.get("LOYALTY_CONSUMER_GROUP", cls.consumer_group),
            batch_max_messages=int(env.get("LOYALTY_BATCH_MAX", str(cls.batch_max_messages))),
            batch_max_seconds=float(env.get("LOYALTY_BATCH_SECONDS", str(cls.batch_max_seconds))),
            projection_page=int(env.get("LOYALTY_PROJECTION_PAGE", str(cls.projection_page))),
            topics=topics,
        )
