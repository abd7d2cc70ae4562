"""Delivery timelines: one delivery with every transition, and a user's recent ones."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tidings.auth.keys import ApiKey
from tidings.delivery import repository as deliveries_repository
from tidings.kit import cursors, errors
from tidings.kit.db import Database
from tidings.kit.tables import every_delivery


@dataclass(frozen=True)
class DeliveryFilter:
    """Which of a user's deliveries to list; ``None`` leaves a field open."""

    channel: str | None = None
    state: str | None = None
    type: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class Timelines:
    """Reads deliveries back with their transitions, for producers and operators."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def delivery(self, delivery_id: str, key: ApiKey) -> dict[str, Any]:
        """One delivery, its type and every transition.

        Raises:
            errors.NotFound: no such delivery.
            errors.Forbidden: the key covers neither its type nor operators' work.
        """
        every = every_delivery()
        query = sa.select(every).where(every.c.id == delivery_id)
        async with self._db.reader() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                raise errors.NotFound(f"No delivery with id {delivery_id!r}.", field="delivery_id")
            found = deliveries_repository.with_notification(row._mapping)
            if not key.may_read(found["type"]):
                raise errors.Forbidden(
                    f"This key may not read deliveries of type {found['type']!r}.",
                    field="authorization",
                )
            steps = await deliveries_repository.transitions_of(conn, [found])
        return {**found, "transitions": steps[delivery_id]}

    async def for_user(
        self, user_id: str, where: DeliveryFilter, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the user's deliveries, newest first, each with its transitions; and
        the cursor of the next page."""
        every = every_delivery()
        d = every.c
        query = sa.select(every).where(d.user_id == user_id)
        for column, value in ((d.channel, where.channel), (d.state, where.state)):
            if value is not None:
                query = query.where(column == value)
        if where.type is not None:
            query = query.where(d.type == where.type)
        if where.since is not None:
            query = query.where(d.created_at >= where.since)
        if where.until is not None:
            query = query.where(d.created_at < where.until)
        before = cursors.decode_keyset(cursor)
        if before is not None:
            at, last_id = before
            query = query.where(
                sa.or_(d.created_at < at, sa.and_(d.created_at == at, d.id < last_id))
            )
        query = query.order_by(d.created_at.desc(), d.id.desc()).limit(limit + 1)
        async with self._db.reader() as conn:
            rows = [
                deliveries_repository.with_notification(r._mapping)
                for r in await conn.execute(query)
            ]
            steps = await deliveries_repository.transitions_of(conn, rows[:limit])
        page = [{**row, "transitions": steps[row["id"]]} for row in rows[:limit]]
        last = page[-1] if len(rows) > limit else None
        return page, (
            None if last is None else cursors.encode_keyset(last["created_at"], last["id"])
        )
