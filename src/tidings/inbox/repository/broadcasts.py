"""The SQL of broadcasts: the in-app item of a large topic's event, stored once, read
into each subscriber's inbox (pages, counts, the live stream's keyset), and what each
user did with it (seen, read, archived); and the topic's subscribers it reaches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox.repository._queries import BROADCAST_SINCE, chunks
from tidings.inbox.repository.flags import FLAG_COLUMNS
from tidings.kit.db import Database
from tidings.kit.tables import broadcast_states, broadcasts, subscriptions


@dataclass(frozen=True)
class Reader:
    """Whose inbox a broadcast query reads, and what of it they are not shown: the
    (tenant, category) pairs their preferences keep out of the inbox, and, for a user
    erased and created again, the events accepted up to their erasure."""

    user_id: str
    hidden: frozenset[tuple[str, str]] = frozenset()
    erased_before: dt.datetime | None = None


Kind = tuple[str, str, bool, bool | None]
"""What preferences are resolved over: (tenant, category, mandatory, the catalog's
in-app default for the category), as the broadcast recorded them."""


async def insert_broadcast(db: Database, conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """Store a broadcast; False when it was there already (a fan-out job run again)."""
    return bool(await db.insert_rows_ignore(conn, broadcasts, [row], returning="id"))


async def broadcast(conn: AsyncConnection, broadcast_id: str) -> Mapping[str, Any] | None:
    """A broadcast by id, whoever reads it."""
    row = (await conn.execute(sa.select(broadcasts).where(broadcasts.c.id == broadcast_id))).first()
    return None if row is None else dict(row._mapping)


async def broadcast_kinds(conn: AsyncConnection, reader: Reader) -> list[Kind]:
    """The kinds of the broadcasts in a user's inbox, archived or not, hidden or not."""
    b = broadcasts.c
    query = _broadcasts_of(reader, b.tenant, b.category, b.mandatory, b.in_app_default).distinct()
    return [
        (row.tenant, row.category, bool(row.mandatory), row.in_app_default)
        for row in await conn.execute(query)
    ]


async def with_broadcasts(conn: AsyncConnection, user_ids: Sequence[str]) -> set[str]:
    """Those of ``user_ids`` with a broadcast in their inbox, shown or not: a topic they
    subscribe to has one stored after they subscribed. One query for them all."""
    if not user_ids:
        return set()
    s = subscriptions.c
    query = sa.select(s.user_id).where(s.user_id.in_(list(user_ids)), BROADCAST_SINCE).distinct()
    return {row[0] for row in await conn.execute(query)}


async def broadcast_counts(
    conn: AsyncConnection, reader: Reader
) -> list[tuple[Kind, tuple[int, int, int]]]:
    """(unread, unseen, total) of the unarchived broadcasts in a user's inbox, by kind."""
    b, st = broadcasts.c, broadcast_states.c
    query = (
        _broadcasts_of(
            reader,
            b.tenant,
            b.category,
            b.mandatory,
            b.in_app_default,
            sa.func.count().filter(st.read_at.is_(None)),
            sa.func.count().filter(st.seen_at.is_(None)),
            sa.func.count(),
        )
        .where(st.archived_at.is_(None))
        .group_by(b.tenant, b.category, b.mandatory, b.in_app_default)
    )
    return [
        ((row[0], row[1], bool(row[2]), row[3]), (int(row[4]), int(row[5]), int(row[6])))
        for row in await conn.execute(query)
    ]


