from __future__ import annotations

import pytest

from tidings.planning import planner


def test_every_declared_and_available_channel_is_delivered() -> None:
    decisions = planner.plan_recipient({"in_app"}, {"in_app"}, planner.Recipient("u-bob"))
    assert decisions == [planner.Decision("in_app", True)]


def test_a_channel_this_deployment_lacks_is_suppressed_with_a_reason() -> None:
    decisions = planner.plan_recipient({"in_app", "sms"}, {"in_app"}, planner.Recipient("u-bob"))
    assert decisions == [
        planner.Decision("in_app", True),
        planner.Decision("sms", False, planner.SuppressionReason.CHANNEL_UNAVAILABLE),
    ]


def test_recipient_from_a_profile() -> None:
    recipient = planner.Recipient.from_profile(
        "u-1", {"name": "Bob", "email": "b@x.io", "locale": "fr"}
    )
    assert recipient.as_context() == {
        "id": "u-1",
        "name": "Bob",
        "email": "b@x.io",
        "locale": "fr",
        "timezone": None,
    }
    assert planner.Recipient.from_profile("u-2", None) == planner.Recipient("u-2")


BOB = planner.Recipient("u-bob", email="bob@example.com")
NO_MAIL = planner.Recipient("u-bob")
R = planner.SuppressionReason


@pytest.mark.parametrize(
    ("recipient", "facts", "expected"),
    [
        (BOB, planner.Facts(), None),
        (NO_MAIL, planner.Facts(), R.NO_ADDRESS),
        (BOB, planner.Facts(address_suppressed=True), R.ADDRESS_SUPPRESSED),
        (BOB, planner.Facts(address_suppressed=True, mandatory=True), R.ADDRESS_SUPPRESSED),
        (BOB, planner.Facts(opted_out=frozenset({"email"})), R.OPTED_OUT),
        (BOB, planner.Facts(opted_out=frozenset({"email"}), mandatory=True), None),
        (NO_MAIL, planner.Facts(opted_out=frozenset({"email"})), R.NO_ADDRESS),
        (BOB, planner.Facts(opted_out=frozenset({"in_app"})), None),
    ],
)
def test_email_rules(
    recipient: planner.Recipient, facts: planner.Facts, expected: planner.SuppressionReason | None
) -> None:
    [decision] = planner.plan_recipient({"email"}, {"in_app", "email"}, recipient, facts)
    assert decision.deliver is (expected is None)
    assert decision.reason == expected


def test_in_app_respects_opt_outs_unless_mandatory() -> None:
    off = planner.Facts(opted_out=frozenset({"in_app"}))
    [decision] = planner.plan_recipient({"in_app"}, {"in_app"}, BOB, off)
    assert decision.reason == R.OPTED_OUT
    [forced] = planner.plan_recipient(
        {"in_app"}, {"in_app"}, BOB, planner.Facts(opted_out=off.opted_out, mandatory=True)
    )
    assert forced.deliver
