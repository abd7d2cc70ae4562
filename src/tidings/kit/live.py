"""Live push: fan messages out to every open connection of a user.

``LocalHub`` serves the embedded default, where API and workers share one process.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

_QUEUE_LIMIT = 1000


class LiveHub(Protocol):
    """Publishes to a user's open connections; subscribes a connection."""

    async def publish(self, user_id: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, user_id: str) -> Any: ...

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        """Those of ``user_ids`` who may have an open connection (a hub spanning several
        processes cannot know, and returns them all)."""
        ...


class LocalHub:
    """In-process hub. A slow connection's queue is bounded: when it overflows, the
    connection gets a ``resync`` message instead of an unbounded backlog."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def publish(self, user_id: str, message: dict[str, Any]) -> None:
        for queue in tuple(self._subscribers.get(user_id, ())):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                _drain(queue)
                queue.put_nowait({"event": "resync", "data": {}})

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_LIMIT)
        self._subscribers[user_id].add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(user_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[user_id]

    def connections(self, user_id: str) -> int:
        return len(self._subscribers.get(user_id, ()))

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        return [user_id for user_id in user_ids if user_id in self._subscribers]


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not queue.empty():
        queue.get_nowait()
