"""Email-if-unseen, at send time: a delivery that waits on an in-app item being left
unseen (``unless_seen`` in its job) is suppressed as ``seen_in_app`` once the person
has seen it (or read or archived it), wherever that item now shows."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.sending import Batch, Outgoing
from tidings.delivery import repository
from tidings.delivery.plan_rows import COLLAPSED_INTO
from tidings.delivery.sender import Middleware
from tidings.inbox.service import InboxService
from tidings.planning import planner


class UnlessSeen(Middleware):
    name = "unless_seen"

    def __init__(self, inbox: InboxService) -> None:
        self._inbox = inbox

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        watched = await _shown_in(
            conn, [w for item in batch.items if (w := item.job.payload.get("unless_seen"))]
        )
        seen_items = await self._inbox.seen(conn, set(watched.values())) if watched else set()
        batch.found[self.name] = {watch for watch, shown in watched.items() if shown in seen_items}

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        watch = item.job.payload.get("unless_seen")
        if watch and watch in batch.found.get(self.name, ()):
            return planner.SuppressionReason.SEEN_IN_APP.value
        return None


async def _shown_in(conn: AsyncConnection, watched: Sequence[str]) -> dict[str, str]:
    """For each in-app item a delivery waits on, the item that shows it now.

    The planning knew of one in-app item. When the in-app delivery was held (a delay)
    and then collapsed into another item, the watched id is that delivery's, and the
    item to check is the one it merged into.
    """
    shown = {watch: watch for watch in watched}
    for delivery in await repository.get_many(conn, list(watched)) if watched else []:
        detail = delivery.get("detail") or ""
        if detail.startswith(COLLAPSED_INTO):
            shown[delivery["id"]] = detail.removeprefix(COLLAPSED_INTO)
    return shown
