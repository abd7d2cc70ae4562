"""Reading deliveries back: what happened to an event, for each recipient and channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.delivery import repository
from tidings.kit import cursors
from tidings.kit.db import Database


class DeliveryService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def for_event(
        self, event_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Mapping[str, Any]], str | None]:
        """A page of the event's deliveries and the cursor of the next page."""
        async with self._db.reader() as conn:
            rows = await repository.for_event(conn, event_id, cursors.after_id(cursor), limit + 1)
        next_cursor = rows[limit - 1]["id"] if len(rows) > limit else None
        return rows[:limit], next_cursor
