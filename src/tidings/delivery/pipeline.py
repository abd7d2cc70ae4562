"""Runs the plan: turns events into notifications, deliveries and inbox items.

Both handlers record everything a batch of jobs produced and complete those jobs in one
transaction, with ids derived from (event, recipient, channel): a job that runs twice,
because its worker died before the commit or its lease ran out, writes nothing twice.
Live pushes go out only after the commit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import repository
from tidings.delivery.states import DeliveryState
from tidings.email.suppressions import Suppressions, normalise_address
from tidings.events.service import FANOUT_JOB, PLAN_JOB, EventsService
from tidings.inbox.service import InboxService
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue
from tidings.planning import planner
from tidings.preferences.service import OptOuts, PreferencesService
from tidings.users.service import UsersService

AVAILABLE_CHANNELS = frozenset({planner.IN_APP, planner.EMAIL})
EMAIL_JOB = "email"


class PlanningError(Exception):
    """A job that cannot be planned as it is (its event is gone, its type unknown)."""


@dataclass
class _Rows:
    notifications: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[NewJob] = field(default_factory=list)


@dataclass(frozen=True)
class _Audience:
    """What the planner needs to know about a batch's recipients, read in one go."""

    profiles: Mapping[str, Mapping[str, Any]]
    opt_outs: OptOuts
    suppressed: Mapping[str, str]


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
        preferences: PreferencesService,
        suppressions: Suppressions,
        *,
        page_size: int,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._events = events
        self._users = users
        self._inbox = inbox
        self._preferences = preferences
        self._suppressions = suppressions
        self._page_size = page_size

    async def plan(self, jobs: Sequence[Job]) -> None:
        """Plan events addressed to listed recipients: every job given, one transaction."""
        event_ids = [event_id for job in jobs for event_id in job.payload["events"]]
        async with self._db.transaction() as conn:
            found = {row["id"]: row for row in await self._events.load(conn, event_ids)}
            missing = [event_id for event_id in event_ids if event_id not in found]
            if missing:
                raise PlanningError(f"events not found: {', '.join(missing[:5])}")
            recipients = {user for row in found.values() for user in row["recipients"] or ()}
            audience = await self._audience(conn, recipients, found.values())
            rows = _Rows()
            for event_id in event_ids:
                event = found[event_id]
                self._plan_event(event, event["recipients"], audience, rows)
            new_items = await self._record(conn, rows)
            await self._events.mark_planned(conn, event_ids)
            await self._queue.complete(conn, jobs)
        if rows.jobs:
            self._queue.wake()
        await self._inbox.announce(new_items)

    async def fanout(self, jobs: Sequence[Job]) -> None:
        """Plan one page of a topic event's subscribers per job, and queue the next page."""
        for job in jobs:
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
            audience = await self._audience(conn, page, [event])
            rows = _Rows()
            self._plan_event(event, page, audience, rows)
            new_items = await self._record(conn, rows)
            if len(page) == self._page_size:
                await self._queue.enqueue(
                    conn,
                    [
                        NewJob(
                            id=f"{FANOUT_JOB}:{event_id}:{page[-1]}",
                            kind=FANOUT_JOB,
                            payload={"event": event_id, "after": page[-1]},
                            lane=job.lane,
                        )
                    ],
                )
            else:
                await self._events.mark_planned(conn, [event_id])
            await self._queue.complete(conn, [job])
        self._queue.wake()
        await self._inbox.announce(new_items)

    def split(self, job: Job) -> list[NewJob]:
        """A failing multi-event planning job, as one job per event, so one bad event
        cannot hold back the others."""
        if job.kind != PLAN_JOB or len(job.payload["events"]) < 2:
            return []
        return [
            NewJob(
                id=f"{PLAN_JOB}:{event_id}",
                kind=PLAN_JOB,
                payload={"events": [event_id]},
                lane=job.lane,
            )
            for event_id in job.payload["events"]
        ]

    async def _audience(
        self,
        conn: AsyncConnection,
        user_ids: Collection[str],
        events: Iterable[Mapping[str, Any]],
    ) -> _Audience:
        profiles = await self._users.profiles(conn, user_ids)
        categories = {
            ntype.category
            for event in events
            if (ntype := self._catalog.get(event["type"])) is not None
        }
        addresses = [p["email"] for p in profiles.values() if p.get("email")]
        return _Audience(
            profiles=profiles,
            opt_outs=await self._preferences.opt_outs(conn, user_ids, categories),
            suppressed=await self._suppressions.among(conn, addresses) if addresses else {},
        )

    def _plan_event(
        self,
        event: Mapping[str, Any],
        user_ids: Sequence[str],
        audience: _Audience,
        rows: _Rows,
    ) -> None:
        ntype = self._catalog.get(event["type"])
        if ntype is None:
            raise PlanningError(f"type {event['type']!r} is not in the catalog any more")
        mandatory = self._catalog.category(ntype.category).mandatory
        now = self._clock.now()
        event_id = event["id"]
        base_context = {
            "data": event["data"],
            "actor": event["actor"],
            "event": {"id": event_id, "type": event["type"], "tenant": event["tenant"]},
        }
        for user_id in dict.fromkeys(user_ids):
            recipient = planner.Recipient.from_profile(user_id, audience.profiles.get(user_id))
            facts = planner.Facts(
                mandatory=mandatory,
                opted_out=frozenset(
                    channel
                    for channel in ntype.channels
                    if audience.opt_outs.channel_off(user_id, ntype.category, channel)
                ),
                address_suppressed=recipient.email is not None
                and normalise_address(recipient.email) in audience.suppressed,
            )
            notification_id = ids.derived_id(event_id, user_id)
            rows.notifications.append(
                {
                    "id": notification_id,
                    "event_id": event_id,
                    "user_id": user_id,
                    "type": event["type"],
                    "created_at": now,
                }
            )
            decisions = planner.plan_recipient(ntype.channels, AVAILABLE_CHANNELS, recipient, facts)
            for decision in decisions:
                delivery_id = ids.derived_id(event_id, user_id, decision.channel)
                final = _first_state(decision)
                reason = decision.reason.value if decision.reason else None
                rows.deliveries.append(
                    {
                        "id": delivery_id,
                        "notification_id": notification_id,
                        "event_id": event_id,
                        "user_id": user_id,
                        "channel": decision.channel,
                        "state": final.value,
                        "reason": reason,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                for state in (DeliveryState.PLANNED, final):
                    rows.transitions.append(
                        {
                            "id": ids.derived_id(delivery_id, state.value),
                            "delivery_id": delivery_id,
                            "state": state.value,
                            "reason": reason if state is final else None,
                            "at": now,
                        }
                    )
                if decision.deliver and decision.channel == planner.EMAIL:
                    rows.jobs.append(
                        NewJob(
                            id=f"{EMAIL_JOB}:{delivery_id}",
                            kind=EMAIL_JOB,
                            payload={"delivery": delivery_id},
                            lane=ntype.priority.lane,
                        )
                    )
                if decision.deliver and decision.channel == planner.IN_APP:
                    content = ntype.render_in_app(
                        {**base_context, "recipient": recipient.as_context()}
                    )
                    rows.inbox.append(
                        {
                            "id": delivery_id,
                            "user_id": user_id,
                            "tenant": event["tenant"],
                            "event_id": event_id,
                            "type": event["type"],
                            "category": ntype.category,
                            "title": content.title,
                            "body": content.body,
                            "action_url": content.action_url,
                            "actor": event["actor"],
                            "created_at": now,
                        }
                    )

    async def _record(self, conn: AsyncConnection, rows: _Rows) -> list[Mapping[str, Any]]:
        await self._queue.enqueue(conn, rows.jobs)
        await repository.record(
            self._db,
            conn,
            notification_rows=rows.notifications,
            delivery_rows=rows.deliveries,
            transition_rows=rows.transitions,
        )
        return await self._inbox.store(conn, rows.inbox)


def _first_state(decision: planner.Decision) -> DeliveryState:
    """Where a new delivery starts: in-app is delivered by being written; email waits for
    its send job; a "no" is final."""
    if not decision.deliver:
        return DeliveryState.SUPPRESSED
    if decision.channel == planner.IN_APP:
        return DeliveryState.DELIVERED
    return DeliveryState.SCHEDULED
