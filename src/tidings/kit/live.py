"""Live push: fan messages out to every open connection of a user.

``LocalHub`` serves the embedded default, where API and workers share one process.
``live_nats.NatsHub`` (NATS core subjects), ``live_redis.RedisHub`` (Redis pub/sub) and
``live_postgres.PostgresHub`` (LISTEN/NOTIFY), on ``live_broker.BrokerHub``, carry
messages between processes: a worker writes an inbox item, and whichever API process
holds the user's connections pushes it. Each process listens to a user's subject only
while that user has a connection open there, so the broker sends an update only to the
processes that hold its user; what arrives is handed to a ``LocalHub`` inside, which
keeps its bounded queues and ``resync``.

A user holds at most ``max_per_user`` connections in one process: a new one closes the
user's oldest, which is told why (``CLOSED``), so a forgotten tab or a client that leaks
connections cannot pile them up.

Live push is best-effort: the stored row is the truth, and a connection that misses a
message catches up from it (from the id of the last event its client got, or with
``resync``). A broker that is down costs live updates (logged), never the caller's work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 1000
CONFIRM_SECONDS = 2.0
"""How long a new connection waits for the broker to confirm its user's subscription."""
RETRY_SECONDS = 1.0
COMPLAIN_EVERY = 30.0
"""Seconds between two warnings about the same broker trouble."""


CLOSED = "closed"
"""The last message of a connection that a newer one of the same user pushed out; its
data says why (``TOO_MANY_STREAMS``)."""
TOO_MANY_STREAMS = "too_many_streams"

RESYNC = "resync"
"""What a connection whose bounded queue overflowed gets instead of the messages it
lost: the stream catches up from the database (or tells its client to reload)."""

INTERNAL = "\x00"
"""The first character of a channel this process listens to for itself (a user id never
holds it): its subscriptions are not streams, and no stream cap counts them."""

RECOUNT = "recount"
"""The event that asks the process holding a user's connections to send their fresh
counts: only that process knows whether anyone listens, so only it pays for the count."""


class LiveHub(Protocol):
    """Publishes to a user's open connections; subscribes a connection."""

    async def start(self) -> None:
        """Connect to the broker, if any. One out of reach is logged and tried again in
        the background, not raised: the process serves without live updates meanwhile."""
        ...

    async def close(self) -> None: ...

    async def publish(self, user_id: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, user_id: str) -> Any: ...

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        """Those of ``user_ids`` who may have an open connection (a hub spanning several
        processes cannot know, and returns them all)."""
        ...

    @property
    def streams(self) -> int:
        """Connections open in this process, of all users together."""
        ...

    @property
    def spans_processes(self) -> bool:
        """Whether connections may be held by other processes than this one: then
        ``listening`` cannot tell who listens, and a user's counts are worked out where
        the connection is (``RECOUNT``), not by the process that changed them."""
        ...


class LocalHub:
    """In-process hub. A slow connection's queue is bounded: when it overflows, the
    connection gets a ``resync`` message instead of an unbounded backlog. A user's
    connections beyond ``max_per_user`` close, oldest first, with ``CLOSED``."""

    def __init__(self, *, max_per_user: int | None = None) -> None:
        # Per user, the connections' queues in the order they opened (a dict keeps it).
        self._subscribers: dict[str, dict[asyncio.Queue[dict[str, Any]], None]] = defaultdict(dict)
        self._max_per_user = max_per_user
        self._streams = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, user_id: str, message: dict[str, Any]) -> None:
        for queue in tuple(self._subscribers.get(user_id, ())):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                _drain(queue)
                queue.put_nowait({"event": RESYNC, "data": {}})

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_LIMIT)
        subscribers = self._subscribers[user_id]
        subscribers[queue] = None
        if not user_id.startswith(INTERNAL):
            self._streams += 1
        if self._max_per_user is not None and len(subscribers) > self._max_per_user:
            oldest = next(iter(subscribers))
            self._unsubscribe(user_id, oldest)
            # Off the list first, so no later message can push this last one out.
            _drain(oldest)
            oldest.put_nowait({"event": CLOSED, "data": {"reason": TOO_MANY_STREAMS}})
        try:
            yield queue
        finally:
            self._unsubscribe(user_id, queue)

    def _unsubscribe(self, user_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is None or queue not in subscribers:
            return  # already pushed out by a newer connection
        del subscribers[queue]
        if not user_id.startswith(INTERNAL):
            self._streams -= 1
        if not subscribers:
            del self._subscribers[user_id]

    def connections(self, user_id: str) -> int:
        return len(self._subscribers.get(user_id, ()))

    @property
    def streams(self) -> int:
        return self._streams

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        return [user_id for user_id in user_ids if user_id in self._subscribers]

    @property
    def spans_processes(self) -> bool:
        return False


def user_token(user_id: str) -> str:
    """A user's part of a subject or channel name: any id becomes one plain token (the
    id itself travels in the payload, so two ids sharing a token never mix)."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


def report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("live push: cannot connect: %r", exc)


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not queue.empty():
        queue.get_nowait()
