"""The log lines of a full delivery: JSON with its ids and trace id, and no email address
at INFO."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.test_email_pipeline import RESET, deliveries_of, settled
from tidings.app.runtime import Runtime
from tidings.kit import logs, tracing


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        tracing.use(None)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


async def deliver(
    runtime: Runtime, client: httpx.AsyncClient, producer: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    response = await client.post("/v1/events", json=RESET, headers=producer)
    assert response.status_code == 202, response.text
    event_id = str(response.json()["event_id"])
    assert (await settled(runtime, event_id, "email"))["state"] == "sent"
    return event_id, await deliveries_of(runtime, event_id, "email")


async def test_a_delivery_logs_its_ids_and_trace_and_no_address(
    runtime: Runtime, client: httpx.AsyncClient, producer: dict[str, str], output: io.StringIO
) -> None:
    logs.configure(json=True, level="info", stream=output)
    event_id, (delivery,) = await deliver(runtime, client, producer)

    text = output.getvalue()
    assert "bob@example.com" not in text
    found = [json.loads(line) for line in text.splitlines()]
    sent = [line for line in found if line["event"] == "email accepted by catcher"]
    assert len(sent) == 1
    line = sent[0]
    assert line["level"] == "info"
    assert line["event_id"] == event_id
    assert line["delivery_id"] == delivery["id"]
    assert line["notification_id"] == delivery["notification_id"]
    assert line["job"] == "email"
    assert len(line["trace_id"]) == 32


async def test_the_address_shows_only_at_debug(
    runtime: Runtime, client: httpx.AsyncClient, producer: dict[str, str], output: io.StringIO
) -> None:
    logs.configure(json=True, level="debug", stream=output)
    await deliver(runtime, client, producer)
    found = [json.loads(line) for line in output.getvalue().splitlines()]
    assert any(line["level"] == "debug" and "bob@example.com" in line["event"] for line in found)
    assert not any(
        line["level"] != "debug" and "bob@example.com" in json.dumps(line) for line in found
    )