async def broadcast_page(
    conn: AsyncConnection,
    reader: Reader,
    *,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> list[Mapping[str, Any]]:
    """As ``reads.page``, over the broadcasts in a user's inbox: rows shaped as inbox items."""
    b, st = broadcasts.c, broadcast_states.c
    query = _broadcast_items(reader)
    query = query.where(st.archived_at.is_not(None) if archived else st.archived_at.is_(None))
    if unread_only:
        query = query.where(st.read_at.is_(None))
    if before is not None:
        at, item_id = before
        query = query.where(
            sa.tuple_(b.created_at, b.id)
            < sa.tuple_(sa.literal(at, b.created_at.type), sa.literal(item_id, b.id.type))
        )
    rows = await conn.execute(query.order_by(b.created_at.desc(), b.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


async def broadcasts_after(
    conn: AsyncConnection, reader: Reader, position: tuple[dt.datetime, str], limit: int
) -> list[Mapping[str, Any]]:
    """As ``reads.after``, over the broadcasts in a user's inbox."""
    b, st = broadcasts.c, broadcast_states.c
    at, item_id = position
    query = (
        _broadcast_items(reader)
        .where(
            st.archived_at.is_(None),
            sa.tuple_(b.created_at, b.id)
            > sa.tuple_(sa.literal(at, b.created_at.type), sa.literal(item_id, b.id.type)),
        )
        .order_by(b.created_at, b.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def newest_broadcast(conn: AsyncConnection, reader: Reader) -> tuple[dt.datetime, str] | None:
    """As ``reads.newest``, over the broadcasts in a user's inbox."""
    b = broadcasts.c
    query = (
        _broadcasts_of(reader, b.created_at, b.id)
        .order_by(b.created_at.desc(), b.id.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else (row.created_at, row.id)


async def broadcast_items(
    conn: AsyncConnection, reader: Reader, broadcast_ids: Collection[str] | None
) -> list[Mapping[str, Any]]:
    """Those of these broadcasts (all, for None) that are in a user's inbox, shaped as
    inbox items."""
    b = broadcasts.c
    if broadcast_ids is None:
        query = _broadcast_items(reader).order_by(b.id)
        return [dict(row._mapping) for row in await conn.execute(query)]
    found: list[Mapping[str, Any]] = []
    for chunk in chunks(sorted(set(broadcast_ids))):
        query = _broadcast_items(reader).where(b.id.in_(chunk)).order_by(b.id)
        found.extend(dict(row._mapping) for row in await conn.execute(query))
    return found


async def subscription_time(conn: AsyncConnection, topic: str, user_id: str) -> dt.datetime | None:
    """When the user subscribed to the topic; None when they do not subscribe."""
    s = subscriptions.c
    query = sa.select(s.created_at).where(s.topic == topic, s.user_id == user_id)
    found: dt.datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return found


async def mark_broadcasts(
    db: Database,
    conn: AsyncConnection,
    user_id: str,
    broadcast_ids: Sequence[str],
    flags: Mapping[str, bool],
    now: dt.datetime,
) -> None:
    """Set or clear flags on a user's state of these broadcasts, creating it where the
    user had none; a flag set before keeps its first time."""
    if not broadcast_ids or not flags:
        return
    rows = [
        {
            "broadcast_id": broadcast_id,
            "user_id": user_id,
            **{column: None for column in FLAG_COLUMNS.values()},
            **{FLAG_COLUMNS[flag]: now if on else None for flag, on in flags.items()},
        }
        for broadcast_id in sorted(set(broadcast_ids))
    ]
    st = broadcast_states.c
    for chunk in chunks(rows):
        stmt = db.upsert(broadcast_states)
        changes = {
            FLAG_COLUMNS[flag]: sa.func.coalesce(st[FLAG_COLUMNS[flag]], now) if on else None
            for flag, on in flags.items()
        }
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[st.broadcast_id, st.user_id], set_=changes),
            list(chunk),
        )


async def forget_broadcast_states(conn: AsyncConnection, user_id: str) -> int:
    """Delete what a user did with broadcasts (seen, read, archived); returns the rows."""
    result = await conn.execute(
        broadcast_states.delete().where(broadcast_states.c.user_id == user_id)
    )
    return result.rowcount


async def subscribers_at_least(conn: AsyncConnection, topic: str, wanted: int) -> bool:
    """Whether ``topic`` has ``wanted`` subscribers or more (counted up to ``wanted``)."""
    some = (
        sa.select(sa.literal(1).label("one"))
        .where(subscriptions.c.topic == topic)
        .limit(wanted)
        .subquery()
    )
    found = (await conn.execute(sa.select(sa.func.count()).select_from(some))).scalar_one()
    return int(found) >= wanted


async def subscribed_among(
    conn: AsyncConnection, topic: str, user_ids: Collection[str], before: dt.datetime
) -> list[str]:
    """Those of ``user_ids`` who subscribed to ``topic`` before ``before``."""
    s = subscriptions.c
    found: list[str] = []
    for chunk in chunks(sorted(set(user_ids))):
        query = sa.select(s.user_id).where(
            s.topic == topic, s.user_id.in_(chunk), s.created_at < before
        )
        found.extend(row.user_id for row in await conn.execute(query))
    return found


def _broadcasts_of(reader: Reader, *columns: Any) -> sa.Select[Any]:
    """``columns`` of the broadcasts in ``reader``'s inbox, with their state for them.

    In a user's inbox: a broadcast of a topic they subscribe to, stored after they
    subscribed (so unsubscribing takes them all away, and subscribing again brings only
    new ones), of a kind their preferences show.
    """
    b, s, st = broadcasts.c, subscriptions.c, broadcast_states.c
    joined = broadcasts.join(
        subscriptions,
        sa.and_(s.topic == b.topic, s.user_id == reader.user_id, b.created_at > s.created_at),
    ).outerjoin(broadcast_states, sa.and_(st.broadcast_id == b.id, st.user_id == reader.user_id))
    query = sa.select(*columns).select_from(joined)
    if reader.erased_before is not None:
        query = query.where(b.accepted_at > reader.erased_before)
    for tenant, category in sorted(reader.hidden):
        query = query.where(sa.not_(sa.and_(b.tenant == tenant, b.category == category)))
    return query


def _broadcast_items(reader: Reader) -> sa.Select[Any]:
    """Broadcasts in ``reader``'s inbox as inbox item rows (no group, never merged),
    with what their visibility is decided on."""
    b, st = broadcasts.c, broadcast_states.c
    return _broadcasts_of(
        reader,
        b.id,
        b.event_id,
        b.tenant,
        b.topic,
        b.type,
        b.category,
        b.title,
        b.body,
        b.action_url,
        b.actor,
        b.created_at,
        b.critical,
        b.mandatory,
        b.in_app_default,
        b.accepted_at,
        st.seen_at,
        st.read_at,
        st.archived_at,
    )
