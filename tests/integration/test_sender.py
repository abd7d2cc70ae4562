"""The one sender, against its carrier contract: screening by middleware, the window of
deliveries on their way, outcomes recorded as states, retries then dead letters, and
deliveries dropped between commits.

The carrier here is the test's own channel (it records what it was handed and answers
what each test asks): the sender's contract with a carrier is what is under test; email
and the Web Push plugin run through the same sender in their own suites.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.channels.sending import Batch, Later, Outgoing, Refused, Result, Sent, Unaddressed
from tidings.delivery import repository
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.send_flow import COMMIT_EVERY
from tidings.delivery.sender import Middleware, Sender
from tidings.kit import ids, tables
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob
from tidings.kit.queue_memory import InMemoryQueue

CHANNEL = "probe"


class Probe:
    """A channel that answers ``answer(item)`` for each hand-over, holding each until
    ``release`` is set, and counts how many were on their way at once."""

    name = CHANNEL

    def __init__(self, answer: Callable[[Outgoing], Result], *, in_flight: int = 4) -> None:
        self._answer = answer
        self._in_flight = in_flight
        self.handed: list[str] = []
        self.on_the_way = 0
        self.most_on_the_way = 0
        self.release = asyncio.Event()
        self.release.set()

    def in_flight(self) -> int:
        return self._in_flight

    def compose_ahead(self, batch_size: int) -> int:
        return 1

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        return None

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        return None

    async def compose(
        self, chunk: Sequence[Outgoing], now: dt.datetime, *, batch_size: int
    ) -> list[Any]:
        return [
            Refused("render_error", "cannot") if item.delivery["user_id"] == "unrenderable" else 1
            for item in chunk
        ]

    async def hand_over(self, item: Outgoing, ready: Any) -> Result:
        self.on_the_way += 1
        self.most_on_the_way = max(self.most_on_the_way, self.on_the_way)
        try:
            await self.release.wait()
            self.handed.append(item.delivery["user_id"])
            return self._answer(item)
        finally:
            self.on_the_way -= 1


class Named(Middleware):
    """Screens out one user's deliveries, and drops another's after the first commit."""

    name = "named"

    def __init__(self, screened: str = "", dropped: str = "") -> None:
        self._screened = screened
        self._dropped = dropped
        self.drops_asked = 0
        self.wrapped: list[str] = []

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        return "opted_out" if item.delivery["user_id"] == self._screened else None

    async def drop(self, db: Database, batch: Batch, waiting: Sequence[Outgoing]) -> set[str]:
        self.drops_asked += 1
        if self.drops_asked < 2:
            return set()
        return {item.job.id for item in waiting if item.delivery["user_id"] == self._dropped}

    async def around(
        self, item: Outgoing, carrier: str, call: Callable[[], Awaitable[Result]]
    ) -> Result:
        self.wrapped.append(item.delivery["user_id"])
        return await call()


async def scheduled(runtime: Runtime, queue: InMemoryQueue, users: Sequence[str]) -> list[Job]:
    """One scheduled delivery on the probe channel per user, and its claimed job."""
    event_id = ids.new_id()
    now = runtime.clock.now()
    rows = [
        {
            "id": ids.derived_id(event_id, user, CHANNEL),
            "notification_id": ids.derived_id(event_id, user),
            "event_id": event_id,
            "user_id": user,
            "type": "comment.created",
            "channel": CHANNEL,
            "state": "scheduled",
            "created_at": now,
            "updated_at": now,
        }
        for user in users
    ]
    async with runtime.db.transaction() as conn:
        await repository.record(runtime.db, conn, rows)
    await queue.enqueue(
        None,
        [
            NewJob(id=f"job-{row['id']}", kind="channel", payload={"delivery": row["id"]})
            for row in rows
        ],
    )
    return await queue.claim("test", len(rows), dt.timedelta(minutes=1))


def sender(
    runtime: Runtime, queue: InMemoryQueue, probe: Probe, *middleware: Middleware, attempts: int = 3
) -> Sender:
    return Sender(
        runtime.db,
        runtime.clock,
        queue,
        runtime.events,
        runtime.users,
        RetryPolicy(max_attempts=attempts, base_seconds=0.01, cap_seconds=0.02),
        {CHANNEL: probe},
        list(middleware),
    )


async def states(runtime: Runtime, jobs: Sequence[Job]) -> dict[str, tuple[str, str | None]]:
    """user → (state, reason) of the jobs' deliveries."""
    d = tables.deliveries.c
    async with runtime.db.reader() as conn:
        found = await conn.execute(
            sa.select(d.user_id, d.state, d.reason).where(
                d.id.in_([job.payload["delivery"] for job in jobs])
            )
        )
        return {row.user_id: (row.state, row.reason) for row in found}


