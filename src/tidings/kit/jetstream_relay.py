"""The relay: from the database's ``jobs`` outbox to the JetStream stage streams.

``JetStreamQueue.enqueue`` writes jobs into the ``jobs`` table inside the caller's
transaction. A relay publishes every due row to its stage's stream, one message per
partition's share of it, and deletes the row in the same transaction: right after the
commit that wrote it (woken by ``wake``), or when a timer's ``run_at`` comes (with a
poll). A relay that dies between the publish and the delete publishes the row again; the
message id (``Nats-Msg-Id``) lets JetStream drop the copy. A row JetStream will never
take goes to the dead letters rather than block the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import nats
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import jetstream_messages, metrics
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.jetstream_streams import Topology
from tidings.kit.queue import Job, Splitter, WakeUps
from tidings.kit.queue_sql import bound_schedules, dead_letter_row
from tidings.kit.tables import dead_letters, jobs

log = logging.getLogger(__name__)

RELAY_BATCH = 500
_PUBLISH_ACK_SECONDS = 10.0
"""How long a relay waits for JetStream to confirm its publishes before it gives the rows
back (to publish them again; the message ids make the second copy a no-op). A reply can
be lost for good when the node that would send it dies."""
_RELAY_BACKOFF_CAP = 30.0
"""The longest a relay waits before publishing again a row JetStream did not take."""
_PERMANENT = (jetstream_messages.UnroutableError, nats.errors.MaxPayloadError, BadRequestError)
"""What a relay gets for a row JetStream will never take: a kind no stage takes, a
message over the server's payload limit, a publish the stream refuses as malformed."""
_PROBES = 5
"""How many unanswered rows of a batch a relay publishes again, one by one, to learn
whether JetStream refuses them."""
_PROBE_SECONDS = 2.0
"""How long a relay waits for JetStream's answer to each of those publishes."""


