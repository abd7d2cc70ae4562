"""Status webhooks: signed messages to a real receiver, retries, disabling, the log,
ownership and filters."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import uvicorn

from tests.conftest import eventually
from tests.integration.test_client import free_port, serving
from tests.smtp_sink import write_certificates
from tidings.app.runtime import Runtime
from tidings.delivery import changes
from tidings.kit import errors
from tidings.kit.settings import Settings
from tidings.webhooks import addresses, outbox, posting, signing
from tidings.webhooks.service import WebhooksService


class Receiver:
    """A webhook receiver: answers with the statuses it is given in turn (then
    ``default``) and keeps every request."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.default = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            part = await receive()
            body += part.get("body", b"")
            if not part.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        status = self.answers.pop(0) if self.answers else self.default
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"thanks" if status < 300 else b"nope"})

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every request's payload, each checked against its signature."""
        return [
            standardwebhooks.Webhook(secret).verify(body, headers)
            for headers, body in self.requests
        ]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        webhooks_allow_private=True,
        webhooks_retry_seconds=[0.0, 0.0, 0.0],
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    async with serving(app, free_port()) as url:
        yield app, f"{url}/hooks"


async def key_headers(runtime: Runtime, *scopes: str) -> dict[str, str]:
    _key, plaintext = await runtime.auth.create_key("webhooks", list(scopes))
    return {"Authorization": f"Bearer {plaintext}"}


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, **filters: Any
) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **filters}, headers=headers)
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


