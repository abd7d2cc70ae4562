"""Dry run: what the planner would decide for an event, recipient by recipient and
channel by channel, with nothing written and no counter changed.

The event is checked as a publish checks it (type, scopes, schema) and planned on a
read connection with the recipients' stored profiles (and those the event carries),
preferences, quiet hours, subscriptions and the dedup and throttle state as they are:
the same ``recipient_plans.decide`` planning uses. The decision is taken at the time
the event would be planned: now, or its ``send_at``. What it does not foresee: another
event that comes first, a preference changed before then, the in-app item being seen
(email-if-unseen says "hold" until when it would look).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tidings import catalog
from tidings.delivery import batch_books, recipient_plans
from tidings.delivery.audience import AudienceLoader
from tidings.events.service import Prepared
from tidings.kit.clock import Clock
from tidings.kit.counters import Counters
from tidings.kit.db import Database
from tidings.planning import planner
from tidings.planning.planner import Action
from tidings.users.service import UsersService

MAX_SUBSCRIBERS = 1000
"""A topic event's dry run plans its first this many subscribers (by id)."""

DECISIONS = {
    Action.DELIVER: "deliver",
    Action.HOLD: "hold",
    Action.DIGEST: "digest",
    Action.SUPPRESS: "suppress",
}


@dataclass(frozen=True)
class ChannelDecision:
    channel: str
    decision: str
    reason: str | None
    until: dt.datetime | None


@dataclass(frozen=True)
class RecipientDecision:
    user_id: str
    channels: list[ChannelDecision]


@dataclass(frozen=True)
class DryRunResult:
    planned_at: dt.datetime
    recipients: list[RecipientDecision]
    truncated: bool


class DryRun:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        users: UsersService,
        audience: AudienceLoader,
        counters: Counters,
        channels: Collection[str],
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._users = users
        self._audience = audience
        self._counters = counters
        self._channels = frozenset(channels)

    async def plan(self, prepared: Prepared) -> DryRunResult:
        """The planner's decisions for ``prepared`` (checked by ``EventsService.prepare``)."""
        now = self._clock.now()
        send_at: dt.datetime | None = prepared.row["send_at"]
        at = max(now, send_at) if send_at is not None else now
        event = _event_row(prepared, now)
        ntype = self._catalog.get(event["type"])
        assert ntype is not None  # prepare() refused unknown types
        category = self._catalog.category(ntype.category)
        async with self._db.reader() as conn:
            if event["topic"] is not None:
                users = await self._users.subscriber_page(
                    conn, event["topic"], None, MAX_SUBSCRIBERS + 1
                )
            else:
                users = list(dict.fromkeys(event["recipients"]))
            truncated = len(users) > MAX_SUBSCRIBERS
            users = users[:MAX_SUBSCRIBERS]
            audience = await self._audience.load(conn, users, [event["tenant"]], [event])
            books = await batch_books.load(
                conn, self._counters, self._catalog, [(event, ntype, users)], audience, at
            )
        decided = []
        for user in users:
            recipient = audience.recipient(user, event)
            plan = recipient_plans.decide(
                event, ntype, category, self._channels, recipient, audience, books, at
            )
            decided.append(RecipientDecision(user, _channels(plan)))
        return DryRunResult(planned_at=at, recipients=decided, truncated=truncated)


def _event_row(prepared: Prepared, now: dt.datetime) -> dict[str, Any]:
    """The event as planning reads it, had it been stored now: every profile it carries
    serves its deliveries (nothing is stored)."""
    carried = {p["id"]: {k: v for k, v in p.items() if k != "id"} for p in prepared.profiles}
    profiles = {**(prepared.row["recipient_profiles"] or {}), **carried}
    return {
        **prepared.row,
        "created_at": now,
        "planned_at": None,
        "cancelled_at": None,
        "recipient_profiles": profiles or None,
    }


def _channels(plan: planner.Plan) -> list[ChannelDecision]:
    return [
        ChannelDecision(
            channel=p.channel,
            decision=DECISIONS[p.action],
            reason=None if p.reason is None else str(p.reason),
            until=p.not_before,
        )
        for p in sorted(plan.channels, key=lambda p: p.channel)
    ]
