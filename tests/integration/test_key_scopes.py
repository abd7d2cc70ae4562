"""Capability scopes of API keys: who may change a stored profile, whose idempotency keys
are whose, how fast a revocation reaches every process, and who may read the mailbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import eventually
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import keys
from tidings.kit import errors
from tidings.kit.settings import Settings

COMMENT: dict[str, Any] = {
    "type": "comment.created",
    "actor": {"id": "u-ann", "name": "Ann"},
    "data": {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": "c-1", "text": "Looks good"},
    },
}
RESET: dict[str, Any] = {
    "type": "auth.password_reset",
    "recipients": ["u-bob"],
    "data": {"reset_url": "https://app.example.com/reset?token=t-1", "expires_in_minutes": 30},
}


async def bearer(runtime: Runtime, name: str, scopes: list[str]) -> dict[str, str]:
    _key, plaintext = await runtime.auth.create_key(name, scopes)
    return {"Authorization": f"Bearer {plaintext}"}


async def publish(client: httpx.AsyncClient, key: dict[str, str], event: dict[str, Any]) -> str:
    response = await client.post("/v1/events", json=event, headers=key)
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


async def mail_to(
    client: httpx.AsyncClient, admin: dict[str, str], address: str, count: int = 1
) -> list[dict[str, Any]]:
    """The messages the catcher holds for ``address`` once there are ``count`` of them."""

    async def arrived() -> bool:
        response = await client.get("/v1/dev/mailbox", params={"to": address}, headers=admin)
        return len(response.json()["messages"]) >= count

    await eventually(arrived)
    response = await client.get("/v1/dev/mailbox", params={"to": address}, headers=admin)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_a_type_key_cannot_change_a_stored_address_through_its_events(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await bearer(runtime, "ops", ["admin"])
    profiles = await bearer(runtime, "accounts", ["users:write"])
    comments = await bearer(runtime, "comments", ["comment.*"])
    auth_team = await bearer(runtime, "auth", ["auth.*"])
    stored = await client.put(
        "/v1/users/u-bob", json={"email": "bob@example.com"}, headers=profiles
    )
    assert stored.status_code == 200, stored.text

    hijack = COMMENT | {
        "idempotency_key": "c-1",
        "recipients": [{"id": "u-bob", "email": "eve@evil.example", "name": "Eve"}],
    }
    comment_id = await publish(client, comments, hijack)

    # The comment team's own event goes where it said, and changes no one's profile.
    [comment_mail] = await mail_to(client, admin, "eve@evil.example")
    assert comment_mail["delivery_id"] in {
        d["id"]
        for d in (await client.get(f"/v1/events/{comment_id}", headers=comments)).json()[
            "deliveries"
        ]
    }
    profile = (await client.get("/v1/users/u-bob", headers=admin)).json()
    assert (profile["email"], profile["name"]) == ("bob@example.com", None)

    # The next password reset, from another team, goes to the stored address.
    await publish(client, auth_team, RESET | {"idempotency_key": "r-1"})
    [reset] = await mail_to(client, admin, "bob@example.com")
    assert reset["subject"] == "Reset your password"
    assert len(await mail_to(client, admin, "eve@evil.example")) == 1


async def test_an_event_only_address_serves_that_event_and_stores_no_profile(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await bearer(runtime, "ops", ["admin"])
    comments = await bearer(runtime, "comments", ["comment.*"])
    event = COMMENT | {
        "idempotency_key": "c-1",
        "recipients": [{"id": "u-new", "email": "new@example.com"}],
    }
    await publish(client, comments, event)
    [message] = await mail_to(client, admin, "new@example.com")
    assert message["subject"] == "Ann commented on Roadmap"
    missing = await client.get("/v1/users/u-new", headers=admin)
    assert missing.status_code == 404, missing.text


async def test_a_key_with_users_write_stores_what_its_events_carry(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await bearer(runtime, "ops", ["admin"])
    writer = await bearer(runtime, "comments", ["comment.*", "users:write"])
    event = COMMENT | {
        "idempotency_key": "c-1",
        "recipients": [{"id": "u-bob", "email": "bob@example.com", "locale": "fr"}],
    }
    await publish(client, writer, event)
    profile = (await client.get("/v1/users/u-bob", headers=admin)).json()
    assert (profile["email"], profile["locale"]) == ("bob@example.com", "fr")


async def test_a_refusal_names_the_scope_and_how_to_get_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    mentions = await bearer(runtime, "mentions", ["mention.*"])
    response = await client.put(
        "/v1/users/u-bob", json={"email": "eve@evil.example"}, headers=mentions
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert error["scope"] == "users:write"
    assert "tidings keys create --name <name> --scope users:write" in error["message"]


async def test_unknown_scopes_are_refused_at_creation(runtime: Runtime) -> None:
    for scope, hint in [
        ("users:wrte", "users:write"),
        ("users", "comment.*"),
        ("Comment.*", "comment.*"),
    ]:
        with pytest.raises(errors.Invalid) as refused:
            await runtime.auth.create_key("team", ["comment.*", scope])
        assert refused.value.field == "scopes"
        assert repr(scope) in refused.value.message
        assert hint in refused.value.message
    key, _ = await runtime.auth.create_key("team", ["comment.*", " users:read ", "users:read"])
    assert key.scopes == ("comment.*", "users:read")
    assert (key.type_patterns, key.capabilities) == (("comment.*",), ("users:read",))


async def test_idempotency_keys_are_per_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    team_b = await bearer(runtime, "team-b", ["comment.*"])
    team_c = await bearer(runtime, "team-c", ["comment.*"])
    event = COMMENT | {"idempotency_key": "comment-42", "recipients": ["u-bob"]}
    squatted = await publish(client, team_b, event | {"recipients": ["u-eve"]})

    # C's own key is free: a new event, not a 409 naming B's.
    first = await publish(client, team_c, event)
    assert first != squatted
    # A replay by the same key still answers the original event.
    assert await publish(client, team_c, event) == first
    conflict = await client.post(
        "/v1/events", json=event | {"recipients": ["u-ann"]}, headers=team_c
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["event_id"] == first
    batch = await client.post("/v1/events/batch", json={"events": [event]}, headers=team_b)
    assert batch.status_code == 409  # B's own claim, with B's other body


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """Another process's worth of Tidings on the same database: its own runtime and app."""
    runtime = build_runtime(settings)
    application: FastAPI = create_app(runtime=runtime)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as client:
            yield client, runtime