async def publish(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    event: dict[str, Any],
    key: str,
    recipients: list[Any],
) -> str:
    response = await client.post(
        "/v1/events",
        json={**event, "idempotency_key": key, "recipients": recipients},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


async def log_of(
    client: httpx.AsyncClient, headers: dict[str, str], endpoint_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{endpoint_id}/messages", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_delivery_reaches_the_receiver_signed_and_in_order(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    endpoint = await register(client, producer, url, description="status")
    event_id = await publish(client, producer, canonical_event, "w-1", ["u-plain"])

    async def all_sent() -> bool:
        log = await log_of(client, producer, endpoint["id"])
        return len(log) == 4 and all(m["state"] == "succeeded" for m in log)

    # In-app planned → delivered, email planned → suppressed (the user has no address).
    await eventually(all_sent)
    payloads = app.verified(endpoint["secret"])
    steps = [(p["data"]["channel"], p["data"]["state"]) for p in payloads]
    assert sorted(steps) == sorted(
        [
            ("in_app", "planned"),
            ("in_app", "delivered"),
            ("email", "planned"),
            ("email", "suppressed"),
        ]
    )
    for channel in ("in_app", "email"):
        states = [state for c, state in steps if c == channel]
        assert states[0] == "planned"
    for payload in payloads:
        assert payload["type"] == "delivery.updated"
        assert payload["data"]["event_id"] == event_id
        assert payload["data"]["notification_type"] == "comment.created"
        assert payload["data"]["user_id"] == "u-plain"
    suppressed = next(p for p in payloads if p["data"]["state"] == "suppressed")
    assert suppressed["data"]["reason"]

    # The receiver got them in the order they were written, one id each.
    log = await log_of(client, producer, endpoint["id"])
    written = [m["msg_id"] for m in reversed(log)]
    assert [headers["webhook-id"] for headers, _body in app.requests] == written
    assert len(set(written)) == 4
    assert all(len(m["log"]) == 1 and m["log"][0]["status"] == 200 for m in log)
    # The producer learns the size of the receiver's answer, never what it said.
    assert log[0]["log"][0]["response"] == "6 bytes"
    assert "thanks" not in json.dumps(log)

    # A test message goes the same way.
    response = await client.post(f"/v1/webhooks/{endpoint['id']}/test", headers=producer)
    assert response.status_code == 202, response.text
    assert response.json()["type"] == "webhook.test"

    async def tested() -> bool:
        return len(app.requests) == 5

    await eventually(tested)
    last = app.verified(endpoint["secret"])[-1]
    assert last == {
        "type": "webhook.test",
        "timestamp": last["timestamp"],
        "data": {"endpoint_id": endpoint["id"]},
    }


async def test_a_receiver_that_fails_twice_gets_the_message_on_the_third_attempt(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    app.answers = [500, 500]
    endpoint = await register(client, producer, url, states=["delivered"])
    await publish(client, producer, canonical_event, "w-2", ["u-plain"])

    async def succeeded() -> bool:
        log = await log_of(client, producer, endpoint["id"])
        return len(log) == 1 and log[0]["state"] == "succeeded"

    await eventually(succeeded)
    (message,) = await log_of(client, producer, endpoint["id"])
    assert message["attempts"] == 3
    assert [a["status"] for a in message["log"]] == [500, 500, 200]
    assert [a["error"] for a in message["log"]] == ["HTTP 500", "HTTP 500", None]
    # Three tries of the same message: one id, each signed afresh and valid.
    assert {headers["webhook-id"] for headers, _body in app.requests} == {message["msg_id"]}
    assert [p["data"]["state"] for p in app.verified(endpoint["secret"])] == ["delivered"] * 3
    found = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=producer)).json()
    assert found["consecutive_failures"] == 0
    assert "secret" not in found


async def test_an_endpoint_that_keeps_failing_is_disabled_and_reported(
    make_settings: Callable[..., Settings],
    database_url: str,
    receiver: tuple[Receiver, str],
    canonical_event: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tidings.app.asgi import create_app
    from tidings.app.wiring import build_runtime

    app, url = receiver
    app.default = 500
    settings = make_settings(
        database_url=database_url,
        webhooks_allow_private=True,
        webhooks_retry_seconds=[0.0],
        webhooks_disable_after=3,
    )
    tidings = create_app(runtime=build_runtime(settings))
    async with (
        tidings.router.lifespan_context(tidings),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=tidings), base_url="http://tidings.test"
        ) as client,
    ):
        runtime: Runtime = tidings.state.runtime
        producer = await key_headers(runtime, "*")
        endpoint = await register(client, producer, url, states=["planned"])
        with caplog.at_level(logging.WARNING):
            await publish(client, producer, canonical_event, "w-3a", ["u-plain"])
            await publish(client, producer, canonical_event, "w-3b", ["u-plain"])

            async def disabled() -> bool:
                found = await client.get(f"/v1/webhooks/{endpoint['id']}", headers=producer)
                return found.json()["enabled"] is False

            await eventually(disabled)
        found = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=producer)).json()
        assert found["disabled_at"] is not None
        assert found["disabled_reason"].startswith("3 failed attempts in a row")
        assert found["consecutive_failures"] == 3
        assert any(
            endpoint["id"] in r.getMessage() and r.levelno == logging.WARNING
            for r in caplog.records
        )
        metrics = (await client.get("/metrics")).text
        assert "tidings_webhook_endpoints_disabled_total 1.0" in metrics

        # The first message used both its attempts; the second its first; the rest wait.
        log = await log_of(client, producer, endpoint["id"])
        oldest_first = list(reversed(log))
        assert [(m["state"], m["attempts"]) for m in oldest_first] == [
            ("failed", 2),
            ("pending", 1),
            ("pending", 0),
            ("pending", 0),
        ]
        assert len(app.requests) == 3

        # Turned on again, it forgets its failures and sends what waited.
        app.default = 200
        response = await client.patch(
            f"/v1/webhooks/{endpoint['id']}", json={"enabled": True}, headers=producer
        )
        assert response.status_code == 200, response.text
        assert response.json()["consecutive_failures"] == 0
        assert response.json()["disabled_reason"] is None

        async def caught_up() -> bool:
            log = await log_of(client, producer, endpoint["id"])
            return [m["state"] for m in log] == ["succeeded"] * 3 + ["failed"]

        await eventually(caught_up)
        assert len(app.verified(endpoint["secret"])) == 6


