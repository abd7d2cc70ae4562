"""The planner with every rule: the order they apply in, and what each decides."""

from __future__ import annotations

import datetime as dt

import pytest

from tidings.catalog.rules import (
    DedupRule,
    DigestRule,
    OverLimit,
    Rules,
    ThrottleRule,
    ThrottleScope,
)
from tidings.catalog.templates import compile_template
from tidings.planning import planner
from tidings.planning.planner import Action, Books, Facts, Situation
from tidings.planning.rules.digest_schedule import Cadence, CadenceKind
from tidings.planning.rules.quiet_hours import QuietHours

NOW = dt.datetime(2026, 7, 1, 21, 30, tzinfo=dt.UTC)  # 23:30 in Paris (summer time)
BOB = planner.Recipient("u-bob", email="bob@example.com", timezone="Europe/Paris")
BOTH = {planner.IN_APP, planner.EMAIL}
KEY = compile_template("{{ data.ref }}")
NIGHT = QuietHours(dt.time(22, 0), dt.time(7, 0))


def situation(rules: Rules | None = None, **changes: object) -> Situation:
    values: dict[str, object] = {
        "now": NOW,
        "created_at": NOW,
        "rules": rules or Rules(),
        "category": "updates",
    }
    values.update(changes)
    return Situation(**values)  # type: ignore[arg-type]


def plan(
    sit: Situation, books: Books | None = None, facts: Facts | None = None
) -> dict[str, planner.ChannelPlan]:
    result = planner.plan_notification(BOTH, BOTH, BOB, facts or Facts(), sit, books or Books())
    return {p.channel: p for p in result.channels}


def test_without_rules_everything_goes_now() -> None:
    assert {c: p.action for c, p in plan(situation()).items()} == {
        "email": Action.DELIVER,
        "in_app": Action.DELIVER,
    }


def test_a_stale_event_is_suppressed_on_every_channel_first() -> None:
    rules = Rules(max_age=dt.timedelta(minutes=5))
    plans = plan(situation(rules, created_at=NOW - dt.timedelta(minutes=6)))
    assert {p.reason for p in plans.values()} == {planner.SuppressionReason.STALE}


def test_dedup_suppresses_the_second_and_is_not_spent_by_an_opted_out_one() -> None:
    rules = Rules(dedup=DedupRule(KEY, dt.timedelta(minutes=10)))
    books = Books()
    opted_out = Facts(opted_out=frozenset(BOTH))
    first = plan(situation(rules, dedup_key="k"), books, opted_out)
    assert {p.reason for p in first.values()} == {planner.SuppressionReason.OPTED_OUT}
    second = plan(situation(rules, dedup_key="k"), books)
    assert second["in_app"].action is Action.DELIVER
    third = plan(situation(rules, dedup_key="k"), books)
    assert {p.reason for p in third.values()} == {planner.SuppressionReason.DEDUPLICATED}


@pytest.mark.parametrize("over", [OverLimit.DROP, OverLimit.DIGEST])
def test_throttle_counts_per_channel(over: OverLimit) -> None:
    rules = Rules(throttle=ThrottleRule(2, dt.timedelta(hours=1), ThrottleScope.CHANNEL, over))
    books = Books()
    outcomes = [plan(situation(rules), books)["email"] for _ in range(3)]
    assert [p.action for p in outcomes[:2]] == [Action.DELIVER, Action.DELIVER]
    expected = Action.SUPPRESS if over is OverLimit.DROP else Action.DIGEST
    assert outcomes[2].action is expected
    assert outcomes[2].reason == "throttled"


def test_quiet_hours_hold_email_and_silence_in_app() -> None:
    plans = plan(situation(quiet_hours=NIGHT))
    assert plans["email"].action is Action.HOLD
    assert plans["email"].reason == planner.HoldReason.QUIET_HOURS
    assert plans["email"].not_before == dt.datetime(2026, 7, 2, 5, 0, tzinfo=dt.UTC)
    assert plans["in_app"].action is Action.DELIVER
    assert plans["in_app"].silent


def test_critical_ignores_quiet_hours() -> None:
    plans = plan(situation(quiet_hours=NIGHT, critical=True))
    assert plans["email"].action is Action.DELIVER
    assert not plans["in_app"].silent


def test_a_delay_then_quiet_hours_push_email_past_both() -> None:
    rules = Rules(delay=dt.timedelta(minutes=10))
    early = NOW - dt.timedelta(hours=1, minutes=35)  # 21:55 in Paris: quiet from 22:05
    plans = plan(situation(rules, now=early, created_at=early, quiet_hours=NIGHT))
    assert plans["in_app"].not_before == early + dt.timedelta(minutes=10)
    assert plans["email"].not_before == dt.datetime(2026, 7, 2, 5, 0, tzinfo=dt.UTC)


def test_email_if_unseen_waits_and_is_conditional() -> None:
    plans = plan(situation(Rules(email_if_unseen=dt.timedelta(minutes=15))))
    assert plans["email"].action is Action.HOLD
    assert plans["email"].unless_seen
    assert plans["email"].not_before == NOW + dt.timedelta(minutes=15)
    assert plans["in_app"].action is Action.DELIVER


def test_a_digest_rule_takes_every_live_channel() -> None:
    rule = DigestRule(None, dt.timedelta(hours=1), 5, compile_template("x"), None, None)
    result = planner.plan_notification(
        BOTH,
        BOTH,
        BOB,
        Facts(opted_out=frozenset({"email"})),
        situation(Rules(digest=rule)),
        Books(),
    )
    (digest,) = result.digests
    assert digest.channels == ("in_app",)
    assert digest.due_at == dt.datetime(2026, 7, 1, 22, 0, tzinfo=dt.UTC)


def test_a_slower_cadence_digests_email_only() -> None:
    daily = Cadence(CadenceKind.DAILY, 8)
    result = planner.plan_notification(
        BOTH, BOTH, BOB, Facts(), situation(digest_cadence=daily), Books()
    )
    by_channel = {p.channel: p.action for p in result.channels}
    assert by_channel == {"email": Action.DIGEST, "in_app": Action.DELIVER}
    (digest,) = result.digests
    assert digest.channels == ("email",)
    assert digest.due_at == dt.datetime(2026, 7, 2, 6, 0, tzinfo=dt.UTC)  # 08:00 Paris


def test_with_a_digest_rule_and_a_daily_cadence_only_email_waits_for_the_day() -> None:
    rule = DigestRule(None, dt.timedelta(hours=1), 5, compile_template("x"), None, None)
    daily = Cadence(CadenceKind.DAILY, 8)
    result = planner.plan_notification(
        BOTH, BOTH, BOB, Facts(), situation(Rules(digest=rule), digest_cadence=daily), Books()
    )
    due = {d.channels: (d.kind, d.due_at) for d in result.digests}
    assert due == {
        ("in_app",): ("rule", dt.datetime(2026, 7, 1, 22, 0, tzinfo=dt.UTC)),
        ("email",): ("cadence", dt.datetime(2026, 7, 2, 6, 0, tzinfo=dt.UTC)),
    }
    plans = {p.channel: p for p in result.channels}
    assert plans["email"].not_before == dt.datetime(2026, 7, 2, 6, 0, tzinfo=dt.UTC)