class Relay:
    """Publishes due outbox rows to the stage streams over an open connection.

    ``splitters`` (job kind → splitter) is read at every row, so a splitter the queue
    adds later still applies.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        nc: NatsClient,
        js: JetStreamContext,
        topology: Topology,
        splitters: Mapping[str, Splitter],
    ) -> None:
        self._db = db
        self._clock = clock
        self._nc = nc
        self._js = js
        self._topology = topology
        self._splitters = splitters
        self._wakeups = WakeUps()
        self._task: asyncio.Task[None] | None = None
        self._poll: float | None = None
        self._stopping = False
        self.published = 0
        """Messages published so far (a row split into partitions counts one each)."""

    def start(self, poll_seconds: float | None = None) -> None:
        """Publish outbox rows as they are committed; with ``poll_seconds``, also look for
        timers that came due every so often."""
        self._poll = poll_seconds
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tidings-relay")

    def wake(self) -> None:
        """Jobs were committed: relay them now."""
        self._wakeups.call()

    async def stop(self) -> None:
        """Stop relaying, letting a relay under way finish (for at most ten seconds)."""
        self._stopping = True
        self._wakeups.call()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping:
            seen = self._wakeups.count()
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("relaying jobs to JetStream failed; trying again shortly")
                await asyncio.sleep(1.0)
                continue
            if published:
                continue
            await self._wakeups.wait(self._poll or 3600.0, since=seen)

    async def relay_once(self, limit: int = RELAY_BATCH) -> int:
        """Publish up to ``limit`` due outbox rows and delete them; returns how many left
        the outbox (published, or dead-lettered because JetStream will never take them).

        The rows stay locked (``SKIP LOCKED`` keeps other relays off them) until their
        messages are acknowledged by JetStream; then they are deleted in the same
        transaction. Several relays may run; each row is published by one of them. Each
        row stands alone: one JetStream refuses or does not acknowledge is backed off
        (or dead-lettered) without holding back the others.

        Long on purpose: the lock, the publishes and the delete are one transaction,
        and reading it in one place is what shows that no row is lost or doubled.
        """
        now = self._clock.now()
        c = jobs.c
        due = (
            sa.select(c.id, c.kind, c.payload, c.lane, c.created_at, c.headers, c.attempts)
            .where(c.run_at <= now, sa.or_(c.lease_until.is_(None), c.lease_until < now))
            .order_by(c.lane, c.run_at)
            .limit(limit)
        )
        if self._db.is_postgres:
            due = due.with_for_update(skip_locked=True)
        async with self._db.transaction() as conn:
            await bound_schedules(self._db, conn, now)
            rows = (await conn.execute(due)).all()
            if not rows:
                return 0
            sent: list[tuple[Any, list[asyncio.Future[Any]]]] = []
            refused: dict[str, tuple[Any, BaseException]] = {}
            try:
                # Bounded as a whole: the client waits, without limit, for a free slot
                # among its pending publishes, and acks that never come keep theirs.
                async with asyncio.timeout(_PUBLISH_ACK_SECONDS):
                    for row in rows:
                        futures: list[asyncio.Future[Any]] = []
                        sent.append((row, futures))
                        try:
                            # Every partition's message is built and measured before
                            # any is sent: a row is published whole or not at all.
                            outgoing = self._outgoing(row)
                        except _PERMANENT as exc:
                            refused[row.id] = (row, exc)
                            continue
                        for subject, body, headers in outgoing:
                            futures.append(
                                await self._js.publish_async(subject, body, headers=headers)
                            )
                failures = await _acknowledged([f for _, futures in sent for f in futures])
            finally:
                for _, futures in sent:
                    for future in futures:
                        future.cancel()
            delivered: list[str] = []
            unanswered: dict[str, tuple[Any, BaseException]] = {}
            for row, futures in sent:
                failed = next((failures[f] for f in futures if f in failures), None)
                if row.id in refused:
                    continue
                if failed is None:
                    delivered.append(row.id)
                elif isinstance(failed, _PERMANENT):
                    refused[row.id] = (row, failed)
                else:
                    unanswered[row.id] = (row, failed)
            if delivered:
                # JetStream answered the others: a row it did not answer may be one it
                # refuses (nats-py drops the refusal of an asynchronous publish, so its
                # future never completes). Publishing it again, synchronously, tells.
                for row, _failed in list(unanswered.values())[:_PROBES]:
                    outcome = await self._probe(row)
                    if outcome is None:
                        delivered.append(row.id)
                        del unanswered[row.id]
                    elif isinstance(outcome, _PERMANENT):
                        refused[row.id] = (row, outcome)
                        del unanswered[row.id]
                    else:
                        unanswered[row.id] = (row, outcome)
            for row, failed in unanswered.values():
                # JetStream did not answer or had no leader: the row stays and is
                # published again after a short backoff (the message ids make the
                # copies of partitions that did get through no-ops).
                await self._back_off(conn, row, failed, now)
            await self._refused(conn, list(refused.values()), now)
            if delivered:
                await conn.execute(jobs.delete().where(c.id.in_(delivered)))
        published = set(delivered)
        self.published += sum(len(futures) for row, futures in sent if row.id in published)
        for lane in sorted({row.lane for row in rows}):
            # Wake the workers of that lane wherever they run; a lost ring only costs
            # them their poll interval.
            await self._nc.publish(f"{self._topology.prefix}.doorbell.{lane}", b"")
        if unanswered and not delivered and not refused:
            # No row left the outbox: let the caller's loop pause instead of spinning.
            _row, failed = next(iter(unanswered.values()))
            raise failed
        return len(delivered) + len(refused)

    def _outgoing(self, row: Any) -> list[tuple[str, bytes, dict[str, str]]]:
        """The messages ``row`` becomes (``jetstream_messages.outgoing``)."""
        return jetstream_messages.outgoing(
            row, self._topology, self._splitters, self._nc.max_payload
        )

    async def _probe(self, row: Any) -> BaseException | None:
        """Publish ``row`` once more, waiting for each answer: None when JetStream took
        every message, else why not."""
        try:
            for subject, body, headers in self._outgoing(row):
                await self._js.publish(subject, body, timeout=_PROBE_SECONDS, headers=headers)
        except Exception as exc:
            return exc
        return None

    async def _back_off(
        self, conn: AsyncConnection, row: Any, failure: BaseException, now: dt.datetime
    ) -> None:
        attempts = (row.attempts or 0) + 1
        delay = min(_RELAY_BACKOFF_CAP, 2 ** min(attempts - 1, 8))
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == row.id)
            .values(
                attempts=attempts,
                run_at=now + dt.timedelta(seconds=delay),
                scheduled_at=now,
                last_error=f"relay: {type(failure).__name__}: {failure}"[:4000],
            )
        )

    async def _refused(
        self,
        conn: AsyncConnection,
        refused: Sequence[tuple[Any, BaseException]],
        now: dt.datetime,
    ) -> None:
        """A row JetStream will never take (no stage takes its kind, too large, refused
        by the stream) would block the outbox: it goes to the dead letters instead."""
        if not refused:
            return
        dead = []
        for row, exc in refused:
            log.error("outbox row %s cannot be relayed: %r", row.id, exc)
            job = Job(
                row.id, row.kind, row.payload, row.lane, row.attempts or 0, headers=row.headers
            )
            dead.append(
                dead_letter_row(
                    job, f"cannot be relayed to JetStream: {type(exc).__name__}: {exc}", now
                )
            )
        await conn.execute(self._db.insert_ignore(dead_letters), dead)
        await conn.execute(jobs.delete().where(jobs.c.id.in_([row.id for row, _ in refused])))
        for row in dead:
            metrics.of(self._db).job_buried(row["kind"])


async def _acknowledged(
    acks: Sequence[asyncio.Future[Any]],
) -> dict[asyncio.Future[Any], BaseException]:
    """Wait for every publish acknowledgement, at most ``_PUBLISH_ACK_SECONDS``; returns
    the ones that failed, with why: JetStream refused it, or no answer came in time (a
    reply can be lost for good when the node that would send it dies).

    None is left waiting: an abandoned future would keep its slot in the client's
    bounded count of pending publishes, and enough of them stall it.
    """
    failures: dict[asyncio.Future[Any], BaseException] = {}
    if not acks:
        return failures
    done, late = await asyncio.wait(acks, timeout=_PUBLISH_ACK_SECONDS)
    for ack in late:
        ack.cancel()
        failures[ack] = TimeoutError(
            f"JetStream did not acknowledge the publish within {_PUBLISH_ACK_SECONDS:.0f}s"
        )
    for ack in done:
        if not ack.cancelled() and (exc := ack.exception()) is not None:
            failures[ack] = exc
    return failures
