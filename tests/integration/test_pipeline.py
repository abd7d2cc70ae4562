"""The pipeline's guarantees: effectively-once effects, retries, dead letters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings

COUNTED = (
    tables.deliveries,
    tables.delivery_transitions,
    tables.inbox_items,
)


@pytest.fixture
def settings(make_settings: Any, database_url: str) -> Settings:
    return make_settings(database_url=database_url, job_max_attempts=3)


async def counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.reader() as conn:
        return {
            table.name: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in (*COUNTED, tables.jobs, tables.dead_letters)
        }


async def queue_drained(runtime: Runtime) -> bool:
    return (await counts(runtime))["jobs"] == 0


async def publish_batch(
    client: httpx.AsyncClient, producer: dict[str, str], event: dict[str, Any], n: int
) -> list[str]:
    events = [
        {**event, "idempotency_key": f"k-{i}", "recipients": [f"u-{i}", f"u-{i + 1}"]}
        for i in range(n)
    ]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 202
    return [e["event_id"] for e in response.json()["events"]]


async def test_a_redelivered_job_writes_nothing_twice(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    event_ids = await publish_batch(client, producer, canonical_event, 20)
    await eventually(lambda: queue_drained(runtime))
    before = await counts(runtime)
    assert before["inbox_items"] == 40
    # Per recipient: in-app delivered into its item, which stands for the delivery, and
    # email suppressed (no address), as its row says: no transition is logged until a
    # delivery changes.
    assert before["deliveries"] == 40
    assert before["delivery_transitions"] == 0

    # The same job again, as if its worker had died after the commit but before the ack.
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(
            conn, [NewJob(id="plan:again", kind="plan", payload={"events": event_ids})]
        )
    runtime.queue.wake()
    await eventually(lambda: queue_drained(runtime))
    assert await counts(runtime) == before


async def test_a_failing_job_retries_then_goes_to_the_dead_letters(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(
            conn, [NewJob(id="plan:ghost", kind="plan", payload={"events": ["no-such-event"]})]
        )
    runtime.queue.wake()

    async def buried() -> bool:
        return (await counts(runtime))["dead_letters"] == 1

    await eventually(buried)
    async with runtime.db.reader() as conn:
        dead = (await conn.execute(sa.select(tables.dead_letters))).one()
    assert dead.id == "plan:ghost"
    assert dead.attempts == 3
    assert "no-such-event" in dead.error
    assert await queue_drained(runtime)


async def test_one_bad_event_does_not_hold_back_its_batch(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    # Park the worker's view of these events: publish with the worker racing is fine,
    # the job below is what is tested.
    event_ids = await publish_batch(client, producer, canonical_event, 3)
    await eventually(lambda: queue_drained(runtime))
    async with runtime.db.transaction() as conn:
        # Forget that they were planned, so the job below plans them afresh.
        for table in COUNTED:
            await conn.execute(table.delete())
        await runtime.queue.enqueue(
            conn,
            [
                NewJob(
                    id="plan:mixed",
                    kind="plan",
                    payload={"events": [event_ids[0], "missing", event_ids[2]]},
                )
            ],
        )
    runtime.queue.wake()

    async def settled() -> bool:
        found = await counts(runtime)
        return found["jobs"] == 0 and found["dead_letters"] == 1

    await eventually(settled)
    async with runtime.db.reader() as conn:
        rows = await conn.execute(sa.select(tables.inbox_items.c.event_id))
        restored = {r.event_id for r in rows}
        dead = (await conn.execute(sa.select(tables.dead_letters))).one()
    assert restored == {event_ids[0], event_ids[2]}
    assert dead.payload == {"events": ["missing"]}


async def test_an_unknown_job_kind_is_dead_lettered(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(conn, [NewJob(id="odd:1", kind="odd", payload={})])
    runtime.queue.wake()

    async def buried() -> bool:
        return (await counts(runtime))["dead_letters"] == 1

    await eventually(buried)


async def test_items_render_with_the_recipients_profile(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Any,
) -> None:
    response = await client.post("/v1/events", json=canonical_event, headers=producer)
    assert response.status_code == 202

    async def arrived() -> bool:
        items = (await client.get("/v1/me/inbox", headers=user_headers("u-bob"))).json()["items"]
        return len(items) == 1

    await eventually(arrived)
    [item] = (await client.get("/v1/me/inbox", headers=user_headers("u-bob"))).json()["items"]
    assert item["title"] == "Ann commented on Roadmap"
    assert item["body"] == "Looks good"
    assert item["action_url"] == "/boards/b-1#comment-c-1"
    assert item["actor"]["name"] == "Ann"
    assert item["category"] == "comments"
