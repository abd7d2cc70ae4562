"""Erasure overtakes a batch: before the first hand-over and after each commit, the
deliveries to users erased since the batch was read are taken out (the erasure
suppressed them already; their jobs are finished). A user created again after the
erasure keeps the mail of events accepted since."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from tidings.channels.sending import Batch, Outgoing
from tidings.delivery.sender import Middleware
from tidings.kit.db import Database
from tidings.users.service import Erasure, UsersService, pseudonym_of

ERASURE_SKEW = dt.timedelta(seconds=5)
"""How much earlier than a batch's read an erasure may be stamped (by another process's
clock) and still be looked for: one already committed then was seen by the read."""


class Erasures(Middleware):
    name = "erasure"

    def __init__(self, users: UsersService) -> None:
        self._users = users

    async def drop(self, db: Database, batch: Batch, waiting: Sequence[Outgoing]) -> set[str]:
        async with db.reader() as conn:
            erased = await self._users.erased_since(conn, batch.read_at - ERASURE_SKEW)
        if not erased:
            return set()
        return {item.job.id for item in waiting if _covered(item.delivery, erased, batch.events)}


def _covered(
    delivery: Mapping[str, Any],
    erased: Mapping[str, Erasure],
    events: Mapping[str, Mapping[str, Any]],
) -> bool:
    """Whether an erasure stopped this delivery: its recipient was erased after its
    event was accepted."""
    erasure = erased.get(pseudonym_of(delivery["user_id"]))
    if erasure is None:
        return False
    event = events.get(delivery["event_id"])
    # A digest's delivery has no event of its own: it counts from its planning.
    accepted = delivery["created_at"] if event is None else event["created_at"]
    return erasure.covers(accepted)
