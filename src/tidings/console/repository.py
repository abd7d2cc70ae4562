"""All SQL of the console: searches across users, the charts' counts, caught mail."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import cursors
from tidings.kit.tables import (
    dead_letters,
    deliveries,
    delivery_transitions,
    events,
    every_delivery,
    jobs,
    mailbox,
)

DONE_STATES = ("sent", "delivered")
"""States that end a delivery's trip through Tidings: handed to a provider, or in the inbox."""


@dataclass(frozen=True)
class EventSearch:
    """Which events to list; ``None`` leaves a field open. ``type`` may end in ``*``."""

    user: str | None = None
    type: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class DeliverySearch:
    """Which deliveries to list, across users; ``None`` leaves a field open."""

    user: str | None = None
    type: str | None = None
    state: str | None = None
    channel: str | None = None
    event: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def search_events(
    conn: AsyncConnection, where: EventSearch, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of events, newest first, and the cursor of the next page."""
    e = events.c
    query: sa.Select[Any] = sa.select(
        e.id, e.tenant, e.type, e.actor, e.recipients, e.topic, e.created_at, e.planned_at
    )
    if where.user is not None:
        query = query.where(
            e.id.in_(sa.select(deliveries.c.event_id).where(deliveries.c.user_id == where.user))
        )
    if where.type is not None:
        query = query.where(_type_matches(e.type, where.type))
    query = _window(query, e.created_at, where.since, where.until)
    return await _page(conn, query, e.created_at, e.id, cursor, limit)


async def search_deliveries(
    conn: AsyncConnection, where: DeliverySearch, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of deliveries of any user, newest first, and the cursor of the next page."""
    d = every_delivery().c
    query: sa.Select[Any] = sa.select(
        d.id,
        d.event_id,
        d.user_id,
        d.channel,
        d.state,
        d.reason,
        d.detail,
        d.created_at,
        d.updated_at,
        d.type,
    )
    for column, value in (
        (d.user_id, where.user),
        (d.state, where.state),
        (d.channel, where.channel),
        (d.event_id, where.event),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.type is not None:
        query = query.where(_type_matches(d.type, where.type))
    query = _window(query, d.created_at, where.since, where.until)
    return await _page(conn, query, d.created_at, d.id, cursor, limit)


async def counts_per_bucket(
    conn: AsyncConnection, table: sa.Table | sa.Subquery, edges: Sequence[dt.datetime]
) -> list[int]:
    """How many rows of ``table`` were created in each ``[edges[i], edges[i+1])``."""
    at = table.c.created_at
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(at >= lo, at < hi), 1), else_=0)), 0)
        for lo, hi in itertools.pairwise(edges)
    ]
    row = (await conn.execute(sa.select(*columns).where(at >= edges[0]))).one()
    return [int(n) for n in row]


