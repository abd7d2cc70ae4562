"""The durable work queue's contract: jobs written with the caller's transaction, leased
by workers.

Jobs sit in priority lanes (0 is critical, 3 low); a consumer may claim from some lanes
only, so each lane can be served by its own loop and a backlog in one never waits behind
another. A job whose worker dies runs again once its lease expires.

Each backend is a module of its own, chosen by ``backends.build_queue`` and otherwise known
only by this protocol: ``queue_sql.SqlQueue`` (jobs in Tidings' own database),
``jetstream.JetStreamQueue`` (NATS JetStream, partitioned by recipient, with the
database as outbox and timer store), and ``queue_memory.InMemoryQueue``, the twin for
unit tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import random
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue. ``id`` is derived from what it does, so enqueueing twice is a no-op."""

    id: str
    kind: str
    payload: dict[str, Any]
    lane: int = 2
    run_at: dt.datetime | None = None
    headers: Mapping[str, str] | None = None
    """Trace context to carry to the job's handler; by default the enqueuer's current one."""
    delayed_from: dt.datetime | None = None
    """When ``run_at`` is a delay counted from a moment (a type's delay), that moment.
    Without it, a ``run_at`` is a time of its own (quiet hours, a digest window's end),
    kept as given; a job without ``run_at`` is a delay of nothing from now."""


@dataclass(frozen=True)
class Job:
    """A leased job."""

    id: str
    kind: str
    payload: dict[str, Any]
    lane: int
    attempts: int
    leased_by: str = field(default="")
    receipt: str = field(default="", compare=False)
    """What the queue knows this delivery of the job by (a broker's message), if anything."""
    headers: Mapping[str, str] | None = field(default=None, compare=False)
    """The trace context the job was enqueued in (W3C ``traceparent``…), if any."""


Splitter = Callable[[Mapping[str, Any], int], dict[int, dict[str, Any]]]
"""Cuts a job's payload into one share per partition (for a job about many recipients)."""


class Queue(Protocol):
    """What the pipeline, the worker and the processes need of a queue.

    Besides jobs, a queue has a lifecycle (``start``, ``close``), may be partitioned (a
    job about many recipients is then split into one share per partition), may relay
    committed jobs to a broker (a scheduler process then fires due timers), and says
    whether its engines answer (``checks``) and what waits in them (``pending``).
    """

    @property
    def partitioned(self) -> bool:
        """Whether jobs are routed to partitions by recipient (a job for many recipients
        is split, and a topic's pages are planned as partitioned plan jobs)."""
        ...

    @property
    def relayed(self) -> bool:
        """Whether committed jobs reach the workers through a relay, so that a
        ``tidings scheduler`` process has a part to play (firing due timers)."""
        ...

    def add_splitter(self, kind: str, split: Splitter) -> None:
        """Route ``kind``'s jobs with ``split`` (on a partitioned queue; else nothing)."""
        ...

    async def start(self, *, consume: bool, member: str, relay_poll: float | None = None) -> None:
        """Connect, and start what this process runs of the queue: the relay of committed
        jobs where there is one (polling for due timers every ``relay_poll`` seconds),
        and with ``consume`` the consuming of jobs, as worker ``member``."""
        ...

    async def close(self) -> None:
        """Stop what ``start`` started and hand back jobs leased but not begun."""
        ...

    def checks(self) -> dict[str, str]:
        """Readiness of the engines the queue adds to the database, each "ok" or why not
        (none for the database's own queue)."""
        ...

    async def pending(self) -> dict[tuple[str, int], int]:
        """Jobs waiting in a broker, per (stage, lane), for the gauges (none for the
        database's own queue, which the ``jobs`` table's gauges cover)."""
        ...

    async def enqueue(self, conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> None: ...

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]: ...

    async def complete(self, conn: AsyncConnection, done: Sequence[Job]) -> None: ...

    async def settle(self, done: Sequence[Job]) -> None:
        """After a handler returned: acknowledge what it finished and did not retry or
        bury (a broker's ack; the database queue deleted them with the commit already)."""
        ...

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None: ...

    async def release(self, job: Job) -> None:
        """Give a leased job back untried, to run again at once; the claim that leased
        it does not count as an attempt."""
        ...

    async def bury(self, job: Job, error: str) -> None: ...

    def wake(self, lanes: Collection[int] | None = None) -> None: ...

    def wakeups(self, lanes: Collection[int] | None = None) -> int: ...

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None: ...


