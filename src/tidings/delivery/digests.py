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
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.catalog.rules import FALLBACK_DIGEST, DigestRule
from tidings.delivery.plan_rows import event_context
from tidings.kit import ids
from tidings.kit.db import Database
from tidings.kit.queue import NewJob
from tidings.kit.tables import digest_entries, digests
from tidings.planning import planner

DIGEST_JOB = "digest"
KEY_LENGTH = 400  # digest_entries.digest_key
DISCARDED = "discarded"  # the digest_id of entries that went stale before their digest


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
            "created_at": event["created_at"].isoformat(),
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


async def add_entries(
    db: Database, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
) -> None:
    if rows:
        await conn.execute(db.insert_ignore(digest_entries), list(rows))


async def due_entries(
    conn: AsyncConnection, wanted: Sequence[tuple[str, str]], now: dt.datetime
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(user, key) → its entries that are due and in no digest yet, oldest first."""
    pairs = set(wanted)
    users = sorted({user for user, _ in pairs})
    keys = sorted({key for _, key in pairs})
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    c = digest_entries.c
    for start in range(0, len(users), 500):
        rows = await conn.execute(
            sa.select(digest_entries)
            .where(
                c.user_id.in_(users[start : start + 500]),
                c.digest_key.in_(keys),
                c.digest_id.is_(None),
                c.due_at <= now,
            )
            .order_by(c.created_at, c.id)
        )
        for row in rows:
            if (row.user_id, row.digest_key) in pairs:
                found.setdefault((row.user_id, row.digest_key), []).append(dict(row._mapping))
    return found


async def close(conn: AsyncConnection, digest: Mapping[str, Any], entry_ids: Sequence[str]) -> None:
    """Write the digest and mark its entries as part of it."""
    await conn.execute(digests.insert().values(**digest))
    await conn.execute(
        digest_entries.update()
        .where(digest_entries.c.id.in_(list(entry_ids)))
        .values(digest_id=digest["id"])
    )


async def discard(conn: AsyncConnection, entry_ids: Sequence[str]) -> None:
    """Take entries out of every digest for good (they went stale waiting)."""
    await conn.execute(
        digest_entries.update()
        .where(digest_entries.c.id.in_(list(entry_ids)))
        .values(digest_id=DISCARDED)
    )


async def get(conn: AsyncConnection, digest_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not digest_ids:
        return {}
    rows = await conn.execute(sa.select(digests).where(digests.c.id.in_(list(digest_ids))))
    return {r.id: dict(r._mapping) for r in rows}


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
