"""The worker: leases jobs, runs their handlers, retries with backoff, buries poison."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue, backoff

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Job]], Awaitable[None]]


@dataclass(frozen=True)
class Task:
    """How to run one kind of job; ``split`` breaks a failing job into smaller ones."""

    handle: Handler
    split: Callable[[Job], list[NewJob]] | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    cap_seconds: float


class Worker:
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
    ) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock
        self._tasks = tasks
        self._batch_size = batch_size
        self._lease = lease
        self._poll = poll_seconds
        self._retry = retry
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id()[-8:]}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="tidings-worker")

    async def stop(self) -> None:
        self._stopping = True
        self._queue.wake()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
            self._task = None

    async def run(self) -> None:
        """Lease and run jobs until stopped."""
        while not self._stopping:
            try:
                ran = await self.run_once()
            except Exception:
                log.exception("worker loop failed; retrying shortly")
                ran = 0
                await asyncio.sleep(self._poll)
            if not ran and not self._stopping:
                await self._queue.wait(self._poll)

    async def run_once(self) -> int:
        """Lease one batch and run it; returns how many jobs it leased."""
        jobs = await self._queue.claim(self.worker_id, self._batch_size, self._lease)
        by_kind: dict[str, list[Job]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            await self._run_group(kind, group)
        return len(jobs)

    async def _run_group(self, kind: str, group: list[Job]) -> None:
        task = self._tasks.get(kind)
        if task is None:
            for job in group:
                await self._queue.bury(job, f"no handler for job kind {kind!r}")
            return
        try:
            await task.handle(group)
            return
        except Exception as exc:
            if len(group) == 1:
                await self._failed(task, group[0], exc)
                return
            log.warning(
                "batch of %d %s jobs failed (%s); running them one by one", len(group), kind, exc
            )
        for job in group:
            try:
                await task.handle([job])
            except Exception as exc:
                await self._failed(task, job, exc)

    async def _failed(self, task: Task, job: Job, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        smaller = task.split(job) if task.split else []
        if smaller:
            log.warning("job %s failed (%s); split into %d jobs", job.id, error, len(smaller))
            async with self._db.transaction() as conn:
                await self._queue.complete(conn, [job])
                await self._queue.enqueue(conn, smaller)
            self._queue.wake()
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
