"""The worker: leases jobs per priority lane and runs them.

It runs one loop per priority lane, each claiming only its own lane's jobs, so a backlog
of low-priority work never stands between a critical job and the loop that runs it. The
lanes share one process, though (its event loop, and on SQLite its one writer), so a
lower lane gives way while a more urgent one has work: it does not start a batch while a
more urgent batch runs (for a moment at most), and for a while after the more urgent
lane last had work its batches are sized to run ``BATCH_SECONDS``, not a full batch: a
job heavier than that (a planning job of 500 events) runs in pieces, the more urgent
lanes going first between them.

How the lanes share the process is ``lane_sharing``'s; how a claimed job's handler runs
and the job is settled (retried with backoff, split, or buried as poison),
``job_runner``'s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import Collection, Sequence

from tidings import catalog
from tidings.delivery.job_runner import JobRunner, Task
from tidings.delivery.lane_sharing import (
    BATCH_SECONDS,
    GIVE_WAY_SECONDS,
    BatchSizing,
    LaneTraffic,
    make_way,
    portions,
)
from tidings.delivery.retries import RetryPolicy
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, Queue

log = logging.getLogger(__name__)

EACH_LANE: tuple[frozenset[int], ...] = tuple(
    frozenset({priority.lane}) for priority in catalog.Priority
)
"""One loop per lane, from critical to low."""

STOP_SECONDS = 10.0
"""How long ``stop`` lets running batches finish before cancelling them."""


class Worker:
    """Runs the queue's jobs with their tasks, one loop per lane group."""

    def __init__(
        self,
        db: Database,
        queue: Queue,
        clock: Clock,
        tasks: dict[str, Task],
        *,
        batch_size: int,
        lease: dt.timedelta,
        poll_seconds: float,
        retry: RetryPolicy,
        lanes: Sequence[Collection[int]] = EACH_LANE,
        batch_seconds: float = BATCH_SECONDS,
        give_way_seconds: float = GIVE_WAY_SECONDS,
    ) -> None:
        """``lanes`` lists the lane groups that get a loop of their own. A lane below
        one that had work lately sizes its batches to run ``batch_seconds``, and waits
        up to ``give_way_seconds`` for the more urgent batches running to end before it
        claims."""
        self._db = db
        self._queue = queue
        self._tasks = tasks
        self._runner = JobRunner(db, queue, clock, tasks, retry)
        self._batch_size = batch_size
        self._lease = lease
        self._poll = poll_seconds
        self._lane_groups = [frozenset(group) for group in lanes]
        self._batch_seconds = batch_seconds
        self._traffic = LaneTraffic(give_way_seconds)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id()[-8:]}"
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start one loop per lane group."""
        self._stopping = False
        self._loops = [
            asyncio.create_task(
                self._serve(group), name=f"tidings-worker-lanes-{'-'.join(map(str, sorted(group)))}"
            )
            for group in self._lane_groups
        ]

    async def stop(self) -> None:
        """Stop every loop: running batches get ``STOP_SECONDS`` to finish, then are
        cancelled (their jobs run again once their leases expire)."""
        self._stopping = True
        self._queue.wake()
        loops, self._loops = self._loops, []
        if not loops:
            return
        _finished, late = await asyncio.wait(loops, timeout=STOP_SECONDS)
        for loop in late:
            log.warning("worker loop %s did not stop in time; cancelling it", loop.get_name())
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def run_once(self, lanes: Collection[int] | None = None) -> int:
        """Lease one batch from ``lanes`` (every lane by default, most urgent first) and
        run it; returns how many jobs it leased."""
        claimed, _weight = await self._run_batch(lanes, self._batch_size)
        return claimed

    async def _serve(self, lanes: frozenset[int]) -> None:
        """Lease and run the jobs of ``lanes`` until stopped.

        The first claim takes one job: until the loop has seen what its lanes' jobs
        weigh, a full batch of them could be far more work than one batch.
        """
        sizing = BatchSizing(self._batch_size)
        while not self._stopping:
            seen = self._queue.wakeups(lanes)
            await self._traffic.give_way(lanes)
            budget = sizing.budget(self._batch_seconds if self._traffic.urged(lanes) else None)
            try:
                jobs, started = await self._claim(lanes, sizing.limit(budget))
            except Exception:
                log.exception("worker loop for lanes %s failed; retrying shortly", sorted(lanes))
                await asyncio.sleep(self._poll)
                continue
            if jobs:
                self._traffic.claimed(lanes, started)
                await self._run_claimed(lanes, jobs, started, sizing, budget)
            elif not self._stopping:
                await self._queue.wait(self._poll, lanes, since=seen)

    async def _run_claimed(
        self,
        lanes: frozenset[int],
        jobs: list[Job],
        started: float,
        sizing: BatchSizing,
        budget: int | None,
    ) -> None:
        """Run a claimed batch (in portions of ``budget`` weight, if given), and learn
        from it how much to claim next."""
        loop = asyncio.get_running_loop()
        failed = False
        with self._traffic.running(lanes):
            try:
                weight = await self._run_jobs(jobs, started, lanes, budget)
            except Exception:
                failed = True
                log.exception("worker loop for lanes %s failed; retrying shortly", sorted(lanes))
            else:
                sizing.ran(len(jobs), weight, loop.time() - started)
        if failed:
            await asyncio.sleep(self._poll)

    async def _run_batch(self, lanes: Collection[int] | None, limit: int) -> tuple[int, int]:
        """Lease up to ``limit`` jobs and run them; returns how many, and their weight."""
        jobs, started = await self._claim(lanes, limit)
        return len(jobs), await self._run_jobs(jobs, started)

    async def _claim(self, lanes: Collection[int] | None, limit: int) -> tuple[list[Job], float]:
        """Lease up to ``limit`` jobs; returns them and when (event loop time) the claim
        started, from which their lease counts."""
        await make_way(self._db)
        started = asyncio.get_running_loop().time()
        return await self._queue.claim(self.worker_id, limit, self._lease, lanes), started

    async def _run_jobs(
        self,
        jobs: list[Job],
        started: float,
        lanes: frozenset[int] | None = None,
        budget: int | None = None,
    ) -> int:
        """Run claimed jobs, grouped by kind, in portions of at most one batch of work;
        returns their weight. With ``budget``, portions weigh no more than that, a job
        heavier than that runs in pieces if its task can split it, and before each
        portion the lanes more urgent than ``lanes`` get their way."""
        lease_ends = started + self._lease.total_seconds()
        by_kind: dict[str, list[Job]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        most = self._batch_size if budget is None else min(budget, self._batch_size)
        weight = 0
        for kind, group in by_kind.items():
            task = self._tasks.get(kind)
            for portion, portion_weight in portions(task, group, most):
                await make_way(self._db)
                if budget is not None and lanes is not None:
                    await self._traffic.give_way(lanes)
                    if task is not None and portion_weight > most:
                        await self._runner.run_in_pieces(
                            task,
                            portion[0],
                            lease_ends,
                            most,
                            functools.partial(self._take_turn, lanes),
                        )
                        weight += portion_weight
                        continue
                await self._runner.run_group(kind, portion, lease_ends)
                weight += portion_weight
        return weight

    async def _take_turn(self, lanes: frozenset[int]) -> None:
        """Let the other loops in, and the more urgent lanes' batches end, before the
        next piece of a heavy job of ``lanes``."""
        await make_way(self._db)
        await self._traffic.give_way(lanes)
