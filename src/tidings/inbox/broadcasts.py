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

Which events become broadcasts is the fan-out's decision (``delivery.broadcast``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.inbox import repository, schemas
from tidings.inbox.repository import Kind, Reader
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import INTERNAL, RECOUNT, RESYNC, LiveHub
from tidings.planning.rules import quiet_hours
from tidings.preferences.service import PlanningPreferences, PreferencesService
from tidings.users.service import UsersService

log = logging.getLogger(__name__)

IN_APP = "in_app"
CHANNEL = f"{INTERNAL}broadcasts"
"""The live hub "user" new broadcasts are announced to: each process holding streams
listens to it while it holds any (no user id can hold a NUL; it is not a stream), and
pushes each broadcast to its own streams."""
_ANNOUNCED = "broadcast"
_WATCH_READY_SECONDS = 5.0
"""How long a stream that opens waits for its process to listen to announcements."""


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
        self._clock = clock
        self._live = live
        self._preferences = preferences
        self._users = users
        self.min_subscribers = min_subscribers
        self._watch = _Watch(self, live)

    # --- writing ----------------------------------------------------------------------

    async def store(self, conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
        """Store a broadcast in the caller's transaction; False when it exists already."""
        return await repository.insert_broadcast(self._db, conn, row)

    async def is_large(self, conn: AsyncConnection, topic: str) -> bool:
        """Whether the topic has at least ``min_subscribers`` subscribers (0: never)."""
        wanted = self.min_subscribers
        return wanted > 0 and await repository.subscribers_at_least(conn, topic, wanted)

    async def of_event(self, conn: AsyncConnection, event_id: str) -> Mapping[str, Any] | None:
        """The event's broadcast, if it has one."""
        return await repository.broadcast(conn, broadcast_id(event_id))

    async def announce(self, row: Mapping[str, Any]) -> None:
        """Tell every process holding live streams of a committed broadcast; each pushes
        it to those of its streams whose user has it in their inbox. Best effort, as all
        live push: a stream that misses it finds it when it catches up."""
        try:
            await self._live.publish(CHANNEL, {"event": _ANNOUNCED, "data": {"id": row["id"]}})
        except Exception:
            log.warning("live push: announcing a broadcast failed", exc_info=True)

    async def forget_user(self, conn: AsyncConnection, user_id: str) -> int:
        """Delete what a user did with broadcasts, in the caller's transaction (erasure)."""
        return await repository.forget_broadcast_states(conn, user_id)

    # --- reading ----------------------------------------------------------------------

    async def reader(self, conn: AsyncConnection, user_id: str) -> Reader | None:
        """How to read the user's broadcasts; None when they have none at all."""
        kinds = await repository.broadcast_kinds(conn, Reader(user_id))
        if not kinds:
            return None
        return (await self._readers(conn, [user_id], kinds))[user_id]

    async def counts(self, conn: AsyncConnection, user_id: str) -> tuple[int, int, int]:
        """(unread, unseen, total) of the unarchived broadcasts in the user's inbox."""
        by_kind = await repository.broadcast_counts(conn, Reader(user_id))
        if not by_kind:
            return (0, 0, 0)
        reader = (await self._readers(conn, [user_id], [kind for kind, _ in by_kind]))[user_id]
        if reader.erased_before is not None:
            # Rare (an id erased, then used again): counted again with the erasure.
            by_kind = await repository.broadcast_counts(conn, reader)
        shown = [counts for kind, counts in by_kind if (kind[0], kind[1]) not in reader.hidden]
        return (sum(c[0] for c in shown), sum(c[1] for c in shown), sum(c[2] for c in shown))

    async def items(
        self, conn: AsyncConnection, user_id: str, item_ids: Collection[str] | None
    ) -> list[Mapping[str, Any]]:
        """Those of these ids (every one, for None) that are broadcasts in the user's
        inbox, as inbox item rows."""
        if item_ids is not None and not item_ids:
            return []
        rows = await repository.broadcast_items(conn, Reader(user_id), item_ids)
        if not rows:
            return []
        reader = (await self._readers(conn, [user_id], {_kind(row) for row in rows}))[user_id]
        return [row for row in rows if _shown(row, reader)]

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
        await repository.mark_broadcasts(self._db, conn, user_id, changed, flags, now)
        known = {row["id"] for row in found}
        rest = [] if item_ids is None else [i for i in item_ids if i not in known]
        return len(changed), rest

    # --- live -------------------------------------------------------------------------

    def watch(
        self, user_id: str, queue: asyncio.Queue[dict[str, Any]]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, the broadcasts committed for ``user_id`` are put on ``queue``
        (a live stream's): ``item`` (unless it comes in their quiet hours), then
        ``recount``."""
        return self._watch.streaming(user_id, queue)

    async def reach(
        self, broadcast_id: str, user_ids: Collection[str]
    ) -> tuple[Mapping[str, Any] | None, list[str], list[str]]:
        """A broadcast, those of ``user_ids`` who have it in their inbox, and those of
        them it is pushed to: all but those in their quiet hours, unless its type is
        critical (an in-app item is written without a push then, broadcast or not)."""
        async with self._db.reader() as conn:
            row = await repository.broadcast(conn, broadcast_id)
            if row is None:
                return None, [], []
            subscribed = await repository.subscribed_among(
                conn, row["topic"], user_ids, row["created_at"]
            )
            if not subscribed:
                return row, [], []
            readers = await self._readers(conn, subscribed, [_kind(row)])
            reached = [user for user in subscribed if _shown(row, readers[user])]
            if row["critical"] or not reached:
                return row, reached, reached
            preferences = await self._preferences.for_planning(conn, reached, [row["tenant"]])
            profiles = await self._users.profiles(conn, reached)
        now = self._clock.now()
        pushed = []
        for user_id in reached:
            quiet = preferences.of(user_id, row["tenant"]).quiet_hours.value
            timezone = (profiles.get(user_id) or {}).get("timezone")
            if quiet is None or not _quiet(now, quiet, timezone):
                pushed.append(user_id)
        return row, reached, pushed

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
            listed = await repository.broadcast_items(conn, Reader(user_id), [row["id"]])
            since = await repository.subscription_time(conn, row["topic"], user_id)
            shown = False
            if not listed:
                reason = "not_subscribed" if since is None else "subscribed_after"
            else:
                reader = (await self._readers(conn, [user_id], [_kind(row)]))[user_id]
                if (row["tenant"], row["category"]) in reader.hidden:
                    reason = "opted_out"
                elif not _shown(row, reader):
                    reason = "erased"
                else:
                    reason, shown = "subscribed", True
        state = listed[0] if listed else {}
        return {
            "channel": IN_APP,
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

    # --- helpers ----------------------------------------------------------------------

    async def _readers(
        self, conn: AsyncConnection, user_ids: Sequence[str], kinds: Iterable[Kind]
    ) -> dict[str, Reader]:
        """Each user's reader: the kinds among ``kinds`` their preferences keep out of
        the inbox, and the moment of their erasure if their id was erased before."""
        kinds = list(kinds)
        preferences = await self._preferences.for_planning(
            conn, user_ids, sorted({kind[0] for kind in kinds})
        )
        erasures = await self._users.erasures(conn, user_ids)
        readers = {}
        for user_id in user_ids:
            erasure = erasures.get(user_id)
            readers[user_id] = Reader(
                user_id,
                hidden=frozenset(
                    (kind[0], kind[1]) for kind in kinds if not _shows(preferences, user_id, kind)
                ),
                erased_before=None if erasure is None else erasure.erased_before,
            )
        return readers


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
        return await repository.broadcast_page(
            self._conn,
            self._reader,
            before=before,
            limit=limit,
            unread_only=unread_only,
            archived=archived,
        )

    async def after(self, position: tuple[dt.datetime, str], limit: int) -> list[Mapping[str, Any]]:
        """Unarchived, past ``position``, oldest first (for a live stream that resumes)."""
        return await repository.broadcasts_after(self._conn, self._reader, position, limit)

    async def newest(self) -> tuple[dt.datetime, str] | None:
        """The position of the newest, archived or not."""
        return await repository.newest_broadcast(self._conn, self._reader)


def as_item(row: Mapping[str, Any]) -> schemas.Item:
    """A broadcast as the inbox shows it: an item like any other, never grouped."""
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
        updated_at=None,
        group=None,
    )


def _kind(row: Mapping[str, Any]) -> Kind:
    return (row["tenant"], row["category"], bool(row["mandatory"]), row["in_app_default"])


def _shows(preferences: PlanningPreferences, user_id: str, kind: Kind) -> bool:
    """Whether the user's preferences put this kind of broadcast in their inbox."""
    tenant, name, mandatory, in_app_default = kind
    category = catalog.Category(
        name=name,
        description="",
        mandatory=mandatory,
        default_channels=MappingProxyType(
            {} if in_app_default is None else {IN_APP: in_app_default}
        ),
    )
    return preferences.of(user_id, tenant).channel(category, IN_APP).value


def _shown(row: Mapping[str, Any], reader: Reader) -> bool:
    """Whether a broadcast the user subscribes to is in their inbox for ``reader``."""
    if (row["tenant"], row["category"]) in reader.hidden:
        return False
    return reader.erased_before is None or row["accepted_at"] > reader.erased_before


def _changes(row: Mapping[str, Any], flags: Mapping[str, bool]) -> bool:
    """Whether setting ``flags`` changes this item."""
    return any((row[repository.FLAG_COLUMNS[flag]] is None) == on for flag, on in flags.items())


def _quiet(now: dt.datetime, quiet: quiet_hours.QuietHours, timezone: str | None) -> bool:
    try:
        return quiet_hours.is_quiet(now, quiet, timezone)
    except ValueError:
        return False  # a time zone the database does not know: not quiet


class _Watch:
    """The streams open in this process, and the one listener that pushes them the
    broadcasts announced while any is open."""

    def __init__(self, broadcasts: Broadcasts, live: LiveHub) -> None:
        self._broadcasts = broadcasts
        self._live = live
        self._streams: dict[str, dict[asyncio.Queue[dict[str, Any]], None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def streaming(
        self, user_id: str, queue: asyncio.Queue[dict[str, Any]]
    ) -> AsyncIterator[None]:
        self._streams.setdefault(user_id, {})[queue] = None
        try:
            await self._listening()
            yield
        finally:
            queues = self._streams.get(user_id, {})
            queues.pop(queue, None)
            if not queues:
                self._streams.pop(user_id, None)
            if not self._streams and self._task is not None:
                self._task.cancel()
                self._task = None

    async def _listening(self) -> None:
        """Start the listener unless it runs; wait (bounded) until it listens."""
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._listen(self._ready), name="broadcast-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), _WATCH_READY_SECONDS)

    async def _listen(self, ready: asyncio.Event) -> None:
        try:
            async with self._live.subscribe(CHANNEL) as queue:
                ready.set()
                while True:
                    message = await queue.get()
                    try:
                        await self._on(message)
                    except Exception:
                        log.warning("live push: pushing a broadcast failed", exc_info=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("live push: the broadcast listener stopped", exc_info=True)

    async def _on(self, message: Mapping[str, Any]) -> None:
        kind = message.get("event")
        if kind == RESYNC:
            # Announcements were lost: every stream here catches up from the database.
            self._send(self._streams, {"event": RESYNC, "data": {}})
            return
        data = message.get("data")
        if kind != _ANNOUNCED or not isinstance(data, Mapping) or not self._streams:
            return
        row, reached, pushed = await self._broadcasts.reach(
            str(data.get("id")), list(self._streams)
        )
        if row is None:
            return
        self._send(pushed, {"event": "item", "data": as_item(row).model_dump(mode="json")})
        # Counts change for everyone it reached, pushed or not.
        self._send(reached, {"event": RECOUNT, "data": {}})

    def _send(self, user_ids: Iterable[str], message: dict[str, Any]) -> None:
        for user_id in list(user_ids):
            for queue in tuple(self._streams.get(user_id, ())):
                _put(queue, message)


def _put(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    """As the live hub does: a full queue is emptied and told to ``resync``."""
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait({"event": RESYNC, "data": {}})
