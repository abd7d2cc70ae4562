"""The SQL of an inbox item's flags: read, seen and archived, set and cleared."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox.repository._queries import chunks
from tidings.kit.tables import inbox_items

FLAG_COLUMNS = {"read": "read_at", "seen": "seen_at", "archived": "archived_at"}
"""The column that keeps when each flag was set."""


async def seen(conn: AsyncConnection, item_ids: Collection[str]) -> set[str]:
    """Those of these items that are seen, read or archived."""
    c = inbox_items.c
    found: set[str] = set()
    for chunk in chunks(sorted(set(item_ids))):
        query = sa.select(c.id).where(
            c.id.in_(chunk),
            sa.or_(c.seen_at.is_not(None), c.read_at.is_not(None), c.archived_at.is_not(None)),
        )
        found.update(row.id for row in await conn.execute(query))
    return found


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
        column = inbox_items.c[FLAG_COLUMNS[flag]]
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
