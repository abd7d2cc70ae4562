"""The queue on NATS JetStream: jobs written with the commit, carried by replicated streams.

Jobs reach JetStream through an outbox. ``enqueue`` writes them into the database's
``jobs`` table inside the caller's transaction, exactly as the database queue does, so a
job exists exactly when the work that produced it committed. A relay then publishes
every due row to JetStream and deletes it in one transaction: right after the commit
that wrote it (the fast path, woken by ``wake``), or when a timer's ``run_at`` comes (the
scheduler polls). A relay that dies between the publish and the delete publishes the row
again; the message id (``Nats-Msg-Id``) lets JetStream drop the copy, and every handler
is idempotent besides.

On JetStream a job travels as one message per partition: subjects are
``<prefix>.<stage>.<lane>.<partition>``, where the partition is a hash of the recipient,
so all of one person's work in a stage and lane sits in one ordered sequence. Each
(stage, lane, partition) has its own durable pull consumer, and only the worker that
owns the partition (``partitions.PartitionLeases``) pulls from it, so those
notifications are processed in order. Acks are explicit and sent after the handler's
commit; a failure is ``nak``-ed with a backoff delay; a message delivered more often
than the retry policy allows goes to the dead letters (the database's, where the
database queue puts them too, and a dead-letter stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import nats
import orjson
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import metrics
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.partitions import PartitionLeases
from tidings.kit.queue import Job, NewJob, Splitter, WakeUps, partition_of
from tidings.kit.queue_sql import SqlQueue, bound_schedules, dead_letter_row
from tidings.kit.tables import dead_letters, jobs

log = logging.getLogger(__name__)

LANES = (0, 1, 2, 3)
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
DEAD_LETTER_AGE = dt.timedelta(days=30)
_RELAY_BATCH = 500
_PUBLISH_ACK_SECONDS = 10.0
"""How long a relay waits for JetStream to confirm its publishes before it gives the rows
back (to publish them again; the message ids make the second copy a no-op). A reply can
be lost for good when the node that would send it dies."""
_RELAY_BACKOFF_CAP = 30.0
"""The longest a relay waits before publishing again a row JetStream did not take."""


class UnroutableError(Exception):
    """An outbox row no stream takes: a kind no stage takes, or a payload that cannot
    be split into partitions."""


_PERMANENT = (UnroutableError, nats.errors.MaxPayloadError, BadRequestError)
"""What a relay gets for a row JetStream will never take: a kind no stage takes, a
message over the server's payload limit, a publish the stream refuses as malformed."""
_PROBES = 5
"""How many unanswered rows of a batch a relay publishes again, one by one, to learn
whether JetStream refuses them."""
_PROBE_SECONDS = 2.0
"""How long a relay waits for JetStream's answer to each of those publishes."""
_PULL_SECONDS = 5.0
"""How long a pull waits for the server's answer before giving up on it."""


def by_user(payload: Mapping[str, Any], partitions: int, *, fallback: str) -> int:
    """The partition of a job that concerns one person (``payload["user"]``)."""
    user = payload.get("user")
    return partition_of(user if isinstance(user, str) else fallback, partitions)


@dataclasses.dataclass(frozen=True)
class Topology:
    """Names and sizes of the streams and consumers; the same in every process."""

    prefix: str
    stages: Mapping[str, str]
    """job kind → stage (the stream it travels on)."""
    partitions: int
    replicas: int
    ack_wait: dt.timedelta
    max_deliver: int

    @property
    def stage_names(self) -> list[str]:
        return sorted(set(self.stages.values()))

    def stream(self, stage: str) -> str:
        return f"{self.prefix}_{stage}".upper().replace("-", "_")

    @property
    def dead_stream(self) -> str:
        return self.stream("dead")

    def subject(self, stage: str, lane: int, partition: int) -> str:
        return f"{self.prefix}.{stage}.{lane}.{partition}"

    def consumer(self, stage: str, lane: int, partition: int) -> str:
        return f"{stage}-{lane}-{partition}"

    def stage_of(self, kind: str) -> str:
        stage = self.stages.get(kind)
        if stage is None:
            raise KeyError(f"job kind {kind!r} belongs to no stage")
        return stage


