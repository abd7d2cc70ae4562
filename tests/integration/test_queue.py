"""The queue's contract: the SQL queue on SQLite and PostgreSQL, and its in-memory twin."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import fresh_database, service_missing
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database
from tidings.kit.jetstream import JetStreamQueue
from tidings.kit.jetstream_streams import Topology
from tidings.kit.partitions import PartitionLeases
from tidings.kit.queue import Job, NewJob, partition_of
from tidings.kit.queue_memory import InMemoryQueue
from tidings.kit.queue_sql import SqlQueue

LEASE = dt.timedelta(seconds=30)
NATS_URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


ACK_WAIT = dt.timedelta(seconds=2)


class RelayingQueue(JetStreamQueue):
    """The JetStream queue as one process sees it: what it committed is relayed before
    it claims (in a deployment the relay runs beside it, woken by the commit)."""

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        while await self.relay_once():
            pass
        return await super().claim(*args, **kwargs)


Queue = SqlQueue | InMemoryQueue | RelayingQueue


@pytest.fixture(params=["sqlite", "postgres", "memory", "jetstream"])
async def queue(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Queue]:
    if request.param == "memory":
        yield InMemoryQueue(clock)
        return
    kind = "postgres" if request.param == "jetstream" else request.param
    async with fresh_database(kind, tmp_path) as url:
        db = Database(url)
        if request.param != "jetstream":
            yield SqlQueue(db, clock)
        else:
            async with jetstream_queue(db, url, clock) as queue:
                yield queue
        await db.dispose()


@contextlib.asynccontextmanager
async def jetstream_queue(
    db: Database, url: str, clock: FrozenClock
) -> AsyncIterator[RelayingQueue]:
    """A JetStream queue on the machine's NATS, with streams of its own, removed after."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = RelayingQueue(
        db,
        clock,
        [NATS_URL],
        Topology(
            prefix=prefix,
            stages={"plan": "plan"},
            partitions=1,
            replicas=1,
            ack_wait=ACK_WAIT,
            max_deliver=10,
        ),
        max_attempts=8,
    )
    try:
        await queue.open()
    except Exception as exc:
        service_missing(f"NATS JetStream at {NATS_URL}", exc)
    await queue.start_consuming(
        ["plan"], [0, 1, 2, 3], PartitionLeases(url, ["plan"], [0, 1, 2, 3], 1, member="test")
    )
    try:
        yield queue
    finally:
        await queue.close()
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for stage in ("plan", "dead"):
            with contextlib.suppress(Exception):
                await js.delete_stream(queue.topology.stream(stage))
        await nc.close()


async def lease_runs_out(queue: Queue) -> None:
    """A broker's lease runs on real time: let it pass (the others follow the clock)."""
    if isinstance(queue, JetStreamQueue):
        await asyncio.sleep(ACK_WAIT.total_seconds() + 0.5)


async def delay_passes(queue: Queue, seconds: float) -> None:
    """A broker's redelivery delay runs on real time: let it pass."""
    if isinstance(queue, JetStreamQueue):
        await asyncio.sleep(seconds)


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
    await lease_runs_out(queue)
    [again] = await queue.claim("w2", 10, LEASE)
    assert again.id == job.id
    assert again.attempts == 2


async def test_a_released_job_runs_again_at_once_without_spending_an_attempt(
    queue: Queue,
) -> None:
    await enqueue(queue, NewJob("a", "plan", {}))
    [job] = await queue.claim("w", 10, LEASE)
    await queue.release(job)
    [again] = await queue.claim("w2", 10, LEASE)
    assert again.id == job.id
    # JetStream counts every delivery; the others forget the claim given back.
    assert again.attempts == (2 if isinstance(queue, JetStreamQueue) else 1)


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
    await queue.retry(job, "boom", clock.now() + dt.timedelta(seconds=1))
    assert await queue.claim("w", 10, LEASE) == []
    clock.advance(2)
    await delay_passes(queue, 1.5)
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


async def test_a_claim_takes_only_the_lanes_it_names(queue: Queue, clock: FrozenClock) -> None:
    await enqueue(
        queue,
        NewJob("low-1", "plan", {}, lane=3),
        NewJob("critical", "plan", {}, lane=0),
        NewJob("high", "plan", {}, lane=1),
    )
    clock.advance(1)
    await enqueue(queue, NewJob("low-2", "plan", {}, lane=3))
    clock.advance(1)
    assert [j.id for j in await queue.claim("w", 10, LEASE, lanes=[3])] == ["low-1", "low-2"]
    assert await queue.claim("w", 10, LEASE, lanes=[3]) == []
    assert await queue.claim("w", 10, LEASE, lanes=[]) == []
    both = await queue.claim("w", 10, LEASE, lanes={1, 0})
    assert [(j.id, j.lane) for j in both] == [("critical", 0), ("high", 1)]


async def test_claims_on_different_lanes_never_share_a_job(queue: Queue) -> None:
    await enqueue(queue, *(NewJob(f"j{i}", "plan", {}, lane=i % 4) for i in range(200)))
    batches = await asyncio.gather(
        *(queue.claim(f"w{i}", 30, LEASE, lanes=[i % 4]) for i in range(8))
    )
    for i, batch in enumerate(batches):
        assert {job.lane for job in batch} <= {i % 4}
    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 200


