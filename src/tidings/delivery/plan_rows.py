"""The rows one planning batch writes, gathered before one round of inserts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery import repository
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.events.jobs import FANOUT_JOB
from tidings.kit.db import Database
from tidings.kit.queue import NewJob, Queue


class PlanningError(Exception):
    """A job that cannot be planned as it is (its event is gone, its type unknown)."""


@dataclass
class Rows:
    """What one batch writes, gathered before one round of inserts."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    items_as_deliveries: list[dict[str, Any]] = field(default_factory=list)
    """In-app deliveries that are their inbox item: counted and heard of, not written."""
    jobs: list[NewJob] = field(default_factory=list)
    digest_entries: list[dict[str, Any]] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)

    async def save(
        self, db: Database, conn: AsyncConnection, queue: Queue, now: dt.datetime
    ) -> None:
        """Write the jobs and deliveries, and apply the state changes, in the caller's
        transaction."""
        await queue.enqueue(conn, self.jobs)
        await repository.record(db, conn, self.deliveries, self.items_as_deliveries)
        await repository.advance(db, conn, self.changes, now)

    def delivery(
        self,
        *,
        delivery_id: str,
        notification_id: str,
        event_id: str,
        user_id: str,
        type: str,
        channel: str,
        state: DeliveryState,
        reason: str | None,
        detail: str | None,
        now: dt.datetime,
        is_item: bool = False,
    ) -> None:
        """A new delivery, planned and moved to its first state in the same instant: the
        row says both, and its transitions are logged once it changes. ``is_item``: an
        in-app delivery made into the inbox item of its own id, which stands for it."""
        (self.items_as_deliveries if is_item else self.deliveries).append(
            {
                "id": delivery_id,
                "notification_id": notification_id,
                "event_id": event_id,
                "user_id": user_id,
                "type": type,
                "channel": channel,
                "state": state.value,
                "reason": reason,
                "detail": detail,
                "created_at": now,
                "updated_at": now,
            }
        )


def next_page(
    event: Mapping[str, Any], after: str, lane: int, now: dt.datetime, **marks: Any
) -> NewJob:
    """The fan-out job of the page of ``event``'s topic after subscriber ``after``.

    Due since the event was accepted (or now, for a clock behind it): a claim takes
    jobs of a lane oldest first, so the next page is planned before the jobs this page
    just queued (its emails) instead of waiting until they are sent, and the whole topic
    is planned at the planner's pace.
    """
    due = min(event["created_at"], now)
    return NewJob(
        id=f"{FANOUT_JOB}:{event['id']}:{after}",
        kind=FANOUT_JOB,
        payload={"event": event["id"], "after": after, **marks},
        lane=lane,
        run_at=due,
        # A delay of nothing from then: a schedule a clock ahead set is brought back.
        delayed_from=due,
    )


def event_context(event: Mapping[str, Any]) -> dict[str, Any]:
    """What every template of an event sees, before the recipient is added."""
    return {
        "data": event["data"],
        "actor": event["actor"],
        "event": {"id": event["id"], "type": event["type"], "tenant": event["tenant"]},
    }


COLLAPSED_INTO = "collapsed into "


def until(at: dt.datetime | None) -> str | None:
    return None if at is None else f"until {at.isoformat()}"
