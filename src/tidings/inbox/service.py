"""Use cases of the in-app channel: store items, read them, flag them, announce changes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import repository, schemas
from tidings.inbox.broadcasts import Broadcasts, SharedItems
from tidings.kit import cursors, errors, job_context, metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import RECOUNT, LiveHub

log = logging.getLogger(__name__)

MAX_GROUP_ACTORS = 10
REPLAY_LIMIT = 100
"""At most this many missed items are sent to a live stream that resumes; past that, it
is told to ``resync`` (reload its first page), which is cheaper than a long replay."""
Position = tuple[dt.datetime, str]
"""Where a live stream stands: the (created_at, id) of the newest item it was sent, the
same keyset the inbox pages by, so any process can resume it from the database."""
START: Position = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "0")
"""The position of a stream whose user has no items yet: every item comes after it."""
GroupKey = tuple[str, str, str]
"""(user id, tenant, group key): the scope within which in-app items collapse."""

# Keys of a row given to ``store`` that steer how it is written; they are not columns.
_INSTRUCTIONS = frozenset({"merge_into", "silent", "merged"})
# What a merge overwrites: everything that describes the newest activity.
_MERGED_COLUMNS = (
    "event_id",
    "type",
    "category",
    "title",
    "body",
    "action_url",
    "actor",
    "group_count",
    "group_actors",
    "created_at",
    "updated_at",
    "seen_at",
)


@dataclass(frozen=True)
class OpenGroup:
    """The unread item that a group's next event merges into, and what it holds so far."""

    item_id: str
    count: int
    actors: list[dict[str, Any]]


@dataclass(frozen=True)
class CatchUp:
    """What a live stream that (re)opens is sent before its counts: the items it missed,
    oldest first, or ``resync`` when they are too many or its position is unknown."""

    items: list[schemas.Item]
    position: Position
    resync: bool


def position_of(item: schemas.Item) -> Position:
    """An item's place in a live stream: where a stream stands once it was sent."""
    return (item.created_at, item.id)


def encode_position(position: Position) -> str:
    """A position as a stream's event id (``Last-Event-ID`` when the client resumes)."""
    return cursors.encode_keyset(*position)


def decode_position(event_id: str) -> Position | None:
    """The position an event id stands for; None for one Tidings never gave out."""
    try:
        return cursors.decode_keyset(event_id)
    except errors.Invalid:
        return None