def test_forged_altered_and_replayed_signatures_fail_verification() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    now = dt.datetime.now(dt.UTC)
    body = signing.body_of(
        {"type": "delivery.updated", "timestamp": now.isoformat(), "data": {"state": "sent"}}
    )
    headers = signing.signed_headers([secret], "msg_1", now, body)
    verify = standardwebhooks.Webhook(secret).verify
    assert verify(body, headers)["data"] == {"state": "sent"}

    altered = body.replace('"sent"', '"delivered"')
    forged = {
        **headers,
        "webhook-signature": signing.signed_headers(
            ["whsec_" + "c2VjcmV0IG9mIHNvbWVvbmUgZWxzZQ=="], "msg_1", now, body
        )["webhook-signature"],
    }
    other_id = {**headers, "webhook-id": "msg_2"}
    old = now - dt.timedelta(minutes=10)
    replayed = signing.signed_headers([secret], "msg_1", old, body)
    for tampered_body, tampered_headers in (
        (altered, headers),
        (body, forged),
        (body, other_id),
        (body, replayed),
    ):
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            verify(tampered_body, tampered_headers)
    assert json.loads(body)["type"] == "delivery.updated"


async def test_a_key_sees_and_changes_only_its_own_endpoints(
    client: httpx.AsyncClient, runtime: Runtime, receiver: tuple[Receiver, str]
) -> None:
    _app, url = receiver
    ann = await key_headers(runtime, "comment.*")
    bob = await key_headers(runtime, "mention.*")
    ops = await key_headers(runtime, "admin")
    ann_endpoint = await register(client, ann, url)
    bob_endpoint = await register(client, bob, url)

    def ids_of(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["items"]]

    assert ids_of(await client.get("/v1/webhooks", headers=ann)) == [ann_endpoint["id"]]
    assert ids_of(await client.get("/v1/webhooks", headers=bob)) == [bob_endpoint["id"]]
    assert set(ids_of(await client.get("/v1/webhooks", headers=ops))) == {
        ann_endpoint["id"],
        bob_endpoint["id"],
    }
    base = f"/v1/webhooks/{ann_endpoint['id']}"
    for method, path, body in (
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("GET", f"{base}/messages", None),
        ("POST", f"{base}/test", None),
    ):
        response = await client.request(method, path, json=body, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get(base, headers=ops)).status_code == 200

    # The owner rotates its secret: a new one, shown once.
    rotated = (await client.post(f"{base}/rotate-secret", headers=ann)).json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != ann_endpoint["secret"]
    assert (await client.delete(base, headers=ann)).status_code == 204
    assert (await client.get(base, headers=ann)).status_code == 404

    # Bad addresses are refused with the field named.
    for bad in ("ftp://example.com/hook", "not a url", "https://user:pw@example.com/"):
        response = await client.post("/v1/webhooks", json={"url": bad}, headers=ann)
        assert response.status_code == 422, bad
        assert response.json()["error"]["field"] == "url"
    response = await client.post("/v1/webhooks", json={"url": url, "states": ["nope"]}, headers=ann)
    assert response.status_code == 422


async def test_internal_addresses_are_refused_unless_allowed(runtime: Runtime) -> None:
    key, _plaintext = await runtime.auth.create_key("strict", ["*"])
    running = next(
        heard for heard in changes.listeners(runtime.db) if isinstance(heard, outbox.Outbox)
    )
    strict = WebhooksService(
        runtime.db,
        runtime.clock,
        runtime.queue,
        running,
        allow_private=False,
    )
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "http://100.100.100.200/latest/meta-data",
        "http://192.0.0.8/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[fec0::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest",
    ):
        with pytest.raises(errors.Invalid) as refused:
            await strict.create(key, url=url, description=None, types=None, states=None)
        assert refused.value.field == "url"
        assert "TIDINGS_WEBHOOKS_ALLOW_PRIVATE=true" in refused.value.message


