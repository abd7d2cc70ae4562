"""Sends deliveries on plugin channels: render through the plugin, send, record.

Like email, a batch is read in one go, sent concurrently, and its outcomes recorded with
the jobs' completion in one transaction; a crash between a send and that commit sends
again when the job's lease runs out, so a plugin should tolerate a rare duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from tidings import catalog, channels
from tidings.delivery import digests, repository
from tidings.delivery.plan_rows import event_context
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.delivery.worker import RetryPolicy
from tidings.events.service import EventsService, recipient_profile
from tidings.kit import metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue, backoff
from tidings.planning import planner
from tidings.planning.rules import staleness
from tidings.users.service import UsersService

log = logging.getLogger(__name__)


@dataclass
class _Send:
    job: Job
    record: Mapping[str, Any]
    channel: channels.Channel
    delivery: channels.Delivery
    payload: Mapping[str, Any]
    recipient: channels.Recipient
    created_at: dt.datetime | None


class ChannelSender:
    """The handler of ``channel`` jobs: one delivery on one plugin channel each."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        queue: Queue,
        events: EventsService,
        users: UsersService,
        plugins: Mapping[str, channels.Channel],
        retry: RetryPolicy,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._events = events
        self._users = users
        self._plugins = plugins
        self._retry = retry

    async def send(self, jobs: Sequence[Job]) -> None:
        """Send one batch of ``channel`` jobs."""
        now = self._clock.now()
        changes: list[StateChange] = []
        finished: list[Job] = []
        sends: list[_Send] = []
        async with self._db.reader() as conn:
            records = {
                d["id"]: d
                for d in await repository.get_many(conn, [j.payload["delivery"] for j in jobs])
            }
            events = {
                e["id"]: e
                for e in await self._events.load(
                    conn, list({d["event_id"] for d in records.values()})
                )
            }
            profiles = await self._users.profiles(conn, {d["user_id"] for d in records.values()})
            digest_rows = await digests.get(
                conn, [j.payload["digest"] for j in jobs if j.payload.get("digest")]
            )
        for job in jobs:
            record = records.get(job.payload["delivery"])
            if record is None or record["state"] != DeliveryState.SCHEDULED:
                finished.append(job)  # erased, or already sent by an earlier run
                continue
            plugin = self._plugins.get(job.payload["channel"])
            event = events.get(record["event_id"])
            digest = digest_rows.get(job.payload.get("digest", ""))
            reason = None
            if plugin is None:
                reason = planner.SuppressionReason.CHANNEL_UNAVAILABLE
            elif event is not None and self._stale(event, now):
                reason = planner.SuppressionReason.STALE
            if reason is not None or plugin is None:
                why = None if reason is None else reason.value
                changes.append(StateChange(record["id"], DeliveryState.SUPPRESSED, why))
                finished.append(job)
                continue
            recipient = planner.Recipient.from_profile(
                record["user_id"],
                recipient_profile(event, record["user_id"], profiles.get(record["user_id"])),
            )
            try:
                sends.append(self._prepare(job, record, plugin, event, digest, recipient))
            except (catalog.RenderError, KeyError) as exc:
                changes.append(
                    StateChange(record["id"], DeliveryState.FAILED, "render_error", str(exc))
                )
                finished.append(job)

        outcomes = await asyncio.gather(*(self._hand_over(item) for item in sends))
        measured = metrics.of(self._db)
        retries: list[tuple[Job, str]] = []
        buried: list[tuple[Job, str]] = []
        for item, outcome in zip(sends, outcomes, strict=True):
            delivery_id = item.record["id"]
            if isinstance(outcome, channels.Delivered):
                changes.append(
                    StateChange(delivery_id, DeliveryState.DELIVERED, None, outcome.detail)
                )
                finished.append(item.job)
                if item.created_at is not None:
                    measured.delivered(item.delivery.channel, item.created_at, self._clock.now())
            elif isinstance(outcome, channels.NoAddress):
                no_address = planner.SuppressionReason.NO_ADDRESS.value
                changes.append(
                    StateChange(delivery_id, DeliveryState.SUPPRESSED, no_address, outcome.detail)
                )
                finished.append(item.job)
            elif isinstance(outcome, channels.Failed):
                changes.append(
                    StateChange(delivery_id, DeliveryState.FAILED, outcome.reason, outcome.detail)
                )
                finished.append(item.job)
            elif item.job.attempts >= self._retry.max_attempts:
                changes.append(
                    StateChange(
                        delivery_id, DeliveryState.FAILED, "retries_exhausted", outcome.detail
                    )
                )
                buried.append((item.job, f"{item.delivery.channel}: {outcome.detail}"))
            else:
                changes.append(
                    StateChange(
                        delivery_id,
                        DeliveryState.SCHEDULED,
                        "retry",
                        outcome.detail,
                        attempt=item.job.attempts + 1,
                    )
                )
                retries.append((item.job, f"{item.delivery.channel}: {outcome.detail}"))

        async with self._db.transaction() as conn:
            await repository.advance(self._db, conn, changes, self._clock.now())
            await self._queue.complete(conn, finished)
        for job, error in retries:
            delay = backoff(
                job.attempts, base=self._retry.base_seconds, cap=self._retry.cap_seconds
            )
            await self._queue.retry(job, error, self._clock.now() + dt.timedelta(seconds=delay))
        for job, error in buried:
            await self._queue.bury(job, error)

    def _prepare(
        self,
        job: Job,
        record: Mapping[str, Any],
        plugin: channels.Channel,
        event: Mapping[str, Any] | None,
        digest: Mapping[str, Any] | None,
        recipient: planner.Recipient,
    ) -> _Send:
        """What to send: the rendered payload and who it is for. Raises ``RenderError``,
        or ``KeyError`` when the event or its type is gone."""
        source = digest if digest is not None else event
        if source is None:
            raise KeyError(f"delivery {record['id']} has neither an event nor a digest")
        ntype = self._catalog.get(source["type"])
        if ntype is None:
            raise KeyError(f"type {source['type']!r} is not in the catalog any more")
        if digest is not None:
            rule = digests.rule_of(ntype)
            content = ntype.render_digest(
                {"recipient": recipient.as_context(), "digest": digests.context(digest, rule)},
                rule,
            )
            payload = plugin.render_digest(
                channels.Content(content.title, content.body, content.action_url)
            )
        else:
            assert event is not None
            context = {**event_context(event), "recipient": recipient.as_context()}
            payload = plugin.render(ntype.channel_section(plugin.name), context)
        return _Send(
            job=job,
            record=record,
            channel=plugin,
            delivery=channels.Delivery(
                id=record["id"],
                event_id=record["event_id"],
                type=ntype.key,
                channel=plugin.name,
                attempt=job.attempts,
                digest=digest is not None,
            ),
            payload=payload,
            recipient=channels.Recipient(
                id=recipient.id,
                name=recipient.name,
                email=recipient.email,
                locale=recipient.locale,
                timezone=recipient.timezone,
            ),
            created_at=None if event is None else event["created_at"],
        )

    async def _hand_over(self, item: _Send) -> channels.Outcome:
        with tracing.span(
            "channel send",
            kind=SpanKind.CLIENT,
            attributes={
                "tidings.channel": item.delivery.channel,
                "tidings.delivery_id": item.delivery.id,
            },
        ) as span:
            try:
                outcome = await item.channel.send(item.delivery, item.payload, item.recipient)
            except Exception as exc:  # a plugin's failure must not lose the batch's others
                log.exception("channel %s failed on %s", item.delivery.channel, item.delivery.id)
                outcome = channels.Retry(f"{type(exc).__name__}: {exc}")
            if not isinstance(outcome, channels.Delivered):
                span.set_status(StatusCode.ERROR, type(outcome).__name__)
            return outcome

    def _stale(self, event: Mapping[str, Any], now: dt.datetime) -> bool:
        ntype = self._catalog.get(event["type"])
        return ntype is not None and staleness.is_stale(
            event["created_at"], now, ntype.rules.max_age
        )
