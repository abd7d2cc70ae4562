"""The SQL that reads a user's inbox items: pages (newest first, by keyset), counts, one
item, and the items past a live stream's position."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox.repository._queries import BROADCAST_SINCE
from tidings.kit.tables import inbox_items, subscriptions


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
    query = _page_query(user_id, before, limit, unread_only, archived)
    return [dict(row._mapping) for row in await conn.execute(query)]


@dataclass(frozen=True)
class CountedPage:
    """A page of a user's own items, their counts, and whether any broadcast is in
    their inbox (then the caller reads those too)."""

    rows: list[Mapping[str, Any]]
    counts: tuple[int, int, int]
    broadcasts: bool


async def counted_page(
    conn: AsyncConnection,
    user_id: str,
    *,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> CountedPage:
    """``page``, ``counts`` and ``broadcasts.with_broadcasts`` of one user in one
    statement (one round trip): the counts and the broadcast check joined to the page
    laterally, so they come back even when the page is empty. PostgreSQL only."""
    query = _counted_page_query(unread_only, archived, before is not None)
    at, item_id = before if before is not None else (None, None)
    params = {"user_id": user_id, "limit": limit, "before_at": at, "before_id": item_id}
    rows = (await conn.execute(query, params)).all()
    return CountedPage(
        rows=[dict(zip(_ITEM_COLUMNS, row[4:], strict=True)) for row in rows if row[4] is not None],
        counts=(int(rows[0][0]), int(rows[0][1]), int(rows[0][2])),
        broadcasts=bool(rows[0][3]),
    )


_ITEM_COLUMNS = tuple(column.name for column in inbox_items.c)

_COUNTS = (
    sa.func.count().filter(inbox_items.c.read_at.is_(None)),
    sa.func.count().filter(inbox_items.c.seen_at.is_(None)),
    sa.func.count(),
)
"""(unread, unseen, total) of the items a query selects."""


@functools.lru_cache(maxsize=8)
def _counted_page_query(unread_only: bool, archived: bool, has_before: bool) -> sa.Select[Any]:
    """The statement of ``counted_page``, built once per shape (building it is most of
    its cost): columns 0-2 the counts, 3 whether broadcasts are there, then an item's
    columns (null when the page is empty)."""
    c = inbox_items.c
    user_id = sa.bindparam("user_id", type_=sa.String())
    counted = (
        sa.select(*_COUNTS).where(c.user_id == user_id, c.archived_at.is_(None)).subquery("counted")
    )
    shared = sa.exists().where(subscriptions.c.user_id == user_id, BROADCAST_SINCE)
    before = None
    if has_before:
        before = (
            sa.bindparam("before_at", type_=c.created_at.type),
            sa.bindparam("before_id", type_=c.id.type),
        )
    limit = sa.bindparam("limit", type_=sa.Integer())
    items = _page_filter(
        sa.select(inbox_items).where(c.user_id == user_id), before, unread_only, archived
    )
    page = items.order_by(c.created_at.desc(), c.id.desc()).limit(limit).lateral("items")
    return (
        sa.select(counted, shared, page)
        .select_from(counted.outerjoin(page, sa.true()))
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


def _page_query(
    user_id: str,
    before: tuple[dt.datetime, str] | None,
    limit: int,
    unread_only: bool,
    archived: bool,
) -> sa.Select[Any]:
    c = inbox_items.c
    # Bound with the columns' types: the time is compared as the instant it is.
    bound = None
    if before is not None:
        bound = (sa.literal(before[0], c.created_at.type), sa.literal(before[1], c.id.type))
    query = sa.select(inbox_items).where(c.user_id == user_id)
    query = _page_filter(query, bound, unread_only, archived)
    return query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)


def _page_filter(
    query: sa.Select[Any],
    before: tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]] | None,
    unread_only: bool,
    archived: bool,
) -> sa.Select[Any]:
    """A page's conditions: archived or not, unread only, and past the ``before`` keyset."""
    c = inbox_items.c
    query = query.where(c.archived_at.is_not(None) if archived else c.archived_at.is_(None))
    if unread_only:
        query = query.where(c.read_at.is_(None))
    if before is not None:
        query = query.where(sa.tuple_(c.created_at, c.id) < sa.tuple_(*before))
    return query


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
        sa.select(c.user_id, *_COUNTS)
        .where(c.user_id.in_(list(user_ids)), c.archived_at.is_(None))
        .group_by(c.user_id)
    )
    found = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in await conn.execute(query)}
    return {user: found.get(user, (0, 0, 0)) for user in user_ids}


async def get(conn: AsyncConnection, user_id: str, item_id: str) -> Mapping[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(inbox_items).where(
                inbox_items.c.user_id == user_id, inbox_items.c.id == item_id
            )
        )
    ).first()
    return None if row is None else dict(row._mapping)