async def test_endpoints_hear_only_the_types_their_filter_and_key_allow(
    client: httpx.AsyncClient,
    runtime: Runtime,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    _app, url = receiver
    comments = await register(client, producer, f"{url}/comments", types=["comment.*"])
    mentions = await register(client, producer, f"{url}/mentions", types=["mention.*"])
    narrow = await key_headers(runtime, "mention.*")
    unscoped = await register(client, narrow, f"{url}/narrow")
    await publish(client, producer, canonical_event, "w-5", ["u-plain"])

    async def heard() -> bool:
        return len(await log_of(client, producer, comments["id"])) == 4

    # The messages of one transition are written together: once the comment endpoint
    # has its four, the others have all they will ever get for this event.
    await eventually(heard)
    assert await log_of(client, producer, mentions["id"]) == []
    assert await log_of(client, narrow, unscoped["id"]) == []


async def test_after_a_rotation_the_old_secret_verifies_until_its_grace_ends(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    receiver: tuple[Receiver, str],
    runtime: Runtime,
) -> None:
    app, url = receiver
    first = await register(client, producer, url, states=["delivered"])
    base = f"/v1/webhooks/{first['id']}"

    async def sent(count: int) -> None:
        async def arrived() -> bool:
            return len(app.requests) == count

        await eventually(arrived)

    # Rotated with the default grace: messages carry both signatures, so a receiver
    # still on the old secret and one already on the new one both accept them.
    rotated = await client.post(f"{base}/rotate-secret", headers=producer)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["secret"] != first["secret"]
    until = dt.datetime.fromisoformat(second["previous_secret_until"])
    assert dt.timedelta(hours=23) < until - runtime.clock.now() <= dt.timedelta(hours=24)
    await publish(client, producer, canonical_event, "g-1", ["u-plain"])
    await sent(1)
    assert len(app.verified(first["secret"])) == len(app.verified(second["secret"])) == 1
    assert len(app.requests[0][0]["webhook-signature"].split(" ")) == 2

    # Rotated again with no grace: only the newest secret signs.
    rotated = await client.post(
        f"{base}/rotate-secret", json={"grace_seconds": 0}, headers=producer
    )
    third = rotated.json()
    assert third["previous_secret_until"] is None
    app.requests.clear()
    await publish(client, producer, canonical_event, "g-2", ["u-plain"])
    await sent(1)
    assert len(app.verified(third["secret"])) == 1
    for old in (first["secret"], second["secret"]):
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            app.verified(old)

    too_long = await client.post(
        f"{base}/rotate-secret", json={"grace_seconds": 8 * 86_400}, headers=producer
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field"] == "grace_seconds"


def test_the_previous_secret_signs_only_while_its_grace_lasts() -> None:
    now = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    endpoint = {
        "secret": "whsec_new",
        "previous_secret": "whsec_old",
        "previous_secret_until": now + dt.timedelta(seconds=1),
    }
    assert signing.signing_secrets(endpoint, now) == ["whsec_new", "whsec_old"]
    later = now + dt.timedelta(seconds=1)
    assert signing.signing_secrets(endpoint, later) == ["whsec_new"]


@contextlib.asynccontextmanager
async def strict_tidings(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """Tidings as deployed: endpoints may not point inside its own network."""
    from tidings.app.asgi import create_app
    from tidings.app.wiring import build_runtime

    settings = make_settings(
        database_url=database_url,
        webhooks_allow_private=False,
        webhooks_retry_seconds=[0.0],
    )
    tidings = create_app(runtime=build_runtime(settings))
    async with (
        tidings.router.lifespan_context(tidings),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=tidings), base_url="http://tidings.test"
        ) as client,
    ):
        yield client, await key_headers(tidings.state.runtime, "*")


def resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Names resolve as ``answers`` says, at the moment they are asked."""

    async def resolve(host: str, port: int) -> list[str]:
        return list(answers[host])

    monkeypatch.setattr(addresses, "resolve", resolve)


async def test_an_internal_address_is_refused_over_http_naming_the_setting(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with strict_tidings(make_settings, database_url) as (client, headers):
        for url in ("http://100.100.100.200/latest", "https://[fec0::1]/hook"):
            response = await client.post("/v1/webhooks", json={"url": url}, headers=headers)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["field"] == "url"
            assert "TIDINGS_WEBHOOKS_ALLOW_PRIVATE" in error["message"]


async def test_a_name_that_turns_internal_after_registration_is_not_sent_to(
    make_settings: Callable[..., Settings],
    database_url: str,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, url = receiver
    answers = {"hooks.example": ["93.184.216.34"]}
    resolving(monkeypatch, answers)
    async with strict_tidings(make_settings, database_url) as (client, headers):
        hook = url.replace("127.0.0.1", "hooks.example")
        endpoint = await register(client, headers, hook)
        # The name now points at the deployment itself (DNS rebinding).
        answers["hooks.example"] = ["127.0.0.1"]
        response = await client.post(f"/v1/webhooks/{endpoint['id']}/test", headers=headers)
        assert response.status_code == 202, response.text

        async def given_up() -> bool:
            log = await log_of(client, headers, endpoint["id"])
            return log[0]["state"] == "failed"

        await eventually(given_up)
        (message,) = await log_of(client, headers, endpoint["id"])
        assert [a["error"] for a in message["log"]] == [
            "refused: 127.0.0.1 is an internal address"
        ] * 2
        assert app.requests == []


async def test_a_message_goes_to_the_address_resolved_with_the_hosts_own_name(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, url = receiver
    resolving(monkeypatch, {"hooks.example": ["127.0.0.1"]})
    hook = url.replace("127.0.0.1", "hooks.example")
    endpoint = await register(client, producer, hook)
    response = await client.post(f"/v1/webhooks/{endpoint['id']}/test", headers=producer)
    assert response.status_code == 202, response.text

    async def arrived() -> bool:
        return len(app.requests) == 1

    await eventually(arrived)
    headers, _body = app.requests[0]
    assert headers["host"] == hook.split("/")[2]
    assert app.verified(endpoint["secret"])[0]["type"] == "webhook.test"


async def test_https_to_the_checked_address_verifies_the_certificate_of_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, cert_file, key_file = write_certificates(tmp_path, ("hooks.example",))
    app = Receiver()
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="error",
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started))
        resolving(monkeypatch, {"hooks.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
        trusted = ssl.create_default_context(cafile=str(ca_file))
        async with posting.Clients(10.0, verify=trusted) as clients:
            sent = await posting.post(
                clients,
                f"https://hooks.example:{port}/hooks",
                b"{}",
                {"content-type": "application/json"},
                allow_private=True,
            )
            assert (sent.status, sent.error, sent.response) == (200, None, "6 bytes")
            assert app.requests[0][0]["host"] == f"hooks.example:{port}"

            # The certificate is checked against the URL's name, not the address.
            wrong = await posting.post(
                clients, f"https://other.example:{port}/hooks", b"{}", {}, allow_private=True
            )
            assert wrong.status is None
            assert "certificate" in (wrong.error or "").lower()
            assert len(app.requests) == 1
    finally:
        server.should_exit = True
        await task


async def test_a_key_registers_at_most_its_bound_of_endpoints(
    make_settings: Callable[..., Settings], database_url: str, receiver: tuple[Receiver, str]
) -> None:
    """One key cannot multiply every delivery's webhook work without end; the bound is
    per key, so another team's key still registers."""
    from tidings.app.asgi import create_app
    from tidings.app.wiring import build_runtime

    _app, url = receiver
    settings = make_settings(
        database_url=database_url, webhooks_allow_private=True, webhooks_max_per_key=3
    )
    tidings = create_app(runtime=build_runtime(settings))
    async with (
        tidings.router.lifespan_context(tidings),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=tidings), base_url="http://tidings.test"
        ) as client,
    ):
        runtime = tidings.state.runtime
        ann, bob = await key_headers(runtime, "comment.*"), await key_headers(runtime, "mention.*")
        made = [await register(client, ann, url) for _ in range(3)]
        refused = await client.post("/v1/webhooks", json={"url": url}, headers=ann)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("limit_reached", "url")
        assert "TIDINGS_WEBHOOKS_MAX_PER_KEY" in error["message"]
        await register(client, bob, url)
        gone = await client.delete(f"/v1/webhooks/{made[0]['id']}", headers=ann)
        assert gone.status_code == 204
        await register(client, ann, url)
