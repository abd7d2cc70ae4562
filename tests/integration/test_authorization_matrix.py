"""Who may call what: every endpoint against every kind of credential, from one table.

Each row names an operation and the status each credential kind gets. Every route the
application serves must have a row, or be listed as public with its reason, so a new
endpoint cannot ship without saying who may call it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.auth import keys, tokens

SCOPED = tuple(f"scope:{capability}" for capability in keys.CAPABILITIES)
"""A key per capability scope, holding that scope alone (no type pattern)."""

KINDS = (
    "none",
    "wrong",
    "expired",
    "revoked",
    "producer_in",
    "producer_out",
    "owner",
    "other",
    "admin",
    *SCOPED,
)
"""Credential kinds: nothing; a garbage bearer; an expired user token; a revoked key; a
producer key whose type patterns cover the type involved (``comment.*``) and one whose
patterns do not (``billing.*``), neither with a capability scope; the token of the user the
data belongs to (``u-bob``) and of another user (``u-eve``); an operator's key (scope
``admin`` only); and a key with one capability scope and nothing else."""

PUBLIC = {
    "/openapi.json": "the API's own description",
    "/docs": "the API reference page",
    "/docs/oauth2-redirect": "part of the API reference page",
    "/redoc": "the API reference page",
    "/healthz": "liveness probe",
    "/readyz": "readiness probe",
    "/metrics": "Prometheus scrape",
    "/widget/": "the inbox widget's script; it calls /v1/me with a user token",
    "/demo": "the demo, off unless enabled, on the embedded default only",
    "/console": "HTML for operators, with its own login and session",
    "/v1/unsubscribe/": "the token is in the link itself",
    "/v1/webhooks/email/": "provider feedback, signed by the provider",
}
"""Routes outside the matrix (path prefixes), and why."""


@dataclass(frozen=True)
class Row:
    """One operation and the status each authenticated credential kind gets; none, wrong,
    expired and revoked always get 401."""

    method: str
    route: str
    path: str
    producer_in: int
    producer_out: int
    owner: int
    other: int
    admin: int
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    removes: bool = False
    """The call removes what the path names: each credential gets a fresh one."""
    scope: str | None = None
    """The capability scope the operation needs: its holders get what ``admin`` gets,
    every other producer key 403."""

    def expected(self, kind: str) -> int:
        if kind in ("none", "wrong", "expired", "revoked"):
            return 401
        if kind.startswith("scope:"):
            if self.scope is None:
                return self.producer_out  # a key with no type pattern
            return self.admin if kind == f"scope:{self.scope}" else 403
        status: int = getattr(self, kind)
        return status


EVENT = {
    "type": "comment.created",
    "idempotency_key": "matrix-1",
    "actor": {"id": "u-ann", "name": "Ann"},
    "recipients": [{"id": "u-bob", "email": "bob@example.com"}],
    "data": {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": "c-1", "text": "Looks good"},
    },
}
PREVIEW = {"data": EVENT["data"], "actor": EVENT["actor"]}


def producer(method: str, route: str, path: str, ok: int, **kw: Any) -> Row:
    """A producer endpoint that is not about one type: any valid key."""
    return Row(method, route, path, ok, ok, 403, 403, ok, **kw)


def scoped(method: str, route: str, path: str, ok: int, **kw: Any) -> Row:
    """A producer endpoint about one type: the key's scopes (or ``admin``) must cover it."""
    return Row(method, route, path, ok, 403, 403, 403, ok, **kw)


def capability(method: str, route: str, path: str, scope: str, ok: int, **kw: Any) -> Row:
    """A producer endpoint that needs a capability scope (or ``admin``), whatever the key's
    type patterns."""
    return Row(method, route, path, 403, 403, 403, 403, ok, scope=scope, **kw)


def operator(method: str, route: str, path: str, ok: int, **kw: Any) -> Row:
    return Row(method, route, path, 403, 403, 403, 403, ok, **kw)


def end_user(method: str, route: str, path: str, ok: int, other: int, **kw: Any) -> Row:
    return Row(method, route, path, 403, 403, ok, other, 403, **kw)


