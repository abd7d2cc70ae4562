"""Planning a broadcast's subscribers, one at a time: their channels other than in-app,
as the pipeline plans them for a type without per-recipient rules, recorded as
deliveries and their senders' jobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tidings import catalog
from tidings.delivery import digests
from tidings.delivery.audience import Audience
from tidings.delivery.plan_rows import Rows, until
from tidings.delivery.send_jobs import CHANNEL_JOB, EMAIL_JOB
from tidings.delivery.states import DeliveryState
from tidings.kit import ids
from tidings.kit.queue import NewJob
from tidings.planning import planner
from tidings.planning.planner import Action
from tidings.planning.rules import staleness
from tidings.planning.rules.digest_schedule import Cadence

_NO_BOOKS = planner.Books()
"""The rule state of a broadcast's planning: none (its type has no dedup or throttle)."""


def plan_subscriber(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    category: catalog.Category,
    channels: Sequence[str],
    available: Collection[str],
    recipient: planner.Recipient,
    audience: Audience,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """Plan one subscriber's ``channels`` (all but in-app), as the pipeline plans them
    for a type without per-recipient rules: preferences, address, suppression list, the
    category's digest cadence and quiet hours; ``available`` are those this deployment
    sends on."""
    tenant = event["tenant"]
    prefs = audience.preferences_of(recipient.id, tenant)
    critical = ntype.priority is catalog.Priority.CRITICAL
    situation = planner.Situation(
        now=now,
        created_at=staleness.counted_from(event),
        rules=ntype.rules,
        category=ntype.category,
        critical=critical,
        quiet_hours=prefs.quiet_hours.value,
        digest_cadence=Cadence() if critical else prefs.digest(category).value,
    )
    plan = planner.plan_notification(
        channels,
        available,
        recipient,
        audience.facts(recipient, tenant, category, channels),
        situation,
        _NO_BOOKS,
    )
    notification_id = ids.derived_id(event["id"], recipient.id)
    for channel_plan in plan.channels:
        record_channel(event, ntype, recipient, notification_id, channel_plan, rows, now)
    for digest in plan.digests:
        entry, timer = digests.entry(event, ntype, recipient, digest, now)
        rows.digest_entries.append(entry)
        rows.jobs.append(timer)


def record_channel(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    recipient: planner.Recipient,
    notification_id: str,
    plan: planner.ChannelPlan,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """The delivery of one channel and, when it is to be sent, its sender's job."""
    delivery_id = ids.derived_id(event["id"], recipient.id, plan.channel)
    if plan.action is Action.SUPPRESS:
        state, detail = DeliveryState.SUPPRESSED, None
    elif plan.action is Action.DELIVER:
        state, detail = DeliveryState.SCHEDULED, None
    else:
        state, detail = DeliveryState.SCHEDULED, until(plan.not_before)
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
    )
    if plan.action not in (Action.DELIVER, Action.HOLD):
        return
    payload: dict[str, Any] = {"delivery": delivery_id, "user": recipient.id}
    kind = EMAIL_JOB
    if plan.channel != planner.EMAIL:
        kind = CHANNEL_JOB
        payload["channel"] = plan.channel
    # Without a delay or an unseen wait (no broadcast has them), a hold is quiet
    # hours: a time of its own.
    rows.jobs.append(
        NewJob(
            id=f"{kind}:{delivery_id}",
            kind=kind,
            payload=payload,
            lane=ntype.priority.lane,
            run_at=plan.not_before,
        )
    )


def record_erased(
    event: Mapping[str, Any],
    channels: Sequence[str],
    user: str,
    pseudonym: str,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """A subscriber erased after the event was accepted: each channel suppressed
    (``erased``) under their pseudonym, with the ids planning would have used."""
    for channel in channels:
        rows.delivery(
            delivery_id=ids.derived_id(event["id"], user, channel),
            notification_id=ids.derived_id(event["id"], user),
            event_id=event["id"],
            user_id=pseudonym,
            type=event["type"],
            channel=channel,
            state=DeliveryState.SUPPRESSED,
            reason=planner.SuppressionReason.ERASED,
            detail=None,
            now=now,
        )
