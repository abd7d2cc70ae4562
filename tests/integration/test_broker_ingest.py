"""Events published on NATS are taken in like HTTP ones: validated, authorized by the
subject's key, idempotent; what is refused lands on the rejected stream with the error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import orjson
import pytest
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from tests.conftest import CANONICAL_EVENT, eventually, service_missing
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth.keys import ApiKey
from tidings.ingest.broker import IngestTopology
from tidings.kit.settings import Settings
from tidings.kit.tables import events

NATS_URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@dataclass
class Ingesting:
    runtime: Runtime
    js: JetStreamContext
    topology: IngestTopology
    key: ApiKey
    plaintext: str

    async def publish(self, body: Any, *, key: ApiKey | None = None, **headers: str) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        subject = self.topology.subject((key or self.key).prefix)
        await self.js.publish(subject, data, headers=headers or None)

    async def stored(self) -> int:
        async with self.runtime.db.transaction() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(events)) or 0)

    async def rejected(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` rejections, waiting (bounded) until they are there."""
        subscription = await self.js.pull_subscribe(
            f"{self.topology.prefix}.rejected.>", stream=self.topology.rejected_stream
        )
        found: list[dict[str, Any]] = []
        for _ in range(100):
            with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                for msg in await subscription.fetch(count - len(found), timeout=0.2):
                    found.append(orjson.loads(msg.data))
                    await msg.ack()
            if len(found) >= count:
                return found
        pytest.fail(f"{len(found)} of {count} rejections arrived: {found}")


