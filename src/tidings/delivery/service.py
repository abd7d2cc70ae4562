"""Reading deliveries back (what happened to an event, a delivery, a user's recent
ones) and moving them by hand (a dead letter replayed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery import history_repository, repository, stopping_repository
from tidings.delivery.repository import StateChange
from tidings.kit import cursors
from tidings.kit.db import Database
from tidings.users.erasure import Erasing

__all__ = ["DeliveryFilter", "DeliveryService", "StateChange"]


@dataclass(frozen=True)
class DeliveryFilter:
    """Which of a user's deliveries to list; ``None`` leaves a field open."""

    channel: str | None = None
    state: str | None = None
    type: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class DeliveryService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def for_event(
        self, event_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Mapping[str, Any]], str | None]:
        """A page of the event's deliveries and the cursor of the next page."""
        async with self._db.reader() as conn:
            rows = await history_repository.for_event(
                conn, event_id, cursors.after_id(cursor), limit + 1
            )
        next_cursor = rows[limit - 1]["id"] if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def one(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery with its type and every transition, if it exists."""
        async with self._db.reader() as conn:
            return await history_repository.one_with_transitions(conn, delivery_id)

    async def of_user(
        self, user_id: str, where: DeliveryFilter, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the user's deliveries, newest first, each with its transitions; and
        the cursor of the next page."""
        async with self._db.reader() as conn:
            rows = await history_repository.user_page(
                conn,
                user_id,
                channel=where.channel,
                state=where.state,
                type_key=where.type,
                since=where.since,
                until=where.until,
                before=cursors.decode_keyset(cursor),
                limit=limit + 1,
            )
        page = rows[:limit]
        last = page[-1] if len(rows) > limit else None
        return page, (
            None if last is None else cursors.encode_keyset(last["created_at"], last["id"])
        )

    async def advance(
        self, conn: AsyncConnection, changes: Sequence[StateChange], now: dt.datetime
    ) -> list[str]:
        """Apply state changes in the caller's transaction (see ``repository.advance``)."""
        return await repository.advance(self._db, conn, changes, now)


class StopErased:
    """The erasure listener of deliveries: a user's planned and scheduled deliveries are
    suppressed (reason ``erased``), so a delay, a digest or a retry that fires later
    finds nothing to send."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def erasing(self, conn: AsyncConnection, erasing: Erasing) -> None:
        await stopping_repository.stop_for_erasure(self._db, conn, erasing.user_id, erasing.at)
