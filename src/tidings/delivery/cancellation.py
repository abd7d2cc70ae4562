"""Cancel: stop every delivery of an event that is not sent yet, and plan nothing more.

One transaction per request. The events are locked first: a planner that read them
before finishes first (its deliveries are then there to stop), one that comes after
finds them cancelled and plans no one (``EventsService.load``). Then the recipients
of the deliveries still to send are locked, as planning, held in-app items and digests
lock them, and those deliveries are suppressed with reason ``cancelled``: held, delayed,
in quiet hours, folded into a digest not sent yet (the digest goes without them), waiting
for the in-app item to stay unseen, or waiting for a retry. A delivery a sender has
claimed is on its way and is left to end as the provider answers (``middleware.claims``):
each delivery ends sent or cancelled, never both. What was delivered stays.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.auth.keys import ApiKey
from tidings.delivery import digest_repository, repository, stopping_repository
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.events.service import EventsService
from tidings.kit import errors
from tidings.kit.clock import Clock
from tidings.kit.db import Database, ran_into_another
from tidings.planning.planner import SuppressionReason

_ATTEMPTS = 4
PAGE = 1000
"""Deliveries stopped per transaction (their recipients are locked for it)."""
PER_CALL = 1000
"""Events one cancellation by key cancels at most (one transaction); the answer says
when more are left."""


@dataclass(frozen=True)
class CancelledEvent:
    event_id: str
    cancelled_at: dt.datetime
    suppressed: int
    in_flight: int


class Cancellations:
    def __init__(self, db: Database, clock: Clock, events: EventsService) -> None:
        self._db = db
        self._clock = clock
        self._events = events

    async def cancel_event(self, key: ApiKey, event_id: str) -> list[CancelledEvent]:
        """Cancel one event.

        Raises:
            errors.NotFound: there is no such event.
            errors.Forbidden: ``key`` may not publish its type, and is no operator's.
        """
        return await self._cancel(key, lambda _conn: _just(event_id), by_id=True)

    async def cancel_key(
        self, key: ApiKey, cancellation_key: str
    ) -> tuple[list[CancelledEvent], bool]:
        """Cancel the events ``key`` published with ``cancellation_key`` (none: nothing),
        up to ``PER_CALL`` in one transaction; whether more are left to cancel (call
        again: those cancelled already come last).

        Raises:
            errors.Forbidden: ``key`` may not publish the type of one of them any more.
        """

        more = False

        async def ids(conn: AsyncConnection) -> list[str]:
            nonlocal more
            found = await self._events.by_cancellation_key(
                conn, key, cancellation_key, PER_CALL + 1
            )
            # One more than this call takes, not cancelled yet: more are left.
            more = len(found) > PER_CALL and not found[PER_CALL][1]
            return [event_id for event_id, _ in found[:PER_CALL]]

        return await self._cancel(key, ids, by_id=False), more

    async def _cancel(
        self,
        key: ApiKey,
        find: Callable[[AsyncConnection], Awaitable[list[str]]],
        *,
        by_id: bool,
    ) -> list[CancelledEvent]:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._cancel_once(key, find, by_id=by_id)
            except sa.exc.DBAPIError as exc:
                # A sender claiming, or a planner recording, some of the same deliveries
                # in another order: PostgreSQL aborted this one. Nothing was written.
                if not ran_into_another(exc) or attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _cancel_once(
        self,
        key: ApiKey,
        find: Callable[[AsyncConnection], Awaitable[list[str]]],
        *,
        by_id: bool,
    ) -> list[CancelledEvent]:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            event_ids: list[str] = await find(conn)
            if not event_ids:
                return []
            rows = await self._events.lock_to_cancel(conn, event_ids)
            if by_id and not rows:
                raise errors.NotFound(f"No event with id {event_ids[0]!r}.", field="event_id")
            for row in rows:
                if not (key.is_operator or key.may_publish(row["type"])):
                    raise errors.Forbidden(
                        f"This key may not cancel events of type {row['type']!r}: "
                        "cancelling takes the right to publish the type (or admin).",
                        field="authorization",
                    )
            found = [row["id"] for row in rows]
            await self._events.mark_cancelled(conn, found)
            await digest_repository.discard_events(conn, found)
            stopped, more = await self._stop_page(conn, found, now)
        suppressed: Counter[str] = Counter(stopped)
        # A large topic's event may have many deliveries still to send: the rest are
        # stopped a page of recipients at a time, each page its own transaction (the
        # event is cancelled already: nothing new is planned, and a sender or a held
        # in-app item that reads a delivery of it does not send it). A page whose
        # deliveries all changed meanwhile is read again, a few times at most.
        idle = 0
        while more and idle < _ATTEMPTS:
            async with self._db.transaction() as conn:
                stopped, more = await self._stop_page(conn, found, now)
            suppressed.update(stopped)
            idle = 0 if stopped else idle + 1
        async with self._db.reader() as conn:
            claimed = await stopping_repository.claimed_of_events(conn, found, now)
        return [
            CancelledEvent(
                event_id=row["id"],
                cancelled_at=row["cancelled_at"] or now,
                suppressed=suppressed[row["id"]],
                in_flight=claimed.get(row["id"], 0),
            )
            for row in rows
        ]

    async def _stop_page(
        self, conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime
    ) -> tuple[list[str], bool]:
        """Suppress one page of the events' deliveries still to send that no sender
        claims, under their recipients' locks; returns the event id of each stopped, and
        whether there may be more (the page was full)."""
        pending = await stopping_repository.pending_of_events(conn, event_ids, now, limit=PAGE)
        if not pending:
            return [], False
        await repository.lock_users(self._db, conn, {p["user_id"] for p in pending})
        moved = set(
            await repository.advance(
                self._db, conn, [_cancelled(p["id"]) for p in pending], now, unclaimed=True
            )
        )
        return [p["event_id"] for p in pending if p["id"] in moved], len(pending) == PAGE


def _cancelled(delivery_id: str) -> StateChange:
    return StateChange(
        delivery_id,
        DeliveryState.SUPPRESSED,
        SuppressionReason.CANCELLED.value,
        stage="api",
        key=SuppressionReason.CANCELLED.value,
    )


async def _just(event_id: str) -> list[str]:
    return [event_id]
