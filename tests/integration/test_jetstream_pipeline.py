"""The pipeline on the JetStream queue: the same guarantees as on the database queue.

One process here runs API, relay and worker, on PostgreSQL and the machine's NATS (with
streams of a prefix of their own, removed after each test).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa

from tests.conftest import eventually, fresh_database, service_missing
from tests.integration.test_queue import NATS_URL
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import tokens
from tidings.kit import jetstream_messages, jetstream_relay, tables
from tidings.kit.jetstream import JetStreamQueue
from tidings.kit.jetstream_streams import ensure_streams
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings


@dataclass
class Running:
    runtime: Runtime
    client: httpx.AsyncClient
    producer: dict[str, str]

    @property
    def queue(self) -> JetStreamQueue:
        assert isinstance(self.runtime.queue, JetStreamQueue)
        return self.runtime.queue


@pytest.fixture
async def tidings(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Running]:
    """A running Tidings on PostgreSQL and JetStream (three partitions)."""
    async with fresh_database("postgres", tmp_path) as url:
        settings = make_settings(
            database_url=url,
            queue_backend="jetstream",
            nats_url=NATS_URL,
            nats_prefix=f"t{uuid.uuid4().hex[:10]}",
            nats_partitions=3,
            nats_ack_wait_seconds=2,
            job_max_attempts=3,
            topic_page_size=100,
            scheduler_poll_seconds=0.1,
        )
        runtime = build_runtime(settings)
        application = create_app(runtime=runtime)
        try:
            async with application.router.lifespan_context(application):
                _key, plaintext = await runtime.auth.create_key(
                    "tests", ["*", "topics:write", "dev:mailbox"]
                )
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=application), base_url="http://t.test"
                ) as client:
                    yield Running(runtime, client, {"Authorization": f"Bearer {plaintext}"})
        except OSError as exc:
            service_missing(f"NATS JetStream at {NATS_URL}", exc)
        finally:
            await _delete_streams(settings)


async def _delete_streams(settings: Settings) -> None:
    with contextlib.suppress(Exception):
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for stage in ("plan", "deliver", "dead"):
            with contextlib.suppress(Exception):
                await js.delete_stream(f"{settings.nats_prefix}_{stage}".upper())
        await nc.close()


async def scalar(runtime: Runtime, query: sa.Select[Any]) -> Any:
    async with runtime.db.reader() as conn:
        return (await conn.execute(query)).scalar_one()


async def enqueue_and_relay(tidings: Running, jobs: list[NewJob], *, timeout: float) -> Any:
    """Commit ``jobs`` to the outbox, wake the relay, wait until the outbox is empty, and
    return the one dead letter that must have come of it."""
    async with tidings.runtime.db.transaction() as conn:
        await tidings.queue.enqueue(conn, jobs)
    tidings.queue.wake()
    outbox = sa.select(sa.func.count()).select_from(tables.jobs)

    async def relayed() -> bool:
        return await scalar(tidings.runtime, outbox) == 0

    await eventually(relayed, timeout=timeout)
    async with tidings.runtime.db.reader() as conn:
        [row] = (await conn.execute(sa.select(tables.dead_letters))).all()
    return row


async def inbox_pairs(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db.reader() as conn:
        rows = await conn.execute(
            sa.select(tables.inbox_items.c.event_id, tables.inbox_items.c.user_id)
        )
        return [(row.event_id, row.user_id) for row in rows]


def comment(n: int, recipients: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": f"k-{n}",
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": recipients,
        "data": {
            "board": {"id": "b-1", "name": "Roadmap"},
            "comment": {"id": f"c-{n}", "text": "Looks good"},
        },
        **extra,
    }


async def test_every_recipient_of_every_event_gets_one_item_across_partitions(
    tidings: Running,
) -> None:
    events = [
        comment(n, [{"id": f"u-{n}"}, {"id": f"u-{n + 1}"}, {"id": "u-all"}]) for n in range(60)
    ]
    response = await tidings.client.post(
        "/v1/events/batch", json={"events": events}, headers=tidings.producer
    )
    assert response.status_code == 202, response.text
    event_ids = [e["event_id"] for e in response.json()["events"]]
    expected = sorted(
        (event_id, user)
        for n, event_id in enumerate(event_ids)
        for user in (f"u-{n}", f"u-{n + 1}", "u-all")
    )

    async def delivered() -> bool:
        return len(await inbox_pairs(tidings.runtime)) >= len(expected)

    await eventually(delivered, timeout=30)
    assert sorted(await inbox_pairs(tidings.runtime)) == expected
    # The batch travelled as one planning message per recipient partition.
    assert tidings.queue.published == tidings.runtime.settings.nats_partitions
    assert await scalar(tidings.runtime, sa.select(sa.func.count()).select_from(tables.jobs)) == 0
    unplanned = sa.select(sa.func.count()).where(tables.events.c.planned_at.is_(None))
    assert await scalar(tidings.runtime, unplanned) == 0


async def test_a_topic_fans_out_page_by_page_to_every_subscriber(tidings: Running) -> None:
    subscribers = [f"s-{n:03d}" for n in range(250)]
    response = await tidings.client.put(
        "/v1/topics/board:7/subscribers",
        json={"user_ids": subscribers},
        headers=tidings.producer,
    )
    assert response.status_code in (200, 201), response.text
    event = comment(1, [])
    del event["recipients"]
    event["topic"] = "board:7"
    response = await tidings.client.post("/v1/events", json=event, headers=tidings.producer)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]

    async def delivered() -> bool:
        return len(await inbox_pairs(tidings.runtime)) >= len(subscribers)

    await eventually(delivered, timeout=30)
    assert sorted(await inbox_pairs(tidings.runtime)) == [(event_id, user) for user in subscribers]


async def test_email_goes_through_the_deliver_stage(tidings: Running) -> None:
    event = comment(2, [{"id": "u-bob", "email": "bob@example.com"}])
    response = await tidings.client.post("/v1/events", json=event, headers=tidings.producer)
    assert response.status_code == 202, response.text

    sent = sa.select(sa.func.count()).where(
        tables.deliveries.c.channel == "email", tables.deliveries.c.state == "sent"
    )

    async def mailed() -> bool:
        # The message is handed over before its delivery's state is committed: wait for
        # both, or a busy machine sees the one without the other.
        box = await tidings.client.get("/v1/dev/mailbox", headers=tidings.producer)
        return len(box.json()["messages"]) >= 1 and await scalar(tidings.runtime, sent) >= 1

    await eventually(mailed, timeout=30)
    box = await tidings.client.get("/v1/dev/mailbox", headers=tidings.producer)
    assert len(box.json()["messages"]) == 1
    assert await scalar(tidings.runtime, sent) == 1


async def test_a_timer_waits_in_the_database_until_its_time(tidings: Running) -> None:
    due = tidings.runtime.clock.now() + dt.timedelta(seconds=1)
    async with tidings.runtime.db.transaction() as conn:
        await tidings.queue.enqueue(
            conn,
            [NewJob("plan:later", "plan", {"events": ["missing"]}, lane=2, run_at=due)],
        )
    tidings.queue.wake()
    # Not relayed before its time: the row is still the timer.
    jobs = sa.select(sa.func.count()).select_from(tables.jobs)
    assert await scalar(tidings.runtime, jobs) == 1

    async def fired() -> bool:
        return await scalar(tidings.runtime, jobs) == 0

    await eventually(fired, timeout=10)


async def test_a_poison_job_is_retried_then_dead_lettered(tidings: Running) -> None:
    async with tidings.runtime.db.transaction() as conn:
        await tidings.queue.enqueue(
            conn, [NewJob("plan:ghost", "plan", {"events": ["no-such-event"]})]
        )
    tidings.queue.wake()
    dead = sa.select(sa.func.count()).select_from(tables.dead_letters)

    async def buried() -> bool:
        return await scalar(tidings.runtime, dead) == 1

    await eventually(buried, timeout=30)
    async with tidings.runtime.db.reader() as conn:
        row = (await conn.execute(sa.select(tables.dead_letters))).one()
    assert row.id == "plan:ghost"
    assert row.attempts == 3
    assert "no-such-event" in row.error
    info = await tidings.queue.dead_letter_count()
    assert info == 1


async def test_an_outbox_row_no_stage_takes_goes_to_the_dead_letters(tidings: Running) -> None:
    async with tidings.runtime.db.transaction() as conn:
        await tidings.queue.enqueue(
            conn,
            [NewJob("mystery:1", "mystery", {}), NewJob("plan:ok", "plan", {"events": []})],
        )
    tidings.queue.wake()
    jobs = sa.select(sa.func.count()).select_from(tables.jobs)

    async def relayed() -> bool:
        return await scalar(tidings.runtime, jobs) == 0

    await eventually(relayed, timeout=10)
    async with tidings.runtime.db.reader() as conn:
        [row] = (await conn.execute(sa.select(tables.dead_letters))).all()
    assert (row.id, row.kind) == ("mystery:1", "mystery")
    assert "cannot be routed" in row.error


async def test_a_row_jetstream_will_never_take_is_dead_lettered_without_holding_back_others(
    tidings: Running,
) -> None:
    assert tidings.queue._nc is not None
    too_big = "x" * (tidings.queue._nc.max_payload + 1)
    row = await enqueue_and_relay(
        tidings,
        [
            NewJob("plan:huge", "plan", {"events": [], "padding": too_big}),
            NewJob("plan:ok", "plan", {"events": []}),
        ],
        timeout=10,
    )
    assert row.id == "plan:huge"
    assert "MaxPayloadError" in row.error
    # The other row went through, and the client has no publish left pending.
    assert tidings.queue.published >= 1
    assert tidings.queue._js.publish_async_pending() == 0


async def test_a_stage_without_its_stream_backs_off_and_the_other_stages_go_on(
    tidings: Running,
) -> None:
    """JetStream not answering for one stream (its leader gone, or the stream deleted)
    keeps that stage's rows in the outbox, retried with a backoff; the rest is relayed,
    and the held rows are published once the stream is back."""
    queue = tidings.queue
    deliver = queue.topology.stream("deliver")
    await queue._js.delete_stream(deliver)
    async with tidings.runtime.db.transaction() as conn:
        await queue.enqueue(
            conn,
            [
                NewJob("in-app:held", "in_app", {"user_id": "u-1", "deliveries": []}),
                NewJob("plan:free", "plan", {"events": []}),
            ],
        )
    queue.wake()
    outbox = sa.select(tables.jobs.c.id, tables.jobs.c.attempts, tables.jobs.c.last_error)

    async def held() -> bool:
        async with tidings.runtime.db.reader() as conn:
            rows = (await conn.execute(outbox)).all()
        return [row.id for row in rows] == ["in-app:held"] and rows[0].attempts >= 1

    await eventually(held, timeout=10)
    async with tidings.runtime.db.reader() as conn:
        [row] = (await conn.execute(outbox)).all()
    assert "NoStreamResponseError" in row.last_error
    assert (
        await scalar(tidings.runtime, sa.select(sa.func.count()).select_from(tables.dead_letters))
        == 0
    )

    await ensure_streams(queue._js, queue.topology)
    jobs = sa.select(sa.func.count()).select_from(tables.jobs)

    async def relayed() -> bool:
        return await scalar(tidings.runtime, jobs) == 0

    await eventually(relayed, timeout=40)
    # The recreated stream received the held row's message.
    info = await queue._js.stream_info(deliver)
    assert info.state.last_seq >= 1


async def test_a_message_whose_headers_take_it_over_the_limit_never_reaches_the_server(
    tidings: Running,
) -> None:
    """The headers (message id, trace context) count towards the server's limit: a body
    a few bytes under it is refused here, not by a server dropping the connection."""
    queue = tidings.queue
    assert queue._nc is not None
    reconnects = queue._nc.stats["reconnects"]

    def row(padding: str) -> Any:
        return SimpleNamespace(
            id="plan:edge",
            kind="plan",
            payload={"events": [], "padding": padding},
            lane=0,
            created_at=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
            headers=None,
        )

    def messages(padding: str) -> list[tuple[str, str, bytes]]:
        return jetstream_messages.messages(row(padding), queue.topology, queue._splitters)

    [(_subject, _id, empty)] = messages("")
    padding = "x" * (queue._nc.max_payload - 5 - len(empty))
    [(_subject, _id, body)] = messages(padding)
    assert len(body) == queue._nc.max_payload - 5
    with pytest.raises(nats.errors.MaxPayloadError):
        jetstream_messages.outgoing(
            row(padding), queue.topology, queue._splitters, queue._nc.max_payload
        )

    async with tidings.runtime.db.transaction() as conn:
        await queue.enqueue(conn, [NewJob("plan:edge", "plan", {"events": [], "padding": padding})])
    queue.wake()
    dead = sa.select(sa.func.count()).select_from(tables.dead_letters)

    async def buried() -> bool:
        return await scalar(tidings.runtime, dead) == 1

    await eventually(buried)
    assert queue._nc.is_connected
    assert queue._nc.stats["reconnects"] == reconnects


async def test_a_row_the_stream_refuses_is_found_out_and_dead_lettered(
    tidings: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that refuses a message (here: over its own size limit) answers an
    asynchronous publish with an error the client drops; the relay publishes the
    unanswered row again, synchronously, learns the refusal and dead-letters it."""
    monkeypatch.setattr(jetstream_relay, "_PUBLISH_ACK_SECONDS", 1.0)
    queue = tidings.queue
    info = await queue._js.stream_info(queue.topology.stream("plan"))
    info.config.max_msg_size = 2_000
    await queue._js.update_stream(info.config)
    row = await enqueue_and_relay(
        tidings,
        [
            NewJob("plan:refused", "plan", {"events": [], "padding": "x" * 3_000}),
            NewJob("plan:fine", "plan", {"events": []}),
        ],
        timeout=30,
    )
    assert row.id == "plan:refused"
    assert "BadRequestError" in row.error


