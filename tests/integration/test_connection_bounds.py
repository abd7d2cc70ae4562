"""The bounds on an HTTP process's connections, over real sockets: a client must send a
request's head and body in time, and over the connection cap requests are refused while
health probes still answer.

Each bound is set short here; a test waits for the server to act, and fails only after a
generous wait that the bound (a fraction of a second) never needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from tests.integration.served import served
from tidings.kit.settings import Settings

GIVE_UP = 15.0
"""How long a test waits for the server to act before it fails (not a latency bound)."""


@pytest.fixture
async def base_url(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[str]:
    settings = make_settings(
        database_url=database_url,
        header_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
    )
    async with served(settings) as (_app, url):
        yield url


@contextlib.asynccontextmanager
async def connection(
    base_url: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection; fails the test when
    it keeps the connection open."""
    try:
        return await asyncio.wait_for(reader.read(), GIVE_UP)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {GIVE_UP}s")


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, orjson.loads(body) if body else None


async def test_a_request_head_that_never_ends_gets_408_and_the_connection_closes(
    base_url: str,
) -> None:
    async with connection(base_url) as (reader, writer):
        writer.write(b"GET /v1/me/inbox HTTP/1.1\r\nHost: tidings.test\r\nX-Slow: 1\r\n")
        await writer.drain()
        status, headers, body = parse(await until_closed(reader))
    assert status == 408
    assert headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert body["error"]["field"] == "headers"


async def test_a_connection_that_says_nothing_is_closed(base_url: str) -> None:
    async with connection(base_url) as (reader, _writer):
        assert await until_closed(reader) == b""


async def test_a_request_body_that_stalls_gets_408(base_url: str) -> None:
    async with connection(base_url) as (reader, writer):
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: tidings.test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            b'{"type": "comment.created", '
        )
        await writer.drain()
        status, headers, body = parse(await until_closed(reader))
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert body["error"] == {
        "code": "request_timeout",
        "message": body["error"]["message"],
        "field": "body",
    }
    assert "0.5 s" in body["error"]["message"]


async def test_over_the_connection_cap_requests_get_503_but_probes_answer(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    # A head timeout far longer than the test: the connections holding their place stay.
    settings = make_settings(database_url=database_url, max_connections=4)
    async with served(settings) as (_app, url), contextlib.AsyncExitStack() as stack:
        for _ in range(4):
            _reader, writer = await stack.enter_async_context(connection(url))
            writer.write(b"GET /v1/me/inbox HTTP/1.1\r\n")
            await writer.drain()
        async with connection(url) as (reader, writer):
            writer.write(b"GET /v1/me/inbox HTTP/1.1\r\nHost: tidings.test\r\n\r\n")
            await writer.drain()
            status, headers, body = parse(await until_closed(reader))
        assert status == 503
        assert headers["retry-after"] == "5"
        assert body["error"]["code"] == "too_many_connections"
        for path in ("/healthz", "/readyz"):
            async with connection(url) as (reader, writer):
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status, _headers, _body = parse(await until_closed(reader))
            assert status == 200, path
