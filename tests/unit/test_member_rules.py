"""docs/RULES.md, sections 3 and 7, rule by rule, with the edges that decide them."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.given import (
    day,
    given,
    purchase,
    redeem,
    referral,
    referrer_bonus,
    refund,
    share,
    sweep,
)


def test_a_purchase_earns_floor_of_amount_at_the_bronze_rate() -> None:
    then = given().when(purchase("o1", "123.99", day(0)))
    assert then.kinds == ["PurchaseRecorded"]
    assert then.event("PurchaseRecorded").points == 123
    assert then.member.balance == 123
    assert then.outcome.rejected is None


def test_a_purchase_crossing_a_threshold_earns_at_the_old_multiplier() -> None:
    then = given(purchase("o1", "990", day(0))).when(purchase("o2", "100", day(1)))
    assert then.event("PurchaseRecorded").points == 100  # bronze x1, not silver x1.25
    assert then.kinds == ["PurchaseRecorded", "TierChanged"]
    assert then.event("TierChanged").to_tier == "silver"
    assert then.member.qualifying_points == 1090


def test_silver_and_gold_multiply_the_points_but_not_the_qualifying_points() -> None:
    silver = given(purchase("o1", "1000", day(0))).when(purchase("o2", "101", day(1)))
    assert silver.event("PurchaseRecorded").points == 126  # floor(101 x 1.25)
    assert silver.member.qualifying_points == 1101
    gold = given(purchase("o1", "5000", day(0))).when(purchase("o2", "101", day(1)))
    assert gold.event("PurchaseRecorded").points == 151  # floor(101 x 1.5)


def test_partial_refunds_summing_to_the_whole_claw_back_exactly_what_was_earned() -> None:
    history = given(purchase("o1", "1000", day(0)), purchase("o2", "33.33", day(1)))
    # o2 earned 41 at silver (floor(33.33 x 1.25)) with base 33
    first = history.when(refund("o2", "11.11", day(2)))
    assert first.event("RefundRecorded").points == -13  # floor(41 x 11.11/33.33) = 13
    second = history.when(refund("o2", "11.11", day(3)))
    assert second.event("RefundRecorded").points == -14  # floor(41 x 22.22/33.33) - 13
    third = history.when(refund("o2", "11.11", day(4)))
    assert third.event("RefundRecorded").points == -14  # 41 - 27
    assert history.member.balance == 1000
    assert history.member.qualifying_points == 1000


def test_a_refund_beyond_the_order_amount_is_rejected_and_changes_nothing() -> None:
    then = given(purchase("o1", "50", day(0)), refund("o1", "30", day(1))).when(
        refund("o1", "20.01", day(2))
    )
    assert then.outcome.rejected == "refund_exceeds_order"
    assert then.kinds == ["RefundRejected"]
    assert then.member.balance == 20


def test_a_refund_of_an_unknown_order_is_rejected() -> None:
    then = given().when(refund("nope", "10", day(0)))
    assert then.outcome.rejected == "unknown_order"
    assert then.event("RefundRejected").reason == "unknown_order"


def test_a_second_purchase_with_the_same_order_id_is_rejected() -> None:
    then = given(purchase("o1", "10", day(0))).when(purchase("o1", "10", day(1)))
    assert then.outcome.rejected == "duplicate_order"
    assert then.member.balance == 10


def test_a_clawback_beyond_the_balance_goes_into_debt_repaid_by_later_credits() -> None:
    history = given(purchase("o1", "100", day(0)), redeem(80, day(1)))
    clawed = history.when(refund("o1", "100", day(2)))
    assert clawed.event("RefundRecorded").points == -100
    assert clawed.member.balance == -80
    repaid = history.when(purchase("o2", "50", day(3)))
    assert repaid.member.balance == -30
    assert repaid.member.lots == ()
    credited = history.when(purchase("o3", "50", day(4)))
    assert credited.member.balance == 20
    assert [lot.points for lot in credited.member.lots] == [20]


def test_redemptions_and_clawbacks_consume_the_oldest_lot_first() -> None:
    then = given(purchase("o1", "100", day(0)), purchase("o2", "100", day(10))).when(
        redeem(150, day(20))
    )
    assert [(lot.date, lot.points) for lot in then.member.lots] == [(day(10), 50)]
    assert then.event("PointsRedeemed").consumed == [[day(0), 100], [day(10), 50]]


def test_a_lot_expires_exactly_365_days_after_its_date() -> None:
    history = given(purchase("o1", "100", day(0)))
    just_before = history.when(sweep(day(365) - timedelta(seconds=1)))
    assert just_before.kinds == []
    assert just_before.member.balance == 100
    at_expiry = history.when(sweep(day(365)))
    assert at_expiry.event("PointsExpired").points == -100
    assert at_expiry.member.balance == 0


def test_expiry_runs_before_the_event_it_precedes() -> None:
    then = given(purchase("o1", "100", day(0))).when(redeem(100, day(365)))
    assert then.kinds[0] == "PointsExpired"
    assert then.outcome.rejected == "insufficient_balance"


def test_a_quiet_year_downgrades_the_tier_by_sweep() -> None:
    then = given(purchase("o1", "1200", day(0))).when(sweep(day(365)))
    change = then.event("TierChanged")
    assert (change.from_tier, change.to_tier, change.qualifying_points) == ("silver", "bronze", 0)


def test_a_quiet_year_downgrades_the_tier_before_the_next_purchase_earns() -> None:
    then = given(purchase("o1", "5000", day(0))).when(purchase("o2", "100", day(366)))
    assert then.kinds[:2] == ["PointsExpired", "TierChanged"]
    assert then.event("TierChanged").to_tier == "bronze"
    assert then.event("PurchaseRecorded").points == 100  # x1 again, not gold's x1.5


def test_a_referral_rewards_both_when_the_first_purchase_is_on_day_90() -> None:
    then = given(referral("bob", day(0))).when(purchase("o1", "10", day(90)))
    rewarded = then.event("ReferralRewarded")
    assert (rewarded.points, rewarded.referrer_id) == (250, "bob")
    assert then.member.balance == 260
    bonus = then.outcome.referrer_bonus
    assert bonus is not None and (bonus.referrer_id, bonus.at) == ("bob", day(90))


def test_a_referral_rewards_nobody_when_the_first_purchase_is_on_day_91() -> None:
    then = given(referral("bob", day(0))).when(purchase("o1", "10", day(91)))
    assert "ReferralRewarded" not in then.kinds
    assert then.outcome.referrer_bonus is None


def test_only_the_first_purchase_can_settle_a_referral() -> None:
    then = given(referral("bob", day(0)), purchase("o1", "10", day(100))).when(
        purchase("o2", "10", day(101))
    )
    assert then.outcome.referrer_bonus is None


def test_self_second_and_late_referrals_are_rejected() -> None:
    assert given(member_id="ann").when(referral("ann", day(0))).outcome.rejected == "self_referral"
    second = given(referral("bob", day(0))).when(referral("cy", day(1)))
    assert second.outcome.rejected == "already_referred"
    late = given(purchase("o1", "10", day(0))).when(referral("bob", day(1)))
    assert late.outcome.rejected == "referee_has_purchased"
    assert late.event("ReferralRejected").reason == "referee_has_purchased"


def test_the_referrer_bonus_is_500_points_dated_at_the_purchase_and_no_qualifying_points() -> None:
    then = given().when(referrer_bonus("dan", day(5)))
    assert then.event("ReferrerBonusEarned").points == 500
    assert [(lot.date, lot.points) for lot in then.member.lots] == [(day(5), 500)]
    assert then.member.qualifying_points == 0


def test_the_fourth_share_of_a_utc_day_earns_nothing() -> None:
    morning = day(0).replace(hour=0, minute=0)
    history = given(share(morning), share(morning), share(day(0).replace(hour=23, minute=59)))
    fourth = history.when(share(day(0).replace(hour=23, minute=59, second=59)))
    assert fourth.event("SocialShareRecorded").points == 0
    assert fourth.outcome.rejected is None
    next_day = history.when(share(day(1).replace(hour=0, minute=0)))
    assert next_day.event("SocialShareRecorded").points == 10
    assert next_day.member.balance == 40


def test_a_redemption_of_exactly_the_balance_is_accepted() -> None:
    then = given(purchase("o1", "100", day(0))).when(redeem(100, day(1)))
    assert then.event("PointsRedeemed").points == -100
    assert then.member.balance == 0


def test_a_redemption_beyond_the_balance_is_declined_with_no_change() -> None:
    then = given(purchase("o1", "100", day(0))).when(redeem(101, day(1)))
    assert then.kinds == ["RedemptionDeclined"]
    assert then.outcome.rejected == "insufficient_balance"
    assert then.member.balance == 100
