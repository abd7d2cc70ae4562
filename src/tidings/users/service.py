"""Use cases for profiles, topics and subscriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import cursors, errors, ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.users import erasure, repository, schemas


@dataclass(frozen=True)
class Erasure:
    """A user erased: the name their records keep, and the moment before which events
    were accepted that must not reach them (events accepted later, for the same id
    created again, are delivered)."""

    pseudonym: str
    erased_before: dt.datetime

    def covers(self, event_created_at: dt.datetime) -> bool:
        """Whether an event accepted at ``event_created_at`` came before the erasure."""
        return event_created_at <= self.erased_before


def pseudonym_of(user_id: str) -> str:
    """The name an erased user's records keep."""
    return "erased:" + ids.derived_id("erased", user_id)


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
        """Erase a user: profile, inbox, subscriptions and preferences go; deliveries, and
        the status webhook messages about them, keep a pseudonym; work for events
        accepted before now is dropped, wherever it is.

        The erasure is recorded even when nothing is stored for the id (the 404): events
        already accepted for it may still be on their way to planning. Retention forgets
        it once no such event is left (``erasures_done``).
        """
        now = self._clock.now()
        pseudonym = pseudonym_of(user_id)
        async with self._db.transaction() as conn:
            # Planning in progress for the user commits first, and is then erased here;
            # planning that comes after sees the erasure.
            await repository.lock_user(self._db, conn, user_id)
            # Every event stored by now counts as accepted before the erasure, even one
            # stamped by a clock ahead of this one.
            latest = await repository.latest_event_time(conn)
            before = now if latest is None else max(now, latest)
            # The packages that keep something of theirs hear first (webhook messages
            # find the user's deliveries by id: before they are renamed).
            await erasure.tell(self._db, conn, erasure.Erasing(user_id, pseudonym, now))
            found = await repository.erase_user(conn, user_id, pseudonym, now)
            await repository.record_erasure(self._db, conn, pseudonym, before, now)
        if not found:
            raise errors.NotFound(f"No user with id {user_id!r}.", field="id")

    async def erasures(self, conn: AsyncConnection, user_ids: Iterable[str]) -> dict[str, Erasure]:
        """The erasures of these users, by user id (for planning, under their locks)."""
        by_pseudonym = {pseudonym_of(user): user for user in user_ids}
        found = await repository.erasures_of(conn, by_pseudonym)
        return {
            by_pseudonym[pseudonym]: Erasure(pseudonym, before)
            for pseudonym, before in found.items()
        }

    async def erased_since(self, conn: AsyncConnection, since: dt.datetime) -> dict[str, Erasure]:
        """The erasures made at ``since`` or later, by pseudonym (for work that read its
        recipients before and is still going)."""
        found = await repository.erased_since(conn, since)
        return {pseudonym: Erasure(pseudonym, before) for pseudonym, before in found.items()}

    async def forget_in_events(
        self, conn: AsyncConnection, erased: Mapping[str, Iterable[str]]
    ) -> None:
        """Name erased recipients (event id → user ids) by their pseudonym in the events
        that list them, in the caller's transaction."""
        await repository.forget_in_events(
            conn,
            {
                event_id: {user: pseudonym_of(user) for user in users}
                for event_id, users in erased.items()
            },
        )

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
            rows = await repository.subscriber_page(
                conn, topic, cursors.after_id(cursor), limit + 1
            )
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
