"""SQL that reads deliveries with their history: an event's deliveries, one delivery,
a user's deliveries, each with the transitions that brought it where it is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery.repository import PLANNING_STAGE
from tidings.delivery.states import STATE_ORDER, first_transitions
from tidings.kit import ids
from tidings.kit.tables import delivery_transitions, every_delivery


async def for_event(
    conn: AsyncConnection, event_id: str, after: str | None, limit: int
) -> list[Mapping[str, Any]]:
    """A page of an event's deliveries in id order, each with its transitions."""
    every = every_delivery()
    query = sa.select(every).where(every.c.event_id == event_id)
    if after is not None:
        query = query.where(every.c.id > after)
    rows = [
        with_notification(r._mapping)
        for r in await conn.execute(query.order_by(every.c.id).limit(limit))
    ]
    if not rows:
        return []
    transitions = await transitions_of(conn, rows)
    return [{**row, "transitions": transitions[row["id"]]} for row in rows]


def with_notification(row: Mapping[str, Any] | sa.RowMapping) -> dict[str, Any]:
    """A row of ``every_delivery`` with its notification's id, derived for an in-app
    delivery that is its item."""
    found = dict(row)
    if found["notification_id"] is None:
        found["notification_id"] = ids.derived_id(found["event_id"], found["user_id"])
    return found


async def transitions_of(
    conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Each delivery's transitions in the order they happened, with who made them: those
    logged, or for a delivery that never changed, the first state its row holds."""
    transitions: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    t = delivery_transitions.c
    found = await conn.execute(
        sa.select(t.delivery_id, t.state, t.reason, t.detail, t.at, t.stage, t.attempt)
        .where(t.delivery_id.in_(list(transitions)))
        .order_by(t.at, t.id)
    )
    for tr in found:
        transitions[tr.delivery_id].append(
            {
                "state": tr.state,
                "reason": tr.reason,
                "detail": tr.detail,
                "at": tr.at,
                "stage": tr.stage,
                "attempt": tr.attempt,
            }
        )
    for row in rows:
        if not transitions[row["id"]]:
            transitions[row["id"]] = [
                {key: step[key] for key in _SHOWN}
                for step in first_transitions([row], stage=PLANNING_STAGE)
            ]
    for steps in transitions.values():
        steps.sort(key=lambda tr: (tr["at"], STATE_ORDER.get(tr["state"], len(STATE_ORDER))))
    return transitions


_SHOWN = ("state", "reason", "detail", "at", "stage", "attempt")


async def one_with_transitions(conn: AsyncConnection, delivery_id: str) -> dict[str, Any] | None:
    """One delivery (a row of ``every_delivery``) with its type and every transition."""
    every = every_delivery()
    row = (await conn.execute(sa.select(every).where(every.c.id == delivery_id))).first()
    if row is None:
        return None
    found = with_notification(row._mapping)
    steps = await transitions_of(conn, [found])
    return {**found, "transitions": steps[delivery_id]}


async def user_page(
    conn: AsyncConnection,
    user_id: str,
    *,
    channel: str | None,
    state: str | None,
    type_key: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    before: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` of the user's deliveries, newest first, before the keyset
    ``before`` (created_at, id), each with its transitions."""
    every = every_delivery()
    d = every.c
    query = sa.select(every).where(d.user_id == user_id)
    for column, value in ((d.channel, channel), (d.state, state), (d.type, type_key)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(d.created_at >= since)
    if until is not None:
        query = query.where(d.created_at < until)
    if before is not None:
        at, last_id = before
        query = query.where(sa.or_(d.created_at < at, sa.and_(d.created_at == at, d.id < last_id)))
    query = query.order_by(d.created_at.desc(), d.id.desc()).limit(limit)
    rows = [with_notification(r._mapping) for r in await conn.execute(query)]
    steps = await transitions_of(conn, rows)
    return [{**row, "transitions": steps[row["id"]]} for row in rows]