async def finished_since(
    conn: AsyncConnection, since: dt.datetime, limit: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """For the newest deliveries created since ``since`` that were sent or delivered: when
    their event was accepted, and when they first reached a done state (a delivery done
    when planned, an in-app item, has no transition: its creation is that moment)."""
    d, t = deliveries.c, delivery_transitions.c
    logged = (
        sa.select(
            d.created_at.label("created"),
            events.c.created_at.label("accepted"),
            sa.func.min(t.at).label("done"),
        )
        .select_from(
            deliveries.join(events, events.c.id == d.event_id).join(
                delivery_transitions, t.delivery_id == d.id
            )
        )
        .where(d.created_at >= since, t.state.in_(DONE_STATES))
        .group_by(d.id, d.created_at, events.c.created_at)
        .order_by(d.created_at.desc())
        .limit(limit)
    )
    every = every_delivery()
    e = every.c
    at_once = (
        sa.select(
            e.created_at.label("created"),
            events.c.created_at.label("accepted"),
            e.created_at.label("done"),
        )
        .select_from(every.join(events, events.c.id == e.event_id))
        .where(
            e.created_at >= since,
            e.state.in_(DONE_STATES),
            ~sa.exists().where(t.delivery_id == e.id),
        )
        .order_by(e.created_at.desc())
        .limit(limit)
    )
    found = [*(await conn.execute(logged)), *(await conn.execute(at_once))]
    found.sort(key=lambda row: row.created, reverse=True)
    return [(row.accepted, row.done) for row in found[:limit]]


async def states_since(conn: AsyncConnection, since: dt.datetime) -> dict[str, int]:
    """Deliveries created since ``since``, by their state now."""
    d = every_delivery().c
    rows = await conn.execute(
        sa.select(d.state, sa.func.count()).where(d.created_at >= since).group_by(d.state)
    )
    return {state: int(n) for state, n in rows}


async def queue_depth(conn: AsyncConnection, now: dt.datetime) -> dict[str, dict[int, int]]:
    """Jobs in the ``jobs`` table per lane: ``due`` (waiting for a worker) and ``later``
    (timers: delays, digest windows, retries)."""
    due = (jobs.c.run_at <= now).label("due")
    rows = await conn.execute(
        sa.select(jobs.c.lane, due, sa.func.count()).group_by(jobs.c.lane, sa.literal_column("due"))
    )
    found: dict[str, dict[int, int]] = {"due": {}, "later": {}}
    for lane, is_due, n in rows:
        found["due" if is_due else "later"][int(lane)] = int(n)
    return found


async def dead_letter_total(conn: AsyncConnection) -> int:
    """How many dead letters wait."""
    return int(
        (await conn.execute(sa.select(sa.func.count()).select_from(dead_letters))).scalar_one()
    )


async def caught_message(conn: AsyncConnection, message_id: str) -> dict[str, Any] | None:
    """One message of the mail catcher by its row id."""
    row = (await conn.execute(sa.select(mailbox).where(mailbox.c.id == message_id))).first()
    return None if row is None else dict(row._mapping)


async def caught_for_delivery(conn: AsyncConnection, delivery_id: str) -> dict[str, Any] | None:
    """The caught message of an email delivery (its id and subject), if the catcher has it.

    The catcher stores a delivery's message under the delivery's id, so this is a read
    by primary key.
    """
    m = mailbox.c
    query = sa.select(m.id, m.subject).where(m.id == delivery_id, m.delivery_id == delivery_id)
    row = (await conn.execute(query)).first()
    return None if row is None else dict(row._mapping)


def _type_matches(column: sa.ColumnElement[str], pattern: str) -> sa.ColumnElement[bool]:
    if pattern.endswith("*"):
        prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(prefix + "%", escape="\\")
    return column == pattern


def _window(
    query: sa.Select[Any],
    column: sa.ColumnElement[dt.datetime],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> sa.Select[Any]:
    if since is not None:
        query = query.where(column >= since)
    if until is not None:
        query = query.where(column < until)
    return query


async def _page(
    conn: AsyncConnection,
    query: sa.Select[Any],
    at: sa.ColumnElement[dt.datetime],
    row_id: sa.ColumnElement[str],
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    before = decode_cursor(cursor)
    if before is not None:
        when, last_id = before
        query = query.where(sa.or_(at < when, sa.and_(at == when, row_id < last_id)))
    query = query.order_by(at.desc(), row_id.desc()).limit(limit + 1)
    rows = [dict(r._mapping) for r in await conn.execute(query)]
    page = rows[:limit]
    return page, (encode_cursor(page[-1]) if len(rows) > limit else None)


def encode_cursor(row: Mapping[str, Any]) -> str:
    """The cursor that continues after ``row`` (its creation time and id)."""
    return cursors.encode_keyset(row["created_at"], row["id"])


def decode_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    """The (time, id) a cursor continues after.

    Raises:
        errors.Invalid: the cursor is not one the console gave out.
    """
    return cursors.decode_keyset(cursor)
