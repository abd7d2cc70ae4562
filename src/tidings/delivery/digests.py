"""Digests: notifications gathered per recipient and key, then sent as one.

Planning writes a digest entry for each notification that waits for a digest, and makes
sure a timer job exists for the digest's due time. When the timer fires, every pending
entry of that recipient and key that is due becomes part of one digest, in one
transaction: the digest's notification and deliveries are written, the entries are
marked with the digest's id, and the notifications they stood for move to ``digested``.
An entry is therefore in exactly one digest. One that arrives after its window's timer
fired (clock skew between processes) recreates that timer, which fires at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tidings import catalog
from tidings.catalog.rules import FALLBACK_DIGEST, DigestRule
from tidings.delivery.plan_rows import event_context
from tidings.kit import ids
from tidings.kit.queue import NewJob
from tidings.planning import planner
from tidings.planning.rules import staleness

DIGEST_JOB = "digest"
KEY_LENGTH = 400  # digest_entries.digest_key


def rule_of(ntype: catalog.NotificationType) -> DigestRule:
    """How a type's digests look: its own digest rule, or the built-in one."""
    return ntype.rules.digest or FALLBACK_DIGEST


def entry(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    recipient: planner.Recipient,
    plan: planner.DigestPlan,
    now: dt.datetime,
) -> tuple[dict[str, Any], NewJob]:
    """The digest entry of one notification, and the timer job of its digest."""
    context = {**event_context(event), "recipient": recipient.as_context()}
    grouping = ""
    rule = ntype.rules.digest
    if rule is not None and rule.key is not None:
        grouping = ntype.rule_key(rule.key, context)
    key = ids.bounded(f"{event['tenant']}|{ntype.key}|{plan.kind}|{grouping}", KEY_LENGTH)
    content = ntype.summary(context, recipient.locale)
    title, body, action_url = content.title, content.body, content.action_url
    row = {
        "id": ids.derived_id(event["id"], recipient.id, DIGEST_JOB, plan.kind),
        "user_id": recipient.id,
        "tenant": event["tenant"],
        "type": ntype.key,
        "digest_key": key,
        "event_id": event["id"],
        "channels": list(plan.channels),
        "content": {
            "title": title,
            "body": body,
            "action_url": action_url,
            "actor": event["actor"],
            "data": event["data"],
            "event_id": event["id"],
            "created_at": staleness.counted_from(event).isoformat(),
        },
        "created_at": now,
        "due_at": plan.due_at,
        "digest_id": None,
    }
    job = NewJob(
        id=f"{DIGEST_JOB}:{ids.derived_id(recipient.id, key, plan.due_at.isoformat())}",
        kind=DIGEST_JOB,
        payload={"user": recipient.id, "key": key},
        lane=ntype.priority.lane,
        run_at=plan.due_at,
    )
    return row, job


def context(digest: Mapping[str, Any], rule: DigestRule) -> dict[str, Any]:
    """What a digest's templates see as ``digest``: the count, the first items, the rest."""
    items = list(digest["items"])
    shown = items[: rule.show]
    return {
        "count": len(items),
        "items": shown,
        "more": len(items) - len(shown),
        "key": str(digest["digest_key"]).split("|", 3)[-1],
        "type": digest["type"],
    }
