"""The operators' console over HTTP: sign-in, sessions and CSRF, searches, timelines, the
template preview, dead letters, the mailbox, the charts' numbers, and escaping."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.console import sessions
from tidings.kit import tables
from tidings.kit.queue import Job
from tidings.kit.queue_sql import dead_letter_row
from tidings.kit.settings import Settings

PAGES = [
    "/console",
    "/console/events",
    "/console/deliveries",
    "/console/deliveries/d-1",
    "/console/catalog",
    "/console/catalog/comment.created",
    "/console/dead-letters",
    "/console/dead-letters/plan:x",
    "/console/mailbox",
]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
async def operator_key(runtime: Runtime) -> str:
    _key, plaintext = await runtime.auth.create_key("ops", ["admin"])
    return plaintext


@pytest.fixture
async def console(client: httpx.AsyncClient, operator_key: str) -> httpx.AsyncClient:
    """The client, signed in to the console with an operator's key."""
    response = await client.post(
        "/console/login", data={"key": operator_key, "next": "/console/events"}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/events"
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def csrf(client: httpx.AsyncClient) -> str:
    return csrf_of((await client.get("/console/catalog")).text)


async def publish(
    client: httpx.AsyncClient, producer: dict[str, str], *events: dict[str, Any]
) -> list[str]:
    response = await client.post(
        "/v1/events/batch", json={"events": list(events)}, headers=producer
    )
    assert response.status_code == 202, response.text
    return [accepted["event_id"] for accepted in response.json()["events"]]


def comment(
    key: str, *recipients: Any, text: str = "Looks good", board: str = "Roadmap"
) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": list(recipients),
        "data": {"board": {"id": "b-1", "name": board}, "comment": {"id": key, "text": text}},
    }


async def drained(runtime: Runtime) -> bool:
    async with runtime.db.reader() as conn:
        waiting = await conn.execute(sa.select(sa.func.count()).select_from(tables.jobs))
        return int(waiting.scalar_one()) == 0


async def bury(runtime: Runtime, *jobs: Job) -> None:
    now = dt.datetime.now(dt.UTC)
    async with runtime.db.transaction() as conn:
        for job in jobs:
            await conn.execute(
                tables.dead_letters.insert().values(**dead_letter_row(job, "boom: " + HOSTILE, now))
            )


async def dead_ids(runtime: Runtime) -> set[str]:
    async with runtime.db.reader() as conn:
        return set((await conn.execute(sa.select(tables.dead_letters.c.id))).scalars())


async def test_every_page_sends_a_stranger_to_the_sign_in_page(client: httpx.AsyncClient) -> None:
    for path in PAGES:
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole"), path
    stats = await client.get("/console/api/stats")
    assert stats.status_code == 401
    assert stats.json()["error"]["code"] == "unauthenticated"
    preview = await client.post("/console/api/preview/comment.created", json={"data": {}})
    assert preview.status_code == 401
    login = await client.get("/console/login")
    assert login.status_code == 200
    assert 'name="key"' in login.text


async def test_only_an_operators_key_signs_in(
    client: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    # The producer key of the fixtures may publish every type, but it is no operator's.
    refused = await client.post("/console/login", data={"key": api_key})
    assert refused.status_code == 403
    assert "admin" in refused.text
    unknown = await client.post("/console/login", data={"key": "tdg_abc_not-a-real-key"})
    assert unknown.status_code == 401
    assert "not an active Tidings API key" in unknown.text
    assert sessions.COOKIE not in client.cookies
    assert (await client.get("/console")).status_code == 303


async def test_the_session_cookie_is_httponly_strict_and_signed(
    client: httpx.AsyncClient, operator_key: str
) -> None:
    response = await client.post("/console/login", data={"key": operator_key, "next": "//evil"})
    assert response.headers["location"] == "/console"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert operator_key not in cookie
    page = await client.get("/console")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers

    value = client.cookies[sessions.COOKIE]
    body, signature = value.split(".")
    client.cookies.set(sessions.COOKIE, body + "." + signature[::-1], path="/console")
    assert (await client.get("/console")).status_code == 303


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    console: httpx.AsyncClient,
) -> None:
    token = await csrf(console)
    forged = await console.post("/console/logout", data={"csrf": "forged"})
    assert forged.status_code == 403
    assert (await console.get("/console")).status_code == 200
    done = await console.post("/console/logout", data={"csrf": token})
    assert done.status_code == 303
    assert (await console.get("/console")).status_code == 303