async def connect(servers: Sequence[str], *, name: str) -> NatsClient:
    """A NATS connection that keeps reconnecting for as long as the process lives."""
    return await nats.connect(
        servers=list(servers),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
    )


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create the stage streams and the dead-letter stream, or update them to this shape."""
    configs = [
        api.StreamConfig(
            name=topology.stream(stage),
            subjects=[f"{topology.prefix}.{stage}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )
        for stage in topology.stage_names
    ]
    configs.append(
        api.StreamConfig(
            name=topology.dead_stream,
            subjects=[f"{topology.prefix}.dead.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            max_age=DEAD_LETTER_AGE.total_seconds(),
        )
    )
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


def _consumer_config(
    topology: Topology, stage: str, lane: int, partition: int
) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=topology.consumer(stage, lane, partition),
        filter_subject=topology.subject(stage, lane, partition),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=topology.ack_wait.total_seconds(),
        max_deliver=topology.max_deliver,
        max_ack_pending=20_000,
        num_replicas=topology.replicas,
    )


class JetStreamQueue:
    """The ``Queue`` on JetStream, with the database as outbox and timer store.

    One object serves three roles, each started only where it is needed: ``enqueue`` and
    the relay (every process that writes jobs), ``start_relay`` polling for due timers
    (the scheduler), and ``start_consuming`` pulling owned partitions (a worker).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        servers: Sequence[str],
        topology: Topology,
        *,
        splitters: Mapping[str, Splitter] | None = None,
        max_attempts: int,
        name: str = "tidings",
        stages: Collection[str] = (),
        lanes: Collection[int] = LANES,
        timer_poll_seconds: float | None = None,
    ) -> None:
        """A worker consumes ``stages`` and ``lanes``; a process that consumes also
        fires due timers every ``timer_poll_seconds`` (the scheduler is then a spare,
        not a single point of failure: each due row still goes out once)."""
        self._db = db
        self._stages = tuple(stages)
        self._lanes = tuple(lanes)
        self._timer_poll = timer_poll_seconds
        self._clock = clock
        self._servers = list(servers)
        self._name = name
        self._nc: NatsClient | None = None
        self._js_context: JetStreamContext | None = None
        self.topology = topology
        self._splitters = dict(splitters or {})
        self._max_attempts = max_attempts
        self._outbox = SqlQueue(db, clock)
        self._wakeups = WakeUps()
        self._relay_wakeups = WakeUps()
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_poll: float | None = None
        self._leases: PartitionLeases | None = None
        self._subscriptions: dict[tuple[str, int, int], Subscription] = {}
        self._turn: dict[int, int] = {}
        self._pull_locks: dict[tuple[str, int, int], asyncio.Lock] = {}
        self._doorbell: Any = None
        self._inflight: dict[str, Msg] = {}
        self._stopping = False
        self.published = 0

    def add_splitter(self, kind: str, split: Splitter) -> None:
        """Route ``kind``'s jobs with ``split`` rather than by ``payload["user"]``."""
        self._splitters[kind] = split

    @property
    def partitioned(self) -> bool:
        return True

    @property
    def relayed(self) -> bool:
        return True

    async def start(self, *, consume: bool, member: str, relay_poll: float | None = None) -> None:
        """Connect and relay; with ``consume``, also pull this process's share of the
        partitions (and fire due timers, unless ``relay_poll`` says how often already)."""
        await self.open()
        if relay_poll is None and consume:
            relay_poll = self._timer_poll
        self.start_relay(relay_poll)
        if consume:
            await self.start_consuming(
                self._stages,
                self._lanes,
                PartitionLeases(
                    self._db.url,
                    self._stages,
                    self._lanes,
                    self.topology.partitions,
                    member=member,
                ),
            )

    def checks(self) -> dict[str, str]:
        return {"nats": "ok" if self.connected else "not connected"}

    # -- writing -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and create the streams (idempotent: every process does it at start)."""
        if self._nc is None:
            self._nc = await connect(self._servers, name=self._name)
            self._js_context = self._nc.jetstream(timeout=10)
        await ensure_streams(self._js, self.topology)

    @property
    def _js(self) -> JetStreamContext:
        if self._js_context is None:
            raise RuntimeError("the JetStream queue is not open yet")
        return self._js_context

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (for readiness)."""
        return self._nc is not None and self._nc.is_connected

    async def enqueue(self, conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> None:
        """Write jobs to the outbox inside the caller's transaction."""
        await self._outbox.enqueue(conn, new_jobs)

    def wake(self, lanes: Collection[int] | None = None) -> None:
        """Jobs were committed: relay them now, and end local waits."""
        self._relay_wakeups.call()
        self._wakeups.call(lanes)

    def start_relay(self, poll_seconds: float | None = None) -> None:
        """Publish outbox rows as they are committed; with ``poll_seconds``, also look for
        timers that came due every so often (the scheduler's job)."""
        self._relay_poll = poll_seconds
        if self._relay_task is None:
            self._relay_task = asyncio.create_task(self._relay_loop(), name="tidings-relay")

    async def _relay_loop(self) -> None:
        while not self._stopping:
            seen = self._relay_wakeups.count()
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("relaying jobs to JetStream failed; trying again shortly")
                await asyncio.sleep(1.0)
                continue
            if published:
                continue
            await self._relay_wakeups.wait(self._relay_poll or 3600.0, since=seen)

    async def relay_once(self, limit: int = _RELAY_BATCH) -> int:
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
        assert self._nc is not None
        for lane in sorted({row.lane for row in rows}):
            # Wake the workers of that lane wherever they run; a lost ring only costs
            # them their poll interval.
            await self._nc.publish(f"{self.topology.prefix}.doorbell.{lane}", b"")
        if unanswered and not delivered and not refused:
            # No row left the outbox: let the caller's loop pause instead of spinning.
            _row, failed = next(iter(unanswered.values()))
            raise failed
        return len(delivered) + len(refused)

    def _outgoing(self, row: Any) -> list[tuple[str, bytes, dict[str, str]]]:
        """The (subject, body, headers) of each partition's share of ``row``.

        Raises:
            UnroutableError: no stage takes the row's kind, or its splitter failed.
            nats.errors.MaxPayloadError: a message is larger than the server takes (the
                client would refuse it only after taking a slot it never gives back,
                and the server drops the connection of one that slips through).
        """
        assert self._nc is not None
        outgoing = []
        for subject, message_id, body in self._messages(row):
            headers = {**(row.headers or {}), "Nats-Msg-Id": message_id}
            size = len(body) + _header_size(headers)
            if size > self._nc.max_payload:
                raise nats.errors.MaxPayloadError(
                    f"{size} bytes with headers, the server takes at most {self._nc.max_payload}"
                )
            outgoing.append((subject, body, headers))
        return outgoing

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

    def _messages(self, row: Any) -> list[tuple[str, str, bytes]]:
        """The (subject, message id, body) of each partition's share of an outbox row.

        Raises:
            UnroutableError: no stage takes the row's kind, or its splitter failed.
        """
        try:
            return self._shares(row)
        except Exception as exc:
            raise UnroutableError(f"cannot be routed to a stream: {exc!r}") from exc

    def _shares(self, row: Any) -> list[tuple[str, str, bytes]]:
        stage = self.topology.stage_of(row.kind)
        partitions = self.topology.partitions
        split = self._splitters.get(row.kind)
        if split is not None:
            shares = split(row.payload, partitions)
        else:
            shares = {by_user(row.payload, partitions, fallback=row.id): row.payload}
        # The id names the row (its job id and the instant it was written), so a relay
        # that publishes the same row twice is deduplicated, while a later job that
        # reuses the id, once this one is gone, is not.
        written = int(row.created_at.timestamp() * 1_000_000)
        return [
            (
                self.topology.subject(stage, row.lane, partition),
                f"{row.id}@{written}#{partition}",
                orjson.dumps({"id": row.id, "kind": row.kind, "payload": payload}),
            )
            for partition, payload in sorted(shares.items())
        ]

    # -- consuming -----------------------------------------------------------------

    async def start_consuming(
        self, stages: Collection[str], lanes: Collection[int], leases: PartitionLeases
    ) -> None:
        """Pull the given stages' and lanes' messages, from the partitions ``leases`` owns."""
        for stage in stages:
            for lane in lanes:
                for partition in range(self.topology.partitions):
                    config = _consumer_config(self.topology, stage, lane, partition)
                    try:
                        await self._js.add_consumer(self.topology.stream(stage), config)
                    except BadRequestError as exc:
                        # It exists with another shape (an older ack_wait, say): keep it.
                        log.warning("consumer %s kept as it is: %s", config.durable_name, exc)
        self._leases = leases
        await leases.start()
        assert self._nc is not None

        async def ring(msg: Msg) -> None:
            lane = msg.subject.rpartition(".")[2]
            self._wakeups.call({int(lane)} if lane.isdigit() else None)

        self._doorbell = await self._nc.subscribe(f"{self.topology.prefix}.doorbell.*", cb=ring)

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        """Up to ``limit`` messages from the owned partitions of ``lanes``, most urgent
        lane first.

        Partitions are asked one after the other, each for what the claim still lacks;
        within a lane the first one asked moves round, so a busy partition cannot starve
        the others. Messages delivered more often than the retry policy allows (a worker
        died each time it ran them) are buried here, without running them again.
        """
        if self._leases is None or self._stopping or limit < 1:
            return []
        owned = self._leases.owned()
        chosen = set(LANES if lanes is None else lanes)
        claimed: list[Job] = []
        for lane in sorted(chosen):
            keys = sorted(key for key in owned if key[1] == lane)
            if not keys:
                continue
            start = self._turn.get(lane, 0) % len(keys)
            self._turn[lane] = start + 1
            for key in keys[start:] + keys[:start]:
                wanted = limit - len(claimed)
                if wanted <= 0:
                    return claimed
                for msg in await self._pull(key, wanted):
                    job = await self._received(key, msg)
                    if job is not None:
                        claimed.append(job)
        return claimed

    async def _pull(self, key: tuple[str, int, int], batch: int) -> list[Msg]:
        """What the partition has ready now, up to ``batch``; nothing if it has none."""
        # One pull at a time per partition: concurrent fetches on one subscription take
        # each other's messages, and order within the partition is the point of it.
        async with self._pull_locks.setdefault(key, asyncio.Lock()):
            return await self._pull_locked(key, batch)

    async def _pull_locked(self, key: tuple[str, int, int], batch: int) -> list[Msg]:
        """A ``no_wait`` pull: the server sends what it has, up to ``batch``, then says it
        has no more; an empty partition costs one round trip, not a wait."""
        assert self._nc is not None
        subscription = self._subscriptions.get(key)
        if subscription is None:
            subscription = await self._nc.subscribe(self._nc.new_inbox())
            self._subscriptions[key] = subscription
        stage, lane, partition = key
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.topology.stream(stage)}."
            f"{self.topology.consumer(stage, lane, partition)}",
            orjson.dumps({"batch": batch, "no_wait": True}),
            reply=subscription.subject,
        )
        messages: list[Msg] = []
        while len(messages) < batch:
            try:
                msg = await subscription.next_msg(timeout=_PULL_SECONDS)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            if JetStreamContext.is_status_msg(msg):
                # 404 (nothing more), 408 (request expired) or 409 (e.g. too many
                # unacknowledged): this pull is over either way.
                break
            messages.append(msg)
        return messages

    async def _drop_released(self) -> None:
        """Unsubscribe from the partitions given up (what this process was sent and did
        not ack comes back to the partition's next owner after ``ack_wait``)."""
        owned = self._leases.owned() if self._leases is not None else frozenset()
        for key in [key for key in self._subscriptions if key not in owned]:
            await _unsubscribe(self._subscriptions.pop(key))

    async def _received(self, key: tuple[str, int, int], msg: Msg) -> Job | None:
        body = orjson.loads(msg.data)
        attempts = msg.metadata.num_delivered or 1
        job = Job(
            id=body["id"],
            kind=body["kind"],
            payload=body["payload"],
            lane=key[1],
            attempts=attempts,
            receipt=f"{key[0]}:{msg.metadata.sequence.stream}",
            headers={k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
            or None,
        )
        self._inflight[job.receipt] = msg
        if attempts > self._max_attempts:
            await self.bury(job, f"delivered {attempts} times without an outcome")
            return None
        return job

    async def complete(self, conn: AsyncConnection, done: Sequence[Job]) -> None:
        """Nothing to do inside the transaction: the ack goes out in ``settle``, after it."""

    async def settle(self, done: Sequence[Job]) -> None:
        """Acknowledge the jobs a handler finished (those it did not retry or bury)."""
        for job in done:
            msg = self._inflight.pop(job.receipt, None)
            if msg is not None:
                await msg.ack()

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        """Hand the message back, to be delivered again at ``run_at``."""
        msg = self._inflight.pop(job.receipt, None)
        if msg is None:
            return
        delay = max(0.0, (run_at - self._clock.now()).total_seconds())
        await msg.nak(delay=delay)
        metrics.of(self._db).job_retried(job.kind)

    async def release(self, job: Job) -> None:
        """Hand the message back, to be delivered again at once. JetStream counts the
        delivery all the same: ``max_deliver`` leaves two deliveries beyond the retry
        policy for this and for workers that die."""
        msg = self._inflight.pop(job.receipt, None)
        if msg is not None:
            await msg.nak()
        self._wakeups.call({job.lane})

    async def bury(self, job: Job, error: str) -> None:
        """Record the job as a dead letter, copy it to the dead-letter stream, and stop
        JetStream from delivering it again."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await conn.execute(
                self._db.insert_ignore(dead_letters).values(**dead_letter_row(job, error, now))
            )
        stage = self.topology.stage_of(job.kind) if job.kind in self.topology.stages else "unknown"
        await self._js.publish(
            f"{self.topology.prefix}.dead.{stage}.{job.lane}",
            orjson.dumps({"id": job.id, "kind": job.kind, "payload": job.payload, "error": error}),
            headers={"Nats-Msg-Id": f"dead:{job.receipt or job.id}:{job.attempts}"},
        )
        msg = self._inflight.pop(job.receipt, None)
        if msg is not None:
            await msg.term()
        metrics.of(self._db).job_buried(job.kind)

    # -- waiting and stopping --------------------------------------------------------

    def wakeups(self, lanes: Collection[int] | None = None) -> int:
        return self._wakeups.count(lanes)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        """Sleep until a relay anywhere rings for ``lanes`` or ``seconds`` pass; also
        let go of partitions the leases gave up."""
        await self._drop_released()
        await self._wakeups.wait(seconds, lanes, since=since)

    async def depth(self) -> int:
        """Messages waiting in the stage streams, plus outbox rows not yet relayed."""
        total = await self._outbox.depth()
        for stage in self.topology.stage_names:
            info = await self._js.stream_info(self.topology.stream(stage))
            total += info.state.messages
        return total

    async def pending(self) -> dict[tuple[str, int], int]:
        """Messages waiting in the stage streams, per (stage, lane): one stream info call
        per stage, its subjects counted by the server (none while not connected)."""
        found: dict[tuple[str, int], int] = {}
        if not self.connected:
            return found
        for stage in self.topology.stage_names:
            info = await self._js.stream_info(
                self.topology.stream(stage), subjects_filter=f"{self.topology.prefix}.{stage}.>"
            )
            for lane in LANES:
                found[(stage, lane)] = 0
            for subject, count in (info.state.subjects or {}).items():
                lane_part = subject.split(".")[-2]
                if lane_part.isdigit():
                    found[(stage, int(lane_part))] = found.get((stage, int(lane_part)), 0) + count
        return found

    async def dead_letter_count(self) -> int:
        """Messages in the dead-letter stream."""
        info = await self._js.stream_info(self.topology.dead_stream)
        return int(info.state.messages)

    async def close(self) -> None:
        """Stop relaying and pulling, and hand back the messages not yet run."""
        self._stopping = True
        self._relay_wakeups.call()
        if self._relay_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._relay_task, 10)
            self._relay_task = None
        # The worker stopped first and let its running batches finish: what is still in
        # hand was never started. Hand it back now rather than after ``ack_wait``.
        for msg in list(self._inflight.values()):
            with contextlib.suppress(Exception):
                await msg.nak()
        self._inflight.clear()
        if self._doorbell is not None:
            await _unsubscribe(self._doorbell)
        for subscription in self._subscriptions.values():
            await _unsubscribe(subscription)
        self._subscriptions.clear()
        if self._leases is not None:
            await self._leases.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None


def _header_size(headers: Mapping[str, str]) -> int:
    """The bytes ``headers`` take on the wire (``NATS/1.0``, a line each, a blank line),
    which count towards the server's payload limit."""
    return len(b"NATS/1.0\r\n\r\n") + sum(
        len(key.encode()) + len(value.encode()) + 4 for key, value in headers.items()
    )


async def _unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()


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
