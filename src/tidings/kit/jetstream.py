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
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import nats
import orjson
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.partitions import PartitionLeases
from tidings.kit.queue import Job, NewJob, SqlQueue, WakeUps, dead_letter_row
from tidings.kit.tables import dead_letters, jobs

log = logging.getLogger(__name__)

LANES = (0, 1, 2, 3)
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
DEAD_LETTER_AGE = dt.timedelta(days=30)
_RELAY_BATCH = 500
_FETCH_SECONDS = 5.0
"""How long one pull request waits on the server for a message to arrive."""
_CLAIM_WAIT_SECONDS = 1.0
"""How long a claim waits for the first message before it returns empty-handed."""


Splitter = Callable[[Mapping[str, Any], int], dict[int, dict[str, Any]]]
"""Cuts a job's payload into one payload per partition, given the partition count."""


def partition_of(key: str, partitions: int) -> int:
    """The partition of a recipient (or of any other key): stable across processes."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


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


@dataclasses.dataclass
class _Pull:
    """One owned partition's subscription, and the fetch waiting on it."""

    subscription: JetStreamContext.PullSubscription
    fetch: asyncio.Task[list[Msg]] | None = None


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
    ) -> None:
        self._db = db
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
        self._pulls: dict[tuple[str, int, int], _Pull] = {}
        self._inflight: dict[str, Msg] = {}
        self._stopping = False
        self.published = 0

    def add_splitter(self, kind: str, split: Splitter) -> None:
        """Route ``kind``'s jobs with ``split`` rather than by ``payload["user"]``."""
        self._splitters[kind] = split

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
        """Publish up to ``limit`` due outbox rows and delete them; returns how many.

        The rows stay locked (``SKIP LOCKED`` keeps other relays off them) until their
        messages are acknowledged by JetStream; then they are deleted in the same
        transaction. Several relays may run; each row is published by one of them.
        """
        now = self._clock.now()
        c = jobs.c
        due = (
            sa.select(c.id, c.kind, c.payload, c.lane, c.created_at)
            .where(c.run_at <= now, sa.or_(c.lease_until.is_(None), c.lease_until < now))
            .order_by(c.lane, c.run_at)
            .limit(limit)
        )
        if self._db.is_postgres:
            due = due.with_for_update(skip_locked=True)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(due)).all()
            if not rows:
                return 0
            acks = []
            for row in rows:
                for subject, message_id, body in self._messages(row):
                    acks.append(
                        await self._js.publish_async(
                            subject, body, headers={"Nats-Msg-Id": message_id}
                        )
                    )
            await asyncio.gather(*acks)
            await conn.execute(jobs.delete().where(c.id.in_([row.id for row in rows])))
        self.published += len(acks)
        return len(rows)

    def _messages(self, row: Any) -> list[tuple[str, str, bytes]]:
        """The (subject, message id, body) of each partition's share of an outbox row."""
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

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        """Messages from the owned partitions of ``lanes``, up to about ``limit``.

        Every owned partition keeps one pull request waiting on the server; a claim
        returns what has arrived as soon as anything has, or nothing after a second.
        Messages delivered more often than the retry policy allows (a worker died each
        time it ran them) are buried here, without running them again.
        """
        if self._leases is None or self._stopping:
            return []
        wanted = self._owned(lanes)
        await self._sync_pulls(wanted, limit)
        fetches = [pull.fetch for key, pull in self._pulls.items() if key in wanted and pull.fetch]
        if not fetches:
            await asyncio.sleep(_CLAIM_WAIT_SECONDS / 4)
            return []
        await asyncio.wait(
            fetches, timeout=_CLAIM_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        claimed: list[Job] = []
        for key in sorted(wanted):
            pull = self._pulls.get(key)
            if pull is None or pull.fetch is None or not pull.fetch.done():
                continue
            task, pull.fetch = pull.fetch, None
            messages = _fetched(task)
            for msg in messages:
                job = await self._received(key, msg)
                if job is not None:
                    claimed.append(job)
        await self._sync_pulls(wanted, limit)
        return claimed

    def _owned(self, lanes: Collection[int] | None) -> set[tuple[str, int, int]]:
        assert self._leases is not None
        chosen = set(LANES if lanes is None else lanes)
        return {key for key in self._leases.owned() if key[1] in chosen}

    async def _sync_pulls(self, wanted: set[tuple[str, int, int]], limit: int) -> None:
        """Keep one pull waiting on each owned partition; drop the partitions given up."""
        assert self._leases is not None
        owned = self._leases.owned()
        for key in [key for key in self._pulls if key not in owned]:
            pull = self._pulls.pop(key)
            if pull.fetch is not None:
                pull.fetch.cancel()
            # Unsubscribing returns nothing to the server: what this process was sent and
            # did not ack comes back to the partition's next owner after ``ack_wait``.
            await _unsubscribe(pull.subscription)
        per_partition = max(1, -(-limit // max(1, len(wanted))))
        for key in sorted(wanted):
            existing = self._pulls.get(key)
            if existing is None:
                stage, lane, partition = key
                subscription = await self._js.pull_subscribe_bind(
                    durable=self.topology.consumer(stage, lane, partition),
                    stream=self.topology.stream(stage),
                )
                existing = self._pulls[key] = _Pull(subscription)
            pull = existing
            if pull.fetch is None:
                pull.fetch = asyncio.get_running_loop().create_task(
                    _fetch(pull.subscription, per_partition)
                )

    async def _received(self, key: tuple[str, int, int], msg: Msg) -> Job | None:
        body = orjson.loads(msg.data)
        attempts = msg.metadata.num_delivered or 1
        job = Job(
            id=f"{body['id']}#{key[2]}",
            kind=body["kind"],
            payload=body["payload"],
            lane=key[1],
            attempts=attempts,
        )
        self._inflight[job.id] = msg
        if attempts > self._max_attempts:
            await self.bury(job, f"delivered {attempts} times without an outcome")
            return None
        return job

    async def complete(self, conn: AsyncConnection, done: Sequence[Job]) -> None:
        """Nothing to do inside the transaction: the ack goes out in ``settle``, after it."""

    async def settle(self, done: Sequence[Job]) -> None:
        """Acknowledge the jobs a handler finished (those it did not retry or bury)."""
        for job in done:
            msg = self._inflight.pop(job.id, None)
            if msg is not None:
                await msg.ack()

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        """Hand the message back, to be delivered again at ``run_at``."""
        msg = self._inflight.pop(job.id, None)
        if msg is None:
            return
        delay = max(0.0, (run_at - self._clock.now()).total_seconds())
        await msg.nak(delay=delay)

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
            headers={"Nats-Msg-Id": f"dead:{job.id}:{job.attempts}"},
        )
        msg = self._inflight.pop(job.id, None)
        if msg is not None:
            await msg.term()

    # -- waiting and stopping --------------------------------------------------------

    def wakeups(self, lanes: Collection[int] | None = None) -> int:
        return self._wakeups.count(lanes)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        """A claim already waited on the server; only a short pause is left to take."""
        await self._wakeups.wait(min(seconds, 0.05), lanes, since=since)

    async def depth(self) -> int:
        """Messages waiting in the stage streams, plus outbox rows not yet relayed."""
        total = await self._outbox.depth()
        for stage in self.topology.stage_names:
            info = await self._js.stream_info(self.topology.stream(stage))
            total += info.state.messages
        return total

    async def close(self) -> None:
        """Stop relaying and pulling; unacknowledged messages return after ``ack_wait``."""
        self._stopping = True
        self._relay_wakeups.call()
        if self._relay_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._relay_task, 10)
            self._relay_task = None
        for pull in self._pulls.values():
            if pull.fetch is not None:
                pull.fetch.cancel()
                with contextlib.suppress(BaseException):
                    await pull.fetch
            await _unsubscribe(pull.subscription)
        self._pulls.clear()
        if self._leases is not None:
            await self._leases.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None


async def _fetch(subscription: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    try:
        return await subscription.fetch(batch, timeout=_FETCH_SECONDS)
    except (TimeoutError, nats.errors.TimeoutError):
        return []


def _fetched(task: asyncio.Task[list[Msg]]) -> list[Msg]:
    if task.cancelled():
        return []
    error = task.exception()
    if error is not None:
        log.warning("pulling from JetStream failed: %s", error)
        return []
    return task.result()


async def _unsubscribe(subscription: JetStreamContext.PullSubscription) -> None:
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()
