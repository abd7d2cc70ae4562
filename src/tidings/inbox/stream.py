"""Where a live stream stands in a user's inbox, and what a stream that opens or resumes
is sent before its counts: the items it missed, or ``resync``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tidings.inbox import listing, schemas
from tidings.inbox.broadcasts import Broadcasts
from tidings.inbox.repository import reads
from tidings.kit import cursors, errors
from tidings.kit.db import Database

REPLAY_LIMIT = 100
"""At most this many missed items are sent to a live stream that resumes; past that, it
is told to ``resync`` (reload its first page), which is cheaper than a long replay."""
Position = tuple[dt.datetime, str]
"""Where a live stream stands: the (created_at, id) of the newest item it was sent, the
same keyset the inbox pages by, so any process can resume it from the database."""
START: Position = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "0")
"""The position of a stream whose user has no items yet: every item comes after it."""


@dataclass(frozen=True)
class CatchUp:
    """What a live stream that (re)opens is sent before its counts: the items it missed,
    oldest first, or ``resync`` when they are too many or its position is unknown."""

    items: list[schemas.Item]
    position: Position
    resync: bool


def position_of(item: schemas.Item) -> Position:
    """An item's place in a live stream: where a stream stands once it was sent."""
    return (item.created_at, item.id)


def encode_position(position: Position) -> str:
    """A position as a stream's event id (``Last-Event-ID`` when the client resumes)."""
    return cursors.encode_keyset(*position)


def decode_position(event_id: str) -> Position | None:
    """The position an event id stands for; None for one Tidings never gave out."""
    try:
        return cursors.decode_keyset(event_id)
    except errors.Invalid:
        return None


async def catch_up(
    db: Database, broadcasts: Broadcasts | None, user_id: str, last_event_id: str | None
) -> CatchUp:
    """What a live stream opening after ``last_event_id`` (the id of the last event
    its client got, if any) is sent first.

    Without an id the stream starts at the user's newest item. With one, the items
    written or merged since come, at most ``REPLAY_LIMIT`` of them; more, or an id
    Tidings never gave out, is a ``resync`` from the newest item on.
    """
    since = decode_position(last_event_id) if last_event_id else None
    async with db.reader() as conn:
        shared = await listing.shared_items(conn, broadcasts, user_id)
        if since is not None:
            rows = await reads.after(conn, user_id, since, REPLAY_LIMIT + 1)
            if shared is not None:
                rows += await shared.after(since, REPLAY_LIMIT + 1)
                rows = sorted(rows, key=listing.stream_order)[: REPLAY_LIMIT + 1]
            if len(rows) <= REPLAY_LIMIT:
                items = [schemas.item_of(row) for row in rows]
                position = position_of(items[-1]) if items else since
                return CatchUp(items=items, position=position, resync=False)
        newest = await reads.newest(conn, user_id)
        if shared is not None and (broadcast := await shared.newest()) is not None:
            newest = broadcast if newest is None else max(newest, broadcast)
    return CatchUp(items=[], position=newest or START, resync=bool(last_event_id))
