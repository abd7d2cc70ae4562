"""How the worker's lanes share one process: a lower lane gives way to a more urgent one,
and while the more urgent lane has work, a heavy job of a lower lane runs in pieces.

Run against the in-memory queue; the loops poll only once an hour, so every job they
run, they were woken for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import eventually

from tidings.delivery.job_runner import Task
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.worker import Worker
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob
from tidings.kit.queue_memory import InMemoryQueue

GUARD_SECONDS = 30.0
MakeWorker = Callable[..., Worker]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


@pytest.fixture
def queue(clock: FrozenClock) -> InMemoryQueue:
    return InMemoryQueue(clock)


@pytest.fixture
async def make_worker(
    queue: InMemoryQueue, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[MakeWorker]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'tidings.db'}")
    made: list[Worker] = []

    def make(tasks: dict[str, Task], **options: Any) -> Worker:
        worker = Worker(
            db,
            queue,
            clock,
            tasks,
            batch_size=options.pop("batch_size", 10),
            lease=dt.timedelta(seconds=30),
            poll_seconds=3600,
            retry=RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=1),
            **options,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
    await db.dispose()


async def reached(step: Awaitable[object]) -> None:
    try:
        await asyncio.wait_for(step, GUARD_SECONDS)
    except TimeoutError:
        pytest.fail(f"not reached within {GUARD_SECONDS}s")


async def enqueue(queue: InMemoryQueue, clock: FrozenClock, *jobs: NewJob) -> None:
    for job in jobs:
        await queue.enqueue(None, [job])
        clock.advance(0.001)
        queue.wake({job.lane})


async def emptied(queue: InMemoryQueue) -> None:
    """Wait until every job is done."""

    async def done() -> bool:
        return not queue.jobs

    await eventually(done, timeout=GUARD_SECONDS, interval=0.001)


async def settle_down() -> None:
    """Let every loop that can run do so."""
    for _ in range(20):
        await asyncio.sleep(0)


def split_into_parts(job: Job) -> list[NewJob]:
    """One job per part the job names, as a planning job splits into its events."""
    parts: list[str] = job.payload.get("parts", [])
    if len(parts) < 2:
        return []
    return [NewJob(f"{job.id}/{part}", job.kind, {"parts": [part]}, job.lane) for part in parts]


def parts_task(
    queue: InMemoryQueue,
    calls: list[list[str]],
    *,
    fail_on: str | None = None,
) -> Task:
    """A task whose jobs weigh the parts they name and split into them; it records the
    parts each call got and completes its jobs."""

    async def handle(jobs: Sequence[Job]) -> None:
        parts = [part for job in jobs for part in job.payload["parts"]]
        calls.append(parts)
        if fail_on is not None and parts == [fail_on]:
            raise RuntimeError(f"part {fail_on} fails")
        await queue.complete(None, jobs)

    return Task(
        handle, split=split_into_parts, weight=lambda job: len(job.payload.get("parts", ()))
    )


async def test_a_lower_lane_does_not_start_a_batch_while_a_more_urgent_one_runs(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    critical_started, critical_may_finish = asyncio.Event(), asyncio.Event()
    normal_ran = asyncio.Event()

    async def handle(jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.lane == 0:
                critical_started.set()
                await critical_may_finish.wait()
            else:
                normal_ran.set()
        await queue.complete(None, jobs)

    worker = make_worker({"plan": Task(handle)}, give_way_seconds=3600)
    worker.start()
    await enqueue(queue, clock, NewJob("critical", "plan", {}, lane=0))
    await reached(critical_started.wait())

    await enqueue(queue, clock, NewJob("normal", "plan", {}, lane=2))
    await settle_down()
    assert not normal_ran.is_set()
    assert queue.jobs["normal"]["lease_until"] is None, "not even claimed while it waits"

    critical_may_finish.set()
    await reached(normal_ran.wait())


async def test_a_heavy_job_runs_in_pieces_while_a_more_urgent_lane_has_work(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []

    # Any measured time is over the budget: every piece runs on its own.
    worker = make_worker({"plan": parts_task(queue, calls)}, batch_seconds=1e-9)
    worker.start()
    await enqueue(queue, clock, NewJob("first", "plan", {"parts": ["a"]}, lane=2))
    await emptied(queue)
    await enqueue(queue, clock, NewJob("urgent", "plan", {"parts": ["u"]}, lane=0))
    await emptied(queue)

    await enqueue(queue, clock, NewJob("heavy", "plan", {"parts": ["b", "c", "d"]}, lane=2))
    await emptied(queue)
    assert calls == [["a"], ["u"], ["b"], ["c"], ["d"]]
    # The pieces were never queued; the job itself is done.
    assert queue.jobs == {}
    assert queue.dead == {}


async def test_a_heavy_job_runs_whole_when_no_more_urgent_lane_had_work(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []

    worker = make_worker({"plan": parts_task(queue, calls)}, batch_seconds=1e-9)
    worker.start()
    await enqueue(queue, clock, NewJob("first", "plan", {"parts": ["a"]}, lane=2))
    await emptied(queue)
    # A less urgent lane's work does not count.
    await enqueue(queue, clock, NewJob("low", "plan", {"parts": ["z"]}, lane=3))
    await emptied(queue)

    await enqueue(queue, clock, NewJob("heavy", "plan", {"parts": ["b", "c", "d"]}, lane=2))
    await emptied(queue)
    assert calls == [["a"], ["z"], ["b", "c", "d"]]


async def test_a_piece_that_fails_makes_the_job_run_whole(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []

    worker = make_worker({"plan": parts_task(queue, calls, fail_on="c")}, batch_seconds=1e-9)
    worker.start()
    await enqueue(queue, clock, NewJob("first", "plan", {"parts": ["a"]}, lane=2))
    await emptied(queue)
    await enqueue(queue, clock, NewJob("urgent", "plan", {"parts": ["u"]}, lane=0))
    await emptied(queue)

    await enqueue(queue, clock, NewJob("heavy", "plan", {"parts": ["b", "c", "d"]}, lane=2))
    await emptied(queue)
    # b ran, c failed; the job then ran whole, under its own id, and was completed.
    assert calls == [["a"], ["u"], ["b"], ["c"], ["b", "c", "d"]]
    assert queue.jobs == {}
    assert queue.dead == {}
