"""All SQL for notifications, deliveries and their transitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import deliveries, delivery_transitions, notifications


async def record(
    db: Database,
    conn: AsyncConnection,
    *,
    notification_rows: Sequence[Mapping[str, Any]],
    delivery_rows: Sequence[Mapping[str, Any]],
    transition_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Write the plan's rows. Every id is derived, so writing them twice changes nothing."""
    for table, rows in (
        (notifications, notification_rows),
        (deliveries, delivery_rows),
        (delivery_transitions, transition_rows),
    ):
        if rows:
            await conn.execute(db.insert_ignore(table), list(rows))


async def for_event(
    conn: AsyncConnection, event_id: str, after: str | None, limit: int
) -> list[Mapping[str, Any]]:
    """A page of an event's deliveries in id order, each with its transitions."""
    query = sa.select(deliveries).where(deliveries.c.event_id == event_id)
    if after is not None:
        query = query.where(deliveries.c.id > after)
    rows = [
        dict(r._mapping) for r in await conn.execute(query.order_by(deliveries.c.id).limit(limit))
    ]
    if not rows:
        return []
    transitions: dict[str, list[dict[str, Any]]] = {}
    t = delivery_transitions.c
    found = await conn.execute(
        sa.select(t.delivery_id, t.state, t.reason, t.at)
        .where(t.delivery_id.in_([r["id"] for r in rows]))
        .order_by(t.at, t.id)
    )
    for tr in found:
        transitions.setdefault(tr.delivery_id, []).append(
            {"state": tr.state, "reason": tr.reason, "at": tr.at}
        )
    _ORDER = {"planned": 0}
    return [
        {
            **row,
            "transitions": sorted(
                transitions.get(row["id"], []),
                key=lambda tr: (tr["at"], _ORDER.get(tr["state"], 1)),
            ),
        }
        for row in rows
    ]
