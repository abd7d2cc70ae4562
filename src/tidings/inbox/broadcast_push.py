"""Live push of broadcasts: a committed broadcast is announced to every process holding
live streams, and each pushes it to those of its streams whose user has it in their inbox
(unless they are in their quiet hours), then asks them to recount."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

from tidings.inbox import broadcast_readers, schemas
from tidings.inbox.repository import broadcasts as broadcast_sql
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import INTERNAL, RECOUNT, RESYNC, LiveHub
from tidings.planning.rules import quiet_hours
from tidings.preferences.service import PreferencesService
from tidings.users.service import UsersService

log = logging.getLogger(__name__)

CHANNEL = f"{INTERNAL}broadcasts"
"""The live hub "user" new broadcasts are announced to: each process holding streams
listens to it while it holds any (no user id can hold a NUL; it is not a stream), and
pushes each broadcast to its own streams."""
_ANNOUNCED = "broadcast"
_WATCH_READY_SECONDS = 5.0
"""How long a stream that opens waits for its process to listen to announcements."""

Reach = tuple[Mapping[str, Any] | None, list[str], list[str]]
"""A broadcast, those who have it in their inbox, and those of them it is pushed to."""


class BroadcastPush:
    """Announces committed broadcasts, and pushes them to this process's streams."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        live: LiveHub,
        preferences: PreferencesService,
        users: UsersService,
        readers: broadcast_readers.Readers,
    ) -> None:
        self._db = db
        self._clock = clock
        self._live = live
        self._preferences = preferences
        self._users = users
        self._readers = readers
        self._watch = _Watch(self.reach, live)

    async def announce(self, row: Mapping[str, Any]) -> None:
        """Tell every process holding live streams of a committed broadcast; each pushes
        it to those of its streams whose user has it in their inbox. Best effort, as all
        live push: a stream that misses it finds it when it catches up."""
        try:
            await self._live.publish(CHANNEL, {"event": _ANNOUNCED, "data": {"id": row["id"]}})
        except Exception:
            log.warning("live push: announcing a broadcast failed", exc_info=True)

    def watch(
        self, user_id: str, queue: asyncio.Queue[dict[str, Any]]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, the broadcasts committed for ``user_id`` are put on ``queue``
        (a live stream's): ``item`` (unless it comes in their quiet hours), then
        ``recount``."""
        return self._watch.streaming(user_id, queue)

    async def reach(self, broadcast_id: str, user_ids: Collection[str]) -> Reach:
        """A broadcast, those of ``user_ids`` who have it in their inbox, and those of
        them it is pushed to: all but those in their quiet hours, unless its type is
        critical (an in-app item is written without a push then, broadcast or not)."""
        async with self._db.reader() as conn:
            row = await broadcast_sql.broadcast(conn, broadcast_id)
            if row is None:
                return None, [], []
            subscribed = await broadcast_sql.subscribed_among(
                conn, row["topic"], user_ids, row["created_at"]
            )
            if not subscribed:
                return row, [], []
            readers = await self._readers.of(conn, subscribed, [broadcast_readers.kind(row)])
            reached = [user for user in subscribed if broadcast_readers.shown(row, readers[user])]
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


def _quiet(now: dt.datetime, quiet: quiet_hours.QuietHours, timezone: str | None) -> bool:
    try:
        return quiet_hours.is_quiet(now, quiet, timezone)
    except ValueError:
        return False  # a time zone the database does not know: not quiet


class _Watch:
    """The streams open in this process, and the one listener that pushes them the
    broadcasts announced while any is open."""

    def __init__(
        self, reach: Callable[[str, Collection[str]], Awaitable[Reach]], live: LiveHub
    ) -> None:
        self._reach = reach
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
        row, reached, pushed = await self._reach(str(data.get("id")), list(self._streams))
        if row is None:
            return
        self._send(pushed, {"event": "item", "data": schemas.item_of(row).model_dump(mode="json")})
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
