"""The SQL that stores inbox items: new ones inserted, and a group's next event merged
into the group's open item, under a lock."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox.repository._queries import chunks
from tidings.kit.db import Database
from tidings.kit.tables import inbox_items


async def insert(
    db: Database, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Store items; returns the ids that were new (a redelivered job finds them there)."""
    return set(await db.insert_rows_ignore(conn, inbox_items, items, returning="id"))


async def open_group_items(
    conn: AsyncConnection, keys: Collection[tuple[str, str, str]]
) -> list[Mapping[str, Any]]:
    """Unread, unarchived items of these (user, tenant, group key)s, locked until the
    transaction ends so that two writers cannot both merge into one from the same count.

    Matched on ``user_id IN … AND group_key IN …`` (which the (user_id, group_key) index
    serves on both engines, unlike a row-value IN) and narrowed to the exact keys here.
    """
    c = inbox_items.c
    columns = (c.id, c.user_id, c.tenant, c.group_key, c.group_count, c.group_actors, c.created_at)
    found: list[Mapping[str, Any]] = []
    for chunk in chunks(sorted(set(keys))):
        query = (
            sa.select(*columns)
            .where(
                c.user_id.in_(sorted({user for user, _tenant, _key in chunk})),
                c.group_key.in_(sorted({key for _user, _tenant, key in chunk})),
                c.read_at.is_(None),
                c.archived_at.is_(None),
            )
            .order_by(c.id)
            .with_for_update()
        )
        wanted = set(chunk)
        for row in await conn.execute(query):
            if (row.user_id, row.tenant, row.group_key) in wanted:
                found.append(dict(row._mapping))
    return found


async def lock(conn: AsyncConnection, item_ids: Collection[str]) -> dict[str, Mapping[str, Any]]:
    """The items that still exist among these, locked until the transaction ends."""
    c = inbox_items.c
    found: dict[str, Mapping[str, Any]] = {}
    for chunk in chunks(sorted(set(item_ids))):
        query = (
            sa.select(c.id, c.user_id, c.group_key, c.read_at, c.archived_at)
            .where(c.id.in_(chunk))
            .order_by(c.id)
            .with_for_update()
        )
        found.update({row.id: dict(row._mapping) for row in await conn.execute(query)})
    return found


async def merge(conn: AsyncConnection, updates: Sequence[Mapping[str, Any]]) -> None:
    """Overwrite open items with new content; each update names its item as
    ``merge_target`` (and its owner as ``merge_user``) and the columns to set."""
    if not updates:
        return
    c = inbox_items.c
    query = inbox_items.update().where(
        c.id == sa.bindparam("merge_target"),
        c.user_id == sa.bindparam("merge_user"),
        c.read_at.is_(None),
        c.archived_at.is_(None),
    )
    await conn.execute(query, list(updates))
