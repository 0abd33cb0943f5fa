"""The input registry: the one place an input type is declared, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest

from services.config import INPUT_TOPICS, Topics
from services.inputs import REGISTRY, InputType, Registry, RegistryError
from services.publish import route
from services.validation import SCHEMAS_DIR, decode_purchase

TOPICS = Topics()


def test_every_registered_type_is_complete_and_has_its_schema() -> None:
    assert REGISTRY.check() is REGISTRY
    names = {t.name for t in REGISTRY}
    assert names == {
        "purchase",
        "refund",
        "referral",
        "social_share",
        "redemption",
        "member_enrolled",
        "review",
    }
    assert {f.stem for f in SCHEMAS_DIR.glob("*.json")} == names
    assert {t.topic for t in REGISTRY} == set(INPUT_TOPICS)  # every topic carries a type


@dataclass(frozen=True)
class Gift:
    event_id: str
    member_id: str


def test_a_type_without_a_handler_stops_start_up_not_a_message() -> None:
    orphan = InputType("gift", "purchases", "member_id", Gift, decode_purchase, None)
    with pytest.raises(RegistryError, match="input type 'gift' has no handler"):
        Registry((*REGISTRY, orphan)).check()


def test_a_type_without_a_schema_or_on_an_unknown_topic_stops_start_up(tmp_path: Path) -> None:
    purchase = REGISTRY.by_name("purchase")
    assert purchase is not None
    with pytest.raises(RegistryError, match=r"no schema purchase\.json"):
        Registry((purchase,)).check(tmp_path)
    with pytest.raises(RegistryError, match="no input topic 'gifts'"):
        Registry((replace(purchase, topic="gifts"),)).check()


def test_routing_and_the_topics_types_come_from_the_registry() -> None:
    for t in REGISTRY:
        topic = TOPICS.names[t.topic]
        assert t.name in REGISTRY.carried_by(TOPICS, topic)
        assert REGISTRY.topic_of(TOPICS, t.name) == topic
        line = orjson.dumps({"type": t.name, t.key_field: "ann", "member_id": "ann"})
        assert route(line, TOPICS) == (topic, b"ann")
    referral = orjson.dumps({"type": "referral", "referee_id": "bo", "referrer_id": "al"})
    assert route(referral, TOPICS) == (TOPICS.referrals, b"bo")
    assert REGISTRY.carried_by(TOPICS, TOPICS.purchases) == {"purchase", "refund"}
    assert REGISTRY.carried_by(TOPICS, "elsewhere") == frozenset()
    assert route(b'{"type": "gift"}', TOPICS) is None


def test_topics_are_named_by_setting_and_renamed_by_the_environment() -> None:
    prefixed = Topics.prefixed("t1")
    assert prefixed.members == "t1.members" and prefixed.dead_letters == "t1.dead-letters"
    assert len(prefixed.inputs) == len(INPUT_TOPICS)
    assert prefixed.env()["LOYALTY_TOPIC_SOCIAL_SHARES"] == "t1.social-shares"
    with pytest.raises(ValueError, match="no such topic setting: gifts"):
        Topics.named(gifts="x")
