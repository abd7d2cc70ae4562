"""Use cases for preferences: record a choice, and tell the planner who opted out."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.preferences import repository

ANY_CATEGORY = repository.ANY_CATEGORY


class OptOuts:
    """The "off" switches that concern one planning batch."""

    def __init__(self, off: set[tuple[str, str, str]]) -> None:
        self._off = off

    def channel_off(self, user_id: str, category: str, channel: str) -> bool:
        return (user_id, category, channel) in self._off or (
            user_id,
            ANY_CATEGORY,
            channel,
        ) in self._off


class PreferencesService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def set_channel(
        self, user_id: str, category: str, channel: str, *, enabled: bool, source: str
    ) -> None:
        """Turn one category (or ``*``, all of them) on or off on one channel for a user."""
        async with self._db.transaction() as conn:
            await repository.put(
                self._db,
                conn,
                user_id=user_id,
                category=category,
                channel=channel,
                enabled=enabled,
                source=source,
                now=self._clock.now(),
            )

    async def opt_outs(
        self, conn: AsyncConnection, user_ids: Iterable[str], categories: Iterable[str]
    ) -> OptOuts:
        return OptOuts(await repository.switched_off(conn, user_ids, categories))

    async def for_user(self, user_id: str) -> list[dict[str, object]]:
        async with self._db.reader() as conn:
            return await repository.for_user(conn, user_id)