async def test_an_event_sent_later_is_planned_at_its_time_through_jetstream(
    tidings: Running,
) -> None:
    send_at = tidings.runtime.clock.now() + dt.timedelta(seconds=2)
    response = await tidings.client.put(
        "/v1/topics/board-later/subscribers", json={"user_ids": ["u-sub"]}, headers=tidings.producer
    )
    assert response.status_code == 200, response.text
    direct = comment(900, [{"id": "u-direct"}], send_at=send_at.isoformat())
    topic = {**comment(901, []), "topic": "board-later", "send_at": send_at.isoformat()}
    del topic["recipients"]
    ids = []
    for body in (direct, topic):
        response = await tidings.client.post("/v1/events", json=body, headers=tidings.producer)
        assert response.status_code == 202, response.text
        ids.append(response.json()["event_id"])

    await asyncio.sleep(0.5)  # the relay and the planners had time to act, and did not
    for event_id in ids:
        response = await tidings.client.get(f"/v1/events/{event_id}", headers=tidings.producer)
        assert response.json()["status"] == "scheduled", response.text
    assert await inbox_pairs(tidings.runtime) == []

    async def planned() -> bool:
        statuses = [
            (await tidings.client.get(f"/v1/events/{i}", headers=tidings.producer)).json()["status"]
            for i in ids
        ]
        return statuses == ["planned", "planned"]

    await eventually(planned, timeout=20)
    assert tidings.runtime.clock.now() >= send_at
    assert (ids[0], "u-direct") in await inbox_pairs(tidings.runtime)
    token = tokens.issue_user_token(
        tidings.runtime.settings.signing_secret,
        "u-sub",
        ttl=dt.timedelta(minutes=5),
        now=dt.datetime.now(dt.UTC),
    )

    async def subscriber_has_it() -> bool:
        inbox = await tidings.client.get(
            "/v1/me/inbox", headers={"Authorization": f"Bearer {token}"}
        )
        return [item["event_id"] for item in inbox.json()["items"]] == [ids[1]]

    # A topic's pages are planned after the event is marked planned, by partition.
    await eventually(subscriber_has_it, timeout=20)


