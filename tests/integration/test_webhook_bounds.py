"""Webhook attempts are bounded: a receiver that answers a byte at a time is cut off at
the deadline and holds up no other endpoint; URLs httpx cannot send to are refused when
registered and logged as failed attempts when one was stored; reserved addresses are
internal; a disabled endpoint's log line keeps its URL's secrets out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tests.integration.test_client import free_port, serving
from tests.integration.test_webhooks import Receiver, key_headers, log_of, register
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import tables
from tidings.kit.settings import Settings

DRIP_SECONDS = 0.2
DRIP_BYTES = 100
"""A drip lasts DRIP_BYTES x DRIP_SECONDS (20 s), well past any deadline used here."""


class Awaited(Receiver):
    """A receiver that says when its first request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        await super().__call__(scope, receive, send)
        self.arrived.set()


class Drip:
    """A receiver that sends its answer one byte every ``DRIP_SECONDS``: httpx's timeout,
    which counts per read, never fires.

    ``mode`` says where the drip is: ``headers`` (after the status line, forever),
    ``body`` (after complete 200 headers announcing a long body), or ``until`` (in the
    headers, until ``release`` is set, and then a whole 200 answer).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = asyncio.Event()
        self.events: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.events.append("request")
            if self.mode == "body":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nx-drip: ")
            for _ in range(DRIP_BYTES):
                if self.mode == "until" and self.release.is_set():
                    writer.write(b"\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
                    self.events.append("answered")
                    return
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(DRIP_SECONDS)
            self.events.append("drip ran out")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.events.append("client left")
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def dripping(drip: Drip) -> AsyncIterator[str]:
    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks/drip"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def tidings(
    make_settings: Callable[..., Settings], database_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, dict[str, str]]]:
    values: dict[str, Any] = {
        "database_url": database_url,
        "webhooks_allow_private": True,
        "webhooks_retry_seconds": [],
    }
    settings = make_settings(**(values | overrides))
    app = create_app(runtime=build_runtime(settings))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tidings.test"
        ) as client,
    ):
        runtime: Runtime = app.state.runtime
        yield client, runtime, await key_headers(runtime, "*")


async def send_test(client: httpx.AsyncClient, headers: dict[str, str], endpoint_id: str) -> None:
    response = await client.post(f"/v1/webhooks/{endpoint_id}/test", headers=headers)
    assert response.status_code == 202, response.text


async def settled(
    client: httpx.AsyncClient, headers: dict[str, str], endpoint_id: str
) -> dict[str, Any]:
    """The endpoint's only message, once its attempt is logged."""

    async def logged() -> bool:
        log = await log_of(client, headers, endpoint_id)
        return bool(log) and bool(log[0]["log"])

    await eventually(logged)
    (message,) = await log_of(client, headers, endpoint_id)
    return message


