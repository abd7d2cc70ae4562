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

This module holds ``JetStreamQueue``, its lifecycle and its readiness; the parts live
beside it: the streams and consumers' layout (``jetstream_streams``), the messages an
outbox row becomes (``jetstream_messages``), the relay (``jetstream_relay``), and the
consuming of owned partitions (``jetstream_consumers``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Collection, Mapping, Sequence

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.jetstream_consumers import Consumers
from tidings.kit.jetstream_relay import RELAY_BATCH, Relay
from tidings.kit.jetstream_streams import LANES, Topology, ensure_streams
from tidings.kit.partitions import PartitionLeases
from tidings.kit.queue import Job, NewJob, Splitter, WakeUps
from tidings.kit.queue_sql import SqlQueue


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
        self._relay: Relay | None = None
        self._consumers: Consumers | None = None
        self._stopping = False

    def add_splitter(self, kind: str, split: Splitter) -> None:
        """Route ``kind``'s jobs with ``split`` rather than by ``payload["user"]``."""
        self._splitters[kind] = split

    @property
    def partitioned(self) -> bool:
        return True

    @property
    def relayed(self) -> bool:
        return True

    @property
    def published(self) -> int:
        """Messages this process's relay published so far."""
        return self._relay.published if self._relay is not None else 0

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

    async def open(self) -> None:
        """Connect, and create the streams (idempotent: every process does it at start)."""
        if self._nc is None:
            self._nc = await connect(self._servers, name=self._name)
            self._js_context = self._nc.jetstream(timeout=10)
            # The relay and the consumers share the connection; the relay reads the
            # splitters as they are at each row, so those added later apply too.
            self._relay = Relay(
                self._db, self._clock, self._nc, self._js_context, self.topology, self._splitters
            )
            self._consumers = Consumers(
                self._db,
                self._clock,
                self._nc,
                self._js_context,
                self.topology,
                self._wakeups,
                max_attempts=self._max_attempts,
            )
        await ensure_streams(self._js, self.topology)

    @property
    def _js(self) -> JetStreamContext:
        if self._js_context is None:
            raise RuntimeError("the JetStream queue is not open yet")
        return self._js_context

    @property
    def _relaying(self) -> Relay:
        if self._relay is None:
            raise RuntimeError("the JetStream queue is not open yet")
        return self._relay

    @property
    def _consuming(self) -> Consumers:
        if self._consumers is None:
            raise RuntimeError("the JetStream queue is not open yet")
        return self._consumers

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (for readiness)."""
        return self._nc is not None and self._nc.is_connected

    # -- writing and relaying ----------------------------------------------------------

    async def enqueue(self, conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> None:
        """Write jobs to the outbox inside the caller's transaction."""
        await self._outbox.enqueue(conn, new_jobs)

    def wake(self, lanes: Collection[int] | None = None) -> None:
        """Jobs were committed: relay them now, and end local waits."""
        if self._relay is not None:
            self._relay.wake()
        self._wakeups.call(lanes)

    def start_relay(self, poll_seconds: float | None = None) -> None:
        """Publish outbox rows as they are committed; with ``poll_seconds``, also look for
        timers that came due every so often (the scheduler's job)."""
        self._relaying.start(poll_seconds)

    async def relay_once(self, limit: int = RELAY_BATCH) -> int:
        """Publish up to ``limit`` due outbox rows and delete them; returns how many left
        the outbox (``jetstream_relay.Relay.relay_once``)."""
        return await self._relaying.relay_once(limit)

    # -- consuming -----------------------------------------------------------------

    async def start_consuming(
        self, stages: Collection[str], lanes: Collection[int], leases: PartitionLeases
    ) -> None:
        """Pull the given stages' and lanes' messages, from the partitions ``leases`` owns."""
        await self._consuming.start(stages, lanes, leases)

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        """Up to ``limit`` messages from the owned partitions of ``lanes``, most urgent
        lane first (``jetstream_consumers.Consumers.claim``)."""
        if self._consumers is None or self._stopping:
            return []
        return await self._consumers.claim(limit, lanes)

    async def complete(self, conn: AsyncConnection, done: Sequence[Job]) -> None:
        """Nothing to do inside the transaction: the ack goes out in ``settle``, after it."""

    async def settle(self, done: Sequence[Job]) -> None:
        """Acknowledge the jobs a handler finished (those it did not retry or bury)."""
        if self._consumers is not None:
            await self._consumers.settle(done)

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        """Hand the message back, to be delivered again at ``run_at``."""
        if self._consumers is not None:
            await self._consumers.retry(job, error, run_at)

    async def release(self, job: Job) -> None:
        """Hand the message back, to be delivered again at once."""
        if self._consumers is not None:
            await self._consumers.release(job)
        else:
            self._wakeups.call({job.lane})

    async def bury(self, job: Job, error: str) -> None:
        """Record the job as a dead letter, copy it to the dead-letter stream, and stop
        JetStream from delivering it again."""
        await self._consuming.bury(job, error)

    # -- waiting, readiness and stopping ---------------------------------------------

    def wakeups(self, lanes: Collection[int] | None = None) -> int:
        return self._wakeups.count(lanes)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        """Sleep until a relay anywhere rings for ``lanes`` or ``seconds`` pass; also
        let go of partitions the leases gave up."""
        if self._consumers is not None:
            await self._consumers.drop_released()
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
        if self._relay is not None:
            await self._relay.stop()
        if self._consumers is not None:
            await self._consumers.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
