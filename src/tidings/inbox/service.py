"""The in-app channel's use cases in one service: store items, read them, flag them,
announce changes. Each concern has a module of its own (``storing``, ``listing``,
``marking``, ``stream``, ``announcements``); the service gives them the database, the
clock, the live hub and the broadcasts."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import listing, marking, schemas, storing, stream
from tidings.inbox.announcements import Announcements
from tidings.inbox.broadcasts import Broadcasts
from tidings.inbox.repository import flags as flag_sql
from tidings.kit import metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import LiveHub


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
        self._announcements = Announcements(db, live, self.counts_of)

    async def open_groups(
        self, conn: AsyncConnection, keys: Collection[storing.GroupKey]
    ) -> dict[storing.GroupKey, storing.OpenGroup]:
        """(user_id, tenant, group_key) -> the newest unread, unarchived item with that group
        key, if any.

        On PostgreSQL the items found stay locked until the caller's transaction ends, so
        a concurrent planner of the same group waits and then reads the merged count.
        """
        return await storing.open_groups(conn, keys)

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
            written = await storing.write(self._db, conn, items)
        metrics.of(self._db).in_app_written(written, self._clock.now())
        return written

    async def announce(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Push committed items, then their users' counts, to their open connections
        (``Announcements.announce``)."""
        await self._announcements.announce(items)

    async def catch_up(self, user_id: str, last_event_id: str | None) -> stream.CatchUp:
        """What a live stream opening after ``last_event_id`` is sent first
        (``stream.catch_up``)."""
        return await stream.catch_up(self._db, self.broadcasts, user_id, last_event_id)

    async def seen(self, conn: AsyncConnection, item_ids: Collection[str]) -> set[str]:
        """Those of these items that the user has seen or read (or archived): an email
        waiting on an item being left unseen is not needed for these."""
        return await flag_sql.seen(conn, item_ids)

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
        return await listing.page(
            self._db,
            self.broadcasts,
            user_id,
            cursor=cursor,
            limit=limit,
            unread_only=unread_only,
            archived=archived,
            with_counts=with_counts,
        )

    async def item(self, user_id: str, item_id: str) -> schemas.Item:
        return await listing.item(self._db, self.broadcasts, user_id, item_id)

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
        return await listing.counts_of(conn, self.broadcasts, user_ids, without_broadcasts)

    async def mark(
        self, user_id: str, item_ids: Sequence[str] | None, marks: schemas.Marks
    ) -> schemas.Marked:
        """Set or clear read/seen/archived on some items (or all, when ``item_ids`` is None)."""
        return await marking.mark(
            self._db, self._clock, self._live, self.broadcasts, user_id, item_ids, marks
        )

    async def mark_one(self, user_id: str, item_id: str, marks: schemas.Marks) -> schemas.Item:
        await self.item(user_id, item_id)
        await self.mark(user_id, [item_id], marks)
        return await self.item(user_id, item_id)
