"""Durable timers: work due later survives a restart and fires once, when its time comes.

A timer is a job with a future ``run_at``. The clock is frozen and moved by hand, so no
test waits for a timer to come due.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.events.jobs import PLAN_JOB
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings

HOUR = dt.timedelta(hours=1)
EFFECTS = (
    tables.deliveries,
    tables.delivery_transitions,
    tables.inbox_items,
    tables.mailbox,
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


@contextlib.asynccontextmanager
async def running(
    settings: Settings, clock: FrozenClock, *, worker: bool
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """One run of Tidings on the test's database, as ``tidings serve`` starts it."""
    runtime = build_runtime(settings.model_copy(update={"worker_enabled": worker}), clock=clock)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
            yield runtime, client


async def publish_with_a_retry_in_an_hour(
    settings: Settings, clock: FrozenClock, event: dict[str, Any]
) -> str:
    """Publish ``event`` with no worker running, then give its planning job back as a
    worker does when an attempt fails: to run again in an hour. Returns the event id."""
    async with running(settings, clock, worker=False) as (runtime, client):
        _key, plaintext = await runtime.auth.create_key("tests", ["*"])
        response = await client.post(
            "/v1/events", json=event, headers={"Authorization": f"Bearer {plaintext}"}
        )
        assert response.status_code == 202, response.text
        [job] = await runtime.queue.claim("doomed-worker", 10, dt.timedelta(seconds=30))
        await runtime.queue.retry(job, "TimeoutError: provider did not answer", clock.now() + HOUR)
        event_id: str = response.json()["event_id"]
        return event_id


def planning_job(event_id: str) -> NewJob:
    """The event's planning job, as ingest enqueues it."""
    return NewJob(id=f"{PLAN_JOB}:{event_id}", kind=PLAN_JOB, payload={"events": [event_id]})


async def counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.reader() as conn:
        return {
            table.name: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in (*EFFECTS, tables.jobs)
        }


async def planned(runtime: Runtime, event_id: str) -> bool:
    async with runtime.db.reader() as conn:
        query = sa.select(tables.events.c.planned_at).where(tables.events.c.id == event_id)
        return (await conn.execute(query)).scalar_one() is not None


async def test_a_timer_survives_a_restart_and_fires_once_when_due(
    settings: Settings, clock: FrozenClock, canonical_event: dict[str, Any]
) -> None:
    event_id = await publish_with_a_retry_in_an_hour(settings, clock, canonical_event)

    async with running(settings, clock, worker=True) as (runtime, _client):
        # The same timer set again while it waits is still one timer.
        async with runtime.db.transaction() as conn:
            await runtime.queue.enqueue(conn, [planning_job(event_id)])
        runtime.queue.wake()
        clock.advance(HOUR.total_seconds() - 1)
        assert await runtime.worker.run_once() == 0
        assert not await planned(runtime, event_id)
        assert (await counts(runtime))["jobs"] == 1

        clock.advance(1)
        await eventually(lambda: planned(runtime, event_id))

        async def settled() -> bool:
            return (await counts(runtime))["jobs"] == 0

        await eventually(settled)
        fired = await counts(runtime)
        assert fired["inbox_items"] == 1
        assert fired["mailbox"] == 1

        # It fires again, as after a redelivery: nothing happens twice.
        async with runtime.db.transaction() as conn:
            await runtime.queue.enqueue(conn, [planning_job(event_id)])
        runtime.queue.wake()
        await eventually(settled)
        assert await counts(runtime) == fired


async def test_a_timer_whose_worker_died_while_firing_fires_again_once(
    settings: Settings, clock: FrozenClock, canonical_event: dict[str, Any]
) -> None:
    event_id = await publish_with_a_retry_in_an_hour(settings, clock, canonical_event)
    clock.advance(HOUR.total_seconds())
    async with running(settings, clock, worker=False) as (runtime, _client):
        [job] = await runtime.queue.claim("dies-mid-batch", 10, dt.timedelta(seconds=30))
        assert job.attempts == 2

    clock.advance(31)
    async with running(settings, clock, worker=True) as (runtime, _client):
        await eventually(lambda: planned(runtime, event_id))

        async def settled() -> bool:
            return (await counts(runtime))["jobs"] == 0

        await eventually(settled)
        fired = await counts(runtime)
        assert fired["inbox_items"] == 1
        assert fired["mailbox"] == 1
