"""The Python SDK against a real Tidings server on a loopback port.

Faults are injected by a wrapper in front of the real application, at the HTTP level: it
answers 503 or 429 instead of letting a request through, or lets a request do its work
and then loses the answer (a 500 the client cannot tell from a crash after commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from tests.conftest import eventually
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import keys
from tidings.client import (
    AsyncTidings,
    BroadcastReach,
    Conflict,
    Event,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Retry,
    ServerError,
    Tidings,
    Unauthenticated,
    Unreachable,
)
from tidings.kit.settings import Settings
from tidings.kit.tables import events

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

QUICK = Retry(attempts=6, base=0.01, cap=0.05)


@dataclass
class Faults:
    """The real application, with the next requests' faults queued up in ``plan``:
    ``"503"``, ``"429"`` (with ``Retry-After: 0``), ``"429:N"`` (``Retry-After: N``) or
    ``"lose"``."""

    app: FastAPI
    plan: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(f"{scope['method']} {scope['path']}")
        fault = self.plan.pop(0) if self.plan else None
        if fault is not None and fault.split(":")[0] in ("503", "429"):
            status, _, retry_after = fault.partition(":")
            body = b'{"error":{"code":"busy","message":"try later"}}'
            await _answer(send, int(status), body, retry_after or "0")
        elif fault == "lose":

            async def swallow(message: MutableMapping[str, Any]) -> None:
                pass

            await self.app(scope, receive, swallow)
            await _answer(send, 500, b"Internal Server Error")
        else:
            await self.app(scope, receive, send)


async def _answer(send: Send, status: int, body: bytes, retry_after: str = "0") -> None:
    headers = [(b"content-type", b"application/json"), (b"retry-after", retry_after.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """``app`` on a loopback port (its lifespan is the caller's), for the block."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def faults(app: FastAPI) -> Faults:
    return Faults(app)


@pytest.fixture
async def base_url(faults: Faults) -> AsyncIterator[str]:
    async with serving(faults, free_port()) as url:
        yield url


def comment(n: int) -> dict[str, Any]:
    return {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": f"c-{n}", "text": f"comment {n}"},
    }


async def stored_events(runtime: Runtime) -> int:
    async with runtime.db.transaction() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(events)) or 0)


async def test_publish_and_follow_an_event(base_url: str, api_key: str, runtime: Runtime) -> None:
    async with AsyncTidings(base_url, api_key) as tidings:
        accepted = await tidings.publish(
            "comment.created",
            recipients=["u-bob", {"id": "u-cy", "email": "cy@example.com", "name": "Cy"}],
            actor={"id": "u-ann", "name": "Ann"},
            data=comment(1),
        )
        assert not accepted.replayed
        for _ in range(500):
            view = await tidings.event(accepted.event_id)
            if view.status == "planned" and len(view.deliveries) >= 2:
                break
            await asyncio.sleep(0.02)
        assert view.id == accepted.event_id
        assert view.recipients == ["u-bob", "u-cy"]
        assert {d.user_id for d in view.deliveries} >= {"u-bob", "u-cy"}
        assert all(d.transitions for d in view.deliveries)
        # The profile given with the event was recorded.
        assert (await tidings.user("u-cy")).email == "cy@example.com"


