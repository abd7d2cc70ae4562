"""All SQL for profiles, topics and subscriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import (
    channel_addresses,
    deliveries,
    events,
    inbox_items,
    notifications,
    subscriptions,
    topics,
    users,
)

PROFILE_FIELDS = ("email", "name", "locale", "timezone")


async def upsert_profiles(
    db: Database, conn: AsyncConnection, profiles: Sequence[Mapping[str, Any]], now: dt.datetime
) -> None:
    """Create or update profiles; only the fields each mapping names are changed."""
    # One row per user, later fields winning: a statement may not update a row twice.
    merged: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        merged.setdefault(profile["id"], {}).update(profile)
    by_fields: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    # Rows in id order, so concurrent writers lock shared users in the same order.
    for profile in sorted(merged.values(), key=lambda p: str(p["id"])):
        fields = tuple(f for f in PROFILE_FIELDS if f in profile)
        row = {"id": profile["id"], "created_at": now, "updated_at": now}
        row.update({f: profile[f] for f in fields})
        by_fields.setdefault(fields, []).append(row)
    for fields, rows in by_fields.items():
        stmt = db.upsert(users)
        changes = {f: stmt.excluded[f] for f in fields}
        changes["updated_at"] = stmt.excluded.updated_at
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[users.c.id], set_=changes), rows
        )


async def replace_profile(
    db: Database, conn: AsyncConnection, user_id: str, fields: Mapping[str, Any], now: dt.datetime
) -> None:
    values = {f: fields.get(f) for f in PROFILE_FIELDS}
    stmt = db.upsert(users).values(id=user_id, created_at=now, updated_at=now, **values)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[users.c.id], set_={**values, "updated_at": now})
    )


async def get_profile(conn: AsyncConnection, user_id: str) -> Mapping[str, Any] | None:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return None if row is None else dict(row._mapping)


async def get_profiles(
    conn: AsyncConnection, user_ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    wanted = list(set(user_ids))
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(wanted), 1000):
        rows = await conn.execute(
            sa.select(users).where(users.c.id.in_(wanted[start : start + 1000]))
        )
        found.update({row.id: row._mapping for row in rows})
    return found


async def erase_user(conn: AsyncConnection, user_id: str, pseudonym: str) -> bool:
    """Delete a user's profile, inbox, subscriptions and channel addresses (push
    subscriptions); pseudonymise what must stay."""
    existed = (await conn.execute(users.delete().where(users.c.id == user_id))).rowcount > 0
    await conn.execute(inbox_items.delete().where(inbox_items.c.user_id == user_id))
    await conn.execute(channel_addresses.delete().where(channel_addresses.c.user_id == user_id))
    await conn.execute(subscriptions.delete().where(subscriptions.c.user_id == user_id))
    event_ids = [
        row.event_id
        for row in await conn.execute(
            sa.select(notifications.c.event_id).where(notifications.c.user_id == user_id)
        )
    ]
    for table in (notifications, deliveries):
        await conn.execute(
            table.update().where(table.c.user_id == user_id).values(user_id=pseudonym)
        )
    for start in range(0, len(event_ids), 500):
        rows = await conn.execute(
            sa.select(events.c.id, events.c.recipients).where(
                events.c.id.in_(event_ids[start : start + 500])
            )
        )
        for row in rows.all():
            if row.recipients and user_id in row.recipients:
                replaced = [pseudonym if r == user_id else r for r in row.recipients]
                await conn.execute(
                    events.update().where(events.c.id == row.id).values(recipients=replaced)
                )
    return existed or bool(event_ids)


async def subscribe(
    db: Database, conn: AsyncConnection, topic: str, user_ids: Sequence[str], now: dt.datetime
) -> int:
    await conn.execute(db.insert_ignore(topics).values(key=topic, created_at=now))
    result = await conn.execute(
        db.insert_ignore(subscriptions).returning(subscriptions.c.user_id),
        [{"topic": topic, "user_id": u, "created_at": now} for u in dict.fromkeys(user_ids)],
    )
    return len(result.all())


async def unsubscribe(conn: AsyncConnection, topic: str, user_ids: Sequence[str]) -> int:
    result = await conn.execute(
        subscriptions.delete().where(
            subscriptions.c.topic == topic, subscriptions.c.user_id.in_(list(user_ids))
        )
    )
    return result.rowcount


async def subscriber_page(
    conn: AsyncConnection, topic: str, after: str | None, limit: int
) -> list[Mapping[str, Any]]:
    """Subscribers in user-id order after ``after``: a keyset page, cheap at any depth."""
    query = sa.select(subscriptions.c.user_id, subscriptions.c.created_at).where(
        subscriptions.c.topic == topic
    )
    if after is not None:
        query = query.where(subscriptions.c.user_id > after)
    rows = await conn.execute(query.order_by(subscriptions.c.user_id).limit(limit))
    return [dict(row._mapping) for row in rows]
