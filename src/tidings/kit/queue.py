"""The durable work queue: jobs written with the caller's transaction, leased by workers.

``SqlQueue`` keeps jobs in the database itself. On PostgreSQL workers lease rows with
``FOR UPDATE SKIP LOCKED``; on SQLite one in-process consumer leases them. A job whose
worker dies is leased again once its lease expires. Jobs sit in priority lanes (0 is
critical, 3 low); a consumer may claim from some lanes only, so each lane can be served
by its own loop and a backlog in one never waits behind another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.tables import UTCDateTime, dead_letters, jobs


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


class Queue(Protocol):
    """What the pipeline needs of a queue."""

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
_BOUND_BATCH = 1000
BOUND_EVERY_SECONDS = 1.0
"""How often a queue looks for schedules set by a clock that ran ahead (its own clock
going back makes it look at once)."""


def scheduled_at(job: NewJob, now: dt.datetime) -> dt.datetime | None:
    """The moment ``job``'s delay counts from, or None for a timer set to a time."""
    if job.run_at is None:
        return now
    return job.delayed_from


async def bound_schedules(db: Database, conn: AsyncConnection, now: dt.datetime) -> int:
    """Bring back jobs scheduled by a clock that ran ahead; returns how many moved.

    A delay asked at a moment more than ``SCHEDULE_SLACK`` after ``now`` was counted
    from a wrong clock: a 30 s backoff computed an hour ahead would wait an hour and
    30 s once the clock is put right. Such a job keeps its delay, counted from now.
    Timers set to a time of their own (no ``scheduled_at``) keep it. Rows another
    transaction holds are left to it: two queues bounding at once never wait on each other.
    """
    c = jobs.c
    found = (
        sa.select(c.id, c.run_at, c.scheduled_at)
        .where(c.scheduled_at > now + SCHEDULE_SLACK)
        .limit(_BOUND_BATCH)
    )
    if db.is_postgres:
        found = found.with_for_update(skip_locked=True)
    rows = (await conn.execute(found)).all()
    if not rows:
        return 0
    await conn.execute(
        jobs.update()
        .where(
            c.id == sa.bindparam("job_id"),
            c.scheduled_at == sa.bindparam("asked_at", type_=UTCDateTime()),
        )
        .values(run_at=sa.bindparam("due_at", type_=UTCDateTime()), scheduled_at=now),
        [
            {
                "job_id": row.id,
                "asked_at": row.scheduled_at,
                "due_at": now + max(dt.timedelta(0), row.run_at - row.scheduled_at),
            }
            for row in rows
        ],
    )
    return len(rows)


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


