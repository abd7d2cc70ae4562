"""All SQL for inbox items, and for broadcasts: the in-app item of a large topic's
event, stored once and read into each subscriber's inbox."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import broadcast_states, broadcasts, inbox_items, subscriptions

FLAG_COLUMNS = {"read": "read_at", "seen": "seen_at", "archived": "archived_at"}
"""The column that keeps when each flag was set."""
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
    """``page``, ``counts`` and ``with_broadcasts`` of one user in one statement (one
    round trip): the counts and the broadcast check joined to the page laterally, so
    they come back even when the page is empty. PostgreSQL only."""
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

_BROADCAST_SINCE = sa.exists().where(
    broadcasts.c.topic == subscriptions.c.topic,
    broadcasts.c.created_at > subscriptions.c.created_at,
)
"""The subscription (of the enclosing query) has a broadcast stored after it was made."""


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
    shared = sa.exists().where(subscriptions.c.user_id == user_id, _BROADCAST_SINCE)
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


# --- Broadcasts ---------------------------------------------------------------------


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
    query = sa.select(s.user_id).where(s.user_id.in_(list(user_ids)), _BROADCAST_SINCE).distinct()
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
    """As ``page``, over the broadcasts in a user's inbox: rows shaped as inbox items."""
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
    """As ``after``, over the broadcasts in a user's inbox."""
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
    """As ``newest``, over the broadcasts in a user's inbox."""
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
    for chunk in _chunks(sorted(set(broadcast_ids))):
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
    for chunk in _chunks(rows):
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
    for chunk in _chunks(sorted(set(user_ids))):
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
