"""The queue kept in Tidings' own database: the ``jobs`` table.

On PostgreSQL workers lease rows with ``FOR UPDATE SKIP LOCKED``; on SQLite one
in-process consumer leases them. A job whose worker dies is leased again once its lease
expires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import metrics, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database, among
from tidings.kit.queue import SCHEDULE_SLACK, Job, LocalQueue, NewJob, scheduled_at
from tidings.kit.tables import UTCDateTime, dead_letters, jobs

_BOUND_BATCH = 1000
BOUND_EVERY_SECONDS = 1.0
"""How often a queue looks for schedules set by a clock that ran ahead (its own clock
going back makes it look at once)."""


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


class SqlQueue(LocalQueue):
    """The queue kept in Tidings' own database.

    A claim is one statement: on PostgreSQL it runs on its own (autocommit), a round
    trip instead of the four of a transaction around it. Schedules set by a clock that
    ran ahead are bounded before a claim at most every ``BOUND_EVERY_SECONDS``, and at
    once when this queue's clock went back (it was the one ahead).
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        super().__init__()
        self._bounded_at = -math.inf
        """When (event loop time) schedules were last bounded."""
        self._latest: dt.datetime | None = None
        """The latest time this queue's clock told a claim."""
        self._claims: dict[tuple[int, ...] | None, sa.Update] = {}
        """The claim statement of each set of lanes, built once."""

    async def start(self, *, consume: bool, member: str, relay_poll: float | None = None) -> None:
        """On the embedded default (SQLite), a consuming process drops every lease: it is
        the only consumer, and leases left by a previous run belong to no one alive."""
        if consume and self._db.dialect == "sqlite":
            await self.release_all()

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
            await conn.execute(
                jobs.delete().where(among(conn, jobs.c.id, [job.id for job in done]))
            )

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
