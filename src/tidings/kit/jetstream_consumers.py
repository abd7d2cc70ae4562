"""Consuming the JetStream queue: pulling the owned partitions and settling their messages.

Each (stage, lane, partition) has its own durable pull consumer, and only the worker that
owns the partition (``partitions.PartitionLeases``) pulls from it, so one person's work
is processed in order. Acks are explicit and sent after the handler's commit; a failure
is ``nak``-ed with a backoff delay; a message delivered more often than the retry policy
allows goes to the dead letters (the database's, where the database queue puts them too,
and a dead-letter stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from tidings.kit import metrics
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.jetstream_streams import LANES, Topology, ensure_consumers
from tidings.kit.partitions import PartitionKey, PartitionLeases
from tidings.kit.queue import Job, WakeUps
from tidings.kit.queue_sql import dead_letter_row
from tidings.kit.tables import dead_letters

_PULL_SECONDS = 5.0
"""How long a pull waits for the server's answer before giving up on it."""


class Consumers:
    """This process's consumers over an open connection: the partitions its leases own
    are pulled for jobs, and each job's message is acked, handed back or buried.

    Every call for work (``wakeups``) is rung on ``wakeups``: a relay's doorbell, a
    message handed back.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        nc: NatsClient,
        js: JetStreamContext,
        topology: Topology,
        wakeups: WakeUps,
        *,
        max_attempts: int,
    ) -> None:
        self._db = db
        self._clock = clock
        self._nc = nc
        self._js = js
        self._topology = topology
        self._wakeups = wakeups
        self._max_attempts = max_attempts
        self._leases: PartitionLeases | None = None
        self._subscriptions: dict[PartitionKey, Subscription] = {}
        self._turn: dict[int, int] = {}
        self._pull_locks: dict[PartitionKey, asyncio.Lock] = {}
        self._doorbell: Any = None
        self._inflight: dict[str, Msg] = {}

    async def start(
        self, stages: Collection[str], lanes: Collection[int], leases: PartitionLeases
    ) -> None:
        """Pull the given stages' and lanes' messages, from the partitions ``leases`` owns."""
        await ensure_consumers(self._js, self._topology, stages, lanes)
        self._leases = leases
        await leases.start()

        async def ring(msg: Msg) -> None:
            lane = msg.subject.rpartition(".")[2]
            self._wakeups.call({int(lane)} if lane.isdigit() else None)

        self._doorbell = await self._nc.subscribe(f"{self._topology.prefix}.doorbell.*", cb=ring)

    async def claim(self, limit: int, lanes: Collection[int] | None = None) -> list[Job]:
        """Up to ``limit`` messages from the owned partitions of ``lanes``, most urgent
        lane first.

        Partitions are asked one after the other, each for what the claim still lacks;
        within a lane the first one asked moves round, so a busy partition cannot starve
        the others. Messages delivered more often than the retry policy allows (a worker
        died each time it ran them) are buried here, without running them again.
        """
        if self._leases is None or limit < 1:
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

    async def _pull(self, key: PartitionKey, batch: int) -> list[Msg]:
        """What the partition has ready now, up to ``batch``; nothing if it has none."""
        # One pull at a time per partition: concurrent fetches on one subscription take
        # each other's messages, and order within the partition is the point of it.
        async with self._pull_locks.setdefault(key, asyncio.Lock()):
            return await self._pull_locked(key, batch)

    async def _pull_locked(self, key: PartitionKey, batch: int) -> list[Msg]:
        """A ``no_wait`` pull: the server sends what it has, up to ``batch``, then says it
        has no more; an empty partition costs one round trip, not a wait."""
        subscription = self._subscriptions.get(key)
        if subscription is None:
            subscription = await self._nc.subscribe(self._nc.new_inbox())
            self._subscriptions[key] = subscription
        stage, lane, partition = key
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._topology.stream(stage)}."
            f"{self._topology.consumer(stage, lane, partition)}",
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

    async def drop_released(self) -> None:
        """Unsubscribe from the partitions given up (what this process was sent and did
        not ack comes back to the partition's next owner after ``ack_wait``)."""
        owned = self._leases.owned() if self._leases is not None else frozenset()
        for key in [key for key in self._subscriptions if key not in owned]:
            await _unsubscribe(self._subscriptions.pop(key))

    async def _received(self, key: PartitionKey, msg: Msg) -> Job | None:
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
        stage = (
            self._topology.stage_of(job.kind) if job.kind in self._topology.stages else "unknown"
        )
        await self._js.publish(
            f"{self._topology.prefix}.dead.{stage}.{job.lane}",
            orjson.dumps({"id": job.id, "kind": job.kind, "payload": job.payload, "error": error}),
            headers={"Nats-Msg-Id": f"dead:{job.receipt or job.id}:{job.attempts}"},
        )
        msg = self._inflight.pop(job.receipt, None)
        if msg is not None:
            await msg.term()
        metrics.of(self._db).job_buried(job.kind)

    async def close(self) -> None:
        """Hand back the messages not yet run, stop pulling, and give up the partitions."""
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


async def _unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()
