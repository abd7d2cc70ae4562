"""All SQL for inbox items."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import inbox_items

_FLAG_COLUMNS = {"read": "read_at", "seen": "seen_at", "archived": "archived_at"}
# Values per IN list: well under every driver's limit on bound parameters.
_CHUNK = 500

_T = TypeVar("_T")


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
    for chunk in _chunks(sorted(set(keys))):
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
    for chunk in _chunks(sorted(set(item_ids))):
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


async def seen(conn: AsyncConnection, item_ids: Collection[str]) -> set[str]:
    """Those of these items that are seen, read or archived."""
    c = inbox_items.c
    found: set[str] = set()
    for chunk in _chunks(sorted(set(item_ids))):
        query = sa.select(c.id).where(
            c.id.in_(chunk),
            sa.or_(c.seen_at.is_not(None), c.read_at.is_not(None), c.archived_at.is_not(None)),
        )
        found.update(row.id for row in await conn.execute(query))
    return found


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
        # Bound with the columns' types: the time is compared as the instant it is.
        at, item_id = before
        query = query.where(
            sa.tuple_(c.created_at, c.id)
            < sa.tuple_(sa.literal(at, c.created_at.type), sa.literal(item_id, c.id.type))
        )
    rows = await conn.execute(query.order_by(c.created_at.desc(), c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


async def after(
    conn: AsyncConnection, user_id: str, position: tuple[dt.datetime, str], limit: int
) -> list[Mapping[str, Any]]:
    """The user's unarchived items past ``position`` (a (created_at, id) keyset), oldest
    first: what a live stream that stopped there has not been sent."""
    c = inbox_items.c
    at, item_id = position
    query = (
        sa.select(inbox_items)
        .where(
            c.user_id == user_id,
            c.archived_at.is_(None),
            sa.tuple_(c.created_at, c.id)
            > sa.tuple_(sa.literal(at, c.created_at.type), sa.literal(item_id, c.id.type)),
        )
        .order_by(c.created_at, c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def newest(conn: AsyncConnection, user_id: str) -> tuple[dt.datetime, str] | None:
    """The (created_at, id) of the user's newest item, archived or not; None for none."""
    c = inbox_items.c
    query = (
        sa.select(c.created_at, c.id)
        .where(c.user_id == user_id)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else (row.created_at, row.id)


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


def _chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
