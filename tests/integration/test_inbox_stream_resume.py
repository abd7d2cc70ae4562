"""A live inbox stream resumes where its client stopped: events carry ids, and a stream
opened again with the last one (``Last-Event-ID``, or ``?last_event_id=``) first gets
what was written meanwhile, or ``resync`` when that is too much or the id is unknown.
Over real sockets, against a fresh server on the same database each time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from tests.integration.served import served
from tidings.app.runtime import Runtime
from tidings.auth import tokens
from tidings.inbox.stream import REPLAY_LIMIT
from tidings.kit.settings import Settings

GIVE_UP = 15.0
"""How long a test waits for an event before it fails (not a latency bound)."""
BOB = "u-bob"
ANN = {"id": "u-ann", "name": "Ann"}
CID = {"id": "u-cid", "name": "Cid"}
DEE = {"id": "u-dee", "name": "Dee"}

Serve = Callable[[], contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]]


class Stream:
    """The events of one open stream, read in the background."""

    def __init__(self, source: EventSource) -> None:
        self._events: asyncio.Queue[ServerSentEvent | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read(source))

    async def _read(self, source: EventSource) -> None:
        try:
            async for event in source.aiter_sse():
                await self._events.put(event)
        finally:
            await self._events.put(None)

    async def next(self) -> ServerSentEvent:
        """The next event; fails the test when none comes or the stream ends."""
        try:
            event = await asyncio.wait_for(self._events.get(), GIVE_UP)
        except TimeoutError:
            pytest.fail(f"no event within {GIVE_UP}s")
        if event is None:
            pytest.fail("the stream ended")
        return event

    async def until(self, kind: str) -> list[ServerSentEvent]:
        """The events up to and including the next ``kind`` one."""
        events = [await self.next()]
        while events[-1].event != kind:
            events.append(await self.next())
        return events

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


@contextlib.asynccontextmanager
async def open_stream(
    url: str, app: FastAPI, *, last_event_id: str | None = None, how: str = "header"
) -> AsyncIterator[Stream]:
    """A stream of Bob's, opened after ``last_event_id`` (sent as EventSource sends it,
    or in the query)."""
    params = {"token": token_for(app, BOB)}
    headers = {}
    if last_event_id is not None and how == "header":
        headers["Last-Event-ID"] = last_event_id
    elif last_event_id is not None:
        params["last_event_id"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=60.0)) as client,
        aconnect_sse(
            client, "GET", "/v1/me/inbox/stream", params=params, headers=headers
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        stream = Stream(source)
        try:
            yield stream
        finally:
            await stream.close()


def token_for(app: FastAPI, user_id: str) -> str:
    settings: Settings = app.state.settings
    return tokens.issue_user_token(
        settings.signing_secret, user_id, ttl=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC)
    )


@pytest.fixture
def serve(make_settings: Callable[..., Settings], database_url: str) -> Serve:
    """Starts a server (a process of its own, as far as the stream can tell) on the
    test's database; each call is a new one, knowing nothing of the streams before."""

    def start() -> contextlib.AbstractAsyncContextManager[tuple[FastAPI, str]]:
        return served(make_settings(database_url=database_url))

    return start


_events = itertools.count()


def row(item_id: str, **extra: Any) -> dict[str, Any]:
    """An item row for Bob as the planner hands it to ``store``, written now."""
    return {
        "id": item_id,
        "user_id": BOB,
        "tenant": "acme",
        "event_id": f"ev-{item_id}-{next(_events)}",
        "type": "comment.created",
        "category": "comments",
        "title": f"title {item_id}",
        "body": f"body {item_id}",
        "action_url": None,
        "actor": extra.pop("actor", ANN),
        "created_at": dt.datetime.now(dt.UTC),
        **extra,
    }


async def write(app: FastAPI, *rows: Mapping[str, Any], announce: bool = True) -> None:
    """Store items as the in-app channel does, then (unless told not to) push them."""
    runtime: Runtime = app.state.runtime
    async with runtime.db.transaction() as conn:
        written = await runtime.inbox.store(conn, list(rows))
    if announce:
        await runtime.inbox.announce(written)


