"""Sends email deliveries: compose, hand to the provider, record what happened.

A batch of jobs is read in one go, its messages are sent concurrently (the provider
bounds the concurrency), and the outcomes are recorded with the jobs' completion as they
come: no more than ``COMMIT_EVERY`` messages are ever sent and not yet recorded, and
no message is handed over once half the jobs' lease has gone (the rest are given back),
so another worker never leases a job this one is still sending. A
crash after the provider accepted a message but before the commit that records it sends
it again when the job runs again — once, with the same Message-ID, which receiving
systems may use to drop it; and only for those few messages, never the whole batch.
Nothing else repeats or vanishes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import digests, repository
from tidings.delivery.plan_rows import COLLAPSED_INTO, event_context
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.delivery.worker import BatchAbandoned, RetryPolicy
from tidings.email.compose_pool import BuildFailed, Built, ComposePool
from tidings.email.composer import Draft, EmailComposer
from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import (
    Accepted,
    EmailProvider,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from tidings.email.suppressions import Suppressions, normalise_address
from tidings.events.service import EventsService, carried_addresses, recipient_profile
from tidings.inbox.service import InboxService
from tidings.kit import job_context, metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue, backoff
from tidings.planning import planner
from tidings.planning.rules import staleness
from tidings.users.service import Erasure, UsersService, pseudonym_of

log = logging.getLogger(__name__)

COMMIT_EVERY = 32
"""The most messages a batch has handed over (or is handing over) without their outcome
committed: a worker that dies mid-batch sends again at most this many. Outcomes are
committed half this many at a time, while the other half are on their way: enough to
keep a pool of SMTP connections busy, and few commits (each costs about what a dozen
state changes do)."""


IN_FLIGHT = 8
"""The most messages being sent at once when the provider does not say how many it
sends at once (``Capabilities.connections``)."""

POOL_FROM = 8
"""A batch with fewer messages to send builds them in the event loop: so few are not
worth starting the compose processes for (a batch of several is: more may follow)."""

CHUNK = 16
"""Messages rendered, then built and signed, at a time: the first are on their way while
the next are being built."""


ERASURE_SKEW = dt.timedelta(seconds=5)
"""How much earlier than a batch's read an erasure may be stamped (by another process's
clock) and still be looked for: one already committed then was seen by the read."""


@dataclass
class _Send:
    job: Job
    delivery: Mapping[str, Any]
    email: OutgoingEmail


@dataclass
class _Pending:
    """A message to send, not rendered yet."""

    job: Job
    delivery: Mapping[str, Any]
    event: Mapping[str, Any] | None
    digest: Mapping[str, Any] | None
    recipient: planner.Recipient


class EmailSender:
    """The handler of ``email`` jobs.

    Messages are rendered in the event loop, then built and DKIM-signed in a pool of
    ``compose_processes`` worker processes (None: ``compose_pool.default_processes()``;
    0: in the event loop), a chunk at a time, each chunk handed over as soon as it is
    signed. The processes start with the first batch big enough to use them; ``close``
    stops them (so does a minute without work).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        queue: Queue,
        events: EventsService,
        users: UsersService,
        suppressions: Suppressions,
        composer: EmailComposer,
        provider: EmailProvider,
        retry: RetryPolicy,
        inbox: InboxService,
        *,
        lease: dt.timedelta = dt.timedelta(seconds=30),
        compose_processes: int | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._events = events
        self._users = users
        self._suppressions = suppressions
        self._composer = composer
        self.compose_pool = ComposePool(composer.builder, compose_processes)
        self._provider = provider
        self._retry = retry
        self._inbox = inbox
        self._budget = lease.total_seconds() / 2
        """How long a batch may go on handing messages over: half its jobs' lease."""

    async def close(self) -> None:
        """Stop the compose processes (a batch still running builds in the loop)."""
        await self.compose_pool.close()

    async def send(self, jobs: Sequence[Job]) -> None:
        """Send one batch of email jobs."""
        now = self._clock.now()
        changes: list[StateChange] = []
        finished: list[Job] = []
        pending: list[_Pending] = []
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
            addresses = [p["email"] for p in profiles.values() if p.get("email")]
            addresses += sorted(carried_addresses(events.values()) - set(addresses))
            suppressed = await self._suppressions.among(conn, addresses) if addresses else {}
            watched = await _shown_in(
                conn, [j.payload["unless_seen"] for j in jobs if j.payload.get("unless_seen")]
            )
            seen_items = await self._inbox.seen(conn, set(watched.values())) if watched else set()
            seen = {watch for watch, item in watched.items() if item in seen_items}
            digest_rows = await digests.get(
                conn, [j.payload["digest"] for j in jobs if j.payload.get("digest")]
            )

        for job in jobs:
            delivery = deliveries.get(job.payload["delivery"])
            if delivery is None or delivery["state"] != DeliveryState.SCHEDULED:
                finished.append(job)  # erased, or already sent by an earlier run
                continue
            event = events.get(delivery["event_id"])
            recipient = planner.Recipient.from_profile(
                delivery["user_id"],
                recipient_profile(event, delivery["user_id"], profiles.get(delivery["user_id"])),
            )
            # The list may have grown since planning: a bounce arrived meanwhile.
            digest = digest_rows.get(job.payload.get("digest", ""))
            reason = None
            if not recipient.email:
                reason = planner.SuppressionReason.NO_ADDRESS
            elif normalise_address(recipient.email) in suppressed:
                reason = planner.SuppressionReason.ADDRESS_SUPPRESSED
            elif job.payload.get("unless_seen") in seen:
                reason = planner.SuppressionReason.SEEN_IN_APP
            elif event is not None and self._stale(event, now):
                reason = planner.SuppressionReason.STALE
            if reason is not None:
                changes.append(StateChange(delivery["id"], DeliveryState.SUPPRESSED, reason.value))
                finished.append(job)
                continue
            pending.append(_Pending(job, delivery, event, digest, recipient))

        await self._hand_over_all(pending, changes, finished, events, read_at=now)

    async def _hand_over_all(
        self,
        pending: Sequence[_Pending],
        changes: list[StateChange],
        finished: list[Job],
        events: Mapping[str, Mapping[str, Any]],
        *,
        read_at: dt.datetime,
    ) -> None:
        """Compose ``pending`` and hand the messages to the provider, several at once,
        recording outcomes as they come, with the job changes already decided
        (``changes``, ``finished``).

        Messages are rendered a chunk at a time and built and signed in the compose
        pool, a few chunks ahead of the sending (so memory holds a few chunks of signed
        messages, not the batch); each is handed over as soon as its chunk is signed.

        Before the first message and after each commit, messages to users erased since
        the batch was read are dropped (their deliveries were stopped by the erasure):
        an erasure overtakes a batch within a few messages, not at its end.

        A message takes a place in the window when it is handed over and gives it back
        once its outcome is committed: at no moment are more than ``COMMIT_EVERY``
        messages sent (or being sent) and not yet recorded, nor more being sent than the
        provider sends at once. Outcomes are committed in groups while the next messages
        are already on their way, so the window never drains in lockstep. Messages not
        handed over by the time half the lease has gone are given back to run again at
        once, before another worker could lease the jobs and send them too.
        """
        loop = asyncio.get_running_loop()
        deadline = self._hand_over_until(loop.time())
        since = read_at - ERASURE_SKEW
        waiting: deque[_Pending] = deque(pending)
        todo: deque[_Send] = deque()
        building: deque[tuple[asyncio.Future[list[Built]], list[_Pending]]] = deque()
        pooled = len(pending) >= POOL_FROM and self.compose_pool.processes > 0
        ahead = self.compose_pool.processes + 1 if pooled else 1
        # No more on their way than the provider sends at once: one handed over is being
        # sent, not waiting its turn while the lease runs out.
        in_flight = self._provider.capabilities.connections or IN_FLIGHT
        erased = await self._drop_erased([waiting], finished, since, events)
        flying: dict[asyncio.Future[Accepted | SendError], _Send] = {}
        retries: list[tuple[Job, str]] = []
        buried: list[tuple[Job, str]] = []
        unrecorded = 0
        try:
            while True:
                while waiting and len(building) < ahead:
                    chunk = [waiting.popleft() for _ in range(min(CHUNK, len(waiting)))]
                    drafts, drafted = self._drafts(chunk, changes, finished, read_at)
                    if not drafts:
                        continue
                    built: asyncio.Future[list[Built]]
                    if pooled:
                        built = asyncio.ensure_future(self.compose_pool.build(drafts))
                    else:
                        built = loop.create_future()
                        built.set_result(self.compose_pool.build_here(drafts))
                    building.append((built, drafted))
                while building and building[0][0].done():
                    built, drafted = building.popleft()
                    self._take_built(
                        drafted, built.result(), todo, changes, finished, erased, events
                    )
                while todo and len(flying) < in_flight and len(flying) + unrecorded < COMMIT_EVERY:
                    if loop.time() > deadline:
                        await self._give_back(
                            [item.job for item in todo]
                            + [item.job for _, drafted in building for item in drafted]
                            + [item.job for item in waiting]
                        )
                        todo.clear()
                        waiting.clear()
                        for built, _ in building:
                            built.cancel()
                        building.clear()
                        break
                    item = todo.popleft()
                    flying[asyncio.ensure_future(self._hand_over(item.email))] = item
                if not flying and not building:
                    if todo or waiting:
                        continue
                    break
                watched: set[asyncio.Future[Any]] = set(flying)
                if building:
                    watched.add(building[0][0])
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    sent = flying.pop(future, None)
                    if sent is None:
                        continue  # a chunk is built: taken in order above
                    self._observe([sent], [future.result()], events)
                    self._record(sent, future.result(), changes, finished, retries, buried)
                    unrecorded += 1
                if unrecorded >= COMMIT_EVERY // 2 or (unrecorded and not flying):
                    await self._commit(changes, finished, retries, buried)
                    unrecorded = 0
                    erased = await self._drop_erased(
                        [todo, waiting], finished, since, events, building=bool(building)
                    )
            await self._commit(changes, finished, retries, buried)
        except Exception as exc:
            # Some jobs are settled already (completed, retried, given back): running
            # the batch again one job at a time would send those again. The rest come
            # back when their lease runs out.
            raise BatchAbandoned(f"{type(exc).__name__}: {exc}") from exc
        finally:
            # A failed commit (the database went away) stops the batch: what is on its
            # way is abandoned (recorded by no one, so sent again when the job runs
            # again, at most COMMIT_EVERY of them); the rest is not sent.
            for future in flying:
                future.cancel()
            for built, _ in building:
                built.cancel()
            await asyncio.gather(*flying, *(built for built, _ in building), return_exceptions=True)

    def _drafts(
        self,
        chunk: Sequence[_Pending],
        changes: list[StateChange],
        finished: list[Job],
        now: dt.datetime,
    ) -> tuple[list[Draft], list[_Pending]]:
        """The chunk rendered; a message that cannot be is failed (its job finished)."""
        drafts: list[Draft] = []
        drafted: list[_Pending] = []
        for item in chunk:
            delivery_id = item.delivery["id"]
            try:
                drafts.append(
                    self._draft(item.delivery, item.event, item.digest, item.recipient, now)
                )
            except (catalog.RenderError, KeyError) as exc:
                changes.append(
                    StateChange(delivery_id, DeliveryState.FAILED, "render_error", str(exc))
                )
                finished.append(item.job)
                continue
            except ValueError as exc:  # e.g. an address no header may carry
                changes.append(
                    StateChange(delivery_id, DeliveryState.FAILED, "invalid_message", str(exc))
                )
                finished.append(item.job)
                continue
            drafted.append(item)
        return drafts, drafted

    def _take_built(
        self,
        drafted: Sequence[_Pending],
        built: Sequence[Built],
        todo: deque[_Send],
        changes: list[StateChange],
        finished: list[Job],
        erased: Mapping[str, Erasure],
        events: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Queue a built chunk's messages to be handed over; fail those that could not be
        built, and drop those to users erased meanwhile."""
        for item, result in zip(drafted, built, strict=True):
            if isinstance(result, BuildFailed):
                changes.append(
                    StateChange(
                        item.delivery["id"], DeliveryState.FAILED, "invalid_message", result.error
                    )
                )
                finished.append(item.job)
            elif _covered(item.delivery, erased, events):
                finished.append(item.job)
            else:
                todo.append(_Send(item.job, item.delivery, result))

    async def _drop_erased(
        self,
        queues: Sequence[deque[_Send] | deque[_Pending]],
        finished: list[Job],
        since: dt.datetime,
        events: Mapping[str, Mapping[str, Any]],
        *,
        building: bool = False,
    ) -> dict[str, Erasure]:
        """Take out of ``queues`` the messages of events accepted before their recipient
        was erased, by erasures made at ``since`` or later; their jobs are finished (the
        erasure suppressed the deliveries). A user created again keeps later mail.
        Returns the erasures found, for the messages being built meanwhile
        (``building``: there are some, so look even if the queues are empty)."""
        if not building and not any(queues):
            return {}
        async with self._db.reader() as conn:
            erased = await self._users.erased_since(conn, since)
        if not erased:
            return erased
        for queue in queues:
            kept = [item for item in queue if not _covered(item.delivery, erased, events)]
            if len(kept) < len(queue):
                finished.extend(
                    item.job for item in queue if _covered(item.delivery, erased, events)
                )
                queue.clear()
                queue.extend(kept)  # type: ignore[arg-type]
        return erased

    def _hand_over_until(self, now: float) -> float:
        """When to stop handing messages over: once half the lease is left, counted from
        the claim when the worker says when that was (reads and other groups of the
        batch may have used some of it already), else from now."""
        run = job_context.current()
        if run is not None and run.lease_ends is not None:
            return run.lease_ends - self._budget
        return now + self._budget

    async def _give_back(self, jobs: Sequence[Job]) -> None:
        log.warning("%d email jobs given back: their batch ran out of time", len(jobs))
        for job in jobs:
            await self._queue.release(job)

    async def _commit(
        self,
        changes: list[StateChange],
        finished: list[Job],
        retries: list[tuple[Job, str]],
        buried: list[tuple[Job, str]],
    ) -> None:
        """Record the outcomes so far, then hand back the jobs to retry and bury those
        given up on, and empty the lists: what is committed is never sent again, even
        if the worker dies a moment later."""
        if changes or finished:
            async with self._db.transaction() as conn:
                await repository.advance(self._db, conn, changes, self._clock.now())
                await self._queue.complete(conn, finished)
            # Acknowledged now (a broker's messages), not when the batch ends: a batch
            # abandoned later must not have these delivered again.
            await self._queue.settle(finished)
            changes.clear()
            finished.clear()
        for job, error in retries:
            delay = backoff(
                job.attempts, base=self._retry.base_seconds, cap=self._retry.cap_seconds
            )
            await self._queue.retry(job, error, self._clock.now() + dt.timedelta(seconds=delay))
        retries.clear()
        for job, error in buried:
            await self._queue.bury(job, error)
        buried.clear()

    def _record(
        self,
        item: _Send,
        outcome: Accepted | SendError,
        changes: list[StateChange],
        finished: list[Job],
        retries: list[tuple[Job, str]],
        buried: list[tuple[Job, str]],
    ) -> None:
        """The state change one provider answer makes, and what becomes of its job."""
        delivery_id = item.delivery["id"]
        if isinstance(outcome, Accepted):
            changes.append(
                StateChange(
                    delivery_id,
                    DeliveryState.SENT,
                    detail=outcome.reply or None,
                    fields={
                        "message_id": item.email.message_id,
                        "provider": outcome.provider,
                        "provider_message_id": outcome.provider_id,
                    },
                )
            )
            finished.append(item.job)
        elif isinstance(outcome, PermanentSendError):
            changes.append(
                StateChange(
                    delivery_id,
                    DeliveryState.FAILED,
                    "rejected",
                    outcome.reply,
                    fields={"provider": outcome.provider},
                )
            )
            finished.append(item.job)
        elif item.job.attempts >= self._retry.max_attempts:
            changes.append(
                StateChange(delivery_id, DeliveryState.FAILED, "retries_exhausted", outcome.reply)
            )
            buried.append((item.job, f"{outcome.provider}: {outcome.reply}"))
        else:
            changes.append(
                StateChange(
                    delivery_id,
                    DeliveryState.SCHEDULED,
                    "retry",
                    outcome.reply,
                    attempt=item.job.attempts + 1,
                )
            )
            retries.append((item.job, f"{outcome.provider}: {outcome.reply}"))

    def _observe(
        self,
        sends: Sequence[_Send],
        outcomes: Sequence[Accepted | SendError],
        events: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Count the provider's refusals, and time each accepted email from its event."""
        measured = metrics.of(self._db)
        now = self._clock.now()
        for item, outcome in zip(sends, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                event = events.get(item.delivery["event_id"])
                if event is not None:
                    measured.delivered("email", event["created_at"], now)
                log.info(
                    "email accepted by %s",
                    outcome.provider,
                    extra={
                        "event_id": item.delivery["event_id"],
                        "notification_id": item.delivery["notification_id"],
                        "delivery_id": item.delivery["id"],
                        "message_id": item.email.message_id,
                    },
                )
                log.debug("email %s went to %s", item.email.message_id, item.email.recipient)
            else:
                permanent = isinstance(outcome, PermanentSendError)
                measured.provider_error(outcome.provider, permanent=permanent)

    def _stale(self, event: Mapping[str, Any], now: dt.datetime) -> bool:
        """Too old to be worth sending: "your meeting starts in 5 minutes", an hour late."""
        ntype = self._catalog.get(event["type"])
        return ntype is not None and staleness.is_stale(
            event["created_at"], now, ntype.rules.max_age
        )

    def _draft(
        self,
        delivery: Mapping[str, Any],
        event: Mapping[str, Any] | None,
        digest: Mapping[str, Any] | None,
        recipient: planner.Recipient,
        now: dt.datetime,
    ) -> Draft:
        source = digest if digest is not None else event
        if source is None:
            raise KeyError(f"delivery {delivery['id']} has neither an event nor a digest")
        type_key = source["type"]
        ntype = self._catalog.get(type_key)
        if ntype is None:
            raise KeyError(f"type {type_key!r} is not in the catalog any more")
        assert recipient.email is not None
        if digest is not None:
            rule = digests.rule_of(ntype)
            rendered = ntype.render_digest_email(
                {"recipient": recipient.as_context(), "digest": digests.context(digest, rule)},
                rule,
                recipient.locale,
            )
            return self._composer.draft_rendered(
                delivery_id=delivery["id"],
                rendered=rendered,
                category=self._catalog.category(ntype.category),
                to_address=recipient.email,
                to_name=recipient.name,
                user_id=recipient.id,
                now=now,
            )
        assert event is not None
        return self._composer.draft(
            delivery_id=delivery["id"],
            ntype=ntype,
            category=self._catalog.category(ntype.category),
            context={**event_context(event), "recipient": recipient.as_context()},
            to_address=recipient.email,
            to_name=recipient.name,
            user_id=recipient.id,
            locale=recipient.locale,
            now=now,
        )

    async def _hand_over(self, email: OutgoingEmail) -> Accepted | SendError:
        with tracing.span(
            "provider send",
            kind=SpanKind.CLIENT,
            attributes={
                "tidings.message_id": email.message_id,
                "tidings.delivery_id": email.delivery_id,
            },
        ) as span:
            outcome = await self._provider_send(email)
            span.set_attribute("tidings.provider", outcome.provider)
            if isinstance(outcome, SendError):
                span.set_status(StatusCode.ERROR, type(outcome).__name__)
            return outcome

    async def _provider_send(self, email: OutgoingEmail) -> Accepted | SendError:
        try:
            return await self._provider.send(email)
        except SendError as exc:
            return exc
        except Exception as exc:  # a provider bug must not lose the batch's other outcomes
            log.exception("provider failed unexpectedly on %s", email.message_id)
            return TransientSendError(f"{type(exc).__name__}: {exc}", provider="unknown")


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


async def _shown_in(conn: AsyncConnection, watched: Sequence[str]) -> dict[str, str]:
    """For each in-app item an email waits on, the item that shows it now.

    An email-if-unseen watches the in-app item its planning knew of. When the in-app
    delivery was held (a delay) and then collapsed into another item, the watched id is
    that delivery's, and the item to check is the one it merged into.
    """
    shown = {watch: watch for watch in watched}
    for delivery in await repository.get_many(conn, list(watched)) if watched else []:
        detail = delivery.get("detail") or ""
        if detail.startswith(COLLAPSED_INTO):
            shown[delivery["id"]] = detail.removeprefix(COLLAPSED_INTO)
    return shown
