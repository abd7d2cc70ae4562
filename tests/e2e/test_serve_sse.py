"""End to end: the real ``tidings serve`` process, its CLI, and the live inbox stream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from email import parser as email_parser
from email import policy as email_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from tests.conftest import CANONICAL_EVENT, CATALOG
from tests.e2e.procs import (
    Processes,
    create_key,
    free_port,
    last_line,
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


async def settled_deliveries(
    client: httpx.AsyncClient, event_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """The event's deliveries, sorted by user and channel, once it is planned and none of
    them waits for a job any more; fails the test after a bounded wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENT_TIMEOUT
    while True:
        response = await client.get(f"/v1/events/{event_id}", headers=headers)
        assert response.status_code == 200, response.text
        view = response.json()
        deliveries = sorted(view["deliveries"], key=lambda d: (d["user_id"], d["channel"]))
        if view["status"] == "planned" and all(
            d["state"] not in ("planned", "scheduled") for d in deliveries
        ):
            assert view["next_cursor"] is None
            return deliveries
        if loop.time() > deadline:
            pytest.fail(f"event {event_id} not settled within {EVENT_TIMEOUT}s: {view}")
        await asyncio.sleep(0.05)


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
        # Bob has an address, so besides the in-app item an email goes out through the
        # built-in mail catcher, by a job of its own: wait (bounded) until it has run.
        deliveries = await settled_deliveries(client, event_id, producer)
        assert [(d["user_id"], d["channel"], d["state"], d["reason"]) for d in deliveries] == [
            ("u-bob", "email", "sent", None),
            ("u-bob", "in_app", "delivered", None),
        ]
        email, in_app = deliveries
        assert [t["state"] for t in in_app["transitions"]] == ["planned", "delivered"]
        assert [t["state"] for t in email["transitions"]] == ["planned", "scheduled", "sent"]
        assert email["message_id"], email
        assert in_app["message_id"] is None

        # Carol's profile has no address: her email is suppressed when planned, no job.
        carol_deliveries = await settled_deliveries(client, for_carol.json()["event_id"], producer)
        assert [
            (d["user_id"], d["channel"], d["state"], d["reason"]) for d in carol_deliveries
        ] == [
            ("u-carol", "email", "suppressed", "no_address"),
            ("u-carol", "in_app", "delivered", None),
        ]
        assert [t["state"] for t in carol_deliveries[0]["transitions"]] == [
            "planned",
            "suppressed",
        ]
        assert carol_deliveries[0]["message_id"] is None

        # The mail catcher holds exactly one message: Bob's, under his delivery's id and
        # Message-ID. Only a key with the dev:mailbox scope may look.
        made = await asyncio.to_thread(
            run_cli, ["keys", "create", "--name", "other", "--types", "board.invited"], env
        )
        other_key = last_line(made.stdout)
        box = await client.get("/v1/dev/mailbox", headers={"Authorization": f"Bearer {other_key}"})
        assert box.status_code == 403, box.text
        assert box.json()["error"]["scope"] == "dev:mailbox"
        box = await client.get("/v1/dev/mailbox", headers=producer)
        assert box.status_code == 200, box.text
        messages = box.json()["messages"]
        assert len(messages) == 1, messages
        [caught] = messages
        assert caught["to"] == "bob@example.com"
        assert caught["id"] == caught["delivery_id"] == email["id"]
        assert caught["message_id"] == email["message_id"]
        assert caught["subject"] == "Ann commented on Roadmap"
        raw = email_parser.Parser(policy=email_policy.default).parsestr(caught["raw"])
        assert raw["Message-ID"] == email["message_id"]
        assert raw["To"].addresses[0].addr_spec == "bob@example.com"
        to_bob = await client.get(
            "/v1/dev/mailbox", params={"to": "Bob@Example.com"}, headers=producer
        )
        assert to_bob.status_code == 200, to_bob.text
        assert [m["id"] for m in to_bob.json()["messages"]] == [email["id"]]

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
    assert f"{len(shipped_types())} notification types, no errors" in done.stdout


def shipped_types() -> list[str]:
    """The keys the shipped catalog declares, read without Tidings' loader: every YAML
    file in the folder (at any depth, hidden ones aside) that has a ``key``; the
    categories file has none."""
    keys = []
    for path in sorted(CATALOG.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(CATALOG).parts)
        if path.suffix not in (".yaml", ".yml") or not path.is_file() or hidden:
            continue
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "key" in document:
            keys.append(document["key"])
    # What this test was written against; more may come, none should vanish unnoticed.
    assert {"comment.created", "mention.created", "auth.password_reset"} <= set(keys), keys
    assert (CATALOG / "categories.yaml").is_file()
    return keys