@pytest.fixture
async def ingesting(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[Ingesting]:
    prefix = f"i{uuid.uuid4().hex[:10]}"
    settings = make_settings(
        database_url=database_url, ingest_enabled=True, nats_url=NATS_URL, nats_prefix=prefix
    )
    runtime = build_runtime(settings)
    application = create_app(runtime=runtime)
    nc: NatsClient | None = None
    try:
        async with application.router.lifespan_context(application):
            nc = await nats.connect(NATS_URL)
            key, plaintext = await runtime.auth.create_key("comments", ["comment.*"])
            assert runtime.ingest is not None
            yield Ingesting(runtime, nc.jetstream(), runtime.ingest.topology, key, plaintext)
    except OSError as exc:
        service_missing(f"NATS JetStream at {NATS_URL}", exc)
    finally:
        if nc is not None:
            js = nc.jetstream()
            for stream in (f"{prefix}_INGEST", f"{prefix}_REJECTED"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream.upper())
            await nc.close()


def comment(key: str) -> dict[str, Any]:
    return {**CANONICAL_EVENT, "idempotency_key": key}


async def test_an_event_on_the_subject_is_stored_and_planned(ingesting: Ingesting) -> None:
    await ingesting.publish(comment("n-1"))

    async def planned() -> bool:
        async with ingesting.runtime.db.transaction() as conn:
            row = (await conn.execute(sa.select(events.c.type, events.c.planned_at))).first()
        return row is not None and row.planned_at is not None

    await eventually(planned)
    assert await ingesting.stored() == 1


async def test_the_same_idempotency_key_twice_is_one_event(ingesting: Ingesting) -> None:
    for _ in range(3):
        await ingesting.publish(comment("n-2"))

    async def taken() -> bool:
        assert ingesting.runtime.ingest is not None
        return ingesting.runtime.ingest.accepted == 3

    await eventually(taken)
    assert await ingesting.stored() == 1


async def test_what_is_refused_goes_to_the_rejected_stream_with_the_error(
    ingesting: Ingesting,
) -> None:
    runtime = ingesting.runtime
    _other, _ = await runtime.auth.create_key("invoices", ["invoice.*"])
    revoked, _ = await runtime.auth.create_key("old", ["*"])
    await runtime.auth.revoke_key(revoked.id)
    bad_payload = {**comment("r-1"), "data": {"board": {"id": "b-1"}}}
    await ingesting.publish(b"{not json")
    await ingesting.publish(bad_payload)
    await ingesting.publish(comment("r-2"), key=_other)
    await ingesting.publish(comment("r-3"), key=revoked)
    await ingesting.publish(comment("r-4"), Authorization=f"Bearer {ingesting.plaintext}x")
    await ingesting.publish(comment("r-5"))
    await ingesting.publish({**comment("r-5"), "data": {**CANONICAL_EVENT["data"], "x": 1}})

    found = await ingesting.rejected(6)
    codes = [(r["error"]["code"], r["error"].get("field")) for r in found]
    assert codes[0] == ("malformed_json", None)
    assert codes[1] == ("invalid", "data.board.name")
    assert codes[2] == ("forbidden", "type")
    assert codes[3] == ("unauthenticated", "subject")
    assert codes[4] == ("unauthenticated", "authorization")
    assert codes[5][0] == "conflict"
    # Each keeps what was sent and where, for the producer to act on.
    assert found[0]["event"] == "{not json"
    assert orjson.loads(found[1]["event"]) == bad_payload
    assert found[2]["subject"] == ingesting.topology.subject(_other.prefix)
    # Only the one valid event was stored.
    assert await ingesting.stored() == 1


async def test_events_published_while_no_process_runs_wait_for_one(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    prefix = f"i{uuid.uuid4().hex[:10]}"
    settings = make_settings(
        database_url=database_url, ingest_enabled=True, nats_url=NATS_URL, nats_prefix=prefix
    )
    first = build_runtime(settings)
    try:
        nc = await nats.connect(NATS_URL)
    except OSError as exc:
        service_missing(f"NATS at {NATS_URL}", exc)
    try:
        app = create_app(runtime=first)
        async with app.router.lifespan_context(app):
            key, _ = await first.auth.create_key("comments", ["comment.*"])
        # Tidings is down; the producer goes on publishing.
        js = nc.jetstream()
        topology = IngestTopology(prefix)
        for n in range(5):
            await js.publish(topology.subject(key.prefix), orjson.dumps(comment(f"w-{n}")))
        second = build_runtime(settings)
        app = create_app(runtime=second)
        async with app.router.lifespan_context(app):

            async def all_stored() -> bool:
                async with second.db.transaction() as conn:
                    count = await conn.scalar(sa.select(sa.func.count()).select_from(events))
                return count == 5

            await eventually(all_stored)
    finally:
        for stream in (topology.stream, topology.rejected_stream):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
    await asyncio.sleep(0)


async def test_an_unexpected_failure_hands_the_events_back_and_they_are_stored_later(
    ingesting: Ingesting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key lookup failing for a reason that is not the event's (the database did
    not answer) sends the message back with a backoff instead of leaving it unacked."""
    auth = ingesting.runtime.auth
    real = auth.key_by_prefix
    failures: list[str] = []

    async def flaky(prefix: str) -> ApiKey:
        if len(failures) < 2:
            failures.append(prefix)
            raise ConnectionResetError("the database closed the connection")
        return await real(prefix)

    monkeypatch.setattr(auth, "key_by_prefix", flaky)
    await ingesting.publish(comment("f-1"))

    async def stored() -> bool:
        return await ingesting.stored() == 1

    # Two failed deliveries, nak-ed with backoffs of 1 s and 2 s, then the third stores it.
    await eventually(stored, timeout=20)
    assert failures == [ingesting.key.prefix] * 2
    assert ingesting.runtime.ingest is not None
    assert (ingesting.runtime.ingest.accepted, ingesting.runtime.ingest.rejected) == (1, 0)


async def test_a_subject_with_more_than_the_key_after_ingest_is_rejected(
    ingesting: Ingesting,
) -> None:
    subject = f"{ingesting.topology.subject(ingesting.key.prefix)}.extra"
    await ingesting.js.publish(subject, orjson.dumps(comment("s-1")))

    [found] = await ingesting.rejected(1)
    assert (found["error"]["code"], found["error"]["field"]) == ("unauthenticated", "subject")
    assert found["subject"] == subject
    # Filed under the key's own rejected subject, where its producer reads.
    info = await ingesting.js.stream_info(
        ingesting.topology.rejected_stream,
        subjects_filter=ingesting.topology.rejected_subject(ingesting.key.prefix),
    )
    assert info.state.subjects == {ingesting.topology.rejected_subject(ingesting.key.prefix): 1}
    assert await ingesting.stored() == 0
