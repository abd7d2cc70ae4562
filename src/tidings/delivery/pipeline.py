"""Runs the plan: turns events into deliveries and inbox items.

Every handler records everything a batch of jobs produced and completes those jobs in
one transaction, with ids derived from (event, recipient, channel): a job that runs
twice, because its worker died before the commit or its lease ran out, writes nothing
twice. Live pushes go out only after the commit.

What waits — a delay, quiet hours, an email that depends on the in-app item staying
unseen, a digest window — waits as a job with a future ``run_at``: a timer kept in the
database, which fires after a restart as it would have before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import batch_books, broadcast, digests, repository, rule_state
from tidings.delivery.audience import Audience, AudienceLoader
from tidings.delivery.collapse import Collapser, open_collapser
from tidings.delivery.plan_rows import (
    COLLAPSED_INTO,
    PlanningError,
    Rows,
    event_context,
    next_page,
    until,
)
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.events.service import PLAN_JOB, EventsService
from tidings.inbox.service import InboxService
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.counters import Counters, NewHit, NewMark, undo_on_error
from tidings.kit.counters_sql import SqlCounters
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue, partition_of
from tidings.planning import planner
from tidings.planning.planner import Action
from tidings.planning.rules import staleness
from tidings.planning.rules.digest_schedule import Cadence
from tidings.users.service import UsersService

AVAILABLE_CHANNELS = frozenset({planner.IN_APP, planner.EMAIL})
EMAIL_JOB = "email"
IN_APP_JOB = "in_app"
CHANNEL_JOB = "channel"
"""A delivery on a plugin channel; its payload names the channel."""


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
        queue.add_splitter(PLAN_JOB, self.partition)
        self._counters = counters or SqlCounters(db)
        self._channels = frozenset(channels)

    async def plan(self, jobs: Sequence[Job]) -> None:
        """Plan events addressed to listed recipients: every job given, one transaction."""
        event_ids = [event_id for job in jobs for event_id in job.payload["events"]]
        async with self._db.transaction() as conn:
            found = {row["id"]: row for row in await self._events.load(conn, event_ids)}
            missing = [event_id for event_id in event_ids if event_id not in found]
            if missing:
                raise PlanningError(f"events not found: {', '.join(missing[:5])}")
            work = [
                (found[event_id], recipients)
                for job in jobs
                for event_id, recipients in _planned_for(job.payload, found)
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
            found = await self._events.load(conn, [event_id])
            if not found:
                raise PlanningError(f"event not found: {event_id}")
            event = found[0]
            page = await self._users.subscriber_page(conn, event["topic"], after, self._page_size)
            if self._queue.partitioned:
                # Hand the page to the planners, one share per recipient partition, so a
                # topic's subscribers are planned in parallel and in order per person.
                items: list[Mapping[str, Any]] = []
                lanes = {job.lane}
                await self._queue.enqueue(conn, [_page_plan_job(event_id, after, page, job.lane)])
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

    def split(self, job: Job) -> list[NewJob]:
        """A failing multi-event planning job, as one job per event, so one bad event
        cannot hold back the others."""
        if job.kind != PLAN_JOB or len(job.payload["events"]) < 2:
            return []
        recipients = job.payload.get("recipients")
        # One partition's share names its recipients: its pieces must not take the ids of
        # another partition's pieces of the same job.
        share = (
            ""
            if recipients is None
            else "/" + min((user for users in recipients.values() for user in users), default="")
        )
        return [
            NewJob(
                id=f"{job.id}/{event_id}{share}",
                kind=PLAN_JOB,
                payload={"events": [event_id]}
                if recipients is None
                else {"events": [event_id], "recipients": {event_id: recipients[event_id]}},
                lane=job.lane,
            )
            for event_id in job.payload["events"]
        ]

    @staticmethod
    def partition(payload: Mapping[str, Any], partitions: int) -> dict[int, dict[str, Any]]:
        """A planning job cut into one job per recipient partition: each share lists the
        events that have recipients there, and those recipients."""
        recipients: Mapping[str, Sequence[str]] | None = payload.get("recipients")
        if recipients is None:
            # Written before planning jobs carried their recipients: read them back.
            return {0: dict(payload)}
        shares: dict[int, dict[str, list[str]]] = {}
        for event_id in payload["events"]:
            for user in recipients.get(event_id, ()):
                share = shares.setdefault(partition_of(user, partitions), {})
                share.setdefault(event_id, []).append(user)
        return {
            partition: {"events": list(share), "recipients": share}
            for partition, share in shares.items()
        }

    @staticmethod
    def weight(job: Job) -> int:
        """How much work a planning job is: its events, so one claim is sized to a batch."""
        return len(job.payload.get("events", ())) or 1

    async def deliver_in_app(self, jobs: Sequence[Job]) -> None:
        """Write held in-app items whose time has come (a type's delay)."""
        now = self._clock.now()
        delivery_ids = [j.payload["delivery"] for j in jobs]
        async with self._db.transaction() as conn:
            owners = {d["user_id"] for d in await repository.get_many(conn, delivery_ids)}
            await rule_state.lock_users(self._db, conn, owners)
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
                if staleness.is_stale(event["created_at"], now, ntype.rules.max_age):
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
        await rule_state.lock_users(self._db, conn, {u for _, _, users in pairs for u in users})
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
                self._plan_one(event, ntype, recipient, audience, mine, collapser, rows, now)
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
                _record_erased(event, ntype, user, erasure.pseudonym, rows, now)
            kept.append((event, ntype, live))
        await self._users.forget_in_events(conn, forgotten)
        return kept

    def _plan_one(
        self,
        event: Mapping[str, Any],
        ntype: catalog.NotificationType,
        recipient: planner.Recipient,
        audience: Audience,
        books: batch_books.BatchBooks,
        collapser: Collapser,
        rows: Rows,
        now: dt.datetime,
    ) -> None:
        event_id = event["id"]
        category = self._catalog.category(ntype.category)
        prefs = audience.preferences_of(recipient.id, event["tenant"])
        critical = ntype.priority is catalog.Priority.CRITICAL
        situation = planner.Situation(
            now=now,
            created_at=event["created_at"],
            rules=ntype.rules,
            category=ntype.category,
            critical=critical,
            quiet_hours=prefs.quiet_hours.value,
            # A critical notification never waits for tomorrow's digest, whatever was chosen
            # (mandatory categories are always instant already).
            digest_cadence=Cadence() if critical else prefs.digest(category).value,
            dedup_key=books.dedup_keys.get((event_id, recipient.id)),
        )
        plan = planner.plan_notification(
            ntype.channels,
            self._channels,
            recipient,
            audience.facts(recipient, event["tenant"], category, ntype.channels),
            situation,
            books.books,
        )
        notification_id = ids.derived_id(event_id, recipient.id)
        in_app_item: str | None = None
        by_channel = {p.channel: p for p in plan.channels}
        in_app = by_channel.get(planner.IN_APP)
        if in_app is not None and in_app.action is Action.DELIVER:
            in_app_item = collapser.place(
                ntype,
                event,
                recipient,
                ids.derived_id(event_id, recipient.id, planner.IN_APP),
                now,
                silent=in_app.silent,
            )
        elif in_app is not None and in_app.action is Action.HOLD:
            in_app_item = ids.derived_id(event_id, recipient.id, planner.IN_APP)
        for channel_plan in plan.channels:
            self._record_channel(
                event, ntype, recipient, notification_id, channel_plan, in_app_item, rows, now
            )
        for digest in plan.digests:
            entry, timer = digests.entry(event, ntype, recipient, digest, now)
            rows.digest_entries.append(entry)
            rows.jobs.append(timer)

    def _record_channel(
        self,
        event: Mapping[str, Any],
        ntype: catalog.NotificationType,
        recipient: planner.Recipient,
        notification_id: str,
        plan: planner.ChannelPlan,
        in_app_item: str | None,
        rows: Rows,
        now: dt.datetime,
    ) -> None:
        delivery_id = ids.derived_id(event["id"], recipient.id, plan.channel)
        state, detail = {
            Action.SUPPRESS: (DeliveryState.SUPPRESSED, None),
            Action.DIGEST: (DeliveryState.SCHEDULED, until(plan.not_before)),
            Action.HOLD: (DeliveryState.SCHEDULED, until(plan.not_before)),
            Action.DELIVER: (
                DeliveryState.DELIVERED
                if plan.channel == planner.IN_APP
                else DeliveryState.SCHEDULED,
                None,
            ),
        }[plan.action]
        delivered_in_app = plan.channel == planner.IN_APP and plan.action is Action.DELIVER
        if delivered_in_app and in_app_item != delivery_id:
            detail = f"{COLLAPSED_INTO}{in_app_item}"
        if plan.reason == planner.SuppressionReason.DEDUPLICATED:
            detail = _dedup_detail(event, ntype, recipient)
        rows.delivery(
            delivery_id=delivery_id,
            notification_id=notification_id,
            event_id=event["id"],
            user_id=recipient.id,
            type=event["type"],
            channel=plan.channel,
            state=state,
            reason=plan.reason,
            detail=detail,
            now=now,
            # Into an item of its own: the item is the delivery.
            is_item=delivered_in_app and in_app_item == delivery_id,
        )
        job = _send_job(plan, delivery_id, recipient.id, in_app_item, ntype.priority.lane, now)
        if job is not None:
            rows.jobs.append(job)

    async def _record(
        self, conn: AsyncConnection, rows: Rows, books: batch_books.BatchBooks, now: dt.datetime
    ) -> tuple[list[NewMark], list[NewHit]]:
        """Write the batch's rows, then its counters, last and while the recipients' locks
        are held, so the next batch for them sees them; returns the counters written."""
        await rows.save(self._db, conn, self._queue, now)
        await digests.add_entries(self._db, conn, rows.digest_entries)
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


def _send_job(
    plan: planner.ChannelPlan,
    delivery_id: str,
    user_id: str,
    in_app_item: str | None,
    lane: int,
    now: dt.datetime,
) -> NewJob | None:
    """The job that carries a delivery the plan sends now or later: email's, a plugin
    channel's, or a held in-app item's; None when there is nothing to carry (in-app
    delivered now, suppressed, or folded into a digest)."""
    if plan.action not in (Action.DELIVER, Action.HOLD):
        return None
    # A type's delay and the unseen wait count from now; quiet hours end at a time.
    delayed_from = now if plan.reason in _DELAYS else None
    payload: dict[str, Any] = {"delivery": delivery_id, "user": user_id}
    if plan.channel == planner.EMAIL:
        kind = EMAIL_JOB
        if plan.unless_seen and in_app_item is not None:
            payload["unless_seen"] = in_app_item
    elif plan.channel != planner.IN_APP:
        kind = CHANNEL_JOB
        payload["channel"] = plan.channel
    elif plan.action is Action.HOLD:
        kind = IN_APP_JOB
        payload["silent"] = plan.silent
    else:
        return None
    return NewJob(
        id=f"{kind}:{delivery_id}",
        kind=kind,
        payload=payload,
        lane=lane,
        run_at=plan.not_before,
        delayed_from=delayed_from,
    )


def _record_erased(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    user: str,
    pseudonym: str,
    rows: Rows,
    now: dt.datetime,
) -> None:
    """The rows of a notification not made because its recipient was erased: the ids
    planning would have used (a job run again finds them), the pseudonym as the user."""
    notification_id = ids.derived_id(event["id"], user)
    for channel in sorted(ntype.channels):
        rows.delivery(
            delivery_id=ids.derived_id(event["id"], user, channel),
            notification_id=notification_id,
            event_id=event["id"],
            user_id=pseudonym,
            type=event["type"],
            channel=channel,
            state=DeliveryState.SUPPRESSED,
            reason=planner.SuppressionReason.ERASED,
            detail=None,
            now=now,
        )


_DELAYS = frozenset({planner.HoldReason.DELAYED, planner.HoldReason.WAITING_UNSEEN})


def _planned_for(
    payload: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, list[str]]]:
    """(event id, recipients) of a planning job: the recipients it names (one partition's
    share, or a topic's page), or else every recipient the event lists."""
    named: Mapping[str, Sequence[str]] | None = payload.get("recipients")
    return [
        (
            event_id,
            list(named[event_id])
            if named is not None and event_id in named
            else list(found[event_id]["recipients"] or ()),
        )
        for event_id in payload["events"]
    ]


def _dedup_detail(
    event: Mapping[str, Any], ntype: catalog.NotificationType, recipient: planner.Recipient
) -> str | None:
    """What a deduplicated delivery repeated: the rendered dedup key, and its window."""
    rule = ntype.rules.dedup
    if rule is None:
        return None
    context = {**event_context(event), "recipient": recipient.as_context()}
    return f"dedup key {ntype.rule_key(rule.key, context)!r} already seen within {rule.window}"


def _page_plan_job(event_id: str, after: str | None, page: Sequence[str], lane: int) -> NewJob:
    return NewJob(
        id=f"{PLAN_JOB}:{event_id}:{after or ''}",
        kind=PLAN_JOB,
        payload={"events": [event_id], "recipients": {event_id: list(page)}},
        lane=lane,
    )
