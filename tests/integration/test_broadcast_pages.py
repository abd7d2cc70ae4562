"""A broadcast's emails are planned page after page, several pages at once, in one job
or continued in the next: every subscriber's email is planned once, and sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from tests.conftest import eventually
from tests.integration.test_broadcasts import COMMENT, publish, subscribe, wire
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.delivery import broadcast
from tidings.kit import tables
from tidings.kit.settings import Settings

Headers = Callable[[str], dict[str, str]]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    # Pages of two: seven subscribers take four pages (two at once on PostgreSQL).
    return make_settings(database_url=database_url, topic_page_size=2)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(runtime=wire(build_runtime(settings)))
    async with application.router.lifespan_context(application):
        yield application


@pytest.mark.parametrize("pages_seconds", [2.0, 0.0], ids=["one-job", "a-job-a-round"])
async def test_every_subscribers_email_is_planned_once_page_after_page(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    user_headers: Headers,
    monkeypatch: pytest.MonkeyPatch,
    pages_seconds: float,
) -> None:
    monkeypatch.setattr(broadcast, "PAGES_SECONDS", pages_seconds)
    users = [f"u-{i}" for i in range(7)]
    for user in users:
        response = await client.put(
            f"/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=producer
        )
        assert response.status_code == 200, response.text
    await subscribe(client, producer, users)
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")

    async with runtime.db.reader() as conn:
        d = tables.deliveries.c
        rows = await conn.execute(sa.select(d.user_id, d.channel).where(d.event_id == event_id))
        planned: list[Any] = sorted(rows.all())
    assert planned == [(user, "email") for user in users]
    assert [
        i["event_id"]
        for i in (await client.get("/v1/me/inbox", headers=user_headers("u-6"))).json()["items"]
    ] == [event_id]

    async def sent() -> bool:
        async with runtime.db.reader() as conn:
            query = sa.select(sa.func.count()).select_from(tables.mailbox)
            return int((await conn.execute(query)).scalar_one()) == len(users)

    await eventually(sent)
    async with runtime.db.reader() as conn:
        left = sa.select(sa.func.count()).select_from(tables.jobs)
        assert (
            int((await conn.execute(left.where(tables.jobs.c.kind == "fanout"))).scalar_one()) == 0
        )