async def test_a_lost_answer_is_retried_with_the_same_key_and_publishes_once(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    faults.plan = ["lose", "503", "429"]
    async with AsyncTidings(base_url, api_key, retry=QUICK) as tidings:
        accepted = await tidings.publish("comment.created", recipients=["u-bob"], data=comment(2))
    # The first try was stored, its answer lost; the fourth got the original back.
    assert accepted.replayed
    assert faults.seen == ["POST /v1/events"] * 4
    assert faults.plan == []
    assert await stored_events(runtime) == 1


async def test_errors_carry_the_api_code_and_field_and_4xx_is_not_retried(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    async with AsyncTidings(base_url, api_key, retry=QUICK) as tidings:
        with pytest.raises(Invalid) as invalid:
            await tidings.publish("comment.created", recipients=["u-bob"], data={"board": 1})
        assert invalid.value.status == 422
        assert invalid.value.code == "invalid"
        assert (invalid.value.field or "").startswith("data")
        assert len(faults.seen) == 1

        await tidings.publish(
            "comment.created", recipients=["u-bob"], data=comment(3), idempotency_key="k-3"
        )
        with pytest.raises(Conflict) as conflict:
            await tidings.publish(
                "comment.created", recipients=["u-bob"], data=comment(4), idempotency_key="k-3"
            )
        assert conflict.value.code == "conflict"

        with pytest.raises(NotFound):
            await tidings.event("no-such-event")

    _key, narrow = await runtime.auth.create_key("narrow", ["invoice.*"])
    async with AsyncTidings(base_url, narrow, retry=QUICK) as tidings:
        with pytest.raises(Forbidden):
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(5))
    async with AsyncTidings(base_url, "tdk_not_a_key", retry=QUICK) as tidings:
        with pytest.raises(Unauthenticated):
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(6))
    # Five requests refused, each sent once.
    assert len(faults.seen) == 6


async def test_server_errors_give_up_after_the_last_try(
    base_url: str, api_key: str, faults: Faults
) -> None:
    faults.plan = ["503"] * 10
    async with AsyncTidings(base_url, api_key, retry=Retry(attempts=3, base=0.01)) as tidings:
        with pytest.raises(ServerError) as failed:
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(7))
    assert failed.value.status == 503
    assert failed.value.code == "busy"
    assert len(faults.seen) == 3


async def test_a_server_that_is_not_up_yet_is_waited_for(
    app: FastAPI, api_key: str, runtime: Runtime
) -> None:
    port = free_port()
    patient = Retry(attempts=40, base=0.05, cap=0.1)
    async with AsyncTidings(f"http://127.0.0.1:{port}", api_key, retry=patient) as tidings:
        publishing = asyncio.create_task(
            tidings.publish("comment.created", recipients=["u-bob"], data=comment(8))
        )
        await asyncio.sleep(0.3)
        assert not publishing.done()
        async with serving(app, port):
            accepted = await publishing
    assert not accepted.replayed
    assert await stored_events(runtime) == 1

    async with AsyncTidings(f"http://127.0.0.1:{port}", api_key, retry=QUICK) as tidings:
        with pytest.raises(Unreachable) as unreachable:
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(9))
    assert unreachable.value.status is None


