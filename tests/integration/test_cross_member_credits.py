"""The referrer's bonus goes through the store and stays exact across workers."""

from __future__ import annotations

import pytest

from services.config import Settings
from services.ingest.messages import InputMessage
from tests.integration.harness import ingest_service, keyed_message

pytestmark = pytest.mark.integration


def message(topic: str, offset: int, **fields: object) -> InputMessage:
    return keyed_message(topic, offset, fields)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_bonus_written_by_another_worker_is_not_lost_by_the_referrers_owner(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    owner_of_bob, owner_of_cy = ingest_service(url), ingest_service(url)
    t = Settings().topics

    # bob's owner caches bob at 100 points
    owner_of_bob.commit(
        *owner_of_bob.decode(
            [
                message(
                    t.purchases,
                    0,
                    event_id="b1",
                    type="purchase",
                    occurred_at="2026-01-01T00:00:00Z",
                    member_id="bob",
                    order_id="bo1",
                    amount="100",
                    currency="EUR",
                ),
            ]
        )
    )
    # cy's owner records the referral and cy's first purchase: bob's bonus lands in the store
    owner_of_cy.commit(
        *owner_of_cy.decode(
            [
                message(
                    t.referrals,
                    0,
                    event_id="r1",
                    type="referral",
                    occurred_at="2026-01-02T00:00:00Z",
                    referrer_id="bob",
                    referee_id="cy",
                ),
                message(
                    t.purchases,
                    1,
                    event_id="c1",
                    type="purchase",
                    occurred_at="2026-01-03T00:00:00Z",
                    member_id="cy",
                    order_id="co1",
                    amount="10",
                    currency="EUR",
                ),
            ]
        )
    )
    # bob's owner, holding a stale bob, redeems 550: only possible with the bonus counted
    report = owner_of_bob.commit(
        *owner_of_bob.decode(
            [
                message(
                    t.redemptions,
                    0,
                    event_id="d1",
                    type="redemption",
                    occurred_at="2026-01-04T00:00:00Z",
                    member_id="bob",
                    points=550,
                    reward="tv",
                ),
            ]
        )
    )

    assert report.outcomes == {"applied": 1}
    bob = owner_of_bob.members.get("bob")
    assert bob.balance == 100 + 500 - 550
    assert bob.lifetime_points == 600
