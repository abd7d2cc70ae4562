"""Fan-out on read: a large topic's event becomes one broadcast instead of an inbox item
per subscriber.

The fan-out job of a topic event asks ``fanout_page`` first. The event is broadcast when
all of these hold when its fan-out starts:

- its type has the in-app channel, and its in-app templates (title, body, action URL)
  read nothing but the event (``data``, ``actor``, ``event``): not the recipient, not a
  filter that formats in the recipient's locale or time zone (``catalog``'s own test,
  the one that lets a template render once per event);
- its type has no dedup, collapse, throttle, digest, delay or email-if-unseen rule:
  those decide per recipient, from their own history, or wait on their own item;
- it is not stale yet (``max_age``), and its fan-out has not started on write;
- its topic has at least ``Broadcasts.min_subscribers`` subscribers
  (``TIDINGS_FANOUT_ON_READ_MIN``; 0 turns broadcasting off).

Then its rendered item is stored once, in a transaction of its own before any page is
planned, and is in every subscriber's inbox from that commit on (``inbox.broadcasts``).
Its other channels (email, plugin channels) are still planned per subscriber, a page at
a time (a job plans pages back to back for up to ``PAGES_SECONDS``, each committed on
its own), with every rule that applies to them; no in-app row is written
for any subscriber. An event that is not broadcast is fanned out on write, as before. Once an
event has a broadcast, every page of it is planned this way (a job run again included).

Which types can be broadcast is ``broadcast_eligibility``'s; how one subscriber's other
channels are planned, ``broadcast_subscribers``'.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import digest_repository, history_repository
from tidings.delivery import repository as deliveries
from tidings.delivery.audience import AudienceLoader
from tidings.delivery.broadcast_eligibility import refusal
from tidings.delivery.broadcast_subscribers import plan_subscriber, record_erased
from tidings.delivery.plan_rows import PlanningError, Rows, event_context, next_page
from tidings.events.service import EventsService
from tidings.inbox.broadcasts import broadcast_id
from tidings.inbox.service import InboxService
from tidings.kit import metrics
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue
from tidings.planning import planner
from tidings.planning.rules import staleness
from tidings.users.service import UsersService

BROADCAST = "broadcast"
"""Marks the fan-out jobs of a broadcast's later pages: planned here, whatever the
topic's size or the threshold has become since its first page."""

PAGES_SECONDS = 2.0
"""How long one fan-out job of a broadcast plans page after page before it queues the
rest as a job of its own (and lets the jobs its pages queued, and other lanes, run)."""

PAGES_AT_ONCE = 2
"""Pages of a broadcast planned at once on PostgreSQL, each on its own connection."""


