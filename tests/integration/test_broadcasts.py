"""Fan-out on read: an event to a large topic is stored once, as a broadcast, and is in
every subscriber's inbox (list, counts, flags, live stream) from then on; its emails are
still planned per subscriber; a small topic still fans out on write."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from httpx_sse import aconnect_sse

from tests.conftest import eventually, fresh_database
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.inbox.broadcasts import Broadcasts
from tidings.kit import tables
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings
from tidings.processes.http import http_config

Headers = Callable[[str], dict[str, str]]
LARGE = 3
"""Subscribers from which a topic's events are broadcast, in these tests."""
TOPIC = "board:b-1"
COMMENT = {
    "type": "comment.created",
    "actor": {"id": "u-ann", "name": "Ann"},
    "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c-1", "text": "Hi"}},
}
RESET = {
    "type": "auth.password_reset",
    "data": {"reset_url": "https://app.example.com/reset?t=1", "expires_in_minutes": 30},
}


def wire(runtime: Runtime, min_subscribers: int = LARGE) -> Runtime:
    """The runtime with broadcasting on, from ``min_subscribers`` subscribers."""
    runtime.inbox.broadcasts = Broadcasts(
        runtime.db,
        runtime.clock,
        runtime.live,
        runtime.preferences,
        runtime.users,
        min_subscribers=min_subscribers,
    )
    return runtime


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(runtime=wire(build_runtime(settings)))
    async with application.router.lifespan_context(application):
        yield application


async def subscribe(
    client: httpx.AsyncClient, producer: dict[str, str], users: list[str], topic: str = TOPIC
) -> None:
    response = await client.put(
        f"/v1/topics/{topic}/subscribers", json={"user_ids": users}, headers=producer
    )
    assert response.status_code == 200, response.text


async def publish(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    event: dict[str, Any],
    key: str,
    topic: str = TOPIC,
) -> str:
    """Publish to the topic and wait until the event is planned; its id."""
    body = {**event, "idempotency_key": key, "topic": topic}
    response = await client.post("/v1/events", json=body, headers=producer)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]

    async def planned() -> bool:
        async with runtime.db.reader() as conn:
            query = sa.select(tables.events.c.planned_at).where(tables.events.c.id == event_id)
            return (await conn.execute(query)).scalar_one() is not None

    await eventually(planned)
    return event_id


async def count(runtime: Runtime, table: sa.Table, *where: Any) -> int:
    async with runtime.db.reader() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int((await conn.execute(query)).scalar_one())


async def stored_as(runtime: Runtime, broadcasts: int, items: int) -> None:
    """There are this many broadcasts, and this many inbox items of users' own."""
    assert await count(runtime, tables.broadcasts) == broadcasts
    assert await count(runtime, tables.inbox_items) == items