async def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(
    console: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    copied = console.cookies[sessions.COOKIE]
    token = await csrf(console)
    done = await console.post("/console/logout", data={"csrf": token})
    assert done.status_code == 303
    # The browser forgot the cookie; whoever kept a copy tries it.
    console.cookies.set(sessions.COOKIE, copied, path="/console")
    for path in ("/console", "/console/catalog", "/console/dead-letters"):
        response = await console.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login")
    assert (await console.get("/console/api/stats")).status_code == 401
    preview = await console.post(
        "/console/api/preview/comment.created", json={}, headers={"X-CSRF-Token": token}
    )
    assert preview.status_code == 401
    # The sign-in page offers to sign in again rather than redirecting to the overview.
    assert (await console.get("/console/login")).status_code == 200


async def test_text_outside_ascii_in_the_cookie_or_csrf_token_is_refused_not_a_crash(
    console: httpx.AsyncClient, app: FastAPI
) -> None:
    signed = console.cookies[sessions.COOKIE]
    body, signature = signed.split(".")
    for value in ("é", "bödy.sïgnature", f"{body}.{signature[:-1]}é", f"{body}é.{signature}"):
        raw = f"{sessions.COOKIE}={value}".encode()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=console.base_url
        ) as stranger:
            page = await stranger.get("/console", headers={"cookie": raw})
            assert page.status_code == 303, value
            assert page.headers["location"].startswith("/console/login")
            stats = await stranger.get("/console/api/stats", headers={"cookie": raw})
            assert stats.status_code == 401, value
    for token in ("é", "ü" * 43):
        preview = await console.post(
            "/console/api/preview/comment.created",
            json={},
            headers={"X-CSRF-Token": token.encode()},
        )
        assert preview.status_code == 403, token
        assert preview.json()["error"]["field"] == "csrf"
        refused = await console.post("/console/logout", data={"csrf": token})
        assert refused.status_code == 403, token
    assert (await console.get("/console")).status_code == 200


async def test_a_revoked_key_ends_its_console_sessions(
    console: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await console.get("/console/catalog")).status_code == 200
    (ops,) = [key for key in await runtime.auth.list_keys() if key.name == "ops"]
    await runtime.auth.revoke_key(ops.id)
    assert (await console.get("/console/catalog")).status_code == 303


