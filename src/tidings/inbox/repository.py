"""All SQL for inbox items."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import inbox_items

_FLAG_COLUMNS = {"read": "read_at", "seen": "seen_at", "archived": "archived_at"}


async def insert(
    db: Database, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Store items; returns the ids that were new (a redelivered job finds them there)."""
    if not items:
        return set()
    result = await conn.execute(
        db.insert_ignore(inbox_items).returning(inbox_items.c.id), list(items)
    )
    return {row.id for row in result}


async def page(
    conn: AsyncConnection,
    user_id: str,
    *,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> list[Mapping[str, Any]]:
    """Newest first; ``before`` is the (created_at, id) of the last item already seen."""
    c = inbox_items.c
    query = sa.select(inbox_items).where(c.user_id == user_id)
    query = query.where(c.archived_at.is_not(None) if archived else c.archived_at.is_(None))
    if unread_only:
        query = query.where(c.read_at.is_(None))
    if before is not None:
        query = query.where(sa.tuple_(c.created_at, c.id) < sa.tuple_(*before))
    rows = await conn.execute(query.order_by(c.created_at.desc(), c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


async def counts(conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """user → (unread, unseen, total) over items that are not archived."""
    c = inbox_items.c
    query = (
        sa.select(
            c.user_id,
            sa.func.count().filter(c.read_at.is_(None)),
            sa.func.count().filter(c.seen_at.is_(None)),
            sa.func.count(),
        )
        .where(c.user_id.in_(list(user_ids)), c.archived_at.is_(None))
        .group_by(c.user_id)
    )
    found = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in await conn.execute(query)}
    return {user: found.get(user, (0, 0, 0)) for user in user_ids}


async def mark(
    conn: AsyncConnection,
    user_id: str,
    item_ids: Sequence[str] | None,
    flags: Mapping[str, bool],
    now: dt.datetime,
) -> int:
    """Set or clear flags on some (or all) of a user's items; returns how many changed."""
    c = inbox_items.c
    values: dict[str, Any] = {}
    changed_only = []
    for flag, on in flags.items():
        column = inbox_items.c[_FLAG_COLUMNS[flag]]
        # Keep the first time a flag was set: marking twice changes nothing.
        values[column.name] = sa.func.coalesce(column, now) if on else None
        changed_only.append(column.is_(None) if on else column.is_not(None))
    if not values:
        return 0
    query = inbox_items.update().where(c.user_id == user_id, sa.or_(*changed_only))
    if item_ids is not None:
        query = query.where(c.id.in_(list(item_ids)))
    result = await conn.execute(query.values(values))
    return result.rowcount


async def get(conn: AsyncConnection, user_id: str, item_id: str) -> Mapping[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(inbox_items).where(
                inbox_items.c.user_id == user_id, inbox_items.c.id == item_id
            )
        )
    ).first()
    return None if row is None else dict(row._mapping)
