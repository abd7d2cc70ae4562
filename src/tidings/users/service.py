"""Use cases for profiles, topics and subscriptions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import errors, ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.users import repository, schemas


class UsersService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def put_profile(self, user_id: str, profile: schemas.ProfileIn) -> schemas.Profile:
        """Create or replace a recipient's profile."""
        async with self._db.transaction() as conn:
            await repository.replace_profile(
                self._db, conn, user_id, profile.model_dump(), self._clock.now()
            )
            row = await repository.get_profile(conn, user_id)
        assert row is not None
        return schemas.Profile.model_validate(dict(row))

    async def get_profile(self, user_id: str) -> schemas.Profile:
        async with self._db.reader() as conn:
            row = await repository.get_profile(conn, user_id)
        if row is None:
            raise errors.NotFound(f"No user with id {user_id!r}.", field="id")
        return schemas.Profile.model_validate(dict(row))

    async def erase(self, user_id: str) -> None:
        """Erase a user: profile, inbox and subscriptions go; deliveries keep a pseudonym."""
        async with self._db.transaction() as conn:
            found = await repository.erase_user(
                conn, user_id, "erased:" + ids.derived_id("erased", user_id)
            )
        if not found:
            raise errors.NotFound(f"No user with id {user_id!r}.", field="id")

    async def upsert_profiles(
        self, conn: AsyncConnection, profiles: Sequence[Mapping[str, Any]]
    ) -> None:
        """Record profile fields that came along with events, in the caller's transaction."""
        if profiles:
            await repository.upsert_profiles(self._db, conn, profiles, self._clock.now())

    async def profiles(
        self, conn: AsyncConnection, user_ids: Iterable[str]
    ) -> dict[str, Mapping[str, Any]]:
        return await repository.get_profiles(conn, user_ids)

    async def subscribe(self, topic: str, user_ids: Sequence[str]) -> int:
        async with self._db.transaction() as conn:
            return await repository.subscribe(self._db, conn, topic, user_ids, self._clock.now())

    async def unsubscribe(self, topic: str, user_ids: Sequence[str]) -> int:
        async with self._db.transaction() as conn:
            return await repository.unsubscribe(conn, topic, user_ids)

    async def subscribers(
        self, topic: str, cursor: str | None, limit: int
    ) -> schemas.SubscriberPage:
        async with self._db.reader() as conn:
            rows = await repository.subscriber_page(conn, topic, cursor, limit + 1)
        items = [
            schemas.Subscriber(user_id=r["user_id"], subscribed_at=r["created_at"])
            for r in rows[:limit]
        ]
        next_cursor = items[-1].user_id if len(rows) > limit else None
        return schemas.SubscriberPage(items=items, next_cursor=next_cursor)

    async def subscriber_page(
        self, conn: AsyncConnection, topic: str, after: str | None, limit: int
    ) -> list[str]:
        """One page of a topic's subscriber ids, for fan-out."""
        rows = await repository.subscriber_page(conn, topic, after, limit)
        return [row["user_id"] for row in rows]
