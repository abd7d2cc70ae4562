"""Runs the plan: turns events into deliveries and inbox items.

Every handler records everything a batch of jobs produced and completes those jobs in
one transaction, with ids derived from (event, recipient, channel): a job that runs
twice, because its worker died before the commit or its lease ran out, writes nothing
twice. Live pushes go out only after the commit.

What waits — a delay, quiet hours, an email that depends on the in-app item staying
unseen, a digest window — waits as a job with a future ``run_at``: a timer kept in the
database, which fires after a restart as it would have before.

How one recipient is planned and recorded is ``recipient_plans``'; the planning job's
shape (its recipients, its partitions, its pieces, its weight), ``plan_jobs``'; the jobs
that carry deliveries to their channels, ``send_jobs``'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import (
    batch_books,
    broadcast,
    digest_repository,
    plan_jobs,
    recipient_plans,
    repository,
)
from tidings.delivery.audience import AudienceLoader
from tidings.delivery.collapse import open_collapser
from tidings.delivery.plan_rows import COLLAPSED_INTO, PlanningError, Rows, next_page
from tidings.delivery.repository import StateChange
from tidings.delivery.send_jobs import AVAILABLE_CHANNELS
from tidings.delivery.states import DeliveryState
from tidings.events.jobs import PLAN_JOB
from tidings.events.service import EventsService
from tidings.inbox.service import InboxService
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.counters import Counters, NewHit, NewMark, undo_on_error
from tidings.kit.counters_sql import SqlCounters
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue
from tidings.planning import planner
from tidings.planning.rules import staleness
from tidings.users.service import UsersService


class Pipeline:
    """The planning stage's job handlers."""

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
        counters: Counters | None = None,
        channels: Collection[str] = AVAILABLE_CHANNELS,
    ) -> None:
        """On a partitioned queue a topic's pages become planning jobs, split by recipient
        partition (``partition``); otherwise each page is planned where it is read. Dedup marks
        and throttle hits live in ``counters``, the database's own by default.
        ``channels`` are those this deployment delivers: the built-in ones and the
        plugin channels it runs."""
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._events = events
        self._users = users
        self._inbox = inbox
        self._audience = audience
        self._page_size = page_size
        queue.add_splitter(PLAN_JOB, plan_jobs.partition)
        self._counters = counters or SqlCounters(db)
        self._channels = frozenset(channels)

    async def plan(self, jobs: Sequence[Job]) -> None:
        """Plan events addressed to listed recipients: every job given, one transaction."""
        event_ids = [event_id for job in jobs for event_id in job.payload["events"]]
        async with self._db.transaction() as conn:
            loaded = await self._events.load(conn, event_ids, to_plan=True)
            found = {row["id"]: row for row in loaded}
            missing = [event_id for event_id in event_ids if event_id not in found]
            if missing:
                raise PlanningError(f"events not found: {', '.join(missing[:5])}")
            # A cancelled event is planned for no one (it had no deliveries to stop yet).
            work = [
                (found[event_id], recipients)
                for job in jobs
                for event_id, recipients in plan_jobs.planned_for(job.payload, found)
                if found[event_id]["cancelled_at"] is None
            ]
            items, lanes = await self._plan_batch(conn, work)
            await self._events.mark_planned(conn, event_ids)
            await self._queue.complete(conn, jobs)
        self._queue.wake(lanes)
        await self._inbox.announce(items)

    async def fanout(self, jobs: Sequence[Job]) -> None:
        """Plan one page of a topic event's subscribers per job, and queue the next page;
        a large topic's event is broadcast instead (``broadcast``: fan-out on read)."""
        on_read = broadcast.FanoutOnRead(
            self._db,
            self._clock,
            self._catalog,
            self._queue,
            self._events,
            self._users,
            self._inbox,
            self._audience,
            page_size=self._page_size,
            channels=self._channels,
        )
        for job in jobs:
            if not await on_read.fanout_page(job):
                await self._fanout_page(job)

    async def _fanout_page(self, job: Job) -> None:
        event_id: str = job.payload["event"]
        after: str | None = job.payload["after"]
        async with self._db.transaction() as conn:
            found = await self._events.load(conn, [event_id], to_plan=True)
            if not found:
                raise PlanningError(f"event not found: {event_id}")
            event = found[0]
            if event["cancelled_at"] is not None:
                # Cancelled: no page more (those planned before were stopped with it).
                await self._events.mark_planned(conn, [event_id])
                await self._queue.complete(conn, [job])
                return
            page = await self._users.subscriber_page(conn, event["topic"], after, self._page_size)
            if self._queue.partitioned:
                # Hand the page to the planners, one share per recipient partition, so a
                # topic's subscribers are planned in parallel and in order per person.
                items: list[Mapping[str, Any]] = []
                lanes = {job.lane}
                await self._queue.enqueue(
                    conn, [plan_jobs.page_job(event_id, after, page, job.lane)]
                )
            else:
                items, lanes = await self._plan_batch(conn, [(event, page)])
            if len(page) == self._page_size:
                now = self._clock.now()
                await self._queue.enqueue(conn, [next_page(event, page[-1], job.lane, now)])
                lanes.add(job.lane)
            else:
                await self._events.mark_planned(conn, [event_id])
            await self._queue.complete(conn, [job])
        self._queue.wake(lanes)
        await self._inbox.announce(items)

    async def deliver_in_app(self, jobs: Sequence[Job]) -> None:
        """Write held in-app items whose time has come (a type's delay)."""
        now = self._clock.now()
        delivery_ids = [j.payload["delivery"] for j in jobs]
        async with self._db.transaction() as conn:
            owners = {d["user_id"] for d in await repository.get_many(conn, delivery_ids)}
            await repository.lock_users(self._db, conn, owners)
            # Read again under the locks: a concurrent run of the same job may just have
            # delivered them.
            held = [
                d
                for d in await repository.get_many(conn, delivery_ids)
                if d["state"] == DeliveryState.SCHEDULED
            ]
            found = {
                e["id"]: e for e in await self._events.load(conn, [d["event_id"] for d in held])
            }
            audience = await self._audience.load(
                conn,
                {d["user_id"] for d in held},
                {e["tenant"] for e in found.values()},
                found.values(),
            )
            silent = {j.payload["delivery"]: bool(j.payload.get("silent")) for j in jobs}
            rows = Rows()
            pending = []
            for delivery in held:
                event = found[delivery["event_id"]]
                ntype = self._type(event)
                if event["cancelled_at"] is not None:
                    # Its cancellation stops it too, if it has not come to it yet.
                    rows.changes.append(
                        StateChange(
                            delivery["id"],
                            DeliveryState.SUPPRESSED,
                            planner.SuppressionReason.CANCELLED.value,
                        )
                    )
                    continue
                if staleness.is_stale(staleness.counted_from(event), now, ntype.rules.max_age):
                    rows.changes.append(
                        StateChange(
                            delivery["id"],
                            DeliveryState.SUPPRESSED,
                            planner.SuppressionReason.STALE.value,
                        )
                    )
                    continue
                pending.append((delivery, event, ntype))
            collapser = await open_collapser(
                self._inbox,
                conn,
                [(e, audience.recipient(d["user_id"], e), t) for d, e, t in pending],
            )
            for delivery, event, ntype in pending:
                recipient = audience.recipient(delivery["user_id"], event)
                item_id = collapser.place(
                    ntype, event, recipient, delivery["id"], now, silent=silent[delivery["id"]]
                )
                rows.changes.append(
                    StateChange(
                        delivery["id"],
                        DeliveryState.DELIVERED,
                        detail=None if item_id == delivery["id"] else f"{COLLAPSED_INTO}{item_id}",
                    )
                )
            await rows.save(self._db, conn, self._queue, now)
            items = await self._inbox.store(conn, collapser.rows)
            await self._queue.complete(conn, jobs)
        await self._inbox.announce(items)

    def _type(self, event: Mapping[str, Any]) -> catalog.NotificationType:
        ntype = self._catalog.get(event["type"])
        if ntype is None:
            raise PlanningError(f"type {event['type']!r} is not in the catalog any more")
        return ntype

    async def _plan_batch(
        self, conn: AsyncConnection, work: Sequence[tuple[Mapping[str, Any], Sequence[str]]]
    ) -> tuple[list[Mapping[str, Any]], set[int]]:
        """Plan every (event, recipients) pair and record the outcome; returns the inbox
        items to announce once the transaction commits, and the lanes that got work due
        now (timers need no wake-up: they are not due yet)."""
        now = self._clock.now()
        pairs = [(event, self._type(event), list(dict.fromkeys(users))) for event, users in work]
        await repository.lock_users(self._db, conn, {u for _, _, users in pairs for u in users})
        # A job that runs again after its first run committed (its lease ran out while it
        # worked) must not decide again: stateful rules would now decide differently.
        # Checked under the recipients' locks, so a run that waited for another sees it.
        done = await repository.planned_recipients(
            conn, [(e["id"], user) for e, _, users in pairs for user in users]
        )
        if done:
            pairs = [
                (e, t, [u for u in users if (e["id"], u) not in done]) for e, t, users in pairs
            ]
        rows = Rows()
        pairs = await self._drop_erased(conn, pairs, rows, now)
        all_users = {user for _, _, users in pairs for user in users}
        audience = await self._audience.load(
            conn, all_users, {e["tenant"] for e, _, _ in pairs}, [e for e, _, _ in pairs]
        )
        books = await batch_books.load(conn, self._counters, self._catalog, pairs, audience, now)
        collapser = await open_collapser(
            self._inbox,
            conn,
            [
                (event, audience.recipient(user, event), ntype)
                for event, ntype, users in pairs
                if ntype.rules.collapse is not None
                for user in users
            ],
        )
        for event, ntype, users in pairs:
            for user in users:
                mine = books.owned_by(ids.derived_id(event["id"], user))
                recipient = audience.recipient(user, event)
                recipient_plans.record_recipient(
                    event,
                    ntype,
                    self._catalog.category(ntype.category),
                    self._channels,
                    recipient,
                    audience,
                    mine,
                    collapser,
                    rows,
                    now,
                )
        marks, hits = await self._record(conn, rows, books, now)
        due = {job.lane for job in rows.jobs if job.run_at is None or job.run_at <= now}
        # Counters outside the database (Redis) do not roll back with this transaction.
        async with undo_on_error(self._counters, marks, hits):
            return await self._inbox.store(conn, collapser.rows), due

    async def _drop_erased(
        self,
        conn: AsyncConnection,
        pairs: list[tuple[Mapping[str, Any], catalog.NotificationType, list[str]]],
        rows: Rows,
        now: dt.datetime,
    ) -> list[tuple[Mapping[str, Any], catalog.NotificationType, list[str]]]:
        """Leave out recipients erased after their event was accepted: each gets a
        notification whose every channel is suppressed (``erased``) under their
        pseudonym, and the event names them by it. Read under the recipients' locks, so
        an erasure committed before is seen, and one that comes after finds these rows."""
        erased = await self._users.erasures(conn, {u for _, _, users in pairs for u in users})
        if not erased:
            return pairs
        kept = []
        forgotten: dict[str, list[str]] = {}
        for event, ntype, users in pairs:
            live = []
            for user in users:
                erasure = erased.get(user)
                if erasure is None or not erasure.covers(event["created_at"]):
                    live.append(user)
                    continue
                forgotten.setdefault(event["id"], []).append(user)
                recipient_plans.record_erased(event, ntype, user, erasure.pseudonym, rows, now)
            kept.append((event, ntype, live))
        await self._users.forget_in_events(conn, forgotten)
        return kept

    async def _record(
        self, conn: AsyncConnection, rows: Rows, books: batch_books.BatchBooks, now: dt.datetime
    ) -> tuple[list[NewMark], list[NewHit]]:
        """Write the batch's rows, then its counters, last and while the recipients' locks
        are held, so the next batch for them sees them; returns the counters written."""
        await rows.save(self._db, conn, self._queue, now)
        await digest_repository.add_entries(self._db, conn, rows.digest_entries)
        marks = [
            NewMark(key, books.dedup_users[key], owner, first, expires)
            for key, first, expires, owner in books.books.dedup.marked_by()
        ]
        hits = [NewHit(scope, owner, at) for scope, at, owner in books.books.throttle.admitted_by()]
        async with undo_on_error(self._counters, marks, hits):
            await self._counters.save_marks(conn, marks, now=now)
            await self._counters.save_hits(
                conn, hits, forget_before=now - batch_books.throttle_horizon(self._catalog)
            )
        return marks, hits