class FanoutOnRead:
    """The fan-out of topic events that are broadcast (see the module's description)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        queue: Queue,
        events: EventsService,
        users: UsersService,
        inbox: InboxService,
        audience: AudienceLoader,
        *,
        page_size: int,
        channels: Collection[str],
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._events = events
        self._users = users
        self._inbox = inbox
        self._audience = audience
        self._page_size = page_size
        self._channels = frozenset(channels)

    async def fanout_page(self, job: Job) -> bool:
        """Run one fan-out job of a topic event if the event is (or becomes) a broadcast:
        plan its pages from the job's own on, for ``PAGES_SECONDS`` at most, and queue
        the rest; False, having done nothing, when it is not one (then it fans out on
        write)."""
        broadcasts = self._inbox.broadcasts
        event_id: str = job.payload["event"]
        after: str | None = job.payload["after"]
        if broadcasts is None or (after is not None and not job.payload.get(BROADCAST)):
            return False  # a later page of an event fanned out on write
        now = self._clock.now()
        # Decided on a reader: an event fanned out on write costs no write transaction.
        async with self._db.reader() as conn:
            found = await self._events.load(conn, [event_id])
            if not found:
                return False  # the fan-out on write says so
            event = found[0]
            known = after is not None or await broadcasts.of_event(conn, event_id) is not None
            row = None if known else await self._broadcast(conn, event, now)
        if not known and row is None:
            return False
        ntype = self._type(event)
        if event["cancelled_at"] is not None:
            return False  # the fan-out on write ends it
        if row is not None:
            # Committed alone, before any page: in every subscriber's inbox from now on;
            # unless a cancellation came first (one that comes after waits for it).
            async with self._db.transaction() as conn:
                if await self._cancelled(conn, event_id):
                    return False
                stored = await broadcasts.store(conn, row)
            if stored:
                metrics.of(self._db).in_app_written([row], now)
                await broadcasts.announce(row)
        # Pages follow one another in this run for up to PAGES_SECONDS, each committed
        # on its own (on PostgreSQL PAGES_AT_ONCE of them at a time: one is planned while
        # another waits on the database); then the rest is queued. Run again (the process
        # died), the job starts over from its own page: what was planned since is found
        # and skipped.
        others = sorted(ntype.channels - {planner.IN_APP})
        deadline = time.monotonic() + PAGES_SECONDS
        at_once = PAGES_AT_ONCE if self._db.is_postgres else 1
        size = self._page_size
        while True:
            pages: list[list[str]] = []
            if others:
                async with self._db.transaction() as conn:
                    ids = await self._users.subscriber_page(
                        conn, event["topic"], after, size * at_once
                    )
                pages = [ids[start : start + size] for start in range(0, len(ids), size)]
            lanes: set[int] = set()
            planned = await _all(self._planned_page(event, ntype, others, p, now) for p in pages)
            for due in planned:
                lanes |= due or set()
            full = len(pages) == at_once and len(pages[-1]) == size and None not in planned
            more = full and time.monotonic() < deadline
            if not more:
                async with self._db.transaction() as conn:
                    if full:
                        last = pages[-1][-1]
                        continued = next_page(event, last, job.lane, now, **{BROADCAST: True})
                        await self._queue.enqueue(conn, [continued])
                        lanes.add(job.lane)
                    else:
                        await self._events.mark_planned(conn, [event_id])
                    await self._queue.complete(conn, [job])
            self._queue.wake(lanes)
            if not more:
                return True
            after, now = pages[-1][-1], self._clock.now()

    async def _planned_page(
        self,
        event: Mapping[str, Any],
        ntype: catalog.NotificationType,
        channels: Sequence[str],
        page: Sequence[str],
        now: dt.datetime,
    ) -> set[int] | None:
        """``_plan_page`` in a transaction of its own; None when the event was cancelled
        (nothing planned, and no page more)."""
        async with self._db.transaction() as conn:
            if await self._cancelled(conn, event["id"]):
                return None
            return await self._plan_page(conn, event, ntype, channels, page, now)

    async def _cancelled(self, conn: AsyncConnection, event_id: str) -> bool:
        """Whether the event is cancelled, held against a cancellation until the
        transaction ends (``EventsService.load``)."""
        found = await self._events.load(conn, [event_id], to_plan=True)
        return not found or found[0]["cancelled_at"] is not None

    async def _broadcast(
        self, conn: AsyncConnection, event: Mapping[str, Any], now: dt.datetime
    ) -> dict[str, Any] | None:
        """The broadcast row of an event whose fan-out starts now, if it is to be one."""
        broadcasts = self._inbox.broadcasts
        ntype = self._catalog.get(event["type"])
        if (
            broadcasts is None
            or broadcasts.min_subscribers <= 0
            or event["planned_at"] is not None
            or ntype is None
            or refusal(ntype) is not None
            or staleness.is_stale(staleness.counted_from(event), now, ntype.rules.max_age)
        ):
            return None
        if not await broadcasts.is_large(conn, event["topic"]):
            return None
        # A first job run again after it started on write (the topic grew meanwhile).
        if await history_repository.for_event(conn, event["id"], None, 1):
            return None
        try:
            content = ntype.render_in_app({**event_context(event), "recipient": {}})
        except catalog.RenderError:
            return None  # fanned out on write, which records the failure as it does
        category = self._catalog.category(ntype.category)
        return {
            "id": broadcast_id(event["id"]),
            "event_id": event["id"],
            "tenant": event["tenant"],
            "topic": event["topic"],
            "type": event["type"],
            "category": ntype.category,
            "mandatory": category.mandatory,
            "in_app_default": category.default_channels.get(planner.IN_APP),
            "critical": ntype.priority is catalog.Priority.CRITICAL,
            "title": content.title,
            "body": content.body,
            "action_url": content.action_url,
            "actor": event["actor"],
            "accepted_at": staleness.counted_from(event),
            "created_at": now,
        }

    async def _plan_page(
        self,
        conn: AsyncConnection,
        event: Mapping[str, Any],
        ntype: catalog.NotificationType,
        channels: Sequence[str],
        page: Sequence[str],
        now: dt.datetime,
    ) -> set[int]:
        """Plan and record the channels other than in-app for one page of subscribers;
        returns the lanes that got work due now."""
        event_id = event["id"]
        users = list(dict.fromkeys(page))
        await deliveries.lock_users(self._db, conn, users)
        # Under the locks: a run of this page that committed before is seen, and an
        # erasure committed before is too (one that comes after finds these rows).
        done = await deliveries.planned_recipients(conn, [(event_id, user) for user in users])
        users = [user for user in users if (event_id, user) not in done]
        rows = Rows()
        erased = await self._users.erasures(conn, users)
        forgotten = [u for u in users if u in erased and erased[u].covers(event["created_at"])]
        for user in forgotten:
            record_erased(event, channels, user, erased[user].pseudonym, rows, now)
        if forgotten:
            await self._users.forget_in_events(conn, {event_id: forgotten})
        gone = set(forgotten)
        live = [user for user in users if user not in gone]
        audience = await self._audience.load(conn, live, [event["tenant"]], [event])
        category = self._catalog.category(ntype.category)
        for user in live:
            recipient = audience.recipient(user, event)
            plan_subscriber(
                event, ntype, category, channels, self._channels, recipient, audience, rows, now
            )
        await rows.save(self._db, conn, self._queue, now)
        await digest_repository.add_entries(self._db, conn, rows.digest_entries)
        return {job.lane for job in rows.jobs if job.run_at is None or job.run_at <= now}

    def _type(self, event: Mapping[str, Any]) -> catalog.NotificationType:
        ntype = self._catalog.get(event["type"])
        if ntype is None:
            raise PlanningError(f"type {event['type']!r} is not in the catalog any more")
        return ntype


async def _all(steps: Iterable[Awaitable[set[int] | None]]) -> list[set[int] | None]:
    """Run ``steps`` at once; the first failure is raised as it is, once the others
    were cancelled (and have ended)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
