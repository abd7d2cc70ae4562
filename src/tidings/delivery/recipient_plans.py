"""One recipient of an event, planned with every rule and recorded: a delivery per
channel, the in-app item placed (or collapsed into another), the jobs that send later,
digest entries with their timers; and the rows of a recipient erased before planning."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from tidings import catalog
from tidings.delivery import batch_books, digests
from tidings.delivery.audience import Audience
from tidings.delivery.collapse import Collapser
from tidings.delivery.plan_rows import COLLAPSED_INTO, Rows, event_context, until
from tidings.delivery.send_jobs import send_job
from tidings.delivery.states import DeliveryState
from tidings.kit import ids
from tidings.planning import planner
from tidings.planning.planner import Action
from tidings.planning.rules import staleness
from tidings.planning.rules.digest_schedule import Cadence


def record_recipient(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    category: catalog.Category,
    available: Collection[str],
    recipient: planner.Recipient,
    audience: Audience,
    books: batch_books.BatchBooks,
    collapser: Collapser,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """Plan ``event`` for one recipient and record the outcome in ``rows`` (its in-app
    item in ``collapser``); ``books`` are the recipient's share of the batch's rule
    state, ``available`` the channels this deployment delivers."""
    event_id = event["id"]
    plan = decide(event, ntype, category, available, recipient, audience, books, now)
    notification_id = ids.derived_id(event_id, recipient.id)
    in_app_item: str | None = None
    by_channel = {p.channel: p for p in plan.channels}
    in_app = by_channel.get(planner.IN_APP)
    if in_app is not None and in_app.action is Action.DELIVER:
        in_app_item = collapser.place(
            ntype,
            event,
            recipient,
            ids.derived_id(event_id, recipient.id, planner.IN_APP),
            now,
            silent=in_app.silent,
        )
    elif in_app is not None and in_app.action is Action.HOLD:
        in_app_item = ids.derived_id(event_id, recipient.id, planner.IN_APP)
    for channel_plan in plan.channels:
        _record_channel(
            event, ntype, recipient, notification_id, channel_plan, in_app_item, rows, now
        )
    for digest in plan.digests:
        entry, timer = digests.entry(event, ntype, recipient, digest, now)
        rows.digest_entries.append(entry)
        rows.jobs.append(timer)


def decide(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    category: catalog.Category,
    available: Collection[str],
    recipient: planner.Recipient,
    audience: Audience,
    books: batch_books.BatchBooks,
    now: dt.datetime,
) -> planner.Plan:
    """What the planner decides for ``event`` and one recipient at ``now``, every
    channel's plan and the digests it waits for; ``books`` change as the decision
    counts (a dedup mark, a throttle hit), nothing else does."""
    prefs = audience.preferences_of(recipient.id, event["tenant"])
    critical = ntype.priority is catalog.Priority.CRITICAL
    situation = planner.Situation(
        now=now,
        created_at=staleness.counted_from(event),
        rules=ntype.rules,
        category=ntype.category,
        critical=critical,
        quiet_hours=prefs.quiet_hours.value,
        # A critical notification never waits for tomorrow's digest, whatever was chosen
        # (mandatory categories are always instant already).
        digest_cadence=Cadence() if critical else prefs.digest(category).value,
        dedup_key=books.dedup_keys.get((event["id"], recipient.id)),
        unmet=ntype.unmet_conditions({**event_context(event), "recipient": recipient.as_context()})
        if ntype.rules.condition is not None or ntype.rules.channel_conditions
        else frozenset(),
    )
    return planner.plan_notification(
        ntype.channels,
        available,
        recipient,
        audience.facts(recipient, event["tenant"], category, ntype.channels),
        situation,
        books.books,
    )


def record_erased(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    user: str,
    pseudonym: str,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """The rows of a notification not made because its recipient was erased: the ids
    planning would have used (a job run again finds them), the pseudonym as the user."""
    notification_id = ids.derived_id(event["id"], user)
    for channel in sorted(ntype.channels):
        rows.delivery(
            delivery_id=ids.derived_id(event["id"], user, channel),
            notification_id=notification_id,
            event_id=event["id"],
            user_id=pseudonym,
            type=event["type"],
            channel=channel,
            state=DeliveryState.SUPPRESSED,
            reason=planner.SuppressionReason.ERASED,
            detail=None,
            now=now,
        )


def _record_channel(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    recipient: planner.Recipient,
    notification_id: str,
    plan: planner.ChannelPlan,
    in_app_item: str | None,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """The delivery of one channel and, when it is to be sent, the job that carries it."""
    delivery_id = ids.derived_id(event["id"], recipient.id, plan.channel)
    state, detail = {
        Action.SUPPRESS: (DeliveryState.SUPPRESSED, None),
        Action.DIGEST: (DeliveryState.SCHEDULED, until(plan.not_before)),
        Action.HOLD: (DeliveryState.SCHEDULED, until(plan.not_before)),
        Action.DELIVER: (
            DeliveryState.DELIVERED if plan.channel == planner.IN_APP else DeliveryState.SCHEDULED,
            None,
        ),
    }[plan.action]
    delivered_in_app = plan.channel == planner.IN_APP and plan.action is Action.DELIVER
    if delivered_in_app and in_app_item != delivery_id:
        detail = f"{COLLAPSED_INTO}{in_app_item}"
    if plan.reason == planner.SuppressionReason.DEDUPLICATED:
        detail = _dedup_detail(event, ntype, recipient)
    rows.delivery(
        delivery_id=delivery_id,
        notification_id=notification_id,
        event_id=event["id"],
        user_id=recipient.id,
        type=event["type"],
        channel=plan.channel,
        state=state,
        reason=plan.reason,
        detail=detail,
        now=now,
        # Into an item of its own: the item is the delivery.
        is_item=delivered_in_app and in_app_item == delivery_id,
    )
    job = send_job(plan, delivery_id, recipient.id, in_app_item, ntype.priority.lane, now)
    if job is not None:
        rows.jobs.append(job)


def _dedup_detail(
    event: Mapping[str, Any], ntype: catalog.NotificationType, recipient: planner.Recipient
) -> str | None:
    """What a deduplicated delivery repeated: the rendered dedup key, and its window."""
    rule = ntype.rules.dedup
    if rule is None:
        return None
    context = {**event_context(event), "recipient": recipient.as_context()}
    return f"dedup key {ntype.rule_key(rule.key, context)!r} already seen within {rule.window}"
