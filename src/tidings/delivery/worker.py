"""The worker: leases jobs, runs their handlers, retries with backoff, buries poison.

It runs one loop per priority lane, each claiming only its own lane's jobs, so a backlog
of low-priority work never stands between a critical job and the loop that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from tidings import catalog
from tidings.kit import ids, job_context, logs, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue, backoff

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Job]], Awaitable[None]]

EACH_LANE: tuple[frozenset[int], ...] = tuple(
    frozenset({priority.lane}) for priority in catalog.Priority
)
"""One loop per lane, from critical to low."""

STOP_SECONDS = 10.0
"""How long ``stop`` lets running batches finish before cancelling them."""


@dataclass(frozen=True)
class Task:
    """How to run one kind of job.

    ``split`` breaks a failing job into smaller ones. ``weight`` says how much work a job
    is, in the units of the worker's batch size (one per job by default): a handler call
    gets no more than one batch of work, so it holds the database only so long.
    """

    handle: Handler
    split: Callable[[Job], list[NewJob]] | None = None
    weight: Callable[[Job], int] | None = None


class BatchAbandoned(Exception):
    """Raised by a handler that gave up on a batch midway and has already settled some of
    its jobs (completed, retried or given back): the worker must not run the others
    again one by one. What the handler did not settle comes back when its lease runs
    out."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    cap_seconds: float


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
    ) -> None:
        """``lanes`` lists the lane groups that get a loop of their own."""
        self._db = db
        self._queue = queue
        self._clock = clock
        self._tasks = tasks
        self._batch_size = batch_size
        self._lease = lease
        self._poll = poll_seconds
        self._retry = retry
        self._lane_groups = [frozenset(group) for group in lanes]
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
        limit = 1
        while not self._stopping:
            seen = self._queue.wakeups(lanes)
            try:
                claimed, weight = await self._run_batch(lanes, limit)
            except Exception:
                log.exception("worker loop for lanes %s failed; retrying shortly", sorted(lanes))
                await asyncio.sleep(self._poll)
                continue
            if claimed:
                limit = self._next_limit(claimed, weight)
            elif not self._stopping:
                await self._queue.wait(self._poll, lanes, since=seen)

    def _next_limit(self, claimed: int, weight: int) -> int:
        """How many jobs to claim next so that, if they weigh what the last ones did,
        they make one batch: heavy jobs are not leased long before they can run."""
        return max(1, min(self._batch_size, self._batch_size * claimed // max(weight, 1)))

    async def _run_batch(self, lanes: Collection[int] | None, limit: int) -> tuple[int, int]:
        """Lease up to ``limit`` jobs and run them; returns how many, and their weight."""
        await _make_way()
        lease_ends = asyncio.get_running_loop().time() + self._lease.total_seconds()
        jobs = await self._queue.claim(self.worker_id, limit, self._lease, lanes)
        by_kind: dict[str, list[Job]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        weight = 0
        for kind, group in by_kind.items():
            for portion, portion_weight in self._portions(self._tasks.get(kind), group):
                await _make_way()
                await self._run_group(kind, portion, lease_ends)
                weight += portion_weight
        return len(jobs), weight

    def _portions(self, task: Task | None, group: list[Job]) -> Iterator[tuple[list[Job], int]]:
        """``group`` cut into runs of at most one batch of work each (a job heavier than
        that runs alone), with the weight of each."""
        portion: list[Job] = []
        portion_weight = 0
        for job in group:
            weight = _weigh(task, job)
            if portion and portion_weight + weight > self._batch_size:
                yield portion, portion_weight
                portion, portion_weight = [], 0
            portion.append(job)
            portion_weight += weight
        if portion:
            yield portion, portion_weight

    async def _run_group(self, kind: str, group: list[Job], lease_ends: float) -> None:
        task = self._tasks.get(kind)
        if task is None:
            for job in group:
                await self._queue.bury(job, f"no handler for job kind {kind!r}")
            return
        try:
            with (
                job_context.running(kind, max(job.attempts for job in group), lease_ends),
                _traced(kind, group),
            ):
                await task.handle(group)
        except BatchAbandoned as exc:
            log.warning(
                "batch of %d %s jobs abandoned (%s); the unsettled ones come back when "
                "their lease runs out",
                len(group),
                kind,
                exc.__cause__ or exc,
            )
            return
        except Exception as exc:
            if len(group) == 1:
                await self._failed(task, group[0], exc)
                return
            log.warning(
                "batch of %d %s jobs failed (%s); running them one by one", len(group), kind, exc
            )
        else:
            await self._queue.settle(group)
            return
        for job in group:
            try:
                with job_context.running(kind, job.attempts, lease_ends), _traced(kind, [job]):
                    await task.handle([job])
            except Exception as exc:
                await self._failed(task, job, exc)
            else:
                await self._queue.settle([job])

    async def _failed(self, task: Task, job: Job, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        smaller = task.split(job) if task.split else []
        if smaller:
            log.warning("job %s failed (%s); split into %d jobs", job.id, error, len(smaller))
            async with self._db.transaction() as conn:
                await self._queue.complete(conn, [job])
                await self._queue.enqueue(conn, smaller)
            await self._queue.settle([job])
            self._queue.wake({new.lane for new in smaller})
            return
        if job.attempts >= self._retry.max_attempts:
            log.error("job %s dead-lettered after %d attempts: %s", job.id, job.attempts, error)
            await self._queue.bury(job, error)
            return
        delay = backoff(job.attempts, base=self._retry.base_seconds, cap=self._retry.cap_seconds)
        log.warning(
            "job %s failed (attempt %d), retrying in %.1fs: %s", job.id, job.attempts, delay, error
        )
        await self._queue.retry(job, error, self._clock.now() + dt.timedelta(seconds=delay))


def _weigh(task: Task | None, job: Job) -> int:
    """The job's weight; one when its task does not say, or cannot tell because the job
    is malformed (its handler then fails it, and retries or buries it as usual)."""
    if task is None or task.weight is None:
        return 1
    try:
        return max(1, task.weight(job))
    except Exception:
        log.warning("cannot weigh job %s; counting it as one", job.id, exc_info=True)
        return 1


@contextlib.contextmanager
def _traced(kind: str, group: Sequence[Job]) -> Iterator[None]:
    """A span around one handler call, continuing the jobs' traces, and the ids that
    the lines it logs carry when it runs one job."""
    attributes: dict[str, str | int] = {
        "tidings.job.kind": kind,
        "tidings.job.count": len(group),
        "tidings.job.attempt": max(job.attempts for job in group),
    }
    found: dict[str, str | None] = {}
    if len(group) == 1:
        job = group[0]
        attributes["messaging.message.id"] = job.id
        events = job.payload.get("events") or [job.payload.get("event")]
        found = {
            "event_id": events[0] if len(events) == 1 else None,
            "delivery_id": job.payload.get("delivery"),
        }
    with tracing.job_span(kind, [job.headers for job in group], attributes), logs.bound(**found):
        yield


async def _make_way() -> None:
    """Let the other lanes' loops in before taking the database again: on SQLite they all
    wait for one writer connection, which its pool gives to whoever asks first once it is
    back, not to whoever has waited longest."""
    await asyncio.sleep(0)