class SqlQueue:
    """The queue kept in Tidings' own database.

    A claim is one statement: on PostgreSQL it runs on its own (autocommit), a round
    trip instead of the four of a transaction around it. Schedules set by a clock that
    ran ahead are bounded before a claim at most every ``BOUND_EVERY_SECONDS``, and at
    once when this queue's clock went back (it was the one ahead).
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._wakeups = WakeUps()
        self._bounded_at = -math.inf
        """When (event loop time) schedules were last bounded."""
        self._latest: dt.datetime | None = None
        """The latest time this queue's clock told a claim."""
        self._claims: dict[tuple[int, ...] | None, sa.Update] = {}
        """The claim statement of each set of lanes, built once."""

    async def enqueue(self, conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> None:
        """Add jobs inside the caller's transaction: they exist exactly when it commits."""
        if not new_jobs:
            return
        now = self._clock.now()
        context = tracing.current_headers()
        await self._db.insert_rows_ignore(
            conn,
            jobs,
            [
                {
                    "id": job.id,
                    "kind": job.kind,
                    "payload": job.payload,
                    "lane": job.lane,
                    "run_at": job.run_at or now,
                    "scheduled_at": scheduled_at(job, now),
                    "attempts": 0,
                    "created_at": now,
                    "headers": dict(job.headers) if job.headers else context,
                }
                for job in new_jobs
            ],
        )

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs of ``lanes`` (every lane by default), most
        urgent lane first."""
        if lanes is not None and not lanes:
            return []
        now = self._clock.now()
        key = None if lanes is None else tuple(sorted(set(lanes)))
        stmt = self._claims.get(key)
        if stmt is None:
            stmt = self._claims[key] = _claim_statement(key)
        params = {"now": now, "lease_until": now + lease, "worker": worker_id, "limit": limit}
        if self._bounding_due(now):
            async with self._db.transaction() as conn:
                await bound_schedules(self._db, conn, now)
        if self._db.is_postgres:
            # One statement is its own transaction: the lease commits with it.
            async with self._db.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                rows = (await conn.execute(stmt, params)).all()
        else:
            async with self._db.transaction() as conn:
                rows = (await conn.execute(stmt, params)).all()
        # RETURNING comes in no particular order; hand the jobs out as they were chosen.
        chosen = sorted(rows, key=lambda r: (r.lane, r.run_at))
        return [
            Job(r.id, r.kind, r.payload, r.lane, r.attempts, worker_id, headers=r.headers)
            for r in chosen
        ]

    def _bounding_due(self, now: dt.datetime) -> bool:
        """Whether a claim at ``now`` should bound schedules first: when this queue's
        clock went back since the last claim, or ``BOUND_EVERY_SECONDS`` after the last
        time (for the schedules of other processes' clocks)."""
        went_back = self._latest is not None and now < self._latest
        self._latest = now
        moment = asyncio.get_running_loop().time()
        if not went_back and moment - self._bounded_at < BOUND_EVERY_SECONDS:
            return False
        self._bounded_at = moment
        return True

    async def complete(self, conn: AsyncConnection, done: Sequence[Job]) -> None:
        """Remove finished jobs, inside the transaction that recorded their effects."""
        if done:
            await conn.execute(jobs.delete().where(jobs.c.id.in_([job.id for job in done])))

    async def settle(self, done: Sequence[Job]) -> None:
        """Nothing left to do: ``complete`` deleted the jobs with the handler's commit."""

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        """Give a failed job back, to run again at ``run_at``: a backoff from now, by
        this queue's clock."""
        async with self._db.transaction() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id)
                .values(
                    run_at=run_at,
                    scheduled_at=self._clock.now(),
                    lease_until=None,
                    leased_by=None,
                    last_error=error[:4000],
                )
            )
        metrics.of(self._db).job_retried(job.kind)

    async def release(self, job: Job) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.leased_by == job.leased_by)
                .values(
                    lease_until=None,
                    leased_by=None,
                    attempts=sa.func.greatest(jobs.c.attempts - 1, 0)
                    if self._db.is_postgres
                    else sa.func.max(jobs.c.attempts - 1, 0),
                )
            )
        self.wake({job.lane})

    async def bury(self, job: Job, error: str) -> None:
        """Move a job that keeps failing to the dead letters."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await conn.execute(
                self._db.insert_ignore(dead_letters).values(**dead_letter_row(job, error, now))
            )
            await conn.execute(jobs.delete().where(jobs.c.id == job.id))
        metrics.of(self._db).job_buried(job.kind)

    async def release_all(self) -> int:
        """Drop every lease: only for the embedded default, whose one process is the only
        consumer, so after a restart nothing waits for a dead worker's leases to expire."""
        async with self._db.transaction() as conn:
            result = await conn.execute(
                jobs.update()
                .where(jobs.c.lease_until.is_not(None))
                .values(lease_until=None, leased_by=None)
            )
        return result.rowcount

    async def depth(self) -> int:
        """How many jobs wait or run."""
        async with self._db.reader() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(jobs))).scalar_one()
            )

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


def dead_letter_row(job: Job, error: str, now: dt.datetime) -> dict[str, Any]:
    """The ``dead_letters`` row of a job given up on."""
    return {
        "id": job.id,
        "kind": job.kind,
        "payload": job.payload,
        "lane": job.lane,
        "attempts": job.attempts,
        "error": error[:4000],
        "created_at": now,
        "failed_at": now,
        "headers": dict(job.headers) if job.headers else None,
    }


