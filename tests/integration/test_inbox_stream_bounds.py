"""The bounds on live inbox streams, over real sockets: streams per user and per process,
and the end of a stream whose token stopped being accepted."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
from fastapi import FastAPI
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from tests.integration.served import served
from tidings.auth import tokens
from tidings.kit.settings import Settings

GIVE_UP = 15.0
"""How long a test waits for an event before it fails (not a latency bound)."""


class Stream:
    """The events of one open stream, read in the background; None once it ended."""

    def __init__(self, source: EventSource) -> None:
        self._events: asyncio.Queue[ServerSentEvent | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read(source))

    async def _read(self, source: EventSource) -> None:
        try:
            async for event in source.aiter_sse():
                await self._events.put(event)
        finally:
            await self._events.put(None)

    async def _get(self) -> ServerSentEvent | None:
        try:
            return await asyncio.wait_for(self._events.get(), GIVE_UP)
        except TimeoutError:
            pytest.fail(f"no event and no end within {GIVE_UP}s")

    async def next(self) -> ServerSentEvent:
        """The next event; fails the test when the stream ends instead."""
        event = await self._get()
        if event is None:
            pytest.fail("the stream ended")
        return event

    async def ended(self) -> bool:
        """Whether the stream ends before any other event."""
        return await self._get() is None

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, token: str) -> AsyncIterator[Stream]:
    """A stream whose first ``counts`` has arrived (so the server has subscribed it)."""
    async with aconnect_sse(
        client, "GET", "/v1/me/inbox/stream", params={"token": token}
    ) as source:
        assert source.response.status_code == 200, await source.response.aread()
        stream = Stream(source)
        try:
            first = await stream.next()
            assert first.event == "counts", first
            yield stream
        finally:
            await stream.close()


@pytest.fixture
def make_server(
    make_settings: Callable[..., Settings], database_url: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]]:
    def make(**overrides: object) -> contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]:
        return served(make_settings(database_url=database_url, **overrides))

    return make


def token_for(app: FastAPI, user_id: str, *, expired_ago: dt.timedelta | None = None) -> str:
    settings: Settings = app.state.settings
    now = dt.datetime.now(dt.UTC)
    if expired_ago is None:
        return tokens.issue_user_token(
            settings.signing_secret, user_id, ttl=dt.timedelta(hours=1), now=now
        )
    ttl = dt.timedelta(minutes=5)
    return tokens.issue_user_token(
        settings.signing_secret, user_id, ttl=ttl, now=now - ttl - expired_ago
    )


async def test_a_users_new_stream_over_the_cap_closes_the_oldest_and_says_why(
    make_server: Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]],
) -> None:
    async with (
        make_server(max_streams_per_user=2) as (app, url),
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=60.0)) as client,
    ):
        bob = token_for(app, "u-bob")
        async with (
            open_stream(client, bob) as oldest,
            open_stream(client, bob) as second,
            open_stream(client, token_for(app, "u-eve")) as eve,
            open_stream(client, bob) as newest,
        ):
            closed = await oldest.next()
            assert closed.event == "closed"
            assert closed.json() == {"reason": "too_many_streams"}
            assert await oldest.ended(), "the pushed-out stream went on"
            # The others carry on: each gets the next message for its user.
            await app.state.live.publish("u-bob", {"event": "item", "data": {"n": 1}})
            await app.state.live.publish("u-eve", {"event": "item", "data": {"n": 2}})
            for stream, n in ((second, 1), (newest, 1), (eve, 2)):
                event = await stream.next()
                assert (event.event, event.json()) == ("item", {"n": n})
            assert app.state.live.connections("u-bob") == 2


async def test_a_process_over_its_stream_cap_answers_503_with_retry_after(
    make_server: Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]],
) -> None:
    async with (
        make_server(max_streams=2) as (app, url),
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=60.0)) as client,
        open_stream(client, token_for(app, "u-bob")),
        open_stream(client, token_for(app, "u-eve")),
    ):
        # Read as a stream: a stream that opened would never end.
        async with client.stream(
            "GET", "/v1/me/inbox/stream", params={"token": token_for(app, "u-zed")}
        ) as refused:
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "10"
            body = await refused.aread()
        assert orjson.loads(body)["error"]["code"] == "too_many_streams"
        # The rest of the inbox API still answers.
        counts = await client.get(
            "/v1/me/inbox/counts", headers={"Authorization": f"Bearer {token_for(app, 'u-zed')}"}
        )
        assert counts.status_code == 200, counts.text


async def test_a_stream_ends_with_expired_when_its_token_stops_being_accepted(
    make_server: Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]],
) -> None:
    async with (
        make_server() as (app, url),
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=60.0)) as client,
    ):
        # Expired a moment ago by its own clock: within the leeway still, for a few seconds.
        token = token_for(app, "u-bob", expired_ago=tokens.LEEWAY - dt.timedelta(seconds=4))
        async with open_stream(client, token) as stream:
            event = await stream.next()
            assert event.event == "expired", event
            assert event.json() == {"reason": "token_expired"}
            assert await stream.ended(), "the stream went on after expired"
        assert app.state.live.streams == 0
        again = await client.get("/v1/me/inbox/stream", params={"token": token})
        assert again.status_code == 401, again.text
