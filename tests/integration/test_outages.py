"""When the database refuses one event, or stops answering altogether.

One request's event that the database refuses fails that request alone, never the
others written in the same group commit. A database that does not answer (PostgreSQL
cut off behind a proxy this test runs, SQLite's disk full) is a 503 ``unavailable``
with ``Retry-After`` for every request, logged once when it starts and once when it
ends, and ``/readyz`` says so meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import CANONICAL_EVENT, PG_HOST, PG_PORT
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings


def event(key: str, text: str = "Looks good") -> dict[str, Any]:
    body = {**CANONICAL_EVENT, "idempotency_key": key}
    body["data"] = {**CANONICAL_EVENT["data"], "comment": {"id": "c-1", "text": text}}
    return body


@contextlib.asynccontextmanager
async def lenient_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets a 500 as an answer, as a remote caller would, instead of the
    application's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        yield client


async def refuse_rows_keyed(runtime: Runtime, key: str) -> None:
    """Make the database itself refuse an event row with this idempotency key: a value
    that passes every check of Tidings and still fails at write time, as a constraint
    or a value out of a column's range would. (Tidings' own validation now refuses
    everything it knows the engines refuse, so the test adds the refusal.)"""
    async with runtime.db.transaction() as conn:
        if runtime.db.is_postgres:
            await conn.exec_driver_sql(
                "ALTER TABLE events ADD CONSTRAINT refuse_poison "
                f"CHECK (idempotency_key <> '{key}')"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
                f"WHEN NEW.idempotency_key = '{key}' "
                "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: refuse_poison'); END"
            )


async def test_one_refused_event_fails_its_own_request_only(
    app: FastAPI, runtime: Runtime, producer: dict[str, str]
) -> None:
    await refuse_rows_keyed(runtime, "poison")
    keys = [f"ok-{n}" for n in range(300)]
    keys[150] = "poison"
    async with lenient_client(app) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/events", json=event(key), headers=producer) for key in keys)
        )
        by_key = dict(zip(keys, answers, strict=True))
        poison = by_key.pop("poison")
        assert poison.status_code == 422, poison.text
        assert poison.json()["error"]["code"] == "invalid"
        assert poison.json()["error"]["field"]
        failed = {key: a.text for key, a in by_key.items() if a.status_code != 202}
        assert not failed, f"{len(failed)} other requests failed: {failed}"
        for key, answer in by_key.items():
            stored = await client.get(f"/v1/events/{answer.json()['event_id']}", headers=producer)
            assert stored.json()["idempotency_key"] == key


async def test_a_refused_event_in_a_batch_is_a_422_not_a_500(
    app: FastAPI, runtime: Runtime, producer: dict[str, str]
) -> None:
    await refuse_rows_keyed(runtime, "poison")
    async with lenient_client(app) as client:
        batch = {"events": [event("fine"), event("poison")]}
        answer = await client.post("/v1/events/batch", json=batch, headers=producer)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid"
        # All or nothing: the fine one was not written either, and may be sent again.
        again = await client.post(
            "/v1/events/batch", json={"events": [event("fine")]}, headers=producer
        )
        assert again.status_code == 202, again.text
        assert again.json()["events"][0]["replayed"] is False


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut and restore: the network or the
    server going away, for real, for the process behind it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._links.discard(writer)
            writer.transport.abort()


@contextlib.asynccontextmanager
async def outage_rig(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[FastAPI, Callable[[], Any], Callable[[], Any]]]:
    """An application on ``database_url`` and two callables: one that makes its
    database stop serving, one that brings it back."""
    proxy: Proxy | None = None
    url = database_url
    if database_url.startswith("postgresql"):
        proxy = Proxy(PG_HOST, PG_PORT)
        await proxy.start()
        url = database_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")
    settings = make_settings(database_url=url, worker_enabled=False, rate_limit_per_second=0)
    app = create_app(runtime=build_runtime(settings))
    runtime: Runtime = app.state.runtime

    async def full(pages: int | None) -> None:
        # SQLite's own "database or disk is full" (SQLITE_FULL): the writer's connection
        # may not grow the file past the pages it has.
        async with runtime.db.transaction() as conn:
            if pages is None:
                pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
            await conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")

    async def down() -> None:
        if proxy is not None:
            await proxy.cut()
        else:
            await full(None)

    async def up() -> None:
        if proxy is not None:
            await proxy.start()
        else:
            await full(1_000_000_000)

    async with app.router.lifespan_context(app):
        yield app, down, up
    if proxy is not None and proxy._server is not None:
        await proxy.cut()


async def test_a_database_outage_is_503_with_retry_after_logged_once_and_readyz_down(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with outage_rig(make_settings, database_url) as (app, down, up):
        runtime: Runtime = app.state.runtime
        _key, plaintext = await runtime.auth.create_key("tests", ["*"])
        producer = {"Authorization": f"Bearer {plaintext}"}
        bob = {"Authorization": f"Bearer {runtime.auth.issue_user_token('u-bob')}"}
        # Long enough to need new pages in SQLite's file.
        long_text = "x" * 9000
        async with lenient_client(app) as client:
            before = await client.post("/v1/events", json=event("before"), headers=producer)
            assert before.status_code == 202, before.text
            assert (await client.get("/readyz")).status_code == 200

            await down()
            caplog.clear()
            answers = [
                await client.post(
                    "/v1/events", json=event(f"down-{n}", long_text), headers=producer
                )
                for n in range(5)
            ]
            if runtime.db.is_postgres:
                answers.append(await client.get("/v1/me/inbox", headers=bob))
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "unavailable"
                assert int(answer.headers["Retry-After"]) > 0
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["database"] != "ok"
            errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors_logged) == 1, [r.getMessage() for r in errors_logged]
            assert "unavailable" in errors_logged[0].getMessage()
            assert errors_logged[0].exc_info is None

            caplog.clear()
            await up()
            after = await client.post(
                "/v1/events", json=event("after", long_text), headers=producer
            )
            assert after.status_code == 202, after.text
            assert (await client.get("/readyz")).status_code == 200
            recovered = [r for r in caplog.records if "answers again" in r.getMessage()]
            assert len(recovered) == 1
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
