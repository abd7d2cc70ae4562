"""A plugin channel in the planner: held by quiet hours and digested at a slower cadence
like email, opted out by its own name."""

from __future__ import annotations

import datetime as dt

from tidings.catalog.rules import Rules
from tidings.planning import planner
from tidings.planning.planner import Action, Books, Facts, HoldReason, Situation
from tidings.planning.rules.digest_schedule import Cadence, CadenceKind
from tidings.planning.rules.quiet_hours import QuietHours

NOW = dt.datetime(2026, 7, 1, 21, 30, tzinfo=dt.UTC)  # 23:30 in Paris (summer time)
BOB = planner.Recipient("u-bob", email="bob@example.com", timezone="Europe/Paris")
BOTH = {planner.IN_APP, planner.EMAIL}
ALL = {*BOTH, "webpush"}
NIGHT = QuietHours(dt.time(22, 0), dt.time(7, 0))


def plan(facts: Facts | None = None, **changes: object) -> dict[str, planner.ChannelPlan]:
    values: dict[str, object] = {
        "now": NOW,
        "created_at": NOW,
        "rules": Rules(),
        "category": "updates",
    }
    values.update(changes)
    sit = Situation(**values)  # type: ignore[arg-type]
    result = planner.plan_notification(ALL, ALL, BOB, facts or Facts(), sit, Books())
    return {p.channel: p for p in result.channels}


def test_quiet_hours_hold_a_plugin_channel_like_email() -> None:
    plans = plan(quiet_hours=NIGHT)

    assert plans["webpush"].action is Action.HOLD
    assert plans["webpush"].reason == HoldReason.QUIET_HOURS
    assert plans["webpush"].not_before == plans["email"].not_before
    assert plans["in_app"].action is Action.DELIVER
    assert plans["in_app"].silent


def test_a_critical_notification_goes_through_quiet_hours_on_a_plugin_channel() -> None:
    assert plan(quiet_hours=NIGHT, critical=True)["webpush"].action is Action.DELIVER


def test_a_daily_cadence_digests_a_plugin_channel_with_email() -> None:
    plans = plan(digest_cadence=Cadence(CadenceKind.DAILY, 8))

    assert plans["webpush"].action is Action.DIGEST
    assert plans["webpush"].not_before == plans["email"].not_before
    assert plans["in_app"].action is Action.DELIVER


def test_a_plugin_channel_is_opted_out_by_its_own_name() -> None:
    plans = plan(Facts(opted_out=frozenset({"webpush"})))

    assert plans["webpush"].reason == planner.SuppressionReason.OPTED_OUT
    assert plans["email"].action is Action.DELIVER


def test_a_plugin_channel_this_deployment_does_not_run_is_unavailable() -> None:
    sit = Situation(now=NOW, created_at=NOW, rules=Rules(), category="updates")
    result = planner.plan_notification(ALL, BOTH, BOB, Facts(), sit, Books())
    webpush = next(p for p in result.channels if p.channel == "webpush")
    assert webpush.reason == planner.SuppressionReason.CHANNEL_UNAVAILABLE
