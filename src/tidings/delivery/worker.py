"""The worker: leases jobs, runs their handlers, retries with backoff, buries poison.

It runs one loop per priority lane, each claiming only its own lane's jobs, so a backlog
of low-priority work never stands between a critical job and the loop that runs it. The
lanes share one process, though (its event loop, and on SQLite its one writer), so a
lower lane gives way while a more urgent one has work: it does not start a batch while a
more urgent batch runs (for a moment at most), and for a while after the more urgent
lane last had work its batches are sized to run ``BATCH_SECONDS``, not a full batch: a
job heavier than that (a planning job of 500 events) runs in pieces, the more urgent
lanes going first between them.
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
from tidings.delivery.retries import RetryPolicy, retry_or_bury
from tidings.kit import ids, job_context, logs, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Job]], Awaitable[None]]

EACH_LANE: tuple[frozenset[int], ...] = tuple(
    frozenset({priority.lane}) for priority in catalog.Priority
)
"""One loop per lane, from critical to low."""

STOP_SECONDS = 10.0
"""How long ``stop`` lets running batches finish before cancelling them."""

BATCH_SECONDS = 0.05
"""How long a batch of a lane below one that had work lately is sized to run."""

URGENT_MEMORY_SECONDS = 5.0
"""How long after a more urgent lane last claimed jobs a lane keeps its batches short."""

GIVE_WAY_SECONDS = 0.1
"""The longest a lane waits for more urgent batches to end before it claims."""


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
        self._clock = clock
        self._tasks = tasks
        self._batch_size = batch_size
        self._lease = lease
        self._poll = poll_seconds
        self._retry = retry
        self._lane_groups = [frozenset(group) for group in lanes]
        self._batch_seconds = batch_seconds
        self._give_way_seconds = give_way_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id()[-8:]}"
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._running: dict[asyncio.Future[None], int] = {}
        """The batches running in the loops, each with the most urgent lane it serves."""
        self._claimed_at: dict[int, float] = {}
        """Per lane served by a loop, when (event loop time) its loop last claimed jobs."""

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
        sizing = _Sizing(self._batch_size)
        while not self._stopping:
            seen = self._queue.wakeups(lanes)
            await self._give_way(lanes)
            budget = sizing.budget(self._batch_seconds if self._urged(lanes) else None)
            try:
                jobs, started = await self._claim(lanes, sizing.limit(budget))
            except Exception:
                log.exception("worker loop for lanes %s failed; retrying shortly", sorted(lanes))
                await asyncio.sleep(self._poll)
                continue
            if jobs:
                self._claimed_at[min(lanes)] = started
                await self._run_claimed(lanes, jobs, started, sizing, budget)
            elif not self._stopping:
                await self._queue.wait(self._poll, lanes, since=seen)

    async def _run_claimed(
        self,
        lanes: frozenset[int],
        jobs: list[Job],
        started: float,
        sizing: _Sizing,
        budget: int | None,
    ) -> None:
        """Run a claimed batch (in portions of ``budget`` weight, if given), and learn
        from it how much to claim next."""
        loop = asyncio.get_running_loop()
        running = loop.create_future()
        self._running[running] = min(lanes)
        failed = False
        try:
            weight = await self._run_jobs(jobs, started, lanes, budget)
        except Exception:
            failed = True
            log.exception("worker loop for lanes %s failed; retrying shortly", sorted(lanes))
        else:
            sizing.ran(len(jobs), weight, loop.time() - started)
        finally:
            del self._running[running]
            running.set_result(None)
        if failed:
            await asyncio.sleep(self._poll)

    async def _give_way(self, lanes: frozenset[int]) -> None:
        """Wait, ``give_way_seconds`` at most, for the batches of more urgent lanes that
        are running to end."""
        urgent = [batch for batch, lane in self._running.items() if lane < min(lanes)]
        if urgent:
            await asyncio.wait(urgent, timeout=self._give_way_seconds)

    def _urged(self, lanes: frozenset[int]) -> bool:
        """Whether a more urgent lane than ``lanes`` claimed jobs lately."""
        since = asyncio.get_running_loop().time() - URGENT_MEMORY_SECONDS
        return any(lane < min(lanes) and at > since for lane, at in self._claimed_at.items())

    async def _run_batch(self, lanes: Collection[int] | None, limit: int) -> tuple[int, int]:
        """Lease up to ``limit`` jobs and run them; returns how many, and their weight."""
        jobs, started = await self._claim(lanes, limit)
        return len(jobs), await self._run_jobs(jobs, started)

    async def _claim(self, lanes: Collection[int] | None, limit: int) -> tuple[list[Job], float]:
        """Lease up to ``limit`` jobs; returns them and when (event loop time) the claim
        started, from which their lease counts."""
        await _make_way(self._db)
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
            for portion, portion_weight in self._portions(task, group, most):
                await _make_way(self._db)
                if budget is not None and lanes is not None:
                    await self._give_way(lanes)
                    if task is not None and portion_weight > most:
                        await self._run_in_pieces(task, portion[0], lease_ends, lanes, most)
                        weight += portion_weight
                        continue
                await self._run_group(kind, portion, lease_ends)
                weight += portion_weight
        return weight

    def _portions(
        self, task: Task | None, group: list[Job], most: int
    ) -> Iterator[tuple[list[Job], int]]:
        """``group`` cut into runs of at most ``most`` work each (a job heavier than that
        runs alone), with the weight of each."""
        portion: list[Job] = []
        portion_weight = 0
        for job in group:
            weight = _weigh(task, job)
            if portion and portion_weight + weight > most:
                yield portion, portion_weight
                portion, portion_weight = [], 0
            portion.append(job)
            portion_weight += weight
        if portion:
            yield portion, portion_weight

    async def _run_in_pieces(
        self, task: Task, job: Job, lease_ends: float, lanes: frozenset[int], most: int
    ) -> None:
        """Run a job too heavy for a short batch as the pieces its task splits it into,
        ``most`` at a time, giving way to more urgent lanes between, and complete it
        once every piece ran. The pieces are not queued: should one fail, or the
        process die, the job runs again whole (what its pieces did is done already,
        and every effect is written once)."""
        pieces = [
            Job(
                new.id,
                new.kind,
                new.payload,
                new.lane,
                job.attempts,
                job.leased_by,
                headers=job.headers,
            )
            for new in (task.split(job) if task.split else [])
        ]
        if not pieces:
            await self._run_group(job.kind, [job], lease_ends)
            return
        try:
            for at in range(0, len(pieces), most):
                if at:
                    await _make_way(self._db)
                    await self._give_way(lanes)
                portion = pieces[at : at + most]
                with (
                    job_context.running(job.kind, job.attempts, lease_ends),
                    _traced(job.kind, portion),
                ):
                    await task.handle(portion)
            async with self._db.transaction() as conn:
                await self._queue.complete(conn, [job])
        except Exception as exc:
            log.warning("job %s failed in pieces (%s); running it whole", job.id, exc)
            await self._run_group(job.kind, [job], lease_ends)
            return
        await self._queue.settle([job])

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
        await retry_or_bury(self._queue, job, error, self._retry, self._clock.now())


class _Sizing:
    """How much a loop claims next: jobs that, if they weigh what the last ones did, make
    one batch (heavy jobs are not leased long before they can run); and, when asked for
    a short batch, work that runs about the seconds asked for if each unit of weight
    takes what the last ones took."""

    def __init__(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._by_weight = 1
        self._jobs_per_weight = 1.0
        self._seconds_per_weight = 0.0

    def budget(self, seconds: float | None) -> int | None:
        """The weight that runs about ``seconds`` (a tenth of a batch at least: a busy
        machine stretches the time each takes, and each batch costs some more); None
        when not asked, or not known yet."""
        if seconds is None or self._seconds_per_weight <= 0:
            return None
        least = max(1, self._batch_size // 10)
        return min(self._batch_size, max(least, int(seconds / self._seconds_per_weight)))

    def limit(self, budget: int | None) -> int:
        """How many jobs to claim, for a batch of at most ``budget`` weight if given."""
        if budget is None:
            return self._by_weight
        return max(1, min(self._by_weight, int(budget * self._jobs_per_weight)))

    def ran(self, claimed: int, weight: int, seconds: float) -> None:
        """Take in a batch of ``claimed`` jobs weighing ``weight`` that ran ``seconds``."""
        if not claimed:
            return
        weight = max(weight, 1)
        self._by_weight = max(1, min(self._batch_size, self._batch_size * claimed // weight))
        self._jobs_per_weight = claimed / weight
        self._seconds_per_weight = seconds / weight


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


async def _make_way(db: Database) -> None:
    """Let the other lanes' loops in before taking the database again: on SQLite they all
    wait for one writer connection, which its pool gives to whoever asks first once it is
    back, not to whoever has waited longest. PostgreSQL gives each its own connection:
    there a turn of the event loop would only add to the job's wait."""
    if not db.is_postgres:
        await asyncio.sleep(0)