async def inbox(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[Any]:
    response = await client.get("/v1/me/inbox", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def counts(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    response = await client.get("/v1/me/inbox/counts", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, int] = response.json()
    return found


async def test_a_large_topics_event_is_one_row_in_every_subscribers_inbox(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    users = ["u-1", "u-2", "u-3", "u-4"]
    await subscribe(client, producer, users)
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")

    assert await count(runtime, tables.broadcasts) == 1
    assert await count(runtime, tables.inbox_items) == 0
    assert await count(runtime, tables.deliveries, tables.deliveries.c.channel == "in_app") == 0
    ids = set()
    for user in users:
        items = await inbox(client, user_headers(user))
        assert [(i["title"], i["body"], i["event_id"]) for i in items] == [
            ("Ann commented on Roadmap", "Hi", event_id)
        ]
        assert items[0]["action_url"] == "/boards/b-1#comment-c-1"
        assert items[0]["read"] is False
        assert items[0]["group"] is None
        ids.add(items[0]["id"])
        assert await counts(client, user_headers(user)) == {"unread": 1, "unseen": 1, "total": 1}
        one = await client.get(f"/v1/me/inbox/{items[0]['id']}", headers=user_headers(user))
        assert one.status_code == 200
        assert one.json() == items[0]
    assert len(ids) == 1
    stranger = await client.get(f"/v1/me/inbox/{ids.pop()}", headers=user_headers("u-9"))
    assert stranger.status_code == 404


async def test_emails_are_still_planned_and_sent_per_subscriber(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    users = [f"u-{i}" for i in range(5)]
    for user in users[:4]:
        response = await client.put(
            f"/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=producer
        )
        assert response.status_code == 200, response.text
    await subscribe(client, producer, users)
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")

    assert await count(runtime, tables.broadcasts) == 1
    email = tables.deliveries.c.channel == "email"
    assert await count(runtime, tables.deliveries, email) == 5
    assert await count(runtime, tables.deliveries, tables.deliveries.c.event_id == event_id) == 5
    # The one without an address is suppressed as on write; the others are sent.
    no_address = tables.deliveries.c.reason == "no_address"
    assert await count(runtime, tables.deliveries, email, no_address) == 1

    async def sent() -> bool:
        return await count(runtime, tables.mailbox) == 4

    await eventually(sent)
    async with runtime.db.reader() as conn:
        recipients = (await conn.execute(sa.select(tables.mailbox.c.recipient))).scalars().all()
    assert sorted(recipients) == [f"{user}@example.com" for user in users[:4]]


async def test_a_topic_under_the_threshold_fans_out_on_write(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-2"])
    await publish(client, producer, runtime, COMMENT, "k-1")

    assert await count(runtime, tables.broadcasts) == 0
    assert await count(runtime, tables.inbox_items) == 2
    assert [i["title"] for i in await inbox(client, user_headers("u-1"))] == [
        "Ann commented on Roadmap"
    ]


async def test_a_type_that_collapses_fans_out_on_write_whatever_the_topics_size(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    await publish(client, producer, runtime, {**COMMENT, "type": "comment.liked"}, "k-1")

    assert await count(runtime, tables.broadcasts) == 0
    assert await count(runtime, tables.inbox_items) == 3


async def test_only_subscribers_from_before_see_it_and_unsubscribing_takes_it_away(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    await publish(client, producer, runtime, COMMENT, "k-1")
    await subscribe(client, producer, ["u-late"])

    assert await inbox(client, user_headers("u-late")) == []
    assert await counts(client, user_headers("u-late")) == {"unread": 0, "unseen": 0, "total": 0}

    response = await client.request(
        "DELETE", f"/v1/topics/{TOPIC}/subscribers", json={"user_ids": ["u-2"]}, headers=producer
    )
    assert response.status_code == 200, response.text
    assert await inbox(client, user_headers("u-2")) == []
    assert (await counts(client, user_headers("u-2")))["total"] == 0
    assert len(await inbox(client, user_headers("u-1"))) == 1

    # Subscribing again brings the broadcasts stored from then on, not the earlier ones.
    await subscribe(client, producer, ["u-2"])
    assert await inbox(client, user_headers("u-2")) == []
    await publish(
        client, producer, runtime, {**COMMENT, "actor": {"id": "u-cy", "name": "Cy"}}, "k-2"
    )
    assert [i["title"] for i in await inbox(client, user_headers("u-2"))] == [
        "Cy commented on Roadmap"
    ]
    assert [i["title"] for i in await inbox(client, user_headers("u-late"))] == [
        "Cy commented on Roadmap"
    ]


async def test_in_app_turned_off_hides_it_unless_its_category_is_mandatory(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-quiet", "u-2"])
    off = await client.put(
        "/v1/me/preferences",
        json={"categories": {"comments": {"channels": {"in_app": False}}}},
        headers=user_headers("u-quiet"),
    )
    assert off.status_code == 200, off.text
    await publish(client, producer, runtime, COMMENT, "k-1")
    await publish(client, producer, runtime, RESET, "k-2")

    # Security is mandatory: shown whatever the switch (comments are not).
    assert [i["type"] for i in await inbox(client, user_headers("u-quiet"))] == [
        "auth.password_reset"
    ]
    assert (await counts(client, user_headers("u-quiet")))["unread"] == 1
    everything = await client.put(
        "/v1/me/preferences", json={"channels": {"in_app": False}}, headers=user_headers("u-2")
    )
    assert everything.status_code == 200, everything.text
    assert [i["type"] for i in await inbox(client, user_headers("u-2"))] == ["auth.password_reset"]
    assert len(await inbox(client, user_headers("u-1"))) == 2

    # Preferences are read at read: turning it back on shows it again.
    on = await client.put("/v1/me/preferences", json={}, headers=user_headers("u-quiet"))
    assert on.status_code == 200, on.text
    assert len(await inbox(client, user_headers("u-quiet"))) == 2
    assert (await counts(client, user_headers("u-quiet")))["unread"] == 2


async def test_a_tenants_default_and_the_catalogs_apply_under_the_users_choice(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    tenant_off = await client.put(
        "/v1/tenants/acme/preferences",
        json={"categories": {"comments": {"channels": {"in_app": False}}}},
        headers=producer,
    )
    assert tenant_off.status_code == 200, tenant_off.text
    user_on = await client.put(
        "/v1/me/preferences",
        json={"categories": {"comments": {"channels": {"in_app": True}}}},
        headers=user_headers("u-2"),
    )
    assert user_on.status_code == 200, user_on.text
    await publish(client, producer, runtime, {**COMMENT, "tenant": "acme"}, "k-1")
    await publish(client, producer, runtime, COMMENT, "k-2")

    await stored_as(runtime, broadcasts=2, items=0)
    assert [i["title"] for i in await inbox(client, user_headers("u-1"))] == [
        "Ann commented on Roadmap"
    ]
    assert len(await inbox(client, user_headers("u-2"))) == 2


async def test_read_seen_and_archived_are_each_users_own(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    one, two = user_headers("u-1"), user_headers("u-2")
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    await publish(client, producer, runtime, COMMENT, "k-1")
    item_id = (await inbox(client, one))[0]["id"]
    assert await count(runtime, tables.broadcast_states) == 0

    read = await client.patch(f"/v1/me/inbox/{item_id}", json={"read": True}, headers=one)
    assert read.status_code == 200, read.text
    assert read.json()["read"] is True
    assert read.json()["read_at"] is not None
    assert await counts(client, one) == {"unread": 0, "unseen": 1, "total": 1}
    assert await counts(client, two) == {"unread": 1, "unseen": 1, "total": 1}
    assert await inbox(client, one, status="unread") == []
    assert len(await inbox(client, two, status="unread")) == 1
    assert await count(runtime, tables.broadcast_states) == 1

    again = await client.post(
        "/v1/me/inbox/mark", json={"ids": [item_id], "read": True}, headers=one
    )
    assert again.json()["changed"] == 0

    seen = await client.post(
        "/v1/me/inbox/mark", json={"ids": [item_id], "seen": True}, headers=two
    )
    assert seen.json() == {"changed": 1, "counts": {"unread": 1, "unseen": 0, "total": 1}}

    archived = await client.patch(f"/v1/me/inbox/{item_id}", json={"archived": True}, headers=one)
    assert archived.json()["archived"] is True
    assert await inbox(client, one) == []
    assert [i["id"] for i in await inbox(client, one, archived=True)] == [item_id]
    assert await counts(client, one) == {"unread": 0, "unseen": 0, "total": 0}
    assert len(await inbox(client, two)) == 1

    unread = await client.patch(f"/v1/me/inbox/{item_id}", json={"read": False}, headers=one)
    assert unread.json()["read"] is False
    assert unread.json()["archived"] is True


async def test_mark_all_covers_own_items_and_broadcasts(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    user_headers: Headers,
    canonical_event: dict[str, Any],
) -> None:
    one = user_headers("u-1")
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    await publish(client, producer, runtime, COMMENT, "k-1")
    await publish(client, producer, runtime, RESET, "k-2")
    direct = {**canonical_event, "recipients": ["u-1"], "idempotency_key": "d-1"}
    assert (await client.post("/v1/events", json=direct, headers=producer)).status_code == 202

    async def three() -> bool:
        return (await counts(client, one))["total"] == 3

    await eventually(three)
    await stored_as(runtime, broadcasts=2, items=1)
    marked = await client.post("/v1/me/inbox/mark", json={"read": True}, headers=one)
    assert marked.json() == {"changed": 3, "counts": {"unread": 0, "unseen": 3, "total": 3}}
    assert (await counts(client, user_headers("u-2")))["unread"] == 2

    cleared = await client.post("/v1/me/inbox/mark", json={"read": False}, headers=one)
    assert cleared.json()["changed"] == 3
    assert (await counts(client, one))["unread"] == 3


async def test_pages_merge_own_items_and_broadcasts_newest_first(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    user_headers: Headers,
    canonical_event: dict[str, Any],
) -> None:
    one = user_headers("u-1")
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    expected = []
    for i in range(3):
        direct = {
            **canonical_event,
            "recipients": ["u-1"],
            "idempotency_key": f"d-{i}",
            "actor": {"id": "u-dee", "name": f"Dee {i}"},
        }
        assert (await client.post("/v1/events", json=direct, headers=producer)).status_code == 202

        async def arrived(n: int = 2 * i + 1) -> bool:
            return (await counts(client, one))["total"] == n

        await eventually(arrived)
        expected.append(f"Dee {i} commented on Roadmap")
        actor = {"id": "u-bo", "name": f"Bo {i}"}
        await publish(client, producer, runtime, {**COMMENT, "actor": actor}, f"k-{i}")
        expected.append(f"Bo {i} commented on Roadmap")

    seen: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/me/inbox", params=params, headers=one)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["title"] for item in seen] == expected[::-1]
    await stored_as(runtime, broadcasts=3, items=3)

    # The same walk with the counts: every page merges both, and counts both.
    read = await client.patch(f"/v1/me/inbox/{seen[0]['id']}", json={"read": True}, headers=one)
    assert read.status_code == 200, read.text
    walked: list[Any] = []
    cursor = None
    while True:
        params = {"limit": 2, "counts": "true"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/me/inbox", params=params, headers=one)).json()
        assert page["counts"] == {"unread": 5, "unseen": 6, "total": 6}
        walked.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["title"] for item in walked] == expected[::-1]
    unread = await client.get(
        "/v1/me/inbox", params={"status": "unread", "counts": "true"}, headers=one
    )
    assert [item["title"] for item in unread.json()["items"]] == expected[::-1][1:]
    # Someone with neither items nor broadcasts: an empty page, and zero counts.
    empty = await client.get("/v1/me/inbox", params={"counts": "true"}, headers=user_headers("u-9"))
    assert empty.json() == {
        "items": [],
        "next_cursor": None,
        "counts": {"unread": 0, "unseen": 0, "total": 0},
    }


async def test_an_erased_user_sees_no_broadcast(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")
    item_id = (await inbox(client, user_headers("u-1")))[0]["id"]
    await client.patch(f"/v1/me/inbox/{item_id}", json={"read": True}, headers=user_headers("u-1"))

    erased = await client.delete("/v1/users/u-1", headers=producer)
    assert erased.status_code == 204, erased.text
    assert await inbox(client, user_headers("u-1")) == []
    assert await counts(client, user_headers("u-1")) == {"unread": 0, "unseen": 0, "total": 0}
    missing = await client.get(f"/v1/me/inbox/{item_id}", headers=user_headers("u-1"))
    assert missing.status_code == 404

    # The same id subscribing again sees nothing from before its erasure: not even the
    # broadcast of an event accepted before it and fanned out after (a queue behind).
    await subscribe(client, producer, ["u-1"])
    assert await inbox(client, user_headers("u-1")) == []
    broadcasts = runtime.inbox.broadcasts
    assert broadcasts is not None
    async with runtime.db.transaction() as conn:
        late = dict(await broadcasts.of_event(conn, event_id) or {})
        late.update(id="late", event_id="late", created_at=runtime.clock.now())
        assert await broadcasts.store(conn, late)
    assert await inbox(client, user_headers("u-1")) == []
    assert await counts(client, user_headers("u-1")) == {"unread": 0, "unseen": 0, "total": 0}
    assert len(await inbox(client, user_headers("u-2"))) == 2


async def test_what_a_user_did_with_broadcasts_is_forgotten_with_them(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    await publish(client, producer, runtime, COMMENT, "k-1")
    for user in ("u-1", "u-2"):
        item_id = (await inbox(client, user_headers(user)))[0]["id"]
        await client.patch(
            f"/v1/me/inbox/{item_id}", json={"seen": True}, headers=user_headers(user)
        )
    assert await count(runtime, tables.broadcast_states) == 2

    broadcasts = runtime.inbox.broadcasts
    assert broadcasts is not None
    async with runtime.db.transaction() as conn:
        assert await broadcasts.forget_user(conn, "u-1") == 1
    assert (
        await count(runtime, tables.broadcast_states, tables.broadcast_states.c.user_id == "u-1")
        == 0
    )
    assert await count(runtime, tables.broadcast_states) == 1


async def test_the_fanout_job_run_again_stores_one_broadcast(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    for user in ("u-1", "u-2", "u-3"):
        await client.put(
            f"/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=producer
        )
    await subscribe(client, producer, ["u-1", "u-2", "u-3"])
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")
    before = {
        table.name: await count(runtime, table)
        for table in (tables.broadcasts, tables.deliveries, tables.inbox_items)
    }
    assert before == {"broadcasts": 1, "deliveries": 3, "inbox_items": 0}

    # The first job again, as if its worker had died after the commit but before the ack.
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(
            conn,
            [NewJob(id="fanout:again", kind="fanout", payload={"event": event_id, "after": None})],
        )
    runtime.queue.wake()

    async def drained() -> bool:
        return await count(runtime, tables.jobs, tables.jobs.c.kind == "fanout") == 0

    await eventually(drained)
    after = {
        table.name: await count(runtime, table)
        for table in (tables.broadcasts, tables.deliveries, tables.inbox_items)
    }
    assert after == before
    assert len(await inbox(client, user_headers("u-1"))) == 1


async def test_the_timeline_says_why_a_subscriber_has_it_or_not(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    await subscribe(client, producer, ["u-1", "u-off", "u-3"])
    await client.put(
        "/v1/me/preferences", json={"channels": {"in_app": False}}, headers=user_headers("u-off")
    )
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")
    await subscribe(client, producer, ["u-late"])
    broadcasts = runtime.inbox.broadcasts
    assert broadcasts is not None

    shown = await broadcasts.explain(event_id, "u-1")
    assert shown is not None
    assert (shown["delivery"], shown["shown"], shown["reason"]) == ("broadcast", True, "subscribed")
    assert shown["read_at"] is None
    reasons = {
        user: (await broadcasts.explain(event_id, user) or {}).get("reason")
        for user in ("u-off", "u-late", "u-never")
    }
    assert reasons == {
        "u-off": "opted_out",
        "u-late": "subscribed_after",
        "u-never": "not_subscribed",
    }
    direct = await publish(client, producer, runtime, COMMENT, "k-2", topic="board:small")
    assert await broadcasts.explain(direct, "u-1") is None


async def test_the_api_says_why_a_subscriber_has_a_broadcast_or_not(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime, user_headers: Headers
) -> None:
    """``GET /v1/events/{id}/broadcast/{user}``: a broadcast event has no in-app delivery
    per subscriber, so this is where "why did U not get N" is answered for it."""
    await subscribe(client, producer, ["u-1", "u-off", "u-3"])
    await client.put(
        "/v1/me/preferences", json={"channels": {"in_app": False}}, headers=user_headers("u-off")
    )
    event_id = await publish(client, producer, runtime, COMMENT, "k-1")
    item = (await inbox(client, user_headers("u-1")))[0]
    marked = await client.patch(
        f"/v1/me/inbox/{item['id']}", json={"read": True}, headers=user_headers("u-1")
    )
    assert marked.status_code == 200, marked.text

    def reach(user: str, headers: dict[str, str] = producer) -> Any:
        return client.get(f"/v1/events/{event_id}/broadcast/{user}", headers=headers)

    shown = await reach("u-1")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["event_id"], body["user_id"], body["shown"], body["reason"]) == (
        event_id,
        "u-1",
        True,
        "subscribed",
    )
    assert body["read_at"] is not None
    assert body["subscribed_at"] is not None
    assert body["broadcast_id"] == item["id"]
    hidden = (await reach("u-off")).json()
    assert (hidden["shown"], hidden["reason"]) == (False, "opted_out")
    never = (await reach("u-never")).json()
    assert (never["shown"], never["reason"], never["subscribed_at"]) == (
        False,
        "not_subscribed",
        None,
    )

    _key, other_team = await runtime.auth.create_key("billing", ["billing.*"])
    refused = await reach("u-1", {"Authorization": f"Bearer {other_team}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["field"] == "authorization"

    direct = await publish(client, producer, runtime, COMMENT, "k-2", topic="board:small")
    not_broadcast = await client.get(f"/v1/events/{direct}/broadcast/u-1", headers=producer)
    assert not_broadcast.status_code == 404
    assert not_broadcast.json()["error"]["field"] == "event_id"
    assert (await client.get("/v1/events/nope/broadcast/u-1", headers=producer)).status_code == 404
    too_long = await client.get(f"/v1/events/{event_id}/broadcast/{'u' * 256}", headers=producer)
    assert too_long.status_code == 422


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    """The application with broadcasting on, over a real socket (a live stream needs one)."""
    application = create_app(runtime=wire(build_runtime(settings)))
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(128)
    port = listening.getsockname()[1]
    config = http_config(application, settings.model_copy(update={"port": port}))
    config.lifespan = "on"
    config.timeout_graceful_shutdown = 5
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield application, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        listening.close()


async def test_a_live_stream_gets_the_broadcast_then_fresh_counts(settings: Settings) -> None:
    async with serving(settings) as (app, url), httpx.AsyncClient(base_url=url) as client:
        runtime: Runtime = app.state.runtime
        _key, secret = await runtime.auth.create_key("tests", ["*", "topics:write"])
        producer = {"Authorization": f"Bearer {secret}"}
        await subscribe(client, producer, ["u-1", "u-2", "u-3"])
        token = runtime.auth.issue_user_token("u-1")
        async with (
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=30.0)) as streamer,
            aconnect_sse(streamer, "GET", "/v1/me/inbox/stream", params={"token": token}) as sse,
        ):
            events = sse.aiter_sse()
            first = await asyncio.wait_for(anext(events), 15)
            assert (first.event, first.json()) == ("counts", {"unread": 0, "unseen": 0, "total": 0})
            event_id = await publish(client, producer, runtime, COMMENT, "k-1")
            item = await asyncio.wait_for(anext(events), 15)
            assert item.event == "item"
            assert (item.json()["event_id"], item.json()["title"]) == (
                event_id,
                "Ann commented on Roadmap",
            )
            assert item.id
            fresh = await asyncio.wait_for(anext(events), 15)
            assert (fresh.event, fresh.json()["unread"]) == ("counts", 1)
        await stored_as(runtime, broadcasts=1, items=0)

        # Resuming from before it replays it, as for the user's own items.
        async with (
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=30.0)) as streamer,
            aconnect_sse(
                streamer,
                "GET",
                "/v1/me/inbox/stream",
                params={"token": token, "last_event_id": first.id},
            ) as sse,
        ):
            events = sse.aiter_sse()
            replayed = await asyncio.wait_for(anext(events), 15)
            assert (replayed.event, replayed.json()["event_id"]) == ("item", event_id)
            assert replayed.id == item.id


async def test_a_broadcast_reaches_a_stream_another_process_holds(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """An API process holding the stream, a worker process fanning out: the broadcast is
    announced once over PostgreSQL's notifications and pushed by the API process."""
    async with fresh_database("postgres", tmp_path) as url:
        api = make_settings(database_url=url, live_backend="postgres", worker_enabled=False)
        worker_app = create_app(
            runtime=wire(build_runtime(make_settings(database_url=url, live_backend="postgres")))
        )
        async with (
            worker_app.router.lifespan_context(worker_app),
            serving(api) as (app, url_),
            httpx.AsyncClient(base_url=url_) as client,
        ):
            runtime: Runtime = app.state.runtime
            _key, secret = await runtime.auth.create_key("tests", ["*", "topics:write"])
            producer = {"Authorization": f"Bearer {secret}"}
            await subscribe(client, producer, ["u-1", "u-2", "u-3"])
            token = runtime.auth.issue_user_token("u-2")
            async with (
                httpx.AsyncClient(base_url=url_, timeout=httpx.Timeout(10.0, read=30.0)) as s,
                aconnect_sse(s, "GET", "/v1/me/inbox/stream", params={"token": token}) as sse,
            ):
                events = sse.aiter_sse()
                assert (await asyncio.wait_for(anext(events), 15)).event == "counts"
                event_id = await publish(client, producer, runtime, COMMENT, "k-1")
                item = await asyncio.wait_for(anext(events), 15)
                assert (item.event, item.json()["event_id"]) == ("item", event_id)
                fresh = await asyncio.wait_for(anext(events), 15)
                assert (fresh.event, fresh.json()["unread"]) == ("counts", 1)
            await stored_as(runtime, broadcasts=1, items=0)


async def test_the_setting_turns_broadcasting_on_and_erasure_and_retention_clear_it(
    make_settings: Callable[..., Settings], database_url: str, user_headers: Headers
) -> None:
    """``TIDINGS_FANOUT_ON_READ_MIN`` alone, with no wiring of the test's own: a large
    topic's event is broadcast; erasing a user deletes what they did with it; retention
    removes it once the inbox's time has passed, with every user's state of it."""
    settings = make_settings(database_url=database_url, fanout_on_read_min=LARGE)
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        runtime: Runtime = application.state.runtime
        assert runtime.inbox.broadcasts is not None
        _key, plaintext = await runtime.auth.create_key("tests", ["*", "admin"])
        producer = {"Authorization": f"Bearer {plaintext}"}
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
            await subscribe(client, producer, ["u-1", "u-2", "u-3"])
            await publish(client, producer, runtime, COMMENT, "k-1")
            await stored_as(runtime, broadcasts=1, items=0)
            for user in ("u-1", "u-2"):
                item_id = (await inbox(client, user_headers(user)))[0]["id"]
                read = await client.patch(
                    f"/v1/me/inbox/{item_id}", json={"read": True}, headers=user_headers(user)
                )
                assert read.status_code == 200, read.text
            assert await count(runtime, tables.broadcast_states) == 2

            erased = await client.delete("/v1/users/u-1", headers=producer)
            assert erased.status_code == 204, erased.text
            states = tables.broadcast_states.c
            assert await count(runtime, tables.broadcast_states, states.user_id == "u-1") == 0
            assert await count(runtime, tables.broadcast_states) == 1

            assert (await runtime.retention.run_once()).broadcasts == 0
            runtime.retention.policy = dataclasses.replace(
                runtime.retention.policy, inbox=dt.timedelta(seconds=-1)
            )
            assert (await runtime.retention.run_once()).broadcasts == 1
            await stored_as(runtime, broadcasts=0, items=0)
            assert await count(runtime, tables.broadcast_states) == 0
            assert await inbox(client, user_headers("u-2")) == []
