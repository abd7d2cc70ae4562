from __future__ import annotations

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