async def test_an_event_cancelled_before_its_time_is_never_planned_through_jetstream(
    tidings: Running,
) -> None:
    send_at = tidings.runtime.clock.now() + dt.timedelta(seconds=1)
    body = comment(910, [{"id": "u-cancelled"}], send_at=send_at.isoformat())
    response = await tidings.client.post("/v1/events", json=body, headers=tidings.producer)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]
    cancelled = await tidings.client.post(f"/v1/events/{event_id}/cancel", headers=tidings.producer)
    assert cancelled.status_code == 200, cancelled.text
    # A control published with it, to know when the timers have had their time.
    control = comment(911, [{"id": "u-control"}], send_at=send_at.isoformat())
    response = await tidings.client.post("/v1/events", json=control, headers=tidings.producer)
    assert response.status_code == 202, response.text
    control_id = response.json()["event_id"]

    async def control_planned() -> bool:
        return (control_id, "u-control") in await inbox_pairs(tidings.runtime)

    await eventually(control_planned, timeout=20)
    # Its planning job ran too (it marks the event planned, having planned no one).
    planned = sa.select(tables.events.c.planned_at).where(tables.events.c.id == event_id)

    async def its_job_ran() -> bool:
        return await scalar(tidings.runtime, planned) is not None

    await eventually(its_job_ran, timeout=20)
    assert (event_id, "u-cancelled") not in await inbox_pairs(tidings.runtime)
    view = await tidings.client.get(f"/v1/events/{event_id}", headers=tidings.producer)
    assert view.json()["status"] == "cancelled"
    assert view.json()["deliveries"] == []