async def test_outcomes_become_states_and_a_screened_delivery_is_never_handed_over(
    runtime: Runtime,
) -> None:
    queue = InMemoryQueue(runtime.clock)
    answers: dict[str, Result] = {
        "ann": Sent(),
        "bob": Sent(state="sent", fields={"message_id": "<m@x>"}),
        "cy": Refused("rejected", "no such box"),
        "dee": Unaddressed("no device"),
    }
    probe = Probe(lambda item: answers[item.delivery["user_id"]])
    jobs = await scheduled(runtime, queue, [*answers, "eve", "unrenderable"])

    await sender(runtime, queue, probe, Named(screened="eve")).send(jobs)

    assert sorted(probe.handed) == ["ann", "bob", "cy", "dee"]
    assert await states(runtime, jobs) == {
        "ann": ("delivered", None),
        "bob": ("sent", None),
        "cy": ("failed", "rejected"),
        "dee": ("suppressed", "no_address"),
        "eve": ("suppressed", "opted_out"),
        "unrenderable": ("failed", "render_error"),
    }
    assert queue.jobs == {}  # every job finished
    d = tables.deliveries.c
    async with runtime.db.reader() as conn:
        message_id = await conn.scalar(sa.select(d.message_id).where(d.user_id == "bob"))
    assert message_id == "<m@x>"


async def test_no_more_are_on_their_way_than_the_carrier_and_the_window_allow(
    runtime: Runtime,
) -> None:
    queue = InMemoryQueue(runtime.clock)
    probe = Probe(lambda item: Sent(), in_flight=5)
    probe.release.clear()
    jobs = await scheduled(runtime, queue, [f"u{n:03d}" for n in range(3 * COMMIT_EVERY)])

    sending = asyncio.create_task(sender(runtime, queue, probe).send(jobs))

    async def five_on_the_way() -> bool:
        return probe.on_the_way >= 5

    await eventually(five_on_the_way)
    await asyncio.sleep(0.05)
    assert probe.on_the_way == 5  # held at the carrier's bound, the others wait
    probe.release.set()
    await sending

    assert probe.most_on_the_way == 5
    assert len(probe.handed) == len(set(probe.handed)) == 3 * COMMIT_EVERY
    assert set((await states(runtime, jobs)).values()) == {("delivered", None)}


async def test_later_is_retried_with_backoff_then_failed_and_dead_lettered(
    runtime: Runtime,
) -> None:
    queue = InMemoryQueue(runtime.clock)
    probe = Probe(lambda item: Later("busy", by="probe-service"))
    jobs = await scheduled(runtime, queue, ["ann"])

    before = runtime.clock.now()
    await sender(runtime, queue, probe, attempts=2).send(jobs)
    assert await states(runtime, jobs) == {"ann": ("scheduled", "retry")}
    entry = queue.jobs[jobs[0].id]
    # After a backoff: at least half the first step (0.01 s) past the moment it failed.
    assert entry["run_at"] >= before + dt.timedelta(seconds=0.005)
    assert entry["lease_until"] is None  # handed back to run again

    await asyncio.sleep(0.05)  # the backoff (0.01 to 0.02 s) has run out
    again = await queue.claim("test", 1, dt.timedelta(minutes=1))
    assert [job.attempts for job in again] == [2]
    await sender(runtime, queue, probe, attempts=2).send(again)
    assert await states(runtime, jobs) == {"ann": ("failed", "retries_exhausted")}
    assert list(queue.dead) == [jobs[0].id]
    assert queue.dead[jobs[0].id][1] == "probe-service: busy"


async def test_a_delivery_dropped_after_a_commit_is_not_handed_over(runtime: Runtime) -> None:
    queue = InMemoryQueue(runtime.clock)
    probe = Probe(lambda item: Sent(), in_flight=1)
    users = [f"u{n:03d}" for n in range(COMMIT_EVERY)] + ["late"]
    jobs = await scheduled(runtime, queue, users)
    named = Named(dropped="late")

    await sender(runtime, queue, probe, named).send(jobs)

    assert named.drops_asked >= 2  # before the first hand-over and after a commit
    assert "late" not in probe.handed
    assert "late" not in named.wrapped
    assert sorted(named.wrapped) == sorted(probe.handed)  # every hand-over went through it
    found = await states(runtime, jobs)
    assert found["late"] == ("scheduled", None)  # left as it was: its job is finished
    assert all(found[user] == ("delivered", None) for user in users[:-1])
    assert queue.jobs == {}