def owned_by_key(method: str, route: str, path: str, ok: int, **kw: Any) -> Row:
    """Something a producer key made: that key and operators see it, other keys get 404."""
    return Row(method, route, path, ok, 404, 403, 403, ok, **kw)


TABLE = [
    Row("POST", "/v1/events", "/v1/events", 202, 403, 403, 403, 403, body=EVENT),
    Row(
        "POST",
        "/v1/events/batch",
        "/v1/events/batch",
        202,
        403,
        403,
        403,
        403,
        body={"events": [EVENT]},
    ),
    # A dry run is checked as a publish is: the key must cover the type.
    Row("POST", "/v1/events/dry-run", "/v1/events/dry-run", 200, 403, 403, 403, 403, body=EVENT),
    scoped("GET", "/v1/events/{event_id}", "/v1/events/{event_id}", 200),
    # The matrix's event is to a recipient, not broadcast: the key that may read it
    # learns that (404); the others may not ask.
    scoped(
        "GET",
        "/v1/events/{event_id}/broadcast/{user_id}",
        "/v1/events/{event_id}/broadcast/u-bob",
        404,
    ),
    scoped("GET", "/v1/deliveries/{delivery_id}", "/v1/deliveries/{delivery_id}", 200),
    # Cancelling takes the right to publish the event's type (or admin); by cancellation
    # key, any key cancels what it published itself (here nothing: an empty answer).
    scoped("POST", "/v1/events/{event_id}/cancel", "/v1/events/{event_id}/cancel", 200),
    producer(
        "POST",
        "/v1/events/cancel",
        "/v1/events/cancel",
        200,
        body={"cancellation_key": "matrix-nothing"},
    ),
    capability(
        "PUT", "/v1/users/{user_id}", "/v1/users/u-bob", keys.USERS_WRITE, 200, body={"name": "Bob"}
    ),
    capability("GET", "/v1/users/{user_id}", "/v1/users/u-bob", keys.USERS_READ, 200),
    capability("DELETE", "/v1/users/{user_id}", "/v1/users/u-gone", keys.USERS_ERASE, 404),
    capability(
        "PUT",
        "/v1/topics/{topic}/subscribers",
        "/v1/topics/board:b-1/subscribers",
        keys.TOPICS_WRITE,
        200,
        body={"user_ids": ["u-bob"]},
    ),
    capability(
        "DELETE",
        "/v1/topics/{topic}/subscribers",
        "/v1/topics/board:b-2/subscribers",
        keys.TOPICS_WRITE,
        200,
        body={"user_ids": ["u-bob"]},
    ),
    capability(
        "GET",
        "/v1/topics/{topic}/subscribers",
        "/v1/topics/board:b-1/subscribers",
        keys.TOPICS_READ,
        200,
    ),
    capability(
        "GET",
        "/v1/users/{user_id}/preferences",
        "/v1/users/u-bob/preferences",
        keys.PREFERENCES_READ,
        200,
    ),
    capability(
        "PUT",
        "/v1/users/{user_id}/preferences",
        "/v1/users/u-bob/preferences",
        keys.PREFERENCES_WRITE,
        200,
        body={},
    ),
    capability(
        "GET",
        "/v1/tenants/{tenant_id}/preferences",
        "/v1/tenants/acme/preferences",
        keys.PREFERENCES_READ,
        200,
    ),
    capability(
        "PUT",
        "/v1/tenants/{tenant_id}/preferences",
        "/v1/tenants/acme/preferences",
        keys.PREFERENCES_WRITE,
        200,
        body={},
    ),
    scoped(
        "POST",
        "/v1/catalog/{type_key}/preview",
        "/v1/catalog/comment.created/preview",
        200,
        body=PREVIEW,
    ),
    capability("GET", "/v1/dev/mailbox", "/v1/dev/mailbox", keys.DEV_MAILBOX, 200),
    operator("GET", "/v1/users/{user_id}/deliveries", "/v1/users/u-bob/deliveries", 200),
    operator("POST", "/v1/catalog/reload", "/v1/catalog/reload", 200),
    operator("GET", "/v1/dead-letters", "/v1/dead-letters", 200),
    operator(
        "POST", "/v1/dead-letters/replay", "/v1/dead-letters/replay", 200, body={"kind": "plan"}
    ),
    operator(
        "POST",
        "/v1/dead-letters/{dead_letter_id:path}/replay",
        "/v1/dead-letters/dl-missing/replay",
        404,
    ),
    operator("GET", "/v1/dead-letters/{dead_letter_id:path}", "/v1/dead-letters/dl-missing", 404),
    operator(
        "DELETE", "/v1/dead-letters/{dead_letter_id:path}", "/v1/dead-letters/dl-missing", 404
    ),
    end_user("GET", "/v1/me/preferences", "/v1/me/preferences", 200, 200),
    end_user("PUT", "/v1/me/preferences", "/v1/me/preferences", 200, 200, body={}),
    end_user("GET", "/v1/me/inbox", "/v1/me/inbox", 200, 200),
    end_user("GET", "/v1/me/inbox/counts", "/v1/me/inbox/counts", 200, 200),
    end_user("POST", "/v1/me/inbox/mark", "/v1/me/inbox/mark", 200, 200, body={"seen": True}),
    end_user("GET", "/v1/me/inbox/stream", "/v1/me/inbox/stream", 200, 200),
    end_user("GET", "/v1/me/inbox/{item_id}", "/v1/me/inbox/{item_id}", 200, 404),
    end_user(
        "PATCH", "/v1/me/inbox/{item_id}", "/v1/me/inbox/{item_id}", 200, 404, body={"read": True}
    ),
    producer(
        "POST", "/v1/webhooks", "/v1/webhooks", 201, body={"url": "https://hooks.example.com/b"}
    ),
    producer("GET", "/v1/webhooks", "/v1/webhooks", 200),
    owned_by_key("GET", "/v1/webhooks/{endpoint_id}", "/v1/webhooks/{endpoint_id}", 200),
    owned_by_key(
        "PATCH",
        "/v1/webhooks/{endpoint_id}",
        "/v1/webhooks/{endpoint_id}",
        200,
        body={"description": "matrix"},
    ),
    owned_by_key(
        "POST",
        "/v1/webhooks/{endpoint_id}/rotate-secret",
        "/v1/webhooks/{endpoint_id}/rotate-secret",
        200,
    ),
    owned_by_key(
        "GET",
        "/v1/webhooks/{endpoint_id}/messages",
        "/v1/webhooks/{endpoint_id}/messages",
        200,
    ),
    owned_by_key("POST", "/v1/webhooks/{endpoint_id}/test", "/v1/webhooks/{endpoint_id}/test", 202),
    owned_by_key(
        "DELETE", "/v1/webhooks/{endpoint_id}", "/v1/webhooks/{endpoint_id}", 204, removes=True
    ),
]
"""Every authenticated operation. The event, delivery, inbox item and webhook endpoint in
paths are real ones, made by ``producer_in`` for ``u-bob`` before the matrix runs."""