async def test_an_answer_dripping_in_its_headers_is_cut_off_at_the_deadline(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    drip = Drip("headers")
    async with (
        dripping(drip) as url,
        tidings(make_settings, database_url, webhooks_timeout_seconds=0.5) as (client, _, h),
    ):
        endpoint = await register(client, h, url)
        await send_test(client, h, endpoint["id"])
        message = await settled(client, h, endpoint["id"])
        assert message["state"] == "failed"
        (attempt,) = message["log"]
        assert attempt["status"] is None
        assert attempt["error"] == "timeout: no answer within 0.5 s"
        assert message["last_error"] == attempt["error"]

        async def left() -> bool:
            return "client left" in drip.events

        await eventually(left)
        assert "drip ran out" not in drip.events


async def test_a_success_status_stands_when_the_body_drips_past_the_deadline(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    drip = Drip("body")
    async with (
        dripping(drip) as url,
        tidings(make_settings, database_url, webhooks_timeout_seconds=0.5) as (client, _, h),
    ):
        endpoint = await register(client, h, url)
        await send_test(client, h, endpoint["id"])
        message = await settled(client, h, endpoint["id"])
        assert message["state"] == "succeeded"
        (attempt,) = message["log"]
        assert attempt["status"] == 200
        assert attempt["error"] is None
        assert re.fullmatch(r"at least [0-9]+ bytes", attempt["response"]), attempt
        assert "drip ran out" not in drip.events


async def test_a_slow_receiver_holds_up_no_other_endpoint_of_its_batch(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    fast = Awaited()
    drip = Drip("until")
    async with (
        dripping(drip) as slow_url,
        serving(fast, free_port()) as fast_url,
        # The deadline is far: only the other endpoint's message ends the slow answer.
        tidings(
            make_settings,
            database_url,
            webhooks_timeout_seconds=60.0,
            worker_enabled=False,
        ) as (client, runtime, h),
    ):
        slow = await register(client, h, slow_url)
        quick = await register(client, h, f"{fast_url}/hooks")
        # The slow endpoint's message is the older: sent one after the other, it would
        # go first and the quick one would wait behind it.
        await send_test(client, h, slow["id"])
        await send_test(client, h, quick["id"])

        async def release_when_the_quick_one_arrives() -> None:
            await fast.arrived.wait()
            drip.release.set()

        watcher = asyncio.create_task(release_when_the_quick_one_arrives())
        assert await runtime.worker.run_once() == 2  # both messages in one batch
        watcher.cancel()

        # The slow receiver answered only once the quick one had its message, while the
        # slow attempt was still going.
        assert drip.events == ["request", "answered"]
        for endpoint in (slow, quick):
            (message,) = await log_of(client, h, endpoint["id"])
            assert message["state"] == "succeeded", message
            assert message["log"][0]["status"] == 200


BAD_URLS = [
    "http://0177.0.0.1/",
    "http://\u2460\u2461\u2466.0.0.1/",
    "http://a..b/",
    "http://" + "a" * 64 + ".example/",
]


@pytest.mark.parametrize("url", BAD_URLS)
async def test_a_url_httpx_cannot_send_to_is_refused_on_field_url(
    make_settings: Callable[..., Settings], database_url: str, url: str
) -> None:
    async with tidings(make_settings, database_url) as (client, _runtime, h):
        created = await client.post("/v1/webhooks", json={"url": url}, headers=h)
        assert created.status_code == 422, created.text
        assert created.json()["error"]["field"] == "url"
        endpoint = await register(client, h, "http://127.0.0.1:9/hooks")
        changed = await client.patch(f"/v1/webhooks/{endpoint['id']}", json={"url": url}, headers=h)
        assert changed.status_code == 422, changed.text
        error = changed.json()["error"]
        assert error["field"] == "url"
        assert error["message"]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://0177.0.0.1/", "invalid URL: Invalid IPv4 address"),
        ("http://a..b/", "a..b does not resolve"),
    ],
)
async def test_a_stored_url_httpx_cannot_send_to_is_a_failed_attempt(
    make_settings: Callable[..., Settings], database_url: str, url: str, error: str
) -> None:
    async with tidings(make_settings, database_url) as (client, runtime, h):
        endpoint = await register(client, h, "http://127.0.0.1:9/hooks")
        # As an endpoint registered before such URLs were refused.
        async with runtime.db.transaction() as conn:
            await conn.execute(
                tables.webhook_endpoints.update()
                .where(tables.webhook_endpoints.c.id == endpoint["id"])
                .values(url=url)
            )
        await send_test(client, h, endpoint["id"])
        message = await settled(client, h, endpoint["id"])
        assert message["state"] == "failed"
        assert message["log"][0]["error"].startswith(error), message["log"]
        async with runtime.db.reader() as conn:
            buried = await conn.execute(sa.select(sa.func.count()).select_from(tables.dead_letters))
            assert buried.scalar_one() == 0


@pytest.mark.parametrize("url", ["http://[::ffff:0:7f00:1]/", "http://[::ffff:0:a9fe:a9fe]/"])
async def test_an_ipv4_translated_address_is_refused(
    make_settings: Callable[..., Settings], database_url: str, url: str
) -> None:
    async with tidings(make_settings, database_url, webhooks_allow_private=False) as (
        client,
        _runtime,
        h,
    ):
        response = await client.post("/v1/webhooks", json={"url": url}, headers=h)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "url"
        assert "TIDINGS_WEBHOOKS_ALLOW_PRIVATE" in error["message"]


async def test_a_disabled_endpoints_log_line_shows_its_host_not_its_path_or_query(
    make_settings: Callable[..., Settings],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = Receiver()
    failing.default = 500
    async with (
        serving(failing, free_port()) as url,
        tidings(make_settings, database_url, webhooks_disable_after=1) as (client, _runtime, h),
    ):
        endpoint = await register(client, h, f"{url}/services/T0KEN-path?token=s3cret-query")
        with caplog.at_level(logging.WARNING):
            await send_test(client, h, endpoint["id"])

            async def disabled() -> bool:
                found = await client.get(f"/v1/webhooks/{endpoint['id']}", headers=h)
                return found.json()["enabled"] is False

            await eventually(disabled)
        lines = [r.getMessage() for r in caplog.records if endpoint["id"] in r.getMessage()]
        assert lines, "the disabling is logged"
        assert f"({url}/…)" in lines[0]
        for record in caplog.records:
            text = record.getMessage()
            assert "T0KEN" not in text, text
            assert "s3cret" not in text, text
