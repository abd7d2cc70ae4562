"""The one path that sends a delivery, whatever its channel.

A batch of send jobs (``email``, ``channel``) is read in one go: the deliveries, their
events and digests, the recipients' profiles. Each delivery is then screened (by the
middleware: staleness, email-if-unseen, erasure; and by its channel: a missing or
suppressed address), composed by its channel a chunk at a time, and handed over, several
at once, with outcomes recorded as they come:

* no more than ``COMMIT_EVERY`` deliveries are ever handed over and not yet recorded,
  and outcomes are committed half that many at a time while the next are on their way;
  a worker that dies mid-batch hands over again at most that many (a channel should
  tolerate a rare duplicate; email keeps its Message-ID, so receivers can drop it);
* nothing is handed over once half the jobs' lease has gone: the rest are given back
  to run again at once, before another worker could lease them and send them too;
* after each commit the middleware may take out deliveries that must not go any more
  (a user erased meanwhile): an erasure overtakes a batch within a few messages.

What a channel answers becomes a state change here, once: sent or delivered, failed,
suppressed for want of an address, or scheduled again with backoff (``retries``) until
the attempts run out. The middleware (``delivery/middleware/``) is the only place a
rule about sending lives; a channel (``Carrier``) only composes and hands over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.sending import (
    Batch,
    Carrier,
    Outgoing,
    Refused,
    Result,
    Sent,
    Unaddressed,
)
from tidings.delivery import digest_repository, repository
from tidings.delivery.job_runner import BatchAbandoned
from tidings.delivery.repository import StateChange
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.send_flow import COMMIT_EVERY, Flow, Window
from tidings.delivery.states import DeliveryState
from tidings.events.service import EventsService, recipient_profile
from tidings.kit import job_context
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue
from tidings.planning import planner
from tidings.users.service import UsersService

log = logging.getLogger(__name__)


class Middleware:
    """One concern wrapped around sending; every hook does nothing unless overridden."""

    name = "middleware"

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        """Read what the other hooks need, in the batch's read transaction."""

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        """Why not to send ``item`` at all (a suppression reason), or None."""
        return None

    async def drop(self, db: Database, batch: Batch, waiting: Sequence[Outgoing]) -> set[str]:
        """Before the first hand-over and after each commit: the job ids among
        ``waiting`` that must not be sent any more (their jobs are finished)."""
        return set()

    async def around(
        self, item: Outgoing, carrier: str, call: Callable[[], Awaitable[Result]]
    ) -> Result:
        """Wrap one hand-over (a span, say)."""
        return await call()

    def handed(self, item: Outgoing, carrier: str, result: Result, batch: Batch) -> None:
        """One hand-over's result, before it is recorded (to count it, say)."""