async def test_deliveries_are_found_across_users_and_show_their_timeline(
    console: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    (first,) = await publish(
        console, producer, comment("c-1", {"id": "u-bob", "email": "bob@example.com"}, "u-cat")
    )
    (second,) = await publish(console, producer, comment("c-2", "u-dan"))
    await eventually(lambda: drained(runtime))

    everyone = (await console.get("/console/deliveries")).text
    for user in ("u-bob", "u-cat", "u-dan"):
        assert f">{user}</a>" in everyone

    of_bob = await console.get("/console/deliveries", params={"user": "u-bob", "channel": "email"})
    ids = re.findall(r'class="delivery-link" href="/console/deliveries/([^"]+)"', of_bob.text)
    assert len(ids) == 1
    suppressed = await console.get(
        "/console/deliveries", params={"state": "suppressed", "type": "comment.*"}
    )
    # u-cat and u-dan have no address: their emails were suppressed, u-bob's was sent.
    assert suppressed.text.count('class="delivery-link"') == 2
    assert ids[0] not in suppressed.text
    of_event = await console.get("/console/deliveries", params={"event": second})
    assert of_event.text.count('class="delivery-link"') == 2
    assert ">u-dan</a>" in of_event.text
    assert ">u-bob</a>" not in of_event.text
    none = await console.get("/console/deliveries", params={"type": "board.*"})
    assert "No deliveries match." in none.text

    timeline = await console.get(f"/console/deliveries/{ids[0]}")
    assert timeline.status_code == 200
    rows = re.findall(r"<tr>\s*<td class=\"at\">.*?</tr>", timeline.text, flags=re.S)
    assert len(rows) >= 3
    assert "<td>plan</td>" in rows[0]
    assert "planned" in rows[0]
    assert "sent" in timeline.text
    assert first in timeline.text
    missing = await console.get("/console/deliveries/no-such-delivery")
    assert missing.status_code == 404
    assert "No delivery with id" in missing.text


async def test_events_are_searched_by_user_type_and_time_a_page_at_a_time(
    console: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    ids = await publish(
        console, producer, *(comment(f"c-{i}", "u-bob" if i % 2 else "u-cat") for i in range(5))
    )
    await eventually(lambda: drained(runtime))

    page = await console.get("/console/events", params={"user": "u-bob", "limit": 1})
    found = re.findall(r'class="event-link" href="/console/deliveries\?event=([^"]+)"', page.text)
    assert found == [ids[3]]
    older = re.search(r'href="/console/events\?([^"]+)">Older', page.text)
    assert older
    page = await console.get("/console/events?" + html.unescape(older.group(1)))
    found = re.findall(r'class="event-link" href="/console/deliveries\?event=([^"]+)"', page.text)
    assert found == [ids[1]]
    assert "Older" not in page.text

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    none = await console.get("/console/events", params={"since": later})
    assert "No events." in none.text
    by_type = await console.get("/console/events", params={"type": "comment.created"})
    assert by_type.text.count('class="event-link"') == 5
    bad = await console.get("/console/events", params={"since": "yesterday"})
    assert bad.status_code == 422
    assert "is not a time" in bad.text
    for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        beyond = await console.get("/console/events", params={"since": edge})
        assert beyond.status_code == 422, beyond.text
        assert "outside the years 1 to 9999" in beyond.text, beyond.text


async def test_server_text_is_shown_as_text(
    console: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await publish(
        console,
        producer,
        comment(
            "c-1", {"id": "u-<b>bob</b>", "email": "bob@example.com"}, text=HOSTILE, board=HOSTILE
        ),
    )
    await eventually(lambda: drained(runtime))
    await bury(
        runtime, Job(id="plan:<i>x</i>", kind="plan", payload={"x": HOSTILE}, lane=1, attempts=3)
    )
    pages = [
        await console.get("/console/deliveries"),
        await console.get("/console/events"),
        await console.get("/console/dead-letters"),
        await console.get("/console/dead-letters/plan:<i>x</i>"),
        await console.get("/console/mailbox"),
        await console.get("/console/deliveries", params={"user": HOSTILE}),
    ]
    for response in pages:
        assert response.status_code == 200, response.url
        assert "<script>alert" not in response.text, response.url
        assert "<img src=x" not in response.text, response.url
        assert "<b>bob</b>" not in response.text
        assert "<i>x</i>" not in response.text
    assert "u-&lt;b&gt;bob&lt;/b&gt;" in pages[0].text
    assert "&lt;script&gt;" in pages[2].text

    messages = re.findall(r'href="/console/mailbox/([^"]+)"', pages[4].text)
    message = await console.get(f"/console/mailbox/{messages[0]}")
    # The email's HTML only ever sits in a sandboxed frame's srcdoc, escaped as an attribute.
    assert re.search(r'<iframe title="email HTML" sandbox="" srcdoc="[^"]*&lt;', message.text)
    assert "<script>alert" not in message.text


async def test_the_preview_renders_in_app_email_html_and_text_per_locale(
    console: httpx.AsyncClient,
) -> None:
    page = await console.get("/console/catalog/comment.created")
    assert page.status_code == 200
    assert "Ann Example commented on Roadmap" in page.text
    assert "<option>fr</option>" in page.text
    token = csrf_of(page.text)
    data = {"board": {"id": "b-9", "name": "Launch"}, "comment": {"id": "c-9", "text": "Ship it"}}

    refused = await console.post(
        "/console/api/preview/comment.created", json={"data": data}, headers={"X-CSRF-Token": "no"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["field"] == "csrf"

    headers = {"X-CSRF-Token": token}
    shown = await console.post(
        "/console/api/preview/comment.created",
        json={"data": data, "actor": {"id": "u-zed", "name": "Zed"}},
        headers=headers,
    )
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["in_app"]["title"] == "Zed commented on Launch"
    assert body["in_app"]["action_url"] == "/boards/b-9#comment-c-9"
    assert body["email"]["subject"] == "Zed commented on Launch"
    assert "Ship it" in body["email"]["html"]
    assert "Ship it" in body["email"]["text"]

    french = await console.post(
        "/console/api/preview/comment.created",
        json={"data": data, "actor": {"name": "Zed"}, "locale": "fr"},
        headers=headers,
    )
    assert french.json()["email"]["subject"] == "Zed a commenté Launch"
    assert french.json()["email"]["locale"] == "fr"

    invalid = await console.post(
        "/console/api/preview/comment.created", json={"data": {"board": {}}}, headers=headers
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["code"] == "invalid"
    assert invalid.json()["error"]["field"].startswith("data.")
    unknown = await console.post("/console/api/preview/no.such", json={"data": {}}, headers=headers)
    assert unknown.status_code == 404

    catalog = await console.get("/console/catalog")
    for key in ("comment.created", "auth.password_reset", "board.invited", "mention.created"):
        assert f'href="/console/catalog/{key}"' in catalog.text


async def test_dead_letters_are_replayed_and_discarded_with_a_csrf_token(
    console: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.worker.stop()  # the replayed jobs stay in the queue, to be seen there
    await bury(
        runtime,
        Job(id="plan:a", kind="plan", payload={"events": []}, lane=1, attempts=3),
        Job(id="plan:b", kind="plan", payload={"events": []}, lane=1, attempts=3),
        Job(id="fanout:c/1", kind="fanout", payload={"events": []}, lane=2, attempts=3),
    )
    listed = await console.get("/console/dead-letters")
    assert listed.text.count('class="replay"') == 3
    token = csrf_of(listed.text)

    forged = await console.post("/console/dead-letters/plan:a/replay", data={"csrf": "x"})
    assert forged.status_code == 403
    assert await dead_ids(runtime) == {"plan:a", "plan:b", "fanout:c/1"}

    replayed = await console.post("/console/dead-letters/plan:a/replay", data={"csrf": token})
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/console/dead-letters?done=replayed"
    assert await dead_ids(runtime) == {"plan:b", "fanout:c/1"}
    async with runtime.db.reader() as conn:
        queued = set((await conn.execute(sa.select(tables.jobs.c.id))).scalars())
    assert "plan:a" in queued
    again = await console.post("/console/dead-letters/plan:a/replay", data={"csrf": token})
    assert again.status_code == 404

    discarded = await console.post("/console/dead-letters/fanout:c/1/discard", data={"csrf": token})
    assert discarded.status_code == 303
    assert await dead_ids(runtime) == {"plan:b"}
    notice = await console.get(discarded.headers["location"])
    assert "The dead letter was discarded." in notice.text

    by_kind = await console.post(
        "/console/dead-letters-replay", data={"csrf": token, "kind": "plan"}
    )
    assert by_kind.status_code == 303
    assert await dead_ids(runtime) == set()


async def test_the_mailbox_shows_what_the_catcher_caught(
    console: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await publish(console, producer, comment("c-1", {"id": "u-bob", "email": "bob@example.com"}))
    await eventually(lambda: drained(runtime))
    listed = await console.get("/console/mailbox", params={"to": "BOB@example.com"})
    assert "Ann commented on Roadmap" in listed.text
    assert "bob@example.com" in listed.text
    nobody = await console.get("/console/mailbox", params={"to": "eve@example.com"})
    assert "No messages." in nobody.text
    (message_id,) = re.findall(r'href="/console/mailbox/([^"]+)"', listed.text)
    message = await console.get(f"/console/mailbox/{message_id}")
    assert message.status_code == 200
    assert "Looks good" in message.text
    assert "DKIM-Signature" in message.text


async def test_the_charts_count_events_deliveries_latency_and_queues(
    console: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await publish(
        console,
        producer,
        *(comment(f"c-{i}", {"id": f"u-{i}", "email": f"u{i}@example.com"}) for i in range(3)),
    )
    await eventually(lambda: drained(runtime))
    await bury(runtime, Job(id="plan:z", kind="plan", payload={}, lane=0, attempts=3))
    stats = (await console.get("/console/api/stats")).json()
    assert len(stats["minutes"]) == len(stats["events_per_minute"]) == 30
    assert sum(stats["events_per_minute"]) == 3
    assert sum(stats["deliveries_per_minute"]) == 6
    p50 = [v for v in stats["latency_seconds"]["p50"] if v is not None]
    assert p50
    assert all(v >= 0 for v in p50)
    assert stats["queue"]["due"] == 0
    assert stats["deliveries_last_hour"] == {"delivered": 3, "sent": 3}
    assert stats["dead_letters"] == 1

    overview = await console.get("/console")
    assert 'data-stat="dead"' in overview.text
    assert overview.text.count('class="event-link"') == 3
