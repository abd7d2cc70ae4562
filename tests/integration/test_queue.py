"""The queue's contract: the SQL queue on SQLite and PostgreSQL, and its in-memory twin."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import fresh_database
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database
from tidings.kit.queue import InMemoryQueue, NewJob, SqlQueue

LEASE = dt.timedelta(seconds=30)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


Queue = SqlQueue | InMemoryQueue


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def queue(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Queue]:
    if request.param == "memory":
        yield InMemoryQueue(clock)
        return
    async with fresh_database(request.param, tmp_path) as url:
        db = Database(url)
        yield SqlQueue(db, clock)
        await db.dispose()


@pytest.fixture
async def sql_queue(database_url: str, clock: FrozenClock) -> AsyncIterator[SqlQueue]:
    db = Database(database_url)
    yield SqlQueue(db, clock)
    await db.dispose()


@contextlib.asynccontextmanager
async def transaction(queue: Queue) -> AsyncIterator[AsyncConnection | None]:
    if isinstance(queue, InMemoryQueue):
        yield None
        return
    async with queue._db.transaction() as conn:
        yield conn


async def enqueue(queue: Queue, *jobs: NewJob) -> None:
    async with transaction(queue) as conn:
        await queue.enqueue(conn, jobs)


async def test_enqueue_is_idempotent_by_id(queue: Queue) -> None:
    await enqueue(queue, NewJob("a", "plan", {"n": 1}))
    await enqueue(queue, NewJob("a", "plan", {"n": 2}))
    [job] = await queue.claim("w", 10, LEASE)
    assert job.payload == {"n": 1}
    assert job.attempts == 1


async def test_urgent_lanes_first_and_leased_jobs_are_not_claimed_twice(queue: Queue) -> None:
    await enqueue(
        queue,
        NewJob("low", "plan", {}, lane=3),
        NewJob("critical", "plan", {}, lane=0),
        NewJob("normal", "plan", {}, lane=2),
    )
    first = await queue.claim("w1", 2, LEASE)
    assert [j.id for j in first] == ["critical", "normal"]
    second = await queue.claim("w2", 10, LEASE)
    assert [j.id for j in second] == ["low"]
    assert await queue.claim("w3", 10, LEASE) == []


async def test_an_expired_lease_is_claimed_again(queue: Queue, clock: FrozenClock) -> None:
    await enqueue(queue, NewJob("a", "plan", {}))
    [job] = await queue.claim("dead-worker", 10, LEASE)
    clock.advance(LEASE.total_seconds() - 1)
    assert await queue.claim("w2", 10, LEASE) == []
    clock.advance(2)
    [again] = await queue.claim("w2", 10, LEASE)
    assert again.id == job.id
    assert again.attempts == 2


async def test_completion_is_part_of_the_callers_transaction(sql_queue: SqlQueue) -> None:
    queue = sql_queue
    await enqueue(queue, NewJob("a", "plan", {}))
    [job] = await queue.claim("w", 10, LEASE)

    async def complete_then_fail() -> None:
        async with transaction(queue) as conn:
            await queue.complete(conn, [job])
            raise RuntimeError("handler failed after completing")

    with pytest.raises(RuntimeError):
        await complete_then_fail()
    assert await queue.depth() == 1


async def test_retry_waits_until_its_time(queue: Queue, clock: FrozenClock) -> None:
    await enqueue(queue, NewJob("a", "plan", {}))
    [job] = await queue.claim("w", 10, LEASE)
    await queue.retry(job, "boom", clock.now() + dt.timedelta(seconds=5))
    assert await queue.claim("w", 10, LEASE) == []
    clock.advance(6)
    [again] = await queue.claim("w", 10, LEASE)
    assert again.attempts == 2


async def test_concurrent_claims_never_share_a_job(queue: Queue) -> None:
    await enqueue(queue, *(NewJob(f"j{i}", "plan", {}) for i in range(200)))
    batches = await asyncio.gather(*(queue.claim(f"w{i}", 30, LEASE) for i in range(8)))
    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 200


async def test_wake_ends_a_wait_early(queue: Queue) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(queue.wait(30))
    await asyncio.sleep(0)
    queue.wake()
    await waiter
    assert loop.time() - started < 30
