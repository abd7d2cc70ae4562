"""The widget's script, cross-origin access to the end-user API, and the demo's API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import CANONICAL_EVENT, eventually
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings
from tidings.web import pages

PRODUCT = "https://app.example.com"
OpenClient = Callable[..., Awaitable[tuple[httpx.AsyncClient, Runtime]]]


@pytest.fixture
async def open_client(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[OpenClient]:
    """Starts the application with extra settings and gives a client to it."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_one(**overrides: Any) -> tuple[httpx.AsyncClient, Runtime]:
            settings = make_settings(database_url=database_url, **overrides)
            runtime = build_runtime(settings)
            app = create_app(runtime=runtime)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://tidings.test")
            )
            return client, runtime

        yield open_one


async def test_widget_script_is_served_cacheable_with_its_type(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(pages.WIDGET_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["access-control-allow-origin"] == "*"
    assert 'customElements.define("tidings-inbox"' in response.text
    etag = response.headers["etag"]

    again = await client.get(pages.WIDGET_PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    stale = await client.get(pages.WIDGET_PATH, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200


async def test_end_user_api_answers_configured_origins_only(open_client: OpenClient) -> None:
    client, _runtime = await open_client(cors_origins=[PRODUCT])
    preflight = {
        "Origin": PRODUCT,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = await client.options("/v1/me/inbox/some-item", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PRODUCT
    assert "PATCH" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers

    refused = await client.options(
        "/v1/me/inbox/some-item", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

    counts = await client.get("/v1/me/inbox/counts", headers={"Origin": PRODUCT})
    assert counts.status_code == 401
    assert counts.headers["access-control-allow-origin"] == PRODUCT
    assert counts.json()["error"]["code"] == "unauthenticated"

    # The producer's API stays same-origin.
    producer = await client.options(
        "/v1/events", headers={**preflight, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in producer.headers


async def test_without_origins_the_end_user_api_sends_no_cors_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/me/inbox/counts", headers={"Origin": PRODUCT})
    assert response.status_code == 401
    assert "access-control-allow-origin" not in response.headers


async def test_demo_is_not_mounted_unless_enabled(client: httpx.AsyncClient) -> None:
    for path in ("/", "/demo", "/demo/api/setup"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    fired = await client.post(
        "/demo/api/fire", json={"type": "comment.created", "to": "u-bob", "actor": "u-ann"}
    )
    assert fired.status_code == 404


async def test_demo_fires_examples_into_the_inbox_and_mailbox(open_client: OpenClient) -> None:
    client, _runtime = await open_client(demo=True)
    home = await client.get("/")
    assert home.status_code == 307
    assert home.headers["location"] == "/demo"
    page = await client.get("/demo")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/widget/tidings-inbox.js"' in page.text

    setup = (await client.get("/demo/api/setup")).json()
    assert [u["id"] for u in setup["users"]] == ["u-ann", "u-bob", "u-cid", "u-dee", "u-eve"]
    keys = [t["key"] for t in setup["types"]]
    assert "comment.created" in keys
    assert "auth.password_reset" in keys
    assert setup["mailbox"] is True

    session = await client.post("/demo/api/session", json={"user": "u-bob"})
    assert session.status_code == 200
    bob = {"Authorization": f"Bearer {session.json()['token']}"}
    fired = await client.post(
        "/demo/api/fire", json={"type": "comment.created", "to": "u-bob", "actor": "u-cid"}
    )
    assert fired.status_code == 202, fired.text
    event_id = fired.json()["event_id"]

    async def delivered() -> bool:
        items = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]
        return [i["title"] for i in items] == ["Cid commented on Roadmap"]

    await eventually(delivered)

    async def mailed() -> bool:
        response = await client.get("/demo/api/mailbox", params={"user": "u-bob"})
        messages = response.json()["messages"]
        return [m["subject"] for m in messages] == ["Cid commented on Roadmap"]

    await eventually(mailed)
    message = (await client.get("/demo/api/mailbox", params={"user": "u-bob"})).json()["messages"][
        0
    ]
    assert "bob@example.com" in message["to"]
    assert "Looks good" in message["text"]
    assert "<html" in message["html"].lower()
    assert (await client.get("/demo/api/mailbox", params={"user": "u-ann"})).json() == {
        "messages": []
    }

    outcome = (await client.get(f"/demo/api/events/{event_id}")).json()["deliveries"]
    assert {(d["user_id"], d["channel"]) for d in outcome} == {
        ("u-bob", "in_app"),
        ("u-bob", "email"),
    }


async def test_demo_acts_only_as_its_example_users(open_client: OpenClient) -> None:
    client, runtime = await open_client(demo=True)
    for path, body, field in (
        ("/demo/api/session", {"user": "u-admin"}, "user"),
        ("/demo/api/fire", {"type": "comment.created", "to": "u-admin", "actor": "u-ann"}, "to"),
        ("/demo/api/fire", {"type": "comment.created", "to": "u-bob", "actor": "u-x"}, "actor"),
        ("/demo/api/fire", {"type": "no.such", "to": "u-bob", "actor": "u-ann"}, "type"),
    ):
        response = await client.post(path, json=body)
        assert response.status_code == 422, (path, body)
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("invalid", field)
    mailbox = await client.get("/demo/api/mailbox", params={"user": "someone@example.com"})
    assert mailbox.status_code == 422

    # An event the demo did not fire stays private.
    _key, plaintext = await runtime.auth.create_key("tests", ["*"])
    published = await client.post(
        "/v1/events", json=CANONICAL_EVENT, headers={"Authorization": f"Bearer {plaintext}"}
    )
    assert published.status_code == 202
    hidden = await client.get(f"/demo/api/events/{published.json()['event_id']}")
    assert hidden.status_code == 404
