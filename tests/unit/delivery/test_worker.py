"""The worker's lanes and batches, run against the in-memory queue.

The loops poll only once an hour here: every job they run, they were woken for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from tidings.delivery.job_runner import BatchAbandoned, Task
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.worker import Worker
from tidings.kit import job_context
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
    """Workers on ``queue``, stopped at the end of the test."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'tidings.db'}")
    made: list[Worker] = []

    def make(tasks: dict[str, Task], *, batch_size: int = 10) -> Worker:
        worker = Worker(
            db,
            queue,
            clock,
            tasks,
            batch_size=batch_size,
            lease=dt.timedelta(seconds=30),
            poll_seconds=3600,
            retry=RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=1),
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
    await db.dispose()


async def reached(step: Awaitable[object]) -> None:
    """Wait for ``step``; fail instead of hanging when it never comes."""
    try:
        await asyncio.wait_for(step, GUARD_SECONDS)
    except TimeoutError:
        pytest.fail(f"not reached within {GUARD_SECONDS}s")


async def enqueue(queue: InMemoryQueue, clock: FrozenClock, *jobs: NewJob) -> None:
    """Enqueue ``jobs`` one clock tick apart, so they are due in the order given."""
    for job in jobs:
        await queue.enqueue(None, [job])
        clock.advance(0.001)


def recorder(
    queue: InMemoryQueue, calls: list[list[str]], drained: asyncio.Event | None = None
) -> Task:
    """A task that records the ids each call got, completes them, and sets ``drained``
    once the queue is empty."""

    async def handle(jobs: Sequence[Job]) -> None:
        calls.append([job.id for job in jobs])
        await queue.complete(None, jobs)
        if drained is not None and not queue.jobs:
            drained.set()

    return Task(handle, weight=lambda job: int(job.payload.get("weight", 1)))


