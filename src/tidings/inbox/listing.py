"""Reading a user's inbox: pages of their own items with the broadcasts of their topics
merged in (newest first, by keyset), one item, and the unread, unseen and total counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import schemas
from tidings.inbox.broadcasts import Broadcasts, SharedItems
from tidings.inbox.repository import broadcasts as broadcast_sql
from tidings.inbox.repository import reads
from tidings.kit import cursors, errors
from tidings.kit.db import Database


async def page(
    db: Database,
    broadcasts: Broadcasts | None,
    user_id: str,
    *,
    cursor: str | None,
    limit: int,
    unread_only: bool,
    archived: bool,
    with_counts: bool,
) -> schemas.Page:
    """A page of the user's items, newest first; with their counts when asked (read on
    the same connection, right after the page)."""
    before = cursors.decode_keyset(cursor)
    if with_counts and db.is_postgres:
        return await _counted_page(db, broadcasts, user_id, before, limit, unread_only, archived)
    counts = None
    async with db.reader() as conn:
        rows = await reads.page(
            conn,
            user_id,
            before=before,
            limit=limit + 1,
            unread_only=unread_only,
            archived=archived,
        )
        shared = await shared_items(conn, broadcasts, user_id)
        rows = await _with_broadcasts(rows, shared, before, limit, unread_only, archived)
        if with_counts:
            # No broadcast in their inbox (found for the page): none to count either.
            alone = () if shared is not None else (user_id,)
            found = await counts_of(conn, broadcasts, [user_id], alone)
            unread, unseen, total = found[user_id]
            counts = schemas.Counts(unread=unread, unseen=unseen, total=total)
    return _page(rows, limit, counts)


async def _counted_page(
    db: Database,
    broadcasts: Broadcasts | None,
    user_id: str,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> schemas.Page:
    """``page`` with its counts on PostgreSQL: the user's own items, their counts and
    whether they have broadcasts in one statement; the broadcasts' own reads only
    for a user who has some."""
    async with db.reader() as conn:
        found = await reads.counted_page(
            conn,
            user_id,
            before=before,
            limit=limit + 1,
            unread_only=unread_only,
            archived=archived,
        )
        rows, (unread, unseen, total) = found.rows, found.counts
        shared = await shared_items(conn, broadcasts, user_id) if found.broadcasts else None
        rows = await _with_broadcasts(rows, shared, before, limit, unread_only, archived)
        if shared is not None and broadcasts is not None:
            more = await broadcasts.counts(conn, user_id)
            unread, unseen, total = unread + more[0], unseen + more[1], total + more[2]
    return _page(rows, limit, schemas.Counts(unread=unread, unseen=unseen, total=total))


async def item(
    db: Database, broadcasts: Broadcasts | None, user_id: str, item_id: str
) -> schemas.Item:
    """One of the user's items, or a broadcast in their inbox.

    Raises ``errors.NotFound`` when it is neither.
    """
    async with db.reader() as conn:
        row = await reads.get(conn, user_id, item_id)
        if row is None and broadcasts is not None:
            row = next(iter(await broadcasts.items(conn, user_id, [item_id])), None)
    if row is None:
        raise errors.NotFound(f"No inbox item {item_id!r}.", field="item_id")
    return schemas.item_of(row)


async def counts_of(
    conn: AsyncConnection,
    broadcasts: Broadcasts | None,
    user_ids: Sequence[str],
    without_broadcasts: Collection[str] = (),
) -> dict[str, tuple[int, int, int]]:
    """user → (unread, unseen, total) over their unarchived items, broadcasts included
    (but for ``without_broadcasts``: users known to have none in their inbox)."""
    found = await reads.counts(conn, user_ids)
    if broadcasts is None:
        return found
    asked = [user_id for user_id in user_ids if user_id not in without_broadcasts]
    for user_id in await broadcast_sql.with_broadcasts(conn, asked) if asked else ():
        shared = await broadcasts.counts(conn, user_id)
        found[user_id] = (
            found[user_id][0] + shared[0],
            found[user_id][1] + shared[1],
            found[user_id][2] + shared[2],
        )
    return found


async def shared_items(
    conn: AsyncConnection, broadcasts: Broadcasts | None, user_id: str
) -> SharedItems | None:
    """The broadcasts in the user's inbox, to read beside their own items; None when
    there are none."""
    if broadcasts is None:
        return None
    reader = await broadcasts.reader(conn, user_id)
    return None if reader is None else SharedItems(conn, reader)


def stream_order(item: Mapping[str, Any]) -> tuple[dt.datetime, str]:
    """An item row's (created_at, id): pages go down it, the live stream up it."""
    return (item["created_at"], item["id"])


async def _with_broadcasts(
    rows: list[Mapping[str, Any]],
    shared: SharedItems | None,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> list[Mapping[str, Any]]:
    """A page's own ``rows`` (``limit`` + 1 of them at most) with the broadcasts of the
    same page merged in, newest first; as they are when the user has none."""
    if shared is None:
        return rows
    rows = rows + await shared.page(
        before=before, limit=limit + 1, unread_only=unread_only, archived=archived
    )
    return sorted(rows, key=stream_order, reverse=True)[: limit + 1]


def _page(
    rows: Sequence[Mapping[str, Any]], limit: int, counts: schemas.Counts | None
) -> schemas.Page:
    """The page of the first ``limit`` of ``rows`` (one more tells a next page exists)."""
    items = [schemas.item_of(row) for row in rows[:limit]]
    next_cursor = (
        cursors.encode_keyset(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    )
    return schemas.Page(items=items, next_cursor=next_cursor, counts=counts)
