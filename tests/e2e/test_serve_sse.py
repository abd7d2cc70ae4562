"""End to end: the real ``tidings serve`` process, its CLI, and the live inbox stream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from tests.conftest import CANONICAL_EVENT, CATALOG
from tests.e2e.procs import (
    Processes,
    create_key,
    free_port,
    run_cli,
    tidings_env,
    user_token,
)

EVENT_TIMEOUT = 15.0


class Listener:
    """The messages of one open SSE connection, read in the background."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._messages: asyncio.Queue[ServerSentEvent | None] = asyncio.Queue()
        self.seen: list[ServerSentEvent] = []

    async def pump(self, source: EventSource) -> None:
        try:
            async for message in source.aiter_sse():
                await self._messages.put(message)
        finally:
            await self._messages.put(None)

    async def next(self) -> ServerSentEvent:
        """The next message; fails the test when none comes within a bounded wait."""
        try:
            message = await asyncio.wait_for(self._messages.get(), EVENT_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"{self.name}: no message within {EVENT_TIMEOUT}s; got {self.seen}")
        if message is None:
            pytest.fail(f"{self.name}: the stream ended; got {self.seen}")
        self.seen.append(message)
        return message

    async def next_of(self, kind: str) -> ServerSentEvent:
        """The next ``kind`` message, past messages of other kinds."""
        while True:
            message = await self.next()
            if message.event == kind:
                return message


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, token: str, name: str) -> AsyncIterator[Listener]:
    """An open ``/v1/me/inbox/stream`` connection, whose first ``counts`` has arrived, so
    the server has subscribed it before the test publishes anything."""
    async with aconnect_sse(
        client, "GET", "/v1/me/inbox/stream", params={"token": token}
    ) as source:
        assert source.response.status_code == 200, await source.response.aread()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        listener = Listener(name)
        pump = asyncio.create_task(listener.pump(source), name=f"sse-{name}")
        try:
            first = await listener.next()
            assert first.event == "counts", first
            yield listener
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def comment_for(user_id: str, key: str, board: str) -> dict[str, Any]:
    return {
        **CANONICAL_EVENT,
        "idempotency_key": key,
        "recipients": [{"id": user_id}],
        "data": {"board": {"id": "b-9", "name": board}, "comment": {"id": key, "text": "Hi"}},
    }


async def test_published_event_reaches_every_open_stream_of_its_recipient(
    processes: Processes, tmp_path: Path
) -> None:
    env = tidings_env(tmp_path / "data", port=free_port())
    server = await processes.serve("serve", env)
    key = await create_key(env)
    bob_token = await user_token(env, "u-bob")
    carol_token = await user_token(env, "u-carol")
    producer = {"Authorization": f"Bearer {key}"}

    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=timeout) as client,
        open_stream(client, bob_token, "bob-1") as bob_1,
        open_stream(client, bob_token, "bob-2") as bob_2,
        open_stream(client, carol_token, "carol") as carol,
    ):
        for listener in (bob_1, bob_2, carol):
            assert listener.seen[0].json() == {"unread": 0, "unseen": 0, "total": 0}

        published = await client.post("/v1/events", json=CANONICAL_EVENT, headers=producer)
        assert published.status_code == 202, published.text
        event_id = published.json()["event_id"]

        for listener in (bob_1, bob_2):
            item = (await listener.next_of("item")).json()
            assert item["title"] == "Ann commented on Roadmap"
            assert item["event_id"] == event_id
            assert item["body"] == "Looks good"
            assert item["type"] == "comment.created"
            assert item["read"] is False
            counts = (await listener.next_of("counts")).json()
            assert counts["unread"] == 1
            assert counts["total"] == 1

        # Carol's stream must not have been given Bob's item. Rather than wait some
        # time for nothing, publish one to Carol: her next item has to be that one.
        for_carol = await client.post(
            "/v1/events", json=comment_for("u-carol", "c-carol", "Sentinel"), headers=producer
        )
        assert for_carol.status_code == 202, for_carol.text
        item = (await carol.next_of("item")).json()
        assert item["event_id"] == for_carol.json()["event_id"]
        assert item["title"] == "Ann commented on Sentinel"
        assert (await carol.next_of("counts")).json()["unread"] == 1
        assert all(m.event != "item" for m in carol.seen[:-2]), carol.seen

        # What the stream said agrees with the inbox and the event's own record.
        inbox = await client.get("/v1/me/inbox", headers={"Authorization": f"Bearer {bob_token}"})
        assert inbox.status_code == 200, inbox.text
        assert [i["event_id"] for i in inbox.json()["items"]] == [event_id]
        event = await client.get(f"/v1/events/{event_id}", headers=producer)
        assert event.status_code == 200, event.text
        assert event.json()["status"] == "planned"
        assert [(d["user_id"], d["channel"], d["state"]) for d in event.json()["deliveries"]] == [
            ("u-bob", "in_app", "delivered")
        ]

    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal.
    assert await server.process.terminate() in (0, -signal.SIGTERM)
    assert "Traceback" not in server.process.output(), server.process.output()
    assert "ERROR" not in server.process.output(), server.process.output()


