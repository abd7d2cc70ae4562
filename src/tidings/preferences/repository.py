"""All SQL for preferences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import preferences

ANY_CATEGORY = "*"


async def put(
    db: Database,
    conn: AsyncConnection,
    *,
    user_id: str,
    category: str,
    channel: str,
    enabled: bool,
    source: str,
    now: dt.datetime,
) -> None:
    stmt = db.upsert(preferences).values(
        user_id=user_id,
        category=category,
        channel=channel,
        enabled=enabled,
        source=source,
        updated_at=now,
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[preferences.c.user_id, preferences.c.category, preferences.c.channel],
            set_={"enabled": enabled, "source": source, "updated_at": now},
        )
    )


async def switched_off(
    conn: AsyncConnection, user_ids: Iterable[str], categories: Iterable[str]
) -> set[tuple[str, str, str]]:
    """(user, category, channel) the users turned off, among these categories or all ("*")."""
    wanted_users = list(set(user_ids))
    wanted_categories = [*set(categories), ANY_CATEGORY]
    off: set[tuple[str, str, str]] = set()
    for start in range(0, len(wanted_users), 1000):
        rows = await conn.execute(
            sa.select(preferences.c.user_id, preferences.c.category, preferences.c.channel).where(
                preferences.c.user_id.in_(wanted_users[start : start + 1000]),
                preferences.c.category.in_(wanted_categories),
                preferences.c.enabled.is_(False),
            )
        )
        off.update((r.user_id, r.category, r.channel) for r in rows)
    return off


async def for_user(conn: AsyncConnection, user_id: str) -> list[dict[str, object]]:
    rows = await conn.execute(
        sa.select(preferences)
        .where(preferences.c.user_id == user_id)
        .order_by(preferences.c.category, preferences.c.channel)
    )
    return [dict(r._mapping) for r in rows]
