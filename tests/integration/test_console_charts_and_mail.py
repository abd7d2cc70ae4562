"""The console's chart legends sum up the window they show, and an email delivery's
timeline links to the message the mail catcher holds for it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.console import stats
from tidings.kit import tables
from tidings.kit.settings import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


def comment(key: str, user: str) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [{"id": user, "email": f"{user}@example.com"}],
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": key, "text": "Hi"}},
    }


async def publish(client: httpx.AsyncClient, producer: dict[str, str], *events: Any) -> None:
    response = await client.post(
        "/v1/events/batch", json={"events": list(events)}, headers=producer
    )
    assert response.status_code == 202, response.text


async def drained(runtime: Runtime) -> bool:
    async with runtime.db.reader() as conn:
        waiting = await conn.execute(sa.select(sa.func.count()).select_from(tables.jobs))
        return int(waiting.scalar_one()) == 0


async def test_the_legends_sum_up_the_window_not_the_minute_just_begun(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await publish(client, producer, *(comment(f"c-{i}", f"u-{i}") for i in range(3)))
    await eventually(lambda: drained(runtime))

    # Five minutes on: the line peaked back then, and the current minute holds nothing.
    later = runtime.clock.now() + dt.timedelta(minutes=5)
    shown = await stats.snapshot(runtime.db, later)
    assert shown["events_per_minute"][-1] == 0
    assert max(shown["events_per_minute"]) == 3
    legend = shown["legend"]
    assert (legend["minutes"], legend["events"], legend["deliveries"]) == (30, 3, 6)
    p50, p95 = legend["latency_seconds"]["p50"], legend["latency_seconds"]["p95"]
    assert p50 is not None
    assert p95 is not None
    assert 0 <= p50 <= p95

    # Once the events leave the window, the legends say so.
    gone = await stats.snapshot(runtime.db, later + dt.timedelta(hours=1))
    assert gone["legend"]["events"] == 0
    assert gone["legend"]["latency_seconds"] == {"p50": None, "p95": None}


async def test_an_email_deliverys_timeline_links_to_the_caught_message(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    _key, operator = await runtime.auth.create_key("ops", ["admin"])
    signed_in = await client.post("/console/login", data={"key": operator, "next": "/console"})
    assert signed_in.status_code == 303
    await publish(client, producer, comment("c-1", "u-bob"))
    await eventually(lambda: drained(runtime))
    async with runtime.db.reader() as conn:
        every = tables.every_delivery()
        rows = await conn.execute(sa.select(every.c.id, every.c.channel))
        by_channel = {row.channel: row.id for row in rows}

    email_page = await client.get(f"/console/deliveries/{by_channel['email']}")
    assert email_page.status_code == 200
    links = re.findall(r'<a class="caught-link" href="([^"]+)">([^<]+)</a>', email_page.text)
    assert links == [
        (f"/console/mailbox/{by_channel['email']}", "Ann commented on Roadmap"),
        (f"/console/mailbox/{by_channel['email']}", "view the email"),
    ]
    message = await client.get(links[0][0])
    assert message.status_code == 200
    assert "Ann commented on Roadmap" in message.text

    in_app_page = await client.get(f"/console/deliveries/{by_channel['in_app']}")
    assert in_app_page.status_code == 200
    assert "caught-link" not in in_app_page.text