class Sender:
    """The handler of every send job (``email``, ``channel``): each delivery goes to the
    carrier of its channel (``carriers``, by channel name)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        queue: Queue,
        events: EventsService,
        users: UsersService,
        retry: RetryPolicy,
        carriers: Mapping[str, Carrier],
        middleware: Sequence[Middleware],
        *,
        lease: dt.timedelta = dt.timedelta(seconds=30),
    ) -> None:
        """A delivery on a channel no carrier serves (a plugin not installed or not
        configured here) is suppressed as ``channel_unavailable``."""
        self._db = db
        self._clock = clock
        self._queue = queue
        self._events = events
        self._users = users
        self._retry = retry
        self._carriers = dict(carriers)
        self._middleware = list(middleware)
        self._budget = lease.total_seconds() / 2
        """How long a batch may go on handing over: half its jobs' lease."""

    def carrier(self, channel: str) -> Carrier | None:
        """The carrier of ``channel``'s deliveries, if this deployment runs it."""
        return self._carriers.get(channel)

    async def send(self, jobs: Sequence[Job]) -> None:
        """Send one batch of send jobs."""
        window = Window()
        batch = await self._read(jobs, window)
        by_carrier: dict[str, list[Outgoing]] = {}
        for item in batch.items:
            channel = item.delivery["channel"]
            carrier = self._carriers.get(channel)
            reason = self._screen(item, batch, carrier)
            if reason is not None:
                window.suppress(item, reason)
                continue
            by_carrier.setdefault(channel, []).append(item)
        if not by_carrier:
            await self._commit(window)
            return
        for channel, items in by_carrier.items():
            await self._hand_over_all(self._carriers[channel], batch, items, window)

    async def _read(self, jobs: Sequence[Job], window: Window) -> Batch:
        """The batch's deliveries still to send, with everything screening needs; the
        jobs of deliveries gone or already past sending are finished."""
        now = self._clock.now()
        async with self._db.reader() as conn:
            deliveries = {
                d["id"]: d
                for d in await repository.get_many(conn, [j.payload["delivery"] for j in jobs])
            }
            events = {
                e["id"]: e
                for e in await self._events.load(
                    conn, list({d["event_id"] for d in deliveries.values()})
                )
            }
            profiles = await self._users.profiles(conn, {d["user_id"] for d in deliveries.values()})
            digest_rows = await digest_repository.get(
                conn, [j.payload["digest"] for j in jobs if j.payload.get("digest")]
            )
            items: list[Outgoing] = []
            for job in jobs:
                delivery = deliveries.get(job.payload["delivery"])
                if delivery is None or delivery["state"] != DeliveryState.SCHEDULED:
                    window.finished.append(job)  # erased, or already sent by an earlier run
                    continue
                event = events.get(delivery["event_id"])
                user_id = delivery["user_id"]
                recipient = planner.Recipient.from_profile(
                    user_id, recipient_profile(event, user_id, profiles.get(user_id))
                )
                digest = digest_rows.get(job.payload.get("digest", ""))
                items.append(Outgoing(job, delivery, event, digest, recipient))
            batch = Batch(read_at=now, items=items, events=events)
            for middleware in self._middleware:
                await middleware.read(conn, batch)
            for channel in {item.delivery["channel"] for item in items}:
                carrier = self._carriers.get(channel)
                if carrier is not None:
                    await carrier.read(conn, batch)
        return batch

    def _screen(self, item: Outgoing, batch: Batch, carrier: Carrier | None) -> str | None:
        if carrier is None:
            return planner.SuppressionReason.CHANNEL_UNAVAILABLE.value
        reason = carrier.screen(item, batch)
        for middleware in self._middleware:
            if reason is not None:
                break
            reason = middleware.screen(item, batch)
        return reason

    async def _hand_over_all(
        self, carrier: Carrier, batch: Batch, items: Sequence[Outgoing], window: Window
    ) -> None:
        """Compose ``items`` and hand them over, several at once, recording outcomes as
        they come, with the changes already decided (``window``).

        Items are composed a chunk at a time, a few chunks ahead of the handing over
        (so memory holds a few chunks of composed messages, not the batch). An item
        takes a place in the window when it is handed over and gives it back once its
        outcome is committed.
        """
        flow = Flow(carrier, batch, len(items), deque(items))
        flow.dropped = await self._drop(flow, window)
        loop = asyncio.get_running_loop()
        deadline = self._hand_over_until(loop.time())
        unrecorded = 0
        try:
            while True:
                flow.compose_more()
                flow.take_composed(window)
                while flow.todo and flow.room(unrecorded):
                    if loop.time() > deadline:
                        await self._give_back(flow.abandon())
                        break
                    item, ready = flow.todo.popleft()
                    flow.flying[asyncio.ensure_future(self._one(carrier, item, ready))] = item
                if not flow.flying and not flow.composing:
                    if flow.todo or flow.waiting:
                        continue
                    break
                for sent, result in await flow.next_outcomes():
                    for middleware in self._middleware:
                        middleware.handed(sent, carrier.name, result, batch)
                    self._record(sent, result, window)
                    unrecorded += 1
                if unrecorded >= COMMIT_EVERY // 2 or (unrecorded and not flow.flying):
                    await self._commit(window)
                    unrecorded = 0
                    flow.dropped = await self._drop(flow, window)
            await self._commit(window)
        except Exception as exc:
            # Some jobs are settled already (completed, retried, given back): running
            # the batch again one job at a time would send those again. The rest come
            # back when their lease runs out.
            raise BatchAbandoned(f"{type(exc).__name__}: {exc}") from exc
        finally:
            # A failed commit (the database went away) stops the batch: what is on its
            # way is abandoned (recorded by no one, so sent again when the job runs
            # again, at most COMMIT_EVERY of them); the rest is not sent.
            await flow.cancel()

    async def _one(self, carrier: Carrier, item: Outgoing, ready: Any) -> Result:
        """Hand one item over through every middleware's ``around``, outermost first."""

        async def call() -> Result:
            return await carrier.hand_over(item, ready)

        wrapped: Callable[[], Awaitable[Result]] = call
        for middleware in reversed(self._middleware):
            wrapped = _wrap(middleware, item, carrier.name, wrapped)
        return await wrapped()

    async def _drop(self, flow: Flow, window: Window) -> set[str]:
        """Ask the middleware which items not handed over yet must not go any more;
        take them out and finish their jobs. Returns their job ids, for the items being
        composed meanwhile (finished once composed)."""
        unsent = flow.unsent()
        if not unsent:
            return set()
        dropped: set[str] = set()
        for middleware in self._middleware:
            dropped |= await middleware.drop(self._db, flow.batch, unsent)
        if dropped:
            window.finished.extend(flow.take_out(dropped))
        return dropped

    def _hand_over_until(self, now: float) -> float:
        """When to stop handing over: once half the lease is left, counted from the
        claim when the worker says when that was (reads and other groups of the batch
        may have used some of it already), else from now."""
        run = job_context.current()
        if run is not None and run.lease_ends is not None:
            return run.lease_ends - self._budget
        return now + self._budget

    async def _give_back(self, jobs: Sequence[Job]) -> None:
        log.warning("%d send jobs given back: their batch ran out of time", len(jobs))
        for job in jobs:
            await self._queue.release(job)

    def _record(self, item: Outgoing, result: Result, window: Window) -> None:
        """The state change one hand-over makes, and what becomes of its job."""
        delivery_id = item.delivery["id"]
        if isinstance(result, Sent):
            window.changes.append(
                StateChange(
                    delivery_id,
                    DeliveryState(result.state),
                    detail=result.detail,
                    fields=dict(result.fields),
                )
            )
            window.finished.append(item.job)
        elif isinstance(result, Refused):
            window.fail(item, result)
        elif isinstance(result, Unaddressed):
            window.suppress(item, planner.SuppressionReason.NO_ADDRESS.value, result.detail)
        elif self._retry.exhausted(item.job):
            window.changes.append(
                StateChange(delivery_id, DeliveryState.FAILED, "retries_exhausted", result.detail)
            )
            window.buried.append((item.job, f"{result.by}: {result.detail}"))
        else:
            window.changes.append(
                StateChange(
                    delivery_id,
                    DeliveryState.SCHEDULED,
                    "retry",
                    result.detail,
                    attempt=item.job.attempts + 1,
                )
            )
            window.retries.append((item.job, f"{result.by}: {result.detail}"))

    async def _commit(self, window: Window) -> None:
        """Record the outcomes so far, then hand back the jobs to retry and bury those
        given up on, and empty the window: what is committed is never sent again, even
        if the worker dies a moment later."""
        if window.changes or window.finished:
            async with self._db.transaction() as conn:
                await repository.advance(self._db, conn, window.changes, self._clock.now())
                await self._queue.complete(conn, window.finished)
            # Acknowledged now (a broker's messages), not when the batch ends: a batch
            # abandoned later must not have these delivered again.
            await self._queue.settle(window.finished)
            window.changes.clear()
            window.finished.clear()
        now = self._clock.now()
        for job, error in window.retries:
            await self._queue.retry(job, error, now + dt.timedelta(seconds=self._retry.delay(job)))
        window.retries.clear()
        for job, error in window.buried:
            await self._queue.bury(job, error)
        window.buried.clear()


def _wrap(
    middleware: Middleware, item: Outgoing, carrier: str, inner: Callable[[], Awaitable[Result]]
) -> Callable[[], Awaitable[Result]]:
    async def call() -> Result:
        return await middleware.around(item, carrier, inner)

    return call