async def test_batching_publishes_in_whole_batches(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    async with AsyncTidings(base_url, api_key) as tidings:
        async with tidings.batcher(100) as batch:
            for n in range(250):
                await batch.add(
                    Event(type="comment.created", recipients=["u-bob"], data=comment(n))
                )
        assert len(batch.accepted) == 250
        assert len({a.event_id for a in batch.accepted}) == 250
        assert faults.seen == ["POST /v1/events/batch"] * 3

        # A batch whose answer is lost goes again, whole, with the same keys.
        faults.seen.clear()
        faults.plan = ["lose"]
        again = [
            Event(type="comment.created", recipients=["u-cy"], data=comment(n)) for n in range(3)
        ]
        accepted = await tidings.publish_many(again)
        assert [a.replayed for a in accepted] == [True, True, True]
        assert faults.seen == ["POST /v1/events/batch"] * 2
    assert await stored_events(runtime) == 253


async def test_the_sync_client_does_the_same(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    def work() -> tuple[str, int, int]:
        with Tidings(base_url, api_key, retry=QUICK) as tidings:
            tidings.put_user("u-dee", email="dee@example.com", name="Dee")
            changed = tidings.subscribe("board:b-1", ["u-bob", "u-dee"])
            faults.plan = ["lose"]
            accepted = tidings.publish("comment.created", topic="board:b-1", data=comment(10))
            assert accepted.replayed
            with tidings.batcher(2) as batch:
                for n in range(3):
                    batch.add(Event(type="comment.created", recipients=["u-dee"], data=comment(n)))
            tidings.delete_user("u-dee")
            with pytest.raises(NotFound):
                tidings.user("u-dee")
            return accepted.event_id, changed.changed, len(batch.accepted)

    event_id, subscribed, batched = await asyncio.to_thread(work)
    assert subscribed == 2
    assert batched == 3
    assert await stored_events(runtime) == 4
    assert event_id


async def test_retry_after_is_honoured_beyond_the_backoff_cap_and_a_long_one_is_not_waited(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    loop = asyncio.get_running_loop()
    async with AsyncTidings(base_url, api_key, retry=QUICK) as tidings:
        # The server asks for a second, twenty times the client's own cap: it waits it.
        faults.plan = ["429:1"]
        started = loop.time()
        await tidings.publish("comment.created", recipients=["u-bob"], data=comment(20))
        assert loop.time() - started >= 1.0
        assert faults.seen == ["POST /v1/events"] * 2

        # An hour is more than ``max_retry_after``: the error comes back at once.
        faults.seen.clear()
        faults.plan = ["429:3600"]
        with pytest.raises(RateLimited) as limited:
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(21))
        assert limited.value.status == 429
        assert limited.value.retry_after == 3600

        # The same, asked for as an HTTP date.
        faults.plan = [f"429:{email.utils.formatdate(time.time() + 3600, usegmt=True)}"]
        with pytest.raises(RateLimited) as limited:
            await tidings.publish("comment.created", recipients=["u-bob"], data=comment(22))
        assert limited.value.retry_after is not None
        assert 3500 < limited.value.retry_after <= 3600
        assert faults.seen == ["POST /v1/events"] * 2
    assert await stored_events(runtime) == 1


async def test_events_added_while_a_flush_is_on_its_way_are_not_lost(
    base_url: str, api_key: str, faults: Faults, runtime: Runtime
) -> None:
    patient = Retry(attempts=5, base=0.3, cap=0.3)
    async with AsyncTidings(base_url, api_key, retry=patient) as tidings:
        batch = tidings.batcher(100)
        for n in range(3):
            await batch.add(Event(type="comment.created", recipients=["u-bob"], data=comment(n)))
        # The first try meets a 503 and its retry waits: meanwhile two more are added.
        faults.plan = ["503"]
        flushing = asyncio.create_task(batch.flush())

        async def tried() -> bool:
            return bool(faults.seen)

        await eventually(tried)
        for n in range(3, 5):
            await batch.add(Event(type="comment.created", recipients=["u-bob"], data=comment(n)))
        await flushing
        assert len(batch.accepted) == 5
        assert batch.pending == []
    assert await stored_events(runtime) == 5


async def test_an_exception_in_the_block_publishes_nothing_and_keeps_what_was_added(
    base_url: str, api_key: str, runtime: Runtime
) -> None:
    async with AsyncTidings(base_url, api_key) as tidings:
        batch = tidings.batcher(100)

        async def failing_work() -> None:
            async with batch:
                await batch.add(Event(type="comment.created", recipients=["u-bob"], data={}))
                raise RuntimeError("the work that produced the events failed")

        with pytest.raises(RuntimeError):
            await failing_work()
        assert [event.recipients for event in batch.pending] == [["u-bob"]]
    assert await stored_events(runtime) == 0


async def test_why_a_subscriber_has_a_broadcast_or_not(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """The SDK's ``broadcast_reach``, on a deployment that broadcasts topics of two."""
    settings = make_settings(database_url=database_url, fanout_on_read_min=2)
    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        _key, secret = await runtime.auth.create_key("sdk", ["*", *keys.CAPABILITIES])
        async with serving(app, free_port()) as url, AsyncTidings(url, secret) as tidings:
            await tidings.subscribe("board:b-1", ["u-1", "u-2"])
            accepted = await tidings.publish("comment.created", topic="board:b-1", data=comment(1))

            async def broadcast() -> bool:
                try:
                    await tidings.broadcast_reach(accepted.event_id, "u-1")
                except NotFound:
                    return False
                return True

            await eventually(broadcast)
            reach = await tidings.broadcast_reach(accepted.event_id, "u-1")
            assert isinstance(reach, BroadcastReach)
            assert (reach.user_id, reach.shown, reach.reason) == ("u-1", True, "subscribed")
            assert reach.read_at is None
            stranger = await tidings.broadcast_reach(accepted.event_id, "u-9")
            assert (stranger.shown, stranger.reason) == (False, "not_subscribed")
            direct = await tidings.publish("comment.created", recipients=["u-1"], data=comment(2))
            with pytest.raises(NotFound) as refused:
                await tidings.broadcast_reach(direct.event_id, "u-1")
            assert refused.value.field == "event_id"


async def test_send_later_through_both_clients(base_url: str, api_key: str) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    async with AsyncTidings(base_url, api_key) as tidings:
        accepted = await tidings.publish(
            "comment.created", recipients=["u-bob"], data=comment(40), send_at=later
        )
        view = await tidings.event(accepted.event_id)
        assert view.status == "scheduled"
        assert view.send_at == later
        assert view.deliveries == []
        with pytest.raises(ValidationError):
            Event(type="comment.created", recipients=["u-bob"], send_at=dt.datetime(2030, 1, 1))

    def sync_publish() -> str:
        with Tidings(base_url, api_key, retry=QUICK) as client:
            event = Event(
                type="comment.created", recipients=["u-cy"], data=comment(41), send_at=later
            )
            found = client.event(client.publish_event(event).event_id)
            return found.status

    assert await asyncio.to_thread(sync_publish) == "scheduled"


async def test_cancel_through_both_clients(base_url: str, api_key: str) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    async with AsyncTidings(base_url, api_key) as tidings:
        one = await tidings.publish(
            "comment.created", recipients=["u-bob"], data=comment(50), send_at=later
        )
        done = await tidings.cancel(one.event_id)
        assert (done.event_id, done.suppressed, done.in_flight) == (one.event_id, 0, 0)
        assert (await tidings.event(one.event_id)).status == "cancelled"
        with pytest.raises(NotFound):
            await tidings.cancel("no-such-event")

    def sync_work() -> tuple[list[str], list[str]]:
        with Tidings(base_url, api_key, retry=QUICK) as client:
            published = [
                client.publish(
                    "comment.created",
                    recipients=["u-cy"],
                    data=comment(n),
                    send_at=later,
                    cancellation_key="remind-cy",
                ).event_id
                for n in (51, 52)
            ]
            cancelled = [c.event_id for c in client.cancel_all("remind-cy")]
            assert all(client.event(i).cancelled_at is not None for i in published)
            return published, cancelled

    published, cancelled = await asyncio.to_thread(sync_work)
    assert sorted(cancelled) == sorted(published)


async def test_dry_run_through_both_clients(base_url: str, api_key: str, runtime: Runtime) -> None:
    before = await stored_events(runtime)
    async with AsyncTidings(base_url, api_key) as tidings:
        plan = await tidings.dry_run(
            "comment.created",
            recipients=[{"id": "u-dry", "email": "dry@example.com"}, "u-dry-2"],
            data=comment(60),
        )
        seen = {(r.user_id, c.channel): c.decision for r in plan.recipients for c in r.channels}
        assert seen[("u-dry", "in_app")] == "deliver"
        assert seen[("u-dry", "email")] == "deliver"
        assert seen[("u-dry-2", "email")] == "suppress"  # no address
        with pytest.raises(Invalid):
            await tidings.dry_run("comment.created", recipients=["u-dry"], data={})

    def sync_dry_run() -> list[str]:
        with Tidings(base_url, api_key, retry=QUICK) as client:
            event = Event(type="comment.created", recipients=["u-dry"], data=comment(61))
            return [r.user_id for r in client.dry_run_event(event).recipients]

    assert await asyncio.to_thread(sync_dry_run) == ["u-dry"]
    assert await stored_events(runtime) == before
