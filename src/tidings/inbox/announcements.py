"""What the open live streams are told of committed inbox items: each item, then its
user's fresh counts (or, across processes, a request to count)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import listing, schemas
from tidings.kit import job_context
from tidings.kit.db import Database
from tidings.kit.live import RECOUNT, LiveHub

log = logging.getLogger(__name__)

CountsOf = Callable[[AsyncConnection, Sequence[str]], Awaitable[dict[str, tuple[int, int, int]]]]
"""user → (unread, unseen, total) of these users, read on the connection given."""


class Announcements:
    """Pushes committed items and their users' counts to the live hub."""

    def __init__(self, db: Database, live: LiveHub, counts_of: CountsOf) -> None:
        self._db = db
        self._live = live
        self._counts_of = counts_of
        self._stale_counts: set[str] = set()
        """Users whose counts a worker's announcement left to ``_counting`` to push."""
        self._counting: asyncio.Task[None] | None = None

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
        for item in sorted(items, key=listing.stream_order):
            if item["user_id"] in listening and not item.get("silent"):
                await self._live.publish(
                    item["user_id"],
                    {"event": "item", "data": schemas.item_of(item).model_dump(mode="json")},
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

    async def _announce_counts(self, user_ids: Sequence[str]) -> None:
        async with self._db.reader() as conn:
            all_counts = await self._counts_of(conn, user_ids)
        for user_id, (unread, unseen, total) in all_counts.items():
            await self._live.publish(
                user_id,
                {"event": "counts", "data": {"unread": unread, "unseen": unseen, "total": total}},
            )