@pytest.mark.parametrize("cache_seconds", [0.0, 1.0])
async def test_a_revoked_key_is_refused_by_every_process_within_the_cache_bound(
    make_settings: Callable[..., Settings], database_url: str, cache_seconds: float
) -> None:
    """The revoking process refuses the key at once; another process within
    ``TIDINGS_KEY_CACHE_SECONDS`` (at its next request when that is 0)."""
    settings = make_settings(database_url=database_url, key_cache_seconds=cache_seconds)
    async with started(settings) as (client, runtime), started(settings) as (other, _):
        key, plaintext = await runtime.auth.create_key("team", ["comment.*", "users:read"])
        headers = {"Authorization": f"Bearer {plaintext}"}
        # Both processes have just seen the key work.
        for answer in [await client.get("/v1/users/u-x", headers=headers)] + [
            await other.get("/v1/users/u-x", headers=headers) for _ in range(3)
        ]:
            assert answer.status_code == 404, answer.text
        await runtime.auth.revoke_key(key.id)
        assert (await client.get("/v1/users/u-x", headers=headers)).status_code == 401
        await asyncio.sleep(cache_seconds)
        refused = await other.get("/v1/users/u-x", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("scopes", [["comment.*"], ["*", "users:read", "users:write"]])
async def test_only_dev_mailbox_or_admin_reads_the_mailbox(
    client: httpx.AsyncClient, runtime: Runtime, scopes: list[str]
) -> None:
    refused = await client.get("/v1/dev/mailbox", headers=await bearer(runtime, "t", scopes))
    assert refused.status_code == 403
    assert refused.json()["error"]["scope"] == keys.DEV_MAILBOX
    for allowed in (["dev:mailbox"], ["admin"]):
        response = await client.get("/v1/dev/mailbox", headers=await bearer(runtime, "t", allowed))
        assert response.status_code == 200, response.text


ClientAt = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def demo_client(make_settings: Callable[..., Settings], database_url: str) -> ClientAt:
    """A client of a demo-serving app, calling from the address given."""

    @contextlib.asynccontextmanager
    async def at(host: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(database_url=database_url, demo=True, **overrides)
        application = create_app(runtime=build_runtime(settings))
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application, client=(host, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as c:
                yield c

    return at


async def test_the_demo_serves_tokens_and_mail_to_loopback_clients_only(
    demo_client: ClientAt,
) -> None:
    async with demo_client("203.0.113.7") as remote:
        page = await remote.get("/demo")
        assert page.status_code == 403
        assert "only to this machine" in page.text
        session = await remote.post("/demo/api/session", json={"user": "u-bob"})
        assert session.status_code == 403
        assert session.json()["error"]["code"] == "forbidden"
        mailbox = await remote.get("/demo/api/mailbox", params={"user": "u-bob"})
        assert mailbox.status_code == 403
    for host in ("127.0.0.1", "::1"):
        async with demo_client(host) as local:
            assert (await local.get("/demo")).status_code == 200
            assert "loopback" in (await local.get("/demo")).text
            session = await local.post("/demo/api/session", json={"user": "u-bob"})
            assert session.status_code == 200, session.text
            mailbox = await local.get("/demo/api/mailbox", params={"user": "u-bob"})
            assert mailbox.status_code == 200, mailbox.text


async def test_the_demo_may_serve_tokens_remotely_when_told_but_never_the_mailbox(
    demo_client: ClientAt,
) -> None:
    async with demo_client("203.0.113.7", demo_remote=True) as remote:
        assert (await remote.get("/demo")).status_code == 200
        session = await remote.post("/demo/api/session", json={"user": "u-bob"})
        assert session.status_code == 200, session.text
        assert (await remote.get("/demo/api/setup")).json()["local"] is False
        mailbox = await remote.get("/demo/api/mailbox", params={"user": "u-bob"})
        assert mailbox.status_code == 403
        assert "loopback" in mailbox.json()["error"]["message"]
