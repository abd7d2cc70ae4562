"""Read, seen and archived: the flags a user sets or clears on the items in their inbox,
their own and broadcasts alike."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.inbox import listing, schemas
from tidings.inbox.broadcasts import Broadcasts
from tidings.inbox.repository import flags as flag_sql
from tidings.kit import errors
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.live import LiveHub


async def mark(
    db: Database,
    clock: Clock,
    live: LiveHub,
    broadcasts: Broadcasts | None,
    user_id: str,
    item_ids: Sequence[str] | None,
    marks: schemas.Marks,
) -> schemas.Marked:
    """Set or clear read/seen/archived on some items (or all, when ``item_ids`` is None),
    then push the user's counts to their open streams when any item changed."""
    flags = marks.model_dump(include={"read", "seen", "archived"}, exclude_none=True)
    if not flags:
        raise errors.Invalid("Say which flags to change: read, seen or archived.", field="read")
    now = clock.now()
    async with db.transaction() as conn:
        own = item_ids
        changed = 0
        if broadcasts is not None:
            changed, own = await broadcasts.mark(conn, user_id, item_ids, flags, now)
            own = None if item_ids is None else own
        if own is None or own:
            changed += await flag_sql.mark(conn, user_id, own, flags, now)
        unread, unseen, total = (await listing.counts_of(conn, broadcasts, [user_id]))[user_id]
    counts = schemas.Counts(unread=unread, unseen=unseen, total=total)
    if changed:
        await live.publish(user_id, {"event": "counts", "data": counts.model_dump()})
    return schemas.Marked(changed=changed, counts=counts)
