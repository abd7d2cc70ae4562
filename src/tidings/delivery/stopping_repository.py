"""All SQL that stops deliveries still to send: an erasure's, a cancellation's, and the
senders' claims that hold a cancellation off while a delivery is handed over."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery.states import DeliveryState, first_transitions
from tidings.kit import ids
from tidings.kit.db import Database, among
from tidings.kit.tables import deliveries, delivery_transitions


def not_claimed(now: dt.datetime) -> sa.ColumnElement[bool]:
    """No sender claims the delivery at ``now``."""
    claimed_until = deliveries.c.claimed_until
    return sa.or_(claimed_until.is_(None), claimed_until <= now)


_STILL_TO_SEND = ("planned", "scheduled")
_ERASED_REASON = "erased"


async def stop_for_erasure(
    db: Database, conn: AsyncConnection, user_id: str, now: dt.datetime
) -> None:
    """Suppress the user's planned and scheduled deliveries (reason ``erased``), so a
    delay, a digest or a retry that fires later finds nothing to send."""
    d = deliveries.c
    found = await conn.execute(
        sa.select(
            d.id,
            d.state,
            d.reason,
            d.detail,
            d.created_at,
            sa.exists().where(delivery_transitions.c.delivery_id == d.id).label("changed"),
        ).where(d.user_id == user_id, d.state.in_(_STILL_TO_SEND))
    )
    rows = [dict(row._mapping) for row in found]
    if not rows:
        return
    pending = [row["id"] for row in rows]
    # Those that never changed log where they started before this change (see
    # ``log_first_states``).
    first = first_transitions([row for row in rows if not row["changed"]], stage="plan")
    if first:
        # A planning that raced this erasure may have logged them already.
        await conn.execute(db.insert_ignore(delivery_transitions), first)
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id.in_(chunk), deliveries.c.state.in_(_STILL_TO_SEND))
            .values(state="suppressed", reason=_ERASED_REASON, detail=None, updated_at=now)
        )
    await conn.execute(
        db.insert_ignore(delivery_transitions),
        [
            {
                "id": ids.derived_id(delivery_id, "suppressed", _ERASED_REASON),
                "delivery_id": delivery_id,
                "state": "suppressed",
                "reason": _ERASED_REASON,
                "at": now,
                "stage": "erase",
            }
            for delivery_id in pending
        ],
    )


async def pending_of_events(
    conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime, *, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` deliveries of these events still to send (planned or scheduled)
    that no sender claims: held, delayed, in quiet hours, folded into a digest not sent
    yet, waiting for an in-app item to stay unseen, or waiting for a retry."""
    d = deliveries.c
    found = await conn.execute(
        sa.select(d.id, d.event_id, d.user_id)
        .where(
            among(conn, d.event_id, event_ids),
            d.state.in_(_STILL_TO_SEND),
            not_claimed(now),
        )
        .limit(limit)
    )
    return [dict(row._mapping) for row in found]


async def claimed_of_events(
    conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime
) -> dict[str, int]:
    """Event id → how many of its deliveries still to send a sender claims now."""
    d = deliveries.c
    found = await conn.execute(
        sa.select(d.event_id, sa.func.count())
        .where(
            among(conn, d.event_id, event_ids),
            d.state.in_(_STILL_TO_SEND),
            d.claimed_until > now,
        )
        .group_by(d.event_id)
    )
    return {row[0]: int(row[1]) for row in found}


async def claim(conn: AsyncConnection, delivery_ids: Sequence[str], until: dt.datetime) -> set[str]:
    """Claim scheduled deliveries for a sender until ``until``: those returned are its
    to hand over; a cancellation leaves them alone until then (``advance`` with
    ``unclaimed``). A delivery no longer scheduled (cancelled, erased, sent by an earlier
    run) is not returned. A claim only holds cancellations off: the job that sends a
    delivery is one job, so the sender claiming it again is that job run again (its
    worker died, or gave it back), which takes the claim over."""
    d = deliveries.c
    found = await conn.execute(
        deliveries.update()
        .where(among(conn, d.id, delivery_ids), d.state == DeliveryState.SCHEDULED.value)
        .values(claimed_until=until)
        .returning(d.id)
    )
    return {row.id for row in found}
