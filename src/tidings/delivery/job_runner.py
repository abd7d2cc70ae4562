"""Running claimed jobs: how each kind of job is run (``Task``), a handler's way to give
up on a batch midway (``BatchAbandoned``), and the runner that calls the handlers and
settles every job: completed, split into smaller jobs, retried with backoff, or buried.

A batch whose handler fails runs again one job at a time, so one poison job cannot hold
back the others."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tidings.delivery.retries import RetryPolicy, retry_or_bury
from tidings.kit import job_context, logs, tracing
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue

# The worker's log: its lines keep one logger name, whichever of its modules writes them.
log = logging.getLogger("tidings.delivery.worker")

Handler = Callable[[Sequence[Job]], Awaitable[None]]


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


class JobRunner:
    """Calls the handlers of claimed jobs, with their tasks, and settles each job."""

    def __init__(
        self,
        db: Database,
        queue: Queue,
        clock: Clock,
        tasks: Mapping[str, Task],
        retry: RetryPolicy,
    ) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock
        self._tasks = tasks
        self._retry = retry

    async def run_group(self, kind: str, group: list[Job], lease_ends: float) -> None:
        """Run jobs of one kind in one handler call, and one by one if that call fails;
        a kind without a task has its jobs buried."""
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

    async def run_in_pieces(
        self,
        task: Task,
        job: Job,
        lease_ends: float,
        most: int,
        between: Callable[[], Awaitable[None]],
    ) -> None:
        """Run a job too heavy for a short batch as the pieces its task splits it into,
        ``most`` at a time, awaiting ``between`` between them, and complete it once
        every piece ran. The pieces are not queued: should one fail, or the process
        die, the job runs again whole (what its pieces did is done already, and every
        effect is written once)."""
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
            await self.run_group(job.kind, [job], lease_ends)
            return
        try:
            for at in range(0, len(pieces), most):
                if at:
                    await between()
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
            await self.run_group(job.kind, [job], lease_ends)
            return
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