def _public(path: str) -> bool:
    return path == "/" or any(path.startswith(prefix) for prefix in PUBLIC)


def _served(app: FastAPI) -> set[tuple[str, str]]:
    served = set()
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        for method in route.methods or ():
            if method != "HEAD" and not _public(path):
                served.add((method, path))
    return served


async def test_every_route_has_a_row_or_is_public(app: FastAPI) -> None:
    served = _served(app)
    rows = {(row.method, row.route) for row in TABLE}
    assert not served - rows, f"routes with no row in the authorization matrix: {served - rows}"
    assert not rows - served, f"rows for routes that are not served: {rows - served}"


async def _credentials(runtime: Runtime) -> dict[str, dict[str, str]]:
    def bearer(value: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {value}"}

    _in, producer_in = await runtime.auth.create_key("matrix-in", ["comment.*"])
    _out, producer_out = await runtime.auth.create_key("matrix-out", ["billing.*"])
    _admin, admin = await runtime.auth.create_key("matrix-admin", ["admin"])
    revoked_key, revoked = await runtime.auth.create_key(
        "matrix-revoked", ["*", *keys.CAPABILITIES]
    )
    await runtime.auth.revoke_key(revoked_key.id)
    expired = tokens.issue_user_token(
        runtime.settings.signing_secret,
        "u-bob",
        ttl=dt.timedelta(seconds=60),
        now=runtime.clock.now() - dt.timedelta(hours=2),
    )
    return {
        "none": {},
        "wrong": bearer("not-a-key-nor-a-token"),
        "expired": bearer(expired),
        "revoked": bearer(revoked),
        "producer_in": bearer(producer_in),
        "producer_out": bearer(producer_out),
        "owner": bearer(runtime.auth.issue_user_token("u-bob")),
        "other": bearer(runtime.auth.issue_user_token("u-eve")),
        "admin": bearer(admin),
    } | {
        f"scope:{capability}": bearer((await runtime.auth.create_key(capability, [capability]))[1])
        for capability in keys.CAPABILITIES
    }


async def _subjects(
    client: httpx.AsyncClient, credentials: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Real ids for the path parameters: an event, its delivery, Bob's inbox item, and a
    webhook endpoint of ``producer_in``."""
    producer_in, owner = credentials["producer_in"], credentials["owner"]
    published = await client.post("/v1/events", json=EVENT, headers=producer_in)
    assert published.status_code == 202, published.text
    event_id = published.json()["event_id"]

    async def in_inbox() -> bool:
        return bool((await client.get("/v1/me/inbox", headers=owner)).json()["items"])

    await eventually(in_inbox)
    item_id = (await client.get("/v1/me/inbox", headers=owner)).json()["items"][0]["id"]
    view = (await client.get(f"/v1/events/{event_id}", headers=producer_in)).json()
    return {
        "event_id": event_id,
        "delivery_id": view["deliveries"][0]["id"],
        "item_id": item_id,
        "endpoint_id": await _webhook_endpoint(client, credentials),
    }


async def _webhook_endpoint(
    client: httpx.AsyncClient, credentials: dict[str, dict[str, str]]
) -> str:
    endpoint = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/a"},
        headers=credentials["producer_in"],
    )
    assert endpoint.status_code == 201, endpoint.text
    return str(endpoint.json()["id"])


async def _stream_status(app: FastAPI, path: str, headers: dict[str, str]) -> int:
    """The status a never-ending stream answers with; the caller then hangs up."""
    started = asyncio.Event()
    status = 0
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            started.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("tidings.test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def test_each_credential_gets_the_status_its_row_says(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    credentials = await _credentials(runtime)
    subjects = await _subjects(client, credentials)
    wrong: list[str] = []
    for row in TABLE:
        for kind in KINDS:
            if row.removes:
                subjects["endpoint_id"] = await _webhook_endpoint(client, credentials)
            path = row.path.format(**subjects)
            expected = row.expected(kind)
            if path.endswith("/stream"):
                status = await _stream_status(app, path, credentials[kind])
                if status != expected:
                    wrong.append(f"{row.method} {row.route} as {kind}: {status}, not {expected}")
                continue
            response = await client.request(
                row.method, path, json=row.body, params=row.params, headers=credentials[kind]
            )
            if response.status_code != expected:
                wrong.append(
                    f"{row.method} {row.route} as {kind}: {response.status_code}, "
                    f"expected {expected}: {response.text[:200]}"
                )
            elif expected >= 400:
                error = response.json()["error"]
                assert error["code"] in ("unauthenticated", "forbidden", "not_found"), error
                if expected == 403 and row.scope and kind not in ("owner", "other"):
                    # The refusal names the scope to ask for and how to get a key with it.
                    assert error["scope"] == row.scope, error
                    assert f"--scope {row.scope}" in error["message"], error
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("kind", ["none", "wrong", "expired", "revoked"])
async def test_refused_credentials_get_the_unauthenticated_body(
    client: httpx.AsyncClient, runtime: Runtime, kind: str
) -> None:
    credentials = await _credentials(runtime)
    response = await client.get("/v1/users/u-bob", headers=credentials[kind])
    me = await client.get("/v1/me/inbox", headers=credentials[kind])
    assert (response.status_code, me.status_code) == (401, 401)
    assert response.json()["error"]["code"] == me.json()["error"]["code"] == "unauthenticated"