# -- an invalid catalog ------------------------------------------------------------------


def broken_catalog(tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the shipped catalog with two mistakes; returns the folder and, for each
    mistake, the start of the line that must report it: ``file:line: field:``."""
    folder = tmp_path / "broken-catalog"
    shutil.copytree(CATALOG, folder)
    expected = []
    for name, old, new, field in (
        (
            "comment.created.yaml",
            'title: "{{ actor.name }} commented',
            'title: "{{ actor.name } commented',
            "channels.in_app.title",
        ),
        ("mention.created.yaml", "priority: high", "priority: urgentish", "priority"),
    ):
        path = folder / name
        text = path.read_text()
        assert text.count(old) == 1, f"the shipped {name} changed; update this test"
        line = text[: text.index(old)].count("\n") + 1
        path.write_text(text.replace(old, new))
        expected.append(f"{path}:{line}: {field}: ")
    return folder, expected


def reported(output: str, start: str) -> bool:
    """Whether one line of ``output`` reports a problem beginning with ``start``."""
    return any(line.startswith(start) for line in output.splitlines())


async def test_serve_refuses_to_start_on_an_invalid_catalog(tmp_path: Path) -> None:
    folder, problems = broken_catalog(tmp_path)
    env = tidings_env(tmp_path / "data", port=free_port(), catalog=folder)

    done = await asyncio.to_thread(run_cli, ["serve"], env, check=False, timeout=60.0)

    assert done.returncode != 0, done
    assert "Listening on" not in done.stdout
    for problem in problems:
        assert reported(done.stderr, problem), f"{problem!r} not reported in:\n{done.stderr}"
    assert "not starting" in done.stderr


async def test_catalog_check_reports_every_problem_and_fails(tmp_path: Path) -> None:
    folder, problems = broken_catalog(tmp_path)
    env = tidings_env(tmp_path / "data")

    done = await asyncio.to_thread(run_cli, ["catalog", "check", str(folder)], env, check=False)

    assert done.returncode != 0, done
    for problem in problems:
        assert reported(done.stdout, problem), f"{problem!r} not reported in:\n{done.stdout}"
    assert "2 error(s)" in done.stderr


async def test_catalog_check_accepts_the_shipped_catalog(tmp_path: Path) -> None:
    env = tidings_env(tmp_path / "data")  # TIDINGS_CATALOG is the shipped catalog

    done = await asyncio.to_thread(run_cli, ["catalog", "check"], env, check=False)

    assert done.returncode == 0, done
    shipped = len(list(CATALOG.glob("*.yaml")) + list(CATALOG.glob("*.yml")))
    assert f"{shipped} notification types, no errors" in done.stdout
