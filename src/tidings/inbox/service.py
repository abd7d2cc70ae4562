"""Use cases of the in-app channel: store items, read them, flag them, announce changes."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox import repository, schemas
from tidings.kit import errors
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import LiveHub


class InboxService:
    def __init__(self, db: Database, clock: Clock, live: LiveHub) -> None:
        self._db = db
        self._clock = clock
        self._live = live

    async def store(
        self, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """Write items in the caller's transaction; returns those that are new."""
        new_ids = await repository.insert(self._db, conn, items)
        return [item for item in items if item["id"] in new_ids]

    async def announce(self, new_items: Sequence[Mapping[str, Any]]) -> None:
        """Push committed items, then each user's fresh counts, to their open connections."""
        listening = set(self._live.listening({item["user_id"] for item in new_items}))
        if not listening:
            return
        for item in new_items:
            if item["user_id"] in listening:
                await self._live.publish(
                    item["user_id"], {"event": "item", "data": _item(item).model_dump(mode="json")}
                )
        await self._announce_counts(sorted(listening))

    async def page(
        self, user_id: str, *, cursor: str | None, limit: int, unread_only: bool, archived: bool
    ) -> schemas.Page:
        async with self._db.reader() as conn:
            rows = await repository.page(
                conn,
                user_id,
                before=_decode_cursor(cursor),
                limit=limit + 1,
                unread_only=unread_only,
                archived=archived,
            )
        items = [_item(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
        return schemas.Page(items=items, next_cursor=next_cursor)

    async def item(self, user_id: str, item_id: str) -> schemas.Item:
        async with self._db.reader() as conn:
            row = await repository.get(conn, user_id, item_id)
        if row is None:
            raise errors.NotFound(f"No inbox item {item_id!r}.", field="item_id")
        return _item(row)

    async def counts(self, user_id: str) -> schemas.Counts:
        async with self._db.reader() as conn:
            unread, unseen, total = (await repository.counts(conn, [user_id]))[user_id]
        return schemas.Counts(unread=unread, unseen=unseen, total=total)

    async def mark(
        self, user_id: str, item_ids: Sequence[str] | None, marks: schemas.Marks
    ) -> schemas.Marked:
        """Set or clear read/seen/archived on some items (or all, when ``item_ids`` is None)."""
        flags = marks.model_dump(include={"read", "seen", "archived"}, exclude_none=True)
        if not flags:
            raise errors.Invalid("Say which flags to change: read, seen or archived.", field="read")
        async with self._db.transaction() as conn:
            changed = await repository.mark(conn, user_id, item_ids, flags, self._clock.now())
            unread, unseen, total = (await repository.counts(conn, [user_id]))[user_id]
        counts = schemas.Counts(unread=unread, unseen=unseen, total=total)
        if changed:
            await self._live.publish(user_id, {"event": "counts", "data": counts.model_dump()})
        return schemas.Marked(changed=changed, counts=counts)

    async def mark_one(self, user_id: str, item_id: str, marks: schemas.Marks) -> schemas.Item:
        await self.item(user_id, item_id)
        await self.mark(user_id, [item_id], marks)
        return await self.item(user_id, item_id)

    async def _announce_counts(self, user_ids: Sequence[str]) -> None:
        async with self._db.reader() as conn:
            all_counts = await repository.counts(conn, user_ids)
        for user_id, (unread, unseen, total) in all_counts.items():
            await self._live.publish(
                user_id,
                {"event": "counts", "data": {"unread": unread, "unseen": unseen, "total": total}},
            )


def _item(row: Mapping[str, Any]) -> schemas.Item:
    return schemas.Item(
        id=row["id"],
        type=row["type"],
        category=row["category"],
        title=row["title"],
        body=row["body"],
        action_url=row["action_url"],
        actor=row["actor"],
        event_id=row["event_id"],
        created_at=row["created_at"],
        read=row.get("read_at") is not None,
        seen=row.get("seen_at") is not None,
        archived=row.get("archived_at") is not None,
        read_at=row.get("read_at"),
        seen_at=row.get("seen_at"),
        archived_at=row.get("archived_at"),
    )


def _encode_cursor(item: schemas.Item) -> str:
    raw = f"{item.created_at.isoformat()}|{item.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, item_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(at), item_id
    except (ValueError, UnicodeDecodeError):
        raise errors.Invalid(
            "The cursor is not one this API gave out; pass next_cursor back unchanged.",
            field="cursor",
        ) from None