def group_actors(actors: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The actors a group item keeps, from ``actors`` given newest first: distinct by
    ``id`` (actors without one are each distinct), at most ``MAX_GROUP_ACTORS``.

    "Ann and 3 others" counts events; the names shown are the newest few people.
    """
    kept: list[dict[str, Any]] = []
    known: set[Any] = set()
    for actor in actors:
        if actor is None:
            continue
        actor_id = actor.get("id")
        if actor_id is not None:
            if actor_id in known:
                continue
            known.add(actor_id)
        kept.append(dict(actor))
        if len(kept) == MAX_GROUP_ACTORS:
            break
    return kept


class InboxService:
    def __init__(
        self, db: Database, clock: Clock, live: LiveHub, *, broadcasts: Broadcasts | None = None
    ) -> None:
        """With ``broadcasts``, a user's inbox also holds the broadcasts of the large
        topics they subscribe to (fan-out on read); without, there are none."""
        self._db = db
        self._clock = clock
        self._live = live
        self.broadcasts = broadcasts
        self._stale_counts: set[str] = set()
        """Users whose counts a worker's announcement left to ``_counting`` to push."""
        self._counting: asyncio.Task[None] | None = None

    async def open_groups(
        self, conn: AsyncConnection, keys: Collection[GroupKey]
    ) -> dict[GroupKey, OpenGroup]:
        """(user_id, tenant, group_key) -> the newest unread, unarchived item with that group
        key, if any.

        On PostgreSQL the items found stay locked until the caller's transaction ends, so
        a concurrent planner of the same group waits and then reads the merged count.
        """
        newest: dict[GroupKey, Mapping[str, Any]] = {}
        for row in await repository.open_group_items(conn, keys):
            key = (row["user_id"], row["tenant"], row["group_key"])
            known = newest.get(key)
            if known is None or (row["created_at"], row["id"]) > (known["created_at"], known["id"]):
                newest[key] = row
        return {
            key: OpenGroup(
                item_id=row["id"], count=row["group_count"], actors=list(row["group_actors"] or [])
            )
            for key, row in newest.items()
        }

    async def store(
        self, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """Write items in the caller's transaction; returns those that are new or changed,
        in the order given, as ``announce`` takes them.

        A row with ``merge_into`` overwrites that item while it is an open group. Several
        rows into one item carry cumulative content, so the last one wins. When the item
        was read, archived or deleted meanwhile, that last row is inserted as a new item
        under its own id instead, so nothing is lost. Inserting an id that exists (a job
        run again) changes nothing.
        """
        if not items:
            return []
        with tracing.span("in_app write", attributes={"tidings.items": len(items)}):
            written = await self._store(conn, items)
        metrics.of(self._db).in_app_written(written, self._clock.now())
        return written

    async def _store(
        self, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        fresh: list[tuple[int, Mapping[str, Any]]] = []
        merges: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for position, item in enumerate(items):
            if item.get("merge_into") is None:
                fresh.append((position, item))
            else:
                merges[item["merge_into"]] = (position, item)
        written = await self._insert(conn, fresh)
        # Looked up after the insert: a row may merge into an item that starts its group
        # in this very batch.
        targets = await repository.lock(conn, list(merges))
        merged: list[tuple[int, dict[str, Any]]] = []
        orphans: list[tuple[int, Mapping[str, Any]]] = []
        for target_id, (position, item) in merges.items():
            target = targets.get(target_id)
            if target is not None and _is_open(target, item["user_id"]):
                merged.append((position, _merged(item, target)))
            else:
                orphans.append((position, _orphan(item, target)))
        await repository.merge(conn, [_merge_params(row) for _position, row in merged])
        written += merged
        written += await self._insert(conn, orphans)
        # An item started and merged into in one batch is announced once, as it ends up.
        final = {row["id"]: (position, row) for position, row in sorted(written, key=_first)}
        return [row for _position, row in sorted(final.values(), key=_first)]

    async def announce(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Push committed items (new or merged, unless silent), then each user's fresh
        counts (or, across processes, a request to count), to their open connections.

        Called from a worker's job, it returns once the items are pushed: the counts
        follow from a task of their own, so the worker's next batch does not wait for
        them. That task counts, in one query, every user whose counts were left to it
        meanwhile, and counts a user again if more came for them while it counted: the
        last counts a connection gets are never older than its last item."""
        listening = set(self._live.listening({item["user_id"] for item in items}))
        if not listening:
            return
        # In stream order: a client that drops after any of them resumes past it and
        # misses none of the rest.
        for item in sorted(items, key=_stream_order):
            if item["user_id"] in listening and not item.get("silent"):
                await self._live.publish(
                    item["user_id"], {"event": "item", "data": _item(item).model_dump(mode="json")}
                )
        if self._live.spans_processes:
            # Everyone "may" listen: counting for each (a fan-out to a million) would
            # cost a query per recipient for the few connected. The process holding a
            # connection counts for it.
            for user_id in sorted(listening):
                await self._live.publish(user_id, {"event": RECOUNT, "data": {}})
            return
        if job_context.current() is None:
            await self._announce_counts(sorted(listening))
            return
        self._stale_counts |= listening
        if self._counting is None or self._counting.done():
            self._counting = asyncio.create_task(self._count_stale(), name="tidings-live-counts")

    async def _count_stale(self) -> None:
        """Push the counts of the users left to it until none is left."""
        while self._stale_counts:
            users = sorted(self._stale_counts)
            self._stale_counts.clear()
            try:
                await self._announce_counts(users)
            except Exception:
                # Live push is best effort: the next change, or the next connection,
                # brings the counts.
                log.warning("live counts for %d users failed", len(users), exc_info=True)

    async def catch_up(self, user_id: str, last_event_id: str | None) -> CatchUp:
        """What a live stream opening after ``last_event_id`` (the id of the last event
        its client got, if any) is sent first.

        Without an id the stream starts at the user's newest item. With one, the items
        written or merged since come, at most ``REPLAY_LIMIT`` of them; more, or an id
        Tidings never gave out, is a ``resync`` from the newest item on.
        """
        since = decode_position(last_event_id) if last_event_id else None
        async with self._db.reader() as conn:
            shared = await self._shared(conn, user_id)
            if since is not None:
                rows = await repository.after(conn, user_id, since, REPLAY_LIMIT + 1)
                if shared is not None:
                    rows += await shared.after(since, REPLAY_LIMIT + 1)
                    rows = sorted(rows, key=_stream_order)[: REPLAY_LIMIT + 1]
                if len(rows) <= REPLAY_LIMIT:
                    items = [_item(row) for row in rows]
                    position = position_of(items[-1]) if items else since
                    return CatchUp(items=items, position=position, resync=False)
            newest = await repository.newest(conn, user_id)
            if shared is not None and (broadcast := await shared.newest()) is not None:
                newest = broadcast if newest is None else max(newest, broadcast)
        return CatchUp(items=[], position=newest or START, resync=bool(last_event_id))

    async def seen(self, conn: AsyncConnection, item_ids: Collection[str]) -> set[str]:
        """Those of these items that the user has seen or read (or archived): an email
        waiting on an item being left unseen is not needed for these."""
        return await repository.seen(conn, item_ids)

    async def page(
        self,
        user_id: str,
        *,
        cursor: str | None,
        limit: int,
        unread_only: bool,
        archived: bool,
        with_counts: bool = False,
    ) -> schemas.Page:
        """A page of the user's items, newest first; with their counts when asked (read
        on the same connection, right after the page)."""
        before = cursors.decode_keyset(cursor)
        if with_counts and self._db.is_postgres:
            return await self._counted_page(user_id, before, limit, unread_only, archived)
        counts = None
        async with self._db.reader() as conn:
            rows = await repository.page(
                conn,
                user_id,
                before=before,
                limit=limit + 1,
                unread_only=unread_only,
                archived=archived,
            )
            shared = await self._shared(conn, user_id)
            rows = await _with_broadcasts(rows, shared, before, limit, unread_only, archived)
            if with_counts:
                # No broadcast in their inbox (found for the page): none to count either.
                alone = () if shared is not None else (user_id,)
                unread, unseen, total = (await self.counts_of(conn, [user_id], alone))[user_id]
                counts = schemas.Counts(unread=unread, unseen=unseen, total=total)
        return _page(rows, limit, counts)

    async def _counted_page(
        self,
        user_id: str,
        before: tuple[dt.datetime, str] | None,
        limit: int,
        unread_only: bool,
        archived: bool,
    ) -> schemas.Page:
        """``page`` with its counts on PostgreSQL: the user's own items, their counts and
        whether they have broadcasts in one statement; the broadcasts' own reads only
        for a user who has some."""
        async with self._db.reader() as conn:
            found = await repository.counted_page(
                conn,
                user_id,
                before=before,
                limit=limit + 1,
                unread_only=unread_only,
                archived=archived,
            )
            rows, (unread, unseen, total) = found.rows, found.counts
            shared = await self._shared(conn, user_id) if found.broadcasts else None
            rows = await _with_broadcasts(rows, shared, before, limit, unread_only, archived)
            if shared is not None and self.broadcasts is not None:
                more = await self.broadcasts.counts(conn, user_id)
                unread, unseen, total = unread + more[0], unseen + more[1], total + more[2]
        return _page(rows, limit, schemas.Counts(unread=unread, unseen=unseen, total=total))

    async def item(self, user_id: str, item_id: str) -> schemas.Item:
        async with self._db.reader() as conn:
            row = await repository.get(conn, user_id, item_id)
            if row is None and self.broadcasts is not None:
                row = next(iter(await self.broadcasts.items(conn, user_id, [item_id])), None)
        if row is None:
            raise errors.NotFound(f"No inbox item {item_id!r}.", field="item_id")
        return _item(row)

    async def counts(self, user_id: str) -> schemas.Counts:
        async with self._db.reader() as conn:
            unread, unseen, total = (await self.counts_of(conn, [user_id]))[user_id]
        return schemas.Counts(unread=unread, unseen=unseen, total=total)

    async def counts_of(
        self,
        conn: AsyncConnection,
        user_ids: Sequence[str],
        without_broadcasts: Collection[str] = (),
    ) -> dict[str, tuple[int, int, int]]:
        """user → (unread, unseen, total) over their unarchived items, broadcasts included
        (but for ``without_broadcasts``: users known to have none in their inbox)."""
        found = await repository.counts(conn, user_ids)
        if self.broadcasts is None:
            return found
        asked = [user_id for user_id in user_ids if user_id not in without_broadcasts]
        for user_id in await repository.with_broadcasts(conn, asked) if asked else ():
            shared = await self.broadcasts.counts(conn, user_id)
            found[user_id] = (
                found[user_id][0] + shared[0],
                found[user_id][1] + shared[1],
                found[user_id][2] + shared[2],
            )
        return found

    async def mark(
        self, user_id: str, item_ids: Sequence[str] | None, marks: schemas.Marks
    ) -> schemas.Marked:
        """Set or clear read/seen/archived on some items (or all, when ``item_ids`` is None)."""
        flags = marks.model_dump(include={"read", "seen", "archived"}, exclude_none=True)
        if not flags:
            raise errors.Invalid("Say which flags to change: read, seen or archived.", field="read")
        now = self._clock.now()
        async with self._db.transaction() as conn:
            own = item_ids
            changed = 0
            if self.broadcasts is not None:
                changed, own = await self.broadcasts.mark(conn, user_id, item_ids, flags, now)
                own = None if item_ids is None else own
            if own is None or own:
                changed += await repository.mark(conn, user_id, own, flags, now)
            unread, unseen, total = (await self.counts_of(conn, [user_id]))[user_id]
        counts = schemas.Counts(unread=unread, unseen=unseen, total=total)
        if changed:
            await self._live.publish(user_id, {"event": "counts", "data": counts.model_dump()})
        return schemas.Marked(changed=changed, counts=counts)

    async def mark_one(self, user_id: str, item_id: str, marks: schemas.Marks) -> schemas.Item:
        await self.item(user_id, item_id)
        await self.mark(user_id, [item_id], marks)
        return await self.item(user_id, item_id)

    async def _shared(self, conn: AsyncConnection, user_id: str) -> SharedItems | None:
        """The broadcasts in the user's inbox, to read beside their own items; None when
        there are none."""
        if self.broadcasts is None:
            return None
        reader = await self.broadcasts.reader(conn, user_id)
        return None if reader is None else SharedItems(conn, reader)

    async def _insert(
        self, conn: AsyncConnection, items: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = [(position, _columns(item)) for position, item in items]
        new_ids = await repository.insert(self._db, conn, [row for _position, row in rows])
        return [
            (position, {**row, "silent": bool(item.get("silent")), "merged": False})
            for (position, row), (_position, item) in zip(rows, items, strict=True)
            if row["id"] in new_ids
        ]

    async def _announce_counts(self, user_ids: Sequence[str]) -> None:
        async with self._db.reader() as conn:
            all_counts = await self.counts_of(conn, user_ids)
        for user_id, (unread, unseen, total) in all_counts.items():
            await self._live.publish(
                user_id,
                {"event": "counts", "data": {"unread": unread, "unseen": unseen, "total": total}},
            )


def _first(pair: tuple[int, Mapping[str, Any]]) -> int:
    return pair[0]


def _stream_order(item: Mapping[str, Any]) -> tuple[dt.datetime, str]:
    return (item["created_at"], item["id"])


def _columns(item: Mapping[str, Any]) -> dict[str, Any]:
    """The row to write: instructions left out, and the group columns on every row (one
    INSERT takes many rows, which must all name the same columns)."""
    row = {key: value for key, value in item.items() if key not in _INSTRUCTIONS}
    grouped = row.get("group_key") is not None
    row.setdefault("group_key", None)
    row["group_count"] = row.get("group_count", 1) if grouped else 1
    row["group_actors"] = (
        group_actors(row.get("group_actors") or [row.get("actor")]) if grouped else None
    )
    row.setdefault("updated_at", None)
    return row


def _is_open(target: Mapping[str, Any], user_id: str) -> bool:
    return (
        target["user_id"] == user_id and target["read_at"] is None and target["archived_at"] is None
    )


def _merged(item: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The target item as it becomes: the newest activity's content, floated to the top
    (``created_at``), and unseen again because there is something new to see."""
    row = _columns({**item, "group_key": target["group_key"]})
    return {
        **row,
        "id": target["id"],
        "updated_at": row["created_at"],
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
        "silent": bool(item.get("silent")),
        "merged": True,
    }


def _orphan(item: Mapping[str, Any], target: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A merge whose item is no longer an open group, as a new item that starts its own
    (under the old item's key when the row names none)."""
    group_key = item.get("group_key")
    if group_key is None and target is not None and target["user_id"] == item["user_id"]:
        group_key = target["group_key"]
    return {key: value for key, value in item.items() if key != "merge_into"} | {
        "group_key": group_key
    }


def _merge_params(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "merge_target": row["id"],
        "merge_user": row["user_id"],
        **{column: row[column] for column in _MERGED_COLUMNS},
    }


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
    return sorted(rows, key=_stream_order, reverse=True)[: limit + 1]


def _page(
    rows: Sequence[Mapping[str, Any]], limit: int, counts: schemas.Counts | None
) -> schemas.Page:
    """The page of the first ``limit`` of ``rows`` (one more tells a next page exists)."""
    items = [_item(row) for row in rows[:limit]]
    next_cursor = (
        cursors.encode_keyset(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    )
    return schemas.Page(items=items, next_cursor=next_cursor, counts=counts)


def _item(row: Mapping[str, Any]) -> schemas.Item:
    return schemas.Item(
        id=row["id"],
        type=row["type"],
        category=row["category"],
        title=row["title"],
        body=row["body"],
        action_url=row["action_url"],
        actor=row["actor"],
        event_id=row["event_id"],
        created_at=row["created_at"],
        read=row.get("read_at") is not None,
        seen=row.get("seen_at") is not None,
        archived=row.get("archived_at") is not None,
        read_at=row.get("read_at"),
        seen_at=row.get("seen_at"),
        archived_at=row.get("archived_at"),
        updated_at=row.get("updated_at"),
        group=_group(row),
    )


def _group(row: Mapping[str, Any]) -> schemas.Group | None:
    if row.get("group_key") is None:
        return None
    return schemas.Group(
        key=row["group_key"], count=row["group_count"], actors=row.get("group_actors") or []
    )