async def test_a_job_enqueued_for_later_waits_until_its_time(
    queue: Queue, clock: FrozenClock
) -> None:
    await enqueue(queue, NewJob("later", "plan", {}, lane=0, run_at=clock.now() + LEASE))
    assert await queue.claim("w", 10, LEASE) == []
    clock.advance(LEASE.total_seconds())
    [job] = await queue.claim("w", 10, LEASE, lanes=[0])
    assert job.id == "later"


async def test_every_waiter_hears_a_wake_up(queue: Queue) -> None:
    waiters = [asyncio.create_task(queue.wait(3600, lanes)) for lanes in ([0], [3], None)]
    await asyncio.sleep(0)
    queue.wake()
    await asyncio.gather(*waiters)


async def test_a_wake_up_for_one_lane_leaves_the_others_waiting(queue: Queue) -> None:
    critical = asyncio.create_task(queue.wait(3600, [0]))
    low = asyncio.create_task(queue.wait(3600, [3]))
    every_lane = asyncio.create_task(queue.wait(3600))
    await asyncio.sleep(0)
    queue.wake([0, 1])
    await asyncio.gather(critical, every_lane)
    await asyncio.sleep(0)
    assert not low.done()
    queue.wake([3])
    await low


async def test_a_wake_up_between_looking_and_waiting_is_not_lost(queue: Queue) -> None:
    seen, seen_by_all = queue.wakeups([2]), queue.wakeups()
    queue.wake([0])
    assert queue.wakeups([2]) == seen
    queue.wake([2])
    # The wait returns without suspending: the wake-up came after the count was taken.
    waiter = asyncio.create_task(queue.wait(3600, [2], since=seen))
    await asyncio.sleep(0)
    assert waiter.done()
    assert queue.wakeups([2]) == seen + 1
    assert queue.wakeups() == seen_by_all + 2


async def test_a_lane_claim_is_served_by_the_lane_index(sql_queue: SqlQueue) -> None:
    queue = sql_queue
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            statements.append((statement, parameters))

    engine = queue._db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        await queue.claim("w", 10, LEASE, lanes=[3])
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = statements
    async with queue._db.transaction() as conn:
        if queue._db.is_postgres:
            assert "FOR UPDATE SKIP LOCKED" in statement
            # On a near-empty table a sequential scan is cheapest; ask whether the index
            # can serve the claim at all.
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        else:
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        plan = "\n".join(str(row[-1]) for row in rows)
    assert "ix_jobs_lane_run_at" in plan, plan
    # The index yields the lane's jobs in run order: nothing left to sort.
    assert "sort" not in plan.lower(), plan
    assert "temp b-tree" not in plan.lower(), plan


async def test_a_delay_asked_while_the_clock_ran_ahead_counts_from_now(
    queue: Queue, clock: FrozenClock
) -> None:
    right = clock.now()
    clock.advance(3600)  # the clock runs an hour ahead while these are scheduled
    ahead = clock.now()
    await enqueue(
        queue,
        NewJob("at-once", "plan", {}, lane=0),
        NewJob("retried", "plan", {}, lane=1),
        NewJob("delayed", "plan", {}, lane=2, run_at=ahead + LEASE, delayed_from=ahead),
        NewJob("timer", "plan", {}, lane=3, run_at=ahead + LEASE),
    )
    [job] = await queue.claim("w", 10, LEASE, lanes=[1])
    await queue.retry(job, "boom", ahead + dt.timedelta(seconds=1))
    clock.at = right  # and is put right

    [due] = await queue.claim("w", 10, LEASE, lanes=[0])
    assert due.id == "at-once"
    assert await queue.claim("w", 10, LEASE, lanes=[1, 2]) == []
    clock.advance(2)
    await delay_passes(queue, 1.5)
    [again] = await queue.claim("w", 10, LEASE, lanes=[1])
    assert (again.id, again.attempts) == ("retried", 2)
    assert await queue.claim("w", 10, LEASE, lanes=[2]) == []
    clock.advance(LEASE.total_seconds())
    [delayed] = await queue.claim("w", 10, LEASE, lanes=[2])
    assert delayed.id == "delayed"
    # A timer set to a time of its own keeps it, right or wrong.
    assert await queue.claim("w", 10, LEASE, lanes=[3]) == []
    clock.at = ahead + LEASE
    [timer] = await queue.claim("w", 10, LEASE, lanes=[3])
    assert timer.id == "timer"


async def test_each_queue_says_what_it_adds_to_the_database(queue: Queue) -> None:
    """The seam's own questions, answered by every backend: whether it partitions and
    relays, which engines it adds (readiness) and what waits in them (the gauges)."""
    checks = queue.checks()
    pending = await queue.pending()
    if isinstance(queue, JetStreamQueue):
        assert (queue.partitioned, queue.relayed) == (True, True)
        assert checks == {"nats": "ok"}
        assert set(pending) == {("plan", lane) for lane in (0, 1, 2, 3)}
    else:
        assert (queue.partitioned, queue.relayed) == (False, False)
        assert checks == {}
        assert pending == {}


def test_a_key_keeps_its_partition() -> None:
    """Partitions are a hash every process and every release computes alike (CRC-32, not
    Python's salted ``hash``): the pinned values would change only with the routing of
    every queued job, which a release must not do silently."""
    assert [partition_of(k, 8) for k in ("u-ann", "u-bob", "u-carol", "u-dave")] == [0, 3, 4, 0]
    assert {partition_of(f"u-{n}", 8) for n in range(200)} == set(range(8))
    assert partition_of("\udcff lone surrogate", 4) in range(4)
