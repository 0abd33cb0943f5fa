"""Enrolment, reviews, birthdays, campaigns, badges and pending points (docs/RULES.md),
rule by rule, with the edges that decide them. The arithmetic is in the comments."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from services.domain.member import ALREADY_ENROLLED, INSUFFICIENT_BALANCE, Lot
from services.program import Badge, Campaign, Program
from tests.unit.given import (
    PROGRAM,
    day,
    enrol,
    given,
    purchase,
    redeem,
    refund,
    review,
    share,
    sweep,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def with_campaigns(*campaigns: Campaign) -> Program:
    return replace(PROGRAM, campaigns=campaigns)


def campaign(id: str = "c", kind: str = "purchase", **fields: object) -> Campaign:
    return Campaign(
        id=id,
        starts=at("2026-01-01T00:00:00+00:00"),
        ends=at("2027-01-01T00:00:00+00:00"),
        applies_to=kind,
        **fields,  # type: ignore[arg-type]
    )


# ---- enrolment ---------------------------------------------------------------------


def test_a_first_enrolment_credits_the_welcome_bonus_and_records_the_birth_date() -> None:
    then = given().when(enrol(day(0), birth_date=date(1990, 3, 15)))
    assert then.kinds == ["Enrolled"]
    assert then.event("Enrolled").points == 100
    assert then.member.balance == 100 and then.member.lots == (Lot(day(0), 100),)
    assert then.member.enrolled_at == day(0)
    assert then.member.birth_date == date(1990, 3, 15)
    assert then.member.qualifying_points == 0  # a bonus is not qualifying points


def test_a_second_enrolment_is_rejected_and_changes_nothing() -> None:
    then = given(enrol(day(0))).when(enrol(day(1), birth_date=date(1990, 1, 1)))
    assert then.outcome.rejected == ALREADY_ENROLLED
    assert then.kinds == ["EnrolmentRejected"]
    assert then.member.balance == 100 and then.member.birth_date is None


def test_an_enrolment_may_arrive_after_other_events() -> None:
    then = given(purchase("o1", "20", day(0))).when(enrol(day(5)))
    assert then.member.balance == 120
    assert then.member.enrolled_at == day(5)


# ---- reviews -------------------------------------------------------------------------


def test_a_review_of_a_product_never_reviewed_earns_25_points() -> None:
    then = given().when(review("p1", day(0)))
    assert then.event("ReviewRecorded").points == 25
    assert then.member.balance == 25


def test_a_product_reviewed_before_earns_nothing_and_leaves_the_days_two_free() -> None:
    history = given(review("p1", day(0)), review("p1", day(0) + timedelta(hours=1)))
    assert history.member.balance == 25  # the repeat: 0 points
    # Two more products the same UTC day: both rewarded (the repeat did not count)
    then = history.when(review("p2", day(0) + timedelta(hours=2)))
    assert then.event("ReviewRecorded").points == 25
    assert then.member.balance == 50


def test_at_most_two_rewarded_reviews_per_utc_day() -> None:
    history = given(
        review("p1", at("2026-01-01T00:00:00+00:00")), review("p2", at("2026-01-01T12:00:00+00:00"))
    )
    third = history.when(review("p3", at("2026-01-01T23:59:59+00:00")))
    assert third.event("ReviewRecorded").points == 0
    # p3 was reviewed, though not rewarded: never again rewarded, even on another day
    again = history.when(review("p3", at("2026-01-02T00:00:00+00:00")))
    assert again.event("ReviewRecorded").points == 0
    fresh = history.when(review("p4", at("2026-01-02T00:00:00+00:00")))
    assert fresh.event("ReviewRecorded").points == 25


# ---- birthdays -----------------------------------------------------------------------


ENROLLED = at("2026-01-10T10:00:00+00:00")


def test_the_first_event_at_or_after_a_birthday_credits_it_dated_at_the_birthday() -> None:
    history = given(enrol(ENROLLED, birth_date=date(1990, 3, 15)))
    before = history.when(share(at("2026-03-14T23:59:59+00:00")))
    assert "BirthdayRewarded" not in before.kinds
    then = history.when(share(at("2026-03-15T00:00:00+00:00")))
    assert then.kinds[0] == "BirthdayRewarded"  # step 0, before the share
    rewarded = then.event("BirthdayRewarded")
    assert (rewarded.points, rewarded.at) == (200, at("2026-03-15T00:00:00+00:00"))
    assert Lot(at("2026-03-15T00:00:00+00:00"), 210) in then.member.lots
    # once: a later event the same year credits nothing more
    later = history.when(share(at("2026-08-01T00:00:00+00:00")))
    assert "BirthdayRewarded" not in later.kinds


def test_a_birthday_on_or_before_the_enrolment_is_not_rewarded() -> None:
    # the birthday 2026-01-10T00:00Z is before the enrolment at 10:00 that day
    then = given(enrol(ENROLLED, birth_date=date(1990, 1, 10))).when(
        share(at("2026-01-11T00:00:00+00:00"))
    )
    assert "BirthdayRewarded" not in then.kinds


def test_a_birthday_at_the_very_instant_of_the_enrolment_is_not_after_it() -> None:
    midnight = at("2026-03-15T00:00:00+00:00")
    then = given(enrol(midnight, birth_date=date(1990, 3, 15))).when(sweep(midnight))
    assert "BirthdayRewarded" not in then.kinds
    next_year = given(enrol(midnight, birth_date=date(1990, 3, 15))).when(
        sweep(at("2027-03-15T00:00:00+00:00"))
    )
    assert next_year.event("BirthdayRewarded").points == 200


def test_a_member_silent_for_three_years_gets_one_birthday_bonus() -> None:
    then = given(enrol(ENROLLED, birth_date=date(1990, 3, 15))).when(
        share(at("2029-06-01T00:00:00+00:00"))
    )
    [rewarded] = then.all("BirthdayRewarded")
    assert rewarded.birthday == at("2029-03-15T00:00:00+00:00")  # the most recent only


def test_a_29_february_birthday_is_28_february_in_other_years() -> None:
    history = given(enrol(ENROLLED, birth_date=date(2000, 2, 29)))
    in_2027 = history.when(sweep(at("2027-02-28T00:00:00+00:00")))
    assert in_2027.event("BirthdayRewarded").birthday == at("2027-02-28T00:00:00+00:00")
    leap = given(enrol(ENROLLED, birth_date=date(2000, 2, 29))).when(
        sweep(at("2028-02-29T00:00:00+00:00"))
    )
    assert leap.event("BirthdayRewarded").birthday == at("2028-02-29T00:00:00+00:00")
    not_yet = given(enrol(ENROLLED, birth_date=date(2000, 2, 29))).when(
        sweep(at("2028-02-28T23:59:59+00:00"))
    )
    # the 2027 birthday (28 Feb 2027) is the latest one: rewarded, not 2028's
    assert not_yet.event("BirthdayRewarded").birthday == at("2027-02-28T00:00:00+00:00")


def test_no_birthday_without_a_birth_date_or_without_an_enrolment() -> None:
    assert "BirthdayRewarded" not in given(enrol(ENROLLED)).when(sweep(day(800))).kinds
    assert "BirthdayRewarded" not in given(share(day(0))).when(sweep(day(800))).kinds


def test_a_birthday_bonus_is_not_qualifying_points_and_repays_debt_first() -> None:
    history = given(
        enrol(ENROLLED, birth_date=date(1990, 3, 15)),
        purchase("o1", "500", at("2026-02-01T00:00:00+00:00")),
        redeem(600, at("2026-02-02T00:00:00+00:00")),
        refund("o1", "500", at("2026-02-03T00:00:00+00:00")),  # debt: 500
    )
    assert history.member.debt == 500
    then = history.when(sweep(at("2026-03-15T00:00:00+00:00")))
    assert then.event("BirthdayRewarded").debt_repaid == 200
    assert then.member.debt == 300 and then.member.qualifying_points == 0


# ---- campaigns -----------------------------------------------------------------------


def test_a_campaign_applies_from_its_start_up_to_not_including_its_end() -> None:
    program = with_campaigns(campaign(multiplier=Decimal(2)))
    assert (
        given(program=program)
        .when(purchase("o1", "10", at("2025-12-31T23:59:59+00:00")))
        .event("PurchaseRecorded")
        .points
        == 10
    )
    assert (
        given(program=program)
        .when(purchase("o1", "10", at("2026-01-01T00:00:00+00:00")))
        .event("PurchaseRecorded")
        .points
        == 20
    )
    assert (
        given(program=program)
        .when(purchase("o1", "10", at("2026-12-31T23:59:59+00:00")))
        .event("PurchaseRecorded")
        .points
        == 20
    )
    assert (
        given(program=program)
        .when(purchase("o1", "10", at("2027-01-01T00:00:00+00:00")))
        .event("PurchaseRecorded")
        .points
        == 10
    )


def test_the_highest_multiplier_applies_and_every_bonus_adds() -> None:
    program = with_campaigns(
        campaign("double", multiplier=Decimal(2), bonus=5),
        campaign("triple", multiplier=Decimal(3), bonus=10),
    )
    then = given(program=program).when(purchase("o1", "10.50", day(0)))
    recorded = then.event("PurchaseRecorded")
    # floor(10.50 x 1 x 3) + 5 + 10 = 31 + 15
    assert recorded.points == 46
    # the multiplier's extra (31 - 10) goes to the highest; each bonus to its own
    assert recorded.campaigns == {"double": 5, "triple": 31 - 10 + 10}
    assert then.member.qualifying_points == 10  # floor(amount), campaigns or not


def test_campaign_and_tier_multipliers_multiply() -> None:
    program = with_campaigns(campaign(multiplier=Decimal("1.5")))
    then = given(purchase("o1", "1000", day(0)), program=program).when(
        purchase("o2", "101", day(1))
    )
    # silver 1.25: floor(101 x 1.25 x 1.5) = floor(189.375)
    assert then.event("PurchaseRecorded").points == 189


def test_a_campaign_for_some_tiers_looks_at_the_tier_after_step_2() -> None:
    program = with_campaigns(campaign(bonus=50, tiers=frozenset({"silver", "gold"})))
    bronze = given(program=program).when(purchase("o1", "999", day(0)))
    assert bronze.event("PurchaseRecorded").points == 999
    silver = given(purchase("o1", "999", day(0)), purchase("o2", "1", day(0)), program=program)
    assert silver.member.tier == "silver"
    then = silver.when(purchase("o3", "10", day(1)))
    assert then.event("PurchaseRecorded").points == 12 + 50  # floor(10 x 1.25) + 50


def test_min_amount_and_max_per_member() -> None:
    program = with_campaigns(
        campaign("big", bonus=50, min_amount=Decimal("150.00"), max_per_member=2)
    )
    history = given(purchase("o1", "149.99", day(0)), program=program)
    assert history.member.balance == 149
    history = given(
        purchase("o1", "150.00", day(0)),
        refund("o1", "150.00", day(1)),  # the slot stays used
        purchase("o2", "200", day(2)),
        program=program,
    )
    assert history.member.campaign_uses == {"big": 2}
    third = history.when(purchase("o3", "300", day(3)))
    assert third.event("PurchaseRecorded").points == 300  # the campaign's two are used
    assert third.event("PurchaseRecorded").campaigns == {}


def test_a_refund_claws_back_campaign_points_pro_rata() -> None:
    program = with_campaigns(campaign(multiplier=Decimal(2), bonus=10))
    history = given(purchase("o1", "100", day(0)), program=program)
    assert history.member.balance == 210  # E = floor(100 x 2) + 10
    then = history.when(refund("o1", "50", day(1)))
    # floor(210 x 50/100) = 105 back; base points drop floor(100 x 50/100) = 50
    assert then.event("RefundRecorded").points == -105
    assert then.member.qualifying_points == 50


def test_shares_reviews_and_the_welcome_bonus_take_their_campaigns() -> None:
    program = with_campaigns(
        campaign("shares", "social_share", multiplier=Decimal("1.5"), max_per_member=10),
        campaign("reviews", "review", bonus=5),
        campaign("welcome", "enrolment", multiplier=Decimal(2)),
    )
    history = given(share(day(0)), share(day(0)), share(day(0)), program=program)
    assert history.member.balance == 45  # floor(10 x 1.5) x 3
    fourth = history.when(share(day(0)))
    # a share recorded with 0 points matches nothing, nor counts toward max_per_member
    assert fourth.event("SocialShareRecorded").points == 0
    assert fourth.event("SocialShareRecorded").campaigns == {}
    assert fourth.member.campaign_uses == {"shares": 3}
    assert given(program=program).when(review("p", day(0))).event("ReviewRecorded").points == 30
    assert given(program=program).when(enrol(day(0))).event("Enrolled").points == 200


# ---- badges --------------------------------------------------------------------------


def with_badges(*badges: Badge) -> Program:
    return replace(PROGRAM, badges=badges)


def test_a_badge_is_earned_right_after_the_event_that_reaches_its_count() -> None:
    program = with_badges(Badge("regular", "purchase", count=3, within_days=30, bonus=100))
    history = given(purchase("o1", "10", day(0)), purchase("o2", "10", day(10)), program=program)
    then = history.when(purchase("o3", "10", day(29)))
    assert then.kinds[-2:] == ["PurchaseRecorded", "BadgeEarned"]
    earned = then.event("BadgeEarned")
    assert (earned.badge_id, earned.points, earned.at) == ("regular", 100, day(29))
    assert then.member.balance == 130 and then.member.qualifying_points == 30
    again = given(
        purchase("o1", "10", day(0)),
        purchase("o2", "10", day(10)),
        purchase("o3", "10", day(29)),
        program=program,
    ).when(purchase("o4", "10", day(30)))
    assert "BadgeEarned" not in again.kinds  # once per member


def test_only_events_within_the_window_count() -> None:
    program = with_badges(Badge("regular", "purchase", count=3, within_days=30, bonus=100))
    # (t - 30 days, t]: the purchase of day 0 is out at day 30
    then = given(purchase("o1", "10", day(0)), purchase("o2", "10", day(10)), program=program).when(
        purchase("o3", "10", day(30))
    )
    assert "BadgeEarned" not in then.kinds


def test_a_review_or_share_exactly_a_window_before_is_out_of_it() -> None:
    program = with_badges(
        Badge("critic", "review", count=2, within_days=10, bonus=30),
        Badge("sharer", "social_share", count=2, within_days=10, bonus=20),
    )
    reviews = given(review("p1", day(0)), program=program)
    assert "BadgeEarned" not in reviews.when(review("p2", day(10))).kinds
    assert "BadgeEarned" in reviews.when(review("p2", day(10) - timedelta(seconds=1))).kinds
    shares = given(share(day(0)), program=program)
    assert "BadgeEarned" not in shares.when(share(day(10))).kinds
    assert "BadgeEarned" in shares.when(share(day(10) - timedelta(seconds=1))).kinds


def test_refunded_purchases_count_and_rejected_ones_do_not() -> None:
    program = with_badges(Badge("b", "purchase", count=2, bonus=1))
    refunded = given(purchase("o1", "10", day(0)), refund("o1", "10", day(1)), program=program)
    assert "BadgeEarned" in refunded.when(purchase("o2", "10", day(2))).kinds
    duplicate = given(purchase("o1", "10", day(0)), program=program)
    assert "BadgeEarned" not in duplicate.when(purchase("o1", "10", day(1))).kinds


def test_shares_and_reviews_recorded_with_0_points_count_toward_badges() -> None:
    program = with_badges(
        Badge("sharer", "social_share", count=4, bonus=20),
        Badge("critic", "review", count=2, bonus=30),
    )
    shares = given(share(day(0)), share(day(0)), share(day(0)), program=program)
    assert shares.when(share(day(0))).event("BadgeEarned").badge_id == "sharer"  # 4th: 0 points
    reviews = given(review("p1", day(0)), program=program)
    then = reviews.when(review("p1", day(1)))  # a repeat: 0 points, but recorded
    assert then.event("BadgeEarned").badge_id == "critic"
    assert then.member.badges == {"critic": day(1)}


# ---- pending points ------------------------------------------------------------------


PENDING = replace(PROGRAM, pending_days=14)


def test_a_purchases_points_wait_the_return_window() -> None:
    then = given(program=PENDING).when(purchase("o1", "100", day(0)))
    recorded = then.event("PurchaseRecorded")
    assert (recorded.points, recorded.pending, recorded.earned) == (0, 100, 100)
    assert then.member.balance == 0 and then.member.pending_points == 100
    assert then.member.qualifying_points == 100  # qualifying points count at the purchase
    assert then.member.lifetime_points == 0  # not yet in the balance


def test_pending_points_are_released_in_step_0_as_a_lot_dated_at_their_release() -> None:
    history = given(purchase("o1", "100", day(0)), program=PENDING)
    early = history.when(sweep(day(14) - timedelta(seconds=1)))
    assert "PointsReleased" not in early.kinds
    then = history.when(share(day(20)))
    assert then.kinds[0] == "PointsReleased"
    released = then.event("PointsReleased")
    assert (released.points, released.pending, released.at) == (100, -100, day(14))
    assert then.member.lots[0] == Lot(day(14), 100)
    assert then.member.lifetime_points == 110 and then.member.pending_points == 0


def test_a_refund_takes_its_clawback_from_pending_points_first() -> None:
    history = given(purchase("o1", "100", day(0)), program=PENDING)
    then = history.when(refund("o1", "40", day(3)))
    clawed = then.event("RefundRecorded")
    assert (clawed.points, clawed.pending) == (0, -40)
    assert then.member.debt == 0 and then.member.pending_points == 60
    assert then.member.lifetime_points == 0


def test_a_release_repays_debt_first() -> None:
    history = given(
        purchase("o1", "100", day(0)),
        sweep(day(14)),  # released: a lot of 100
        redeem(100, day(15)),
        purchase("o2", "50", day(16)),  # pending until day 30
        refund("o1", "100", day(17)),  # 100 back from the balance: a debt of 100
        program=PENDING,
    )
    assert history.member.debt == 100 and history.member.balance == -100
    then = history.when(sweep(day(30)))
    released = then.event("PointsReleased")
    assert released.debt_repaid == 50 and then.member.balance == -50 and not then.member.lots


def test_a_redemption_is_declined_while_the_points_are_pending() -> None:
    then = given(purchase("o1", "100", day(0)), program=PENDING).when(redeem(50, day(1)))
    assert then.outcome.rejected == INSUFFICIENT_BALANCE


def test_the_birthday_comes_before_a_release_in_step_0() -> None:
    history = given(
        enrol(ENROLLED, birth_date=date(1990, 3, 15)),
        purchase("o1", "10", at("2026-03-10T00:00:00+00:00")),
        program=PENDING,
    )
    then = history.when(sweep(at("2026-03-30T00:00:00+00:00")))
    assert then.kinds[:2] == ["BirthdayRewarded", "PointsReleased"]
