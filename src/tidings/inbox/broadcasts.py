"""Broadcasts: fan-out on read for large topics.

An event to a topic with many subscribers, whose in-app item reads the same for every
one of them, is stored once, as a broadcast: its rendered item. Each subscriber's inbox
merges the broadcasts of their topics when it is read — listed, counted, flagged and
streamed like their own items — so the item is in every inbox as soon as that one row
is committed, whatever the topic's size. What a person does with it (seen, read,
archived) is written only when they do it, one row per (broadcast, user).

A broadcast is in a user's inbox when they subscribe to its topic and subscribed before
it was stored (unsubscribing takes it away; subscribing again brings only newer ones),
and their preferences show its category in the inbox (a mandatory category always
shows). Erasure deletes a user's subscriptions, so an erased user has none; a user id
erased and used again does not see the broadcasts of events accepted before the erasure.

Which events become broadcasts is the fan-out's decision (``delivery.broadcast``). Who
sees one is decided in ``broadcast_readers``; its live push is ``broadcast_push``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import broadcast_readers
from tidings.inbox.broadcast_push import BroadcastPush
from tidings.inbox.repository import broadcasts as broadcast_sql
from tidings.inbox.repository.broadcasts import Reader
from tidings.inbox.repository.flags import FLAG_COLUMNS
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import LiveHub
from tidings.preferences.service import PreferencesService
from tidings.users.service import UsersService


def broadcast_id(event_id: str) -> str:
    """The id of an event's broadcast: the id every subscriber's inbox shows it under."""
    return ids.derived_id(event_id, "broadcast")


class Broadcasts:
    """Stores broadcasts and reads them into a user's inbox."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        live: LiveHub,
        preferences: PreferencesService,
        users: UsersService,
        *,
        min_subscribers: int,
    ) -> None:
        """``min_subscribers``: the fan-out broadcasts eligible events to topics with at
        least this many subscribers; 0 turns broadcasting off."""
        self._db = db
        self.min_subscribers = min_subscribers
        self._readers = broadcast_readers.Readers(preferences, users)
        self._push = BroadcastPush(db, clock, live, preferences, users, self._readers)

    # --- writing ----------------------------------------------------------------------

    async def store(self, conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
        """Store a broadcast in the caller's transaction; False when it exists already."""
        return await broadcast_sql.insert_broadcast(self._db, conn, row)

    async def is_large(self, conn: AsyncConnection, topic: str) -> bool:
        """Whether the topic has at least ``min_subscribers`` subscribers (0: never)."""
        wanted = self.min_subscribers
        return wanted > 0 and await broadcast_sql.subscribers_at_least(conn, topic, wanted)

    async def of_event(self, conn: AsyncConnection, event_id: str) -> Mapping[str, Any] | None:
        """The event's broadcast, if it has one."""
        return await broadcast_sql.broadcast(conn, broadcast_id(event_id))

    async def announce(self, row: Mapping[str, Any]) -> None:
        """Tell every process holding live streams of a committed broadcast
        (``BroadcastPush.announce``)."""
        await self._push.announce(row)

    async def forget_user(self, conn: AsyncConnection, user_id: str) -> int:
        """Delete what a user did with broadcasts, in the caller's transaction (erasure)."""
        return await broadcast_sql.forget_broadcast_states(conn, user_id)

    # --- reading ----------------------------------------------------------------------

    async def reader(self, conn: AsyncConnection, user_id: str) -> Reader | None:
        """How to read the user's broadcasts; None when they have none at all."""
        kinds = await broadcast_sql.broadcast_kinds(conn, Reader(user_id))
        if not kinds:
            return None
        return (await self._readers.of(conn, [user_id], kinds))[user_id]

    async def counts(self, conn: AsyncConnection, user_id: str) -> tuple[int, int, int]:
        """(unread, unseen, total) of the unarchived broadcasts in the user's inbox."""
        by_kind = await broadcast_sql.broadcast_counts(conn, Reader(user_id))
        if not by_kind:
            return (0, 0, 0)
        reader = (await self._readers.of(conn, [user_id], [kind for kind, _ in by_kind]))[user_id]
        if reader.erased_before is not None:
            # Rare (an id erased, then used again): counted again with the erasure.
            by_kind = await broadcast_sql.broadcast_counts(conn, reader)
        shown = [counts for kind, counts in by_kind if (kind[0], kind[1]) not in reader.hidden]
        return (sum(c[0] for c in shown), sum(c[1] for c in shown), sum(c[2] for c in shown))

    async def items(
        self, conn: AsyncConnection, user_id: str, item_ids: Collection[str] | None
    ) -> list[Mapping[str, Any]]:
        """Those of these ids (every one, for None) that are broadcasts in the user's
        inbox, as inbox item rows."""
        if item_ids is not None and not item_ids:
            return []
        rows = await broadcast_sql.broadcast_items(conn, Reader(user_id), item_ids)
        if not rows:
            return []
        kinds = {broadcast_readers.kind(row) for row in rows}
        reader = (await self._readers.of(conn, [user_id], kinds))[user_id]
        return [row for row in rows if broadcast_readers.shown(row, reader)]

    async def mark(
        self,
        conn: AsyncConnection,
        user_id: str,
        item_ids: Sequence[str] | None,
        flags: Mapping[str, bool],
        now: dt.datetime,
    ) -> tuple[int, list[str]]:
        """Set or clear flags on the broadcasts among ``item_ids`` (on every one in the
        user's inbox, for None); returns how many changed, and the ids that are not
        broadcasts in the user's inbox (their own items, or unknown)."""
        found = await self.items(conn, user_id, item_ids)
        changed = [row["id"] for row in found if _changes(row, flags)]
        await broadcast_sql.mark_broadcasts(self._db, conn, user_id, changed, flags, now)
        known = {row["id"] for row in found}
        rest = [] if item_ids is None else [i for i in item_ids if i not in known]
        return len(changed), rest

    # --- live -------------------------------------------------------------------------

    def watch(
        self, user_id: str, queue: asyncio.Queue[dict[str, Any]]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, the broadcasts committed for ``user_id`` are put on ``queue``
        (``BroadcastPush.watch``)."""
        return self._push.watch(user_id, queue)

    # --- the timeline -----------------------------------------------------------------

    async def explain(self, event_id: str, user_id: str) -> dict[str, Any] | None:
        """Whether the event's broadcast is in the user's inbox, and why (for "why did
        U not get N"); None when the event has no broadcast.

        ``shown`` says whether it is listed now; ``reason`` is ``subscribed``, or why
        not: ``not_subscribed`` (never, or not any more: unsubscribing takes broadcasts
        away), ``subscribed_after`` (subscribed after it was stored), ``opted_out``
        (in-app turned off for its category) or ``erased``. ``seen_at``, ``read_at``
        and ``archived_at`` are what the user did with it.
        """
        async with self._db.reader() as conn:
            row = await self.of_event(conn, event_id)
            if row is None:
                return None
            listed = await broadcast_sql.broadcast_items(conn, Reader(user_id), [row["id"]])
            since = await broadcast_sql.subscription_time(conn, row["topic"], user_id)
            shown = False
            if not listed:
                reason = "not_subscribed" if since is None else "subscribed_after"
            else:
                kinds = [broadcast_readers.kind(row)]
                reader = (await self._readers.of(conn, [user_id], kinds))[user_id]
                if (row["tenant"], row["category"]) in reader.hidden:
                    reason = "opted_out"
                elif not broadcast_readers.shown(row, reader):
                    reason = "erased"
                else:
                    reason, shown = "subscribed", True
        state = listed[0] if listed else {}
        return {
            "channel": broadcast_readers.IN_APP,
            "delivery": "broadcast",
            "detail": "stored once for the topic, shown in each subscriber's inbox at read",
            "broadcast_id": row["id"],
            "topic": row["topic"],
            "stored_at": row["created_at"],
            "subscribed_at": since,
            "shown": shown,
            "reason": reason,
            "seen_at": state.get("seen_at"),
            "read_at": state.get("read_at"),
            "archived_at": state.get("archived_at"),
        }


class SharedItems:
    """The broadcasts in one user's inbox, read in the caller's connection, as inbox
    item rows (keyed and ordered as the user's own items, to be merged with them)."""

    def __init__(self, conn: AsyncConnection, reader: Reader) -> None:
        self._conn = conn
        self._reader = reader

    async def page(
        self,
        *,
        before: tuple[dt.datetime, str] | None,
        limit: int,
        unread_only: bool,
        archived: bool,
    ) -> list[Mapping[str, Any]]:
        """Newest first, before the (created_at, id) ``before``."""
        return await broadcast_sql.broadcast_page(
            self._conn,
            self._reader,
            before=before,
            limit=limit,
            unread_only=unread_only,
            archived=archived,
        )

    async def after(self, position: tuple[dt.datetime, str], limit: int) -> list[Mapping[str, Any]]:
        """Unarchived, past ``position``, oldest first (for a live stream that resumes)."""
        return await broadcast_sql.broadcasts_after(self._conn, self._reader, position, limit)

    async def newest(self) -> tuple[dt.datetime, str] | None:
        """The position of the newest, archived or not."""
        return await broadcast_sql.newest_broadcast(self._conn, self._reader)


def _changes(row: Mapping[str, Any], flags: Mapping[str, bool]) -> bool:
    """Whether setting ``flags`` changes this item."""
    return any((row[FLAG_COLUMNS[flag]] is None) == on for flag, on in flags.items())