def _claim_statement(lanes: tuple[int, ...] | None) -> sa.Update:
    """The claim of up to ``:limit`` jobs of ``lanes`` due at ``:now`` for ``:worker``,
    leased until ``:lease_until``: the ids are chosen (and locked, skipping those that
    another claim holds) and leased in one statement."""
    now = sa.bindparam("now", type_=UTCDateTime())
    due = (
        sa.select(jobs.c.id)
        .where(
            *_in_lanes(lanes),
            jobs.c.run_at <= now,
            sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
        )
        .order_by(jobs.c.lane, jobs.c.run_at)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )
    return (
        jobs.update()
        .where(jobs.c.id.in_(due.scalar_subquery()))
        .values(
            lease_until=sa.bindparam("lease_until", type_=UTCDateTime()),
            leased_by=sa.bindparam("worker", type_=sa.String()),
            attempts=jobs.c.attempts + 1,
        )
        .returning(
            jobs.c.id,
            jobs.c.kind,
            jobs.c.payload,
            jobs.c.lane,
            jobs.c.attempts,
            jobs.c.run_at,
            jobs.c.headers,
        )
    )


def _in_lanes(lanes: Collection[int] | None) -> list[sa.ColumnElement[bool]]:
    """The claim's lane condition. One lane is an equality, so the (lane, run_at) index
    yields that lane's due jobs already in order."""
    if lanes is None:
        return []
    chosen = sorted(set(lanes))
    if len(chosen) == 1:
        return [jobs.c.lane == chosen[0]]
    return [jobs.c.lane.in_(chosen)]


class InMemoryQueue:
    """The queue's twin for unit tests: same contract, no database, no durability.

    ``enqueue`` and ``complete`` ignore the connection, so they are not transactional.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._wakeups = WakeUps()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.dead: dict[str, tuple[Job, str]] = {}

    async def enqueue(self, conn: AsyncConnection | None, new_jobs: Sequence[NewJob]) -> None:
        now = self._clock.now()
        for job in new_jobs:
            self.jobs.setdefault(
                job.id,
                {
                    "job": job,
                    "run_at": job.run_at or now,
                    "scheduled_at": scheduled_at(job, now),
                    "attempts": 0,
                    "lease_until": None,
                },
            )

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        now = self._clock.now()
        for entry in self.jobs.values():
            asked_at = entry["scheduled_at"]
            if asked_at is not None and asked_at > now + SCHEDULE_SLACK:
                entry["run_at"] = now + max(dt.timedelta(0), entry["run_at"] - asked_at)
                entry["scheduled_at"] = now
        due = sorted(
            (
                entry
                for entry in self.jobs.values()
                if (lanes is None or entry["job"].lane in lanes)
                and entry["run_at"] <= now
                and (entry["lease_until"] is None or entry["lease_until"] < now)
            ),
            key=lambda entry: (entry["job"].lane, entry["run_at"]),
        )[:limit]
        claimed = []
        for entry in due:
            entry["attempts"] += 1
            entry["lease_until"] = now + lease
            new: NewJob = entry["job"]
            claimed.append(
                Job(
                    new.id,
                    new.kind,
                    new.payload,
                    new.lane,
                    entry["attempts"],
                    worker_id,
                    headers=new.headers,
                )
            )
        return claimed

    async def complete(self, conn: AsyncConnection | None, done: Sequence[Job]) -> None:
        for job in done:
            self.jobs.pop(job.id, None)

    async def settle(self, done: Sequence[Job]) -> None:
        pass

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        entry = self.jobs[job.id]
        entry["run_at"] = run_at
        entry["scheduled_at"] = self._clock.now()
        entry["lease_until"] = None

    async def release(self, job: Job) -> None:
        entry = self.jobs[job.id]
        entry["lease_until"] = None
        entry["attempts"] = max(entry["attempts"] - 1, 0)
        self.wake({job.lane})

    async def bury(self, job: Job, error: str) -> None:
        self.jobs.pop(job.id, None)
        self.dead[job.id] = (job, error)

    async def depth(self) -> int:
        return len(self.jobs)

    def wake(self, lanes: Collection[int] | None = None) -> None:
        self._wakeups.call(lanes)

    def wakeups(self, lanes: Collection[int] | None = None) -> int:
        return self._wakeups.count(lanes)

    async def wait(
        self, seconds: float, lanes: Collection[int] | None = None, *, since: int | None = None
    ) -> None:
        await self._wakeups.wait(seconds, lanes, since=since)
