"""``GET /metrics``: what ingest, delivery, the queue and the provider did, per process."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import eventually, fresh_database, service_missing
from tests.integration.test_email_pipeline import RESET, settled
from tests.integration.test_jetstream_pipeline import _delete_streams
from tests.integration.test_queue import NATS_URL
from tests.smtp_sink import SmtpSink
from tidings.app.asgi import create_app
from tidings.app.health import add_health_routes
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import tables
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_ingest_and_delivery_are_counted(
    runtime: Runtime, client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    accepted = await client.post("/v1/events", json=RESET, headers=producer)
    assert accepted.status_code == 202, accepted.text
    replayed = await client.post("/v1/events", json=RESET, headers=producer)
    assert replayed.json()["replayed"] is True
    unknown = await client.post(
        "/v1/events",
        json={**RESET, "type": "no.such.type", "idempotency_key": "x"},
        headers=producer,
    )
    assert unknown.status_code == 422
    conflict = await client.post(
        "/v1/events",
        json={**RESET, "data": {**RESET["data"], "expires_in_minutes": 5}},
        headers=producer,
    )
    assert conflict.status_code == 409
    event_id = accepted.json()["event_id"]
    assert (await settled(runtime, event_id, "email"))["state"] == "sent"

    found = await scrape(client)
    reset = RESET["type"]
    assert value(found, "tidings_events_accepted_total", type=reset, replayed="false") == 1
    assert value(found, "tidings_events_accepted_total", type=reset, replayed="true") == 1
    assert value(found, "tidings_events_rejected_total", type="other", code="invalid") == 1
    assert value(found, "tidings_events_rejected_total", type=reset, code="conflict") == 1
    deliveries = "tidings_deliveries_total"
    assert value(found, deliveries, channel="in_app", state="delivered", reason="") == 1
    assert value(found, deliveries, channel="email", state="scheduled", reason="") == 1
    assert value(found, deliveries, channel="email", state="sent", reason="") == 1
    latency = "tidings_delivery_latency_seconds_count"
    assert value(found, latency, channel="in_app") == 1
    assert value(found, latency, channel="email") == 1


async def test_queue_depth_age_and_timers_are_read_at_scrape_time(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    runtime = build_runtime(make_settings(database_url=database_url, worker_enabled=False))
    application = create_app(runtime=runtime)
    async with application.router.lifespan_context(application):
        now = runtime.clock.now()
        async with runtime.db.transaction() as conn:
            await runtime.queue.enqueue(
                conn,
                [
                    NewJob("due-1", "plan", {"events": []}, 1, now - dt.timedelta(minutes=2)),
                    NewJob("due-2", "plan", {"events": []}, 1, now - dt.timedelta(minutes=1)),
                    NewJob("timer-1", "email", {"delivery": "d"}, 2, now + dt.timedelta(hours=1)),
                    # A topic's next page: due since its event was accepted an hour ago,
                    # but queued just now, so it has waited for nothing yet.
                    NewJob("page-2", "fanout", {"event": "e"}, 2, now - dt.timedelta(hours=1)),
                ],
            )
            # The plan jobs were queued when they came due: they have waited since.
            await conn.execute(
                sa.update(tables.jobs)
                .where(tables.jobs.c.kind == "plan")
                .values(created_at=tables.jobs.c.run_at)
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://t.test"
        ) as client:
            found = await scrape(client)
            assert value(found, "tidings_queue_depth", stage="plan", lane="1") == 2
            age = value(found, "tidings_queue_oldest_age_seconds", stage="plan", lane="1")
            assert age is not None
            assert age >= 120
            page_age = value(found, "tidings_queue_oldest_age_seconds", stage="fanout", lane="2")
            assert page_age is not None
            assert page_age < 60
            assert value(found, "tidings_timers_pending", stage="email", lane="2") == 1
            next_due = value(found, "tidings_timers_next_due_seconds", stage="email", lane="2")
            assert next_due is not None
            assert 0 < next_due <= 3600
            assert value(found, "tidings_queue_depth", stage="email", lane="2") is None

            assert await runtime.worker.run_once([1]) == 2
            found = await scrape(client)
            # Run and gone: the lane reports zero rather than vanishing.
            assert value(found, "tidings_queue_depth", stage="plan", lane="1") == 0
            assert value(found, "tidings_timers_pending", stage="email", lane="2") == 1


async def test_provider_errors_retries_and_dead_letters_are_counted(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with SmtpSink() as sink:
        sink.respond_with(["451 4.3.0 try later"])
        runtime = build_runtime(
            make_settings(
                database_url=database_url,
                email_provider="smtp",
                smtp_host=sink.host,
                smtp_port=sink.port,
            )
        )
        application = create_app(runtime=runtime)
        async with application.router.lifespan_context(application):
            _key, plaintext = await runtime.auth.create_key("tests", ["*"])
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://t.test"
            ) as client:
                response = await client.post(
                    "/v1/events", json=RESET, headers={"Authorization": f"Bearer {plaintext}"}
                )
                assert response.status_code == 202, response.text
                assert (await settled(runtime, response.json()["event_id"]))["state"] == "sent"
                async with runtime.db.transaction() as conn:
                    await runtime.queue.enqueue(conn, [NewJob("odd-1", "mystery", {})])
                runtime.queue.wake()

                async def buried() -> bool:
                    found = await scrape(client)
                    return value(found, "tidings_dead_letters_total", stage="mystery") == 1

                await eventually(buried)
                found = await scrape(client)
    errors = "tidings_provider_errors_total"
    assert value(found, errors, provider="smtp", kind="transient") == 1
    assert value(found, errors, provider="smtp", kind="permanent") is None
    assert value(found, "tidings_job_retries_total", stage="email") == 1
    assert (
        value(found, "tidings_deliveries_total", channel="email", state="scheduled", reason="retry")
        == 1
    )


async def test_every_process_serves_its_metrics(app: FastAPI, runtime: Runtime) -> None:
    """The worker's and scheduler's health servers carry the same ``/metrics``."""
    later = runtime.clock.now() + dt.timedelta(hours=1)
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(conn, [NewJob("timer-1", "digest", {}, 3, later)])
    health = FastAPI()
    add_health_routes(health, runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=health), base_url="http://t.test"
    ) as client:
        found = await scrape(client)
    assert value(found, "tidings_timers_pending", stage="digest", lane="3") == 1


async def test_jetstream_pending_messages_are_read_per_stage_and_lane(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A process that relays but does not consume: the planning job waits in its stream."""
    async with fresh_database("postgres", tmp_path) as url:
        settings = make_settings(
            database_url=url,
            queue_backend="jetstream",
            nats_url=NATS_URL,
            nats_prefix=f"t{uuid.uuid4().hex[:10]}",
            nats_partitions=2,
            worker_enabled=False,
        )
        runtime = build_runtime(settings)
        application = create_app(runtime=runtime)
        try:
            async with application.router.lifespan_context(application):
                _key, plaintext = await runtime.auth.create_key("tests", ["*"])
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=application), base_url="http://t.test"
                ) as client:
                    response = await client.post(
                        "/v1/events", json=RESET, headers={"Authorization": f"Bearer {plaintext}"}
                    )
                    assert response.status_code == 202, response.text

                    async def relayed() -> bool:
                        found = await scrape(client)
                        pending = "tidings_jetstream_pending_messages"
                        return value(found, pending, stage="plan", lane="0") == 1

                    await eventually(relayed)
                    found = await scrape(client)
        except OSError as exc:
            service_missing(f"NATS JetStream at {NATS_URL}", exc)
        finally:
            await _delete_streams(settings)
    assert value(found, "tidings_jetstream_pending_messages", stage="deliver", lane="0") == 0
