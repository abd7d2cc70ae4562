"""Traces: one event gives one connected trace, from the HTTP request to the provider,
across the database queue and across JetStream."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.conftest import eventually, fresh_database, service_missing
from tests.integration.test_email_pipeline import RESET, settled
from tests.integration.test_jetstream_pipeline import _delete_streams
from tests.integration.test_queue import NATS_URL
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import tracing
from tidings.kit.settings import Settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tidings' spans, kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def one_tree(finished: Sequence[ReadableSpan]) -> ReadableSpan:
    """Assert the spans form one trace and one tree; returns its root."""
    assert finished
    assert len({s.context.trace_id for s in finished if s.context is not None}) == 1
    by_id = {s.context.span_id: s for s in finished if s.context}
    roots = [s for s in finished if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    for span in finished:
        if span.parent is not None:
            assert span.parent.span_id in by_id, f"{span.name} has a parent not in the trace"
    return roots[0]


def chain(span: ReadableSpan, finished: Sequence[ReadableSpan]) -> list[str]:
    """The names from ``span`` up to the root."""
    by_id = {s.context.span_id: s for s in finished if s.context}
    names = [span.name]
    while span.parent is not None:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_event_gives_one_connected_trace(
    app: FastAPI,
    runtime: Runtime,
    client: httpx.AsyncClient,
    producer: dict[str, str],
    spans: InMemorySpanExporter,
) -> None:
    response = await client.post("/v1/events", json=RESET, headers=producer)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]
    await settled(runtime, event_id, "email")

    async def provider_span_finished() -> bool:
        return any(s.name == "provider send" for s in spans.get_finished_spans())

    await eventually(provider_span_finished)
    finished = spans.get_finished_spans()
    root = one_tree(finished)
    assert root.name == "POST /v1/events"
    assert root.kind is SpanKind.SERVER
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 202
    names = {s.name for s in finished}
    assert {"POST /v1/events", "plan", "in_app write", "email", "provider send"} <= names
    provider = next(s for s in finished if s.name == "provider send")
    assert chain(provider, finished) == ["provider send", "email", "plan", "POST /v1/events"]
    in_app = next(s for s in finished if s.name == "in_app write")
    assert chain(in_app, finished) == ["in_app write", "plan", "POST /v1/events"]
    assert provider.attributes is not None
    assert provider.attributes["tidings.provider"] == "catcher"


async def test_a_callers_traceparent_is_continued(
    app: FastAPI,
    client: httpx.AsyncClient,
    producer: dict[str, str],
    spans: InMemorySpanExporter,
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    response = await client.post(
        "/v1/events", json=RESET, headers={**producer, "traceparent": traceparent}
    )
    assert response.status_code == 202, response.text

    async def planned() -> bool:
        return any(s.name == "plan" for s in spans.get_finished_spans())

    await eventually(planned)
    for span in spans.get_finished_spans():
        assert span.context is not None
        assert format(span.context.trace_id, "032x") == caller_trace


async def test_events_committed_together_link_their_traces(
    make_settings: Callable[..., Settings], database_url: str, spans: InMemorySpanExporter
) -> None:
    """Two requests whose events share one planning job: the job continues the first
    request's trace and links the second's."""
    runtime = build_runtime(make_settings(database_url=database_url, worker_enabled=False))
    application = create_app(runtime=runtime)
    async with application.router.lifespan_context(application):
        _key, plaintext = await runtime.auth.create_key("tests", ["*"])
        producer = {"Authorization": f"Bearer {plaintext}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://t.test"
        ) as client:
            batch = {
                "events": [
                    {**RESET, "idempotency_key": "r-1"},
                    {**RESET, "idempotency_key": "r-2"},
                ]
            }
            first = await client.post("/v1/events/batch", json=batch, headers=producer)
            assert first.status_code == 202, first.text
            # Another request: a planning job of its own, in another trace.
            single = {**RESET, "idempotency_key": "r-3"}
            second = await client.post("/v1/events", json=single, headers=producer)
            assert second.status_code == 202, second.text
        while await runtime.worker.run_once():
            pass
    finished = spans.get_finished_spans()
    requests = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(requests) == 2
    plans = [s for s in finished if s.name == "plan"]
    # Both requests' jobs sit in the critical lane and are claimed together: one span,
    # a child of one request, linked to the other.
    assert len(plans) == 1
    plan = plans[0]
    assert plan.parent is not None
    parents = {r.context.span_id: r for r in requests if r.context}
    assert plan.parent.span_id in parents
    other = next(r for r in requests if r.context and r.context.span_id != plan.parent.span_id)
    assert other.context is not None
    assert [link.context.span_id for link in plan.links] == [other.context.span_id]


async def test_the_trace_survives_the_relay_to_jetstream(
    make_settings: Callable[..., Settings], tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        settings = make_settings(
            database_url=url,
            queue_backend="jetstream",
            nats_url=NATS_URL,
            nats_prefix=f"t{uuid.uuid4().hex[:10]}",
            nats_partitions=2,
            job_max_attempts=3,
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
                    await settled(runtime, response.json()["event_id"], "email")

                async def sent() -> bool:
                    return any(s.name == "provider send" for s in spans.get_finished_spans())

                await eventually(sent)
        except OSError as exc:
            service_missing(f"NATS JetStream at {NATS_URL}", exc)
        finally:
            await _delete_streams(settings)
    finished = spans.get_finished_spans()
    one_tree(finished)
    provider = next(s for s in finished if s.name == "provider send")
    assert chain(provider, finished) == ["provider send", "email", "plan", "POST /v1/events"]