SCHEDULE_SLACK = dt.timedelta(seconds=5)
"""How far ahead of a queue's clock the moment a delay was asked at may be before the
queue decides that the scheduler's clock ran ahead, and counts the delay from now."""


def scheduled_at(job: NewJob, now: dt.datetime) -> dt.datetime | None:
    """The moment ``job``'s delay counts from, or None for a timer set to a time."""
    if job.run_at is None:
        return now
    return job.delayed_from


def partition_of(key: str, partitions: int) -> int:
    """The partition of a recipient (or of any other key): stable across processes."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempts + 1``: exponential, capped, full jitter.

    The upper bound doubles with each attempt up to ``cap``; the delay is drawn between
    half of it and all of it, so retries spread out but never come back immediately.
    """
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


class WakeUps:
    """Wake-up calls for the consumers waiting on a queue, heard per lane.

    Every waiting consumer has its own future, so one consumer waking up never swallows
    a call meant for another. Calls are also counted: a consumer notes the count before
    it looks for work and waits only while the count is unchanged, so a call that lands
    between an empty claim and the wait still cuts the wait short.
    """

    def __init__(self) -> None:
        self._to_all = 0
        self._per_lane: collections.Counter[int] = collections.Counter()
        self._waiters: dict[asyncio.Future[None], frozenset[int] | None] = {}

    def count(self, lanes: Collection[int] | None = None) -> int:
        """How many calls so far concerned any of ``lanes`` (any lane at all by default)."""
        if lanes is None:
            return self._to_all + self._per_lane.total()
        return self._to_all + sum(self._per_lane[lane] for lane in set(lanes))

    def call(self, lanes: Collection[int] | None = None) -> None:
        """Wake the consumers waiting on any of ``lanes`` (everyone by default)."""
        called = None if lanes is None else frozenset(lanes)
        if called is None:
            self._to_all += 1
        else:
            self._per_lane.update(called)
        for future, waiting_on in self._waiters.items():
            if not future.done() and (called is None or waiting_on is None or called & waiting_on):
                future.set_result(None)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        """Sleep until a call concerns ``lanes`` or ``seconds`` pass; return at once when
        ``count(lanes)`` has moved past ``since`` already."""
        if since is not None and self.count(lanes) != since:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[future] = None if lanes is None else frozenset(lanes)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, seconds)
        finally:
            del self._waiters[future]


class LocalQueue:
    """What a queue whose consumers all live in this process shares: not partitioned, no
    relay, no engine besides the database, and consumers woken in-process."""

    def __init__(self) -> None:
        self._wakeups = WakeUps()

    @property
    def partitioned(self) -> bool:
        return False

    @property
    def relayed(self) -> bool:
        return False

    def add_splitter(self, kind: str, split: Splitter) -> None:
        """Nothing: the queue is not partitioned."""

    async def close(self) -> None:
        """Nothing to stop: workers claim through the queue's own calls."""

    def checks(self) -> dict[str, str]:
        return {}

    async def pending(self) -> dict[tuple[str, int], int]:
        return {}

    def wake(self, lanes: Collection[int] | None = None) -> None:
        """Tell the consumers waiting on ``lanes`` (all of them by default) that jobs
        were committed there."""
        self._wakeups.call(lanes)

    def wakeups(self, lanes: Collection[int] | None = None) -> int:
        """How many wake-ups concerned ``lanes`` so far; see ``wait``."""
        return self._wakeups.count(lanes)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        """Sleep until woken for ``lanes`` or ``seconds`` pass; with ``since`` (a
        ``wakeups`` count taken before looking for work), not at all if a wake-up came
        in between."""
        await self._wakeups.wait(seconds, lanes, since=since)