async def test_a_critical_job_runs_while_a_low_batch_is_still_running(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    low_started, low_may_finish, critical_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.lane == 3:
                low_started.set()
                await low_may_finish.wait()
            else:
                critical_ran.set()
        await queue.complete(None, jobs)

    worker = make_worker({"plan": Task(handle)})
    worker.start()
    await enqueue(queue, clock, NewJob("low", "plan", {}, lane=3))
    queue.wake([3])
    await reached(low_started.wait())

    await enqueue(queue, clock, NewJob("critical", "plan", {}, lane=0))
    queue.wake([0])
    await reached(critical_ran.wait())
    assert set(queue.jobs) == {"low"}

    low_may_finish.set()
    await worker.stop()
    assert queue.jobs == {}


async def test_one_wake_up_reaches_every_idle_loop(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []
    drained = asyncio.Event()
    worker = make_worker({"plan": recorder(queue, calls, drained)})
    worker.start()
    await asyncio.sleep(0)
    await enqueue(
        queue, clock, *(NewJob(f"lane-{lane}", "plan", {}, lane=lane) for lane in range(4))
    )
    queue.wake()
    await reached(drained.wait())
    assert sorted(calls) == [["lane-0"], ["lane-1"], ["lane-2"], ["lane-3"]]


async def test_run_once_runs_every_lane_most_urgent_first(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []
    worker = make_worker({"plan": recorder(queue, calls)})
    await enqueue(
        queue, clock, *(NewJob(f"lane-{lane}", "plan", {}, lane=lane) for lane in (3, 0, 2, 1))
    )
    assert await worker.run_once() == 4
    assert calls == [["lane-0", "lane-1", "lane-2", "lane-3"]]


async def test_run_once_can_keep_to_some_lanes(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []
    worker = make_worker({"plan": recorder(queue, calls)})
    await enqueue(
        queue, clock, NewJob("low", "plan", {}, lane=3), NewJob("now", "plan", {}, lane=0)
    )
    assert await worker.run_once(lanes=[3]) == 1
    assert calls == [["low"]]
    assert set(queue.jobs) == {"now"}


async def test_a_handler_call_gets_at_most_one_batch_of_work(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    calls: list[list[str]] = []
    worker = make_worker({"plan": recorder(queue, calls)}, batch_size=500)
    weights = {"a": 300, "b": 300, "c": 1000, "d": 1, "e": 1}
    await enqueue(queue, clock, *(NewJob(i, "plan", {"weight": w}) for i, w in weights.items()))
    assert await worker.run_once() == 5
    # A job heavier than a batch runs alone.
    assert calls == [["a"], ["b"], ["c"], ["d", "e"]]


async def test_a_loop_claims_about_one_batch_of_work(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    leased_at_each_call: list[int] = []
    sizes: list[int] = []
    idle = asyncio.Event()

    async def handle(jobs: Sequence[Job]) -> None:
        leased_at_each_call.append(sum(1 for e in queue.jobs.values() if e["lease_until"]))
        sizes.append(len(jobs))
        await queue.complete(None, jobs)
        if not queue.jobs:
            idle.set()

    worker = make_worker(
        {"plan": Task(handle, weight=lambda job: int(job.payload["weight"]))}, batch_size=10
    )
    await enqueue(queue, clock, *(NewJob(f"heavy-{n}", "plan", {"weight": 10}) for n in range(5)))
    worker.start()
    queue.wake()
    await reached(idle.wait())
    # Each heavy job is a batch of work on its own: none waits leased while another runs.
    assert leased_at_each_call == [1] * 5

    idle.clear()
    sizes.clear()
    await enqueue(queue, clock, *(NewJob(f"light-{n}", "plan", {"weight": 1}) for n in range(25)))
    queue.wake()
    await reached(idle.wait())
    # After one light job the loop knows they are light, and claims ten at a time.
    assert sizes == [1, 10, 10, 4]


async def test_stop_waits_for_every_loop(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    started = {0: asyncio.Event(), 3: asyncio.Event()}
    may_finish = {0: asyncio.Event(), 3: asyncio.Event()}

    async def handle(jobs: Sequence[Job]) -> None:
        [job] = jobs
        started[job.lane].set()
        await may_finish[job.lane].wait()
        await queue.complete(None, jobs)

    worker = make_worker({"plan": Task(handle)})
    worker.start()
    await enqueue(
        queue, clock, NewJob("low", "plan", {}, lane=3), NewJob("now", "plan", {}, lane=0)
    )
    queue.wake()
    await reached(asyncio.gather(started[0].wait(), started[3].wait()))

    stopping = asyncio.create_task(worker.stop())
    for lane in (0, 3):
        for _ in range(5):
            await asyncio.sleep(0)
        assert not stopping.done()
        may_finish[lane].set()
    await reached(stopping)
    assert queue.jobs == {}


async def test_an_abandoned_batch_is_not_run_again_one_job_at_a_time(
    queue: InMemoryQueue, clock: FrozenClock, make_worker: MakeWorker
) -> None:
    """A handler that settled part of its batch and then failed says so: the worker
    leaves the rest leased (they come back when the lease runs out) instead of running
    every job again, the settled ones included."""
    calls: list[list[str]] = []
    seen: list[float | None] = []

    async def handle(jobs: Sequence[Job]) -> None:
        calls.append([job.id for job in jobs])
        run = job_context.current()
        seen.append(None if run is None else run.lease_ends)
        if len(calls) == 1:
            await queue.retry(jobs[0], "given back", clock.now())
            raise BatchAbandoned("the database went away") from ConnectionError("gone")
        await queue.complete(None, jobs)

    worker = make_worker({"email": Task(handle)})
    await enqueue(queue, clock, *(NewJob(f"e-{n}", "email", {}) for n in range(3)))
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert await worker.run_once() == 3
    assert calls == [["e-0", "e-1", "e-2"]]
    # The handler knew when the lease would run out: 30 s after the claim.
    assert seen[0] is not None
    assert before + 30 <= seen[0] <= loop.time() + 30
    # e-0 was given back and runs at once; e-1 and e-2 wait for their lease.
    assert await worker.run_once() == 1
    assert calls[1] == ["e-0"]
    clock.advance(31)
    assert await worker.run_once() == 2
    assert calls[2] == ["e-1", "e-2"]
    assert queue.jobs == {}