def titles(events: list[ServerSentEvent]) -> list[str]:
    return [event.json()["title"] for event in events if event.event == "item"]


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_stream_opened_again_with_its_last_id_gets_what_it_missed_then_counts(
    serve: Serve, how: str
) -> None:
    async with serve() as (app, url), open_stream(url, app) as stream:
        first = await stream.next()
        assert first.event == "counts"
        assert first.id, "the first event names where the stream stands"
        await write(app, row("one"))
        one = await stream.next()
        assert (one.event, one.json()["title"]) == ("item", "title one")
        assert one.id
        assert one.id != first.id
        last_seen = one.id

    # Away: three items arrive and one of them is read elsewhere, on another server.
    async with serve() as (app, url):
        await write(app, row("two"))
        await write(app, row("three"), row("four"))
        async with httpx.AsyncClient(base_url=url) as client:
            marked = await client.patch(
                "/v1/me/inbox/two",
                json={"read": True},
                headers={"Authorization": f"Bearer {token_for(app, BOB)}"},
            )
            assert marked.status_code == 200, marked.text

    async with serve() as (app, url), open_stream(url, app, last_event_id=last_seen, how=how) as s:
        events = await s.until("counts")
        assert [event.event for event in events] == ["item", "item", "item", "counts"]
        assert titles(events) == ["title two", "title three", "title four"]
        assert events[0].json()["read"] is True
        assert events[-1].json() == {"unread": 3, "unseen": 4, "total": 4}
        assert len({event.id for event in events[:3]}) == 3
        assert events[-1].id == events[2].id, "the counts stand where the last item left"
        # Live again: the next item comes once, and after it nothing replayed twice.
        await write(app, row("five"))
        live = await s.until("counts")
        assert titles(live) == ["title five"]

    # Resuming from where that stream ended sends nothing again.
    async with serve() as (app, url), open_stream(url, app, last_event_id=live[0].id) as again:
        assert [event.event for event in await again.until("counts")] == ["counts"]


async def test_an_item_that_took_in_events_while_away_comes_once_as_it_ends_up(
    serve: Serve,
) -> None:
    group = {"group_key": "board:1", "group_count": 1, "group_actors": [ANN]}
    async with serve() as (app, url), open_stream(url, app) as stream:
        await stream.next()
        await write(app, row("group", **group))
        started = await stream.next()
        assert started.json()["group"]["count"] == 1
    async with serve() as (app, _url):
        await write(app, row("cid", actor=CID, merge_into="group", group_count=2))
        await write(app, row("dee", actor=DEE, merge_into="group", group_count=3))

    async with serve() as (app, url), open_stream(url, app, last_event_id=started.id) as s:
        events = await s.until("counts")
        assert [(event.event, event.json().get("id")) for event in events[:-1]] == [
            ("item", "group")
        ]
        merged = events[0].json()
        assert (merged["title"], merged["group"]["count"]) == ("title dee", 3)
        assert events[-1].json() == {"unread": 1, "unseen": 1, "total": 1}


async def test_too_many_missed_items_or_an_unknown_id_is_a_resync(serve: Serve) -> None:
    async with serve() as (app, url), open_stream(url, app) as stream:
        last_seen = (await stream.next()).id
    async with serve() as (app, url):
        await write(app, *(row(f"away-{n}") for n in range(REPLAY_LIMIT + 1)))

        async with open_stream(url, app, last_event_id=last_seen) as behind:
            events = await behind.until("counts")
            assert [event.event for event in events] == ["resync", "counts"]
            assert events[-1].json()["total"] == REPLAY_LIMIT + 1
            resynced = events[0].id
            assert resynced
            assert resynced != last_seen
        # From the resync on, nothing is missing.
        async with open_stream(url, app, last_event_id=resynced) as caught_up:
            assert [event.event for event in await caught_up.until("counts")] == ["counts"]
        for unknown in ("not-an-id", "x" * 5000, "MjAyNi0wMS0wMXw"):
            async with open_stream(url, app, last_event_id=unknown) as lost:
                events = await lost.until("counts")
                assert [event.event for event in events] == ["resync", "counts"], unknown
                assert events[0].id == resynced


async def test_a_stream_that_falls_behind_its_queue_catches_up_from_the_database(
    serve: Serve,
) -> None:
    async with serve() as (app, url), open_stream(url, app) as stream:
        await stream.next()
        await write(app, row("quiet-1"), row("quiet-2"), announce=False)
        # More messages at once than a stream's queue holds: it overflows, and the
        # messages it held are lost to it.
        for n in range(1500):
            await app.state.live.publish(BOB, {"event": "noise", "data": {"n": n}})
        events = await stream.until("counts")
        assert [event.event for event in events] == ["item", "item", "counts"]
        assert titles(events) == ["title quiet-1", "title quiet-2"]
