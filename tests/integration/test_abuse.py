"""Hostile input: markup and template syntax in payloads, header injection, oversized and
deeply nested bodies, unicode edge cases, forged tokens, and request rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.exceptions import RedisError

from tests.conftest import eventually, service_missing
from tests.smtp_sink import SmtpSink
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import tokens
from tidings.kit.settings import Settings

REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SCRIPT = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def commented(text: str, *, key: str = "abuse-1", actor: str = "Ann") -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": actor},
        "recipients": [{"id": "u-bob", "email": "bob@example.com"}],
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c-1", "text": text}},
    }


async def test_markup_in_a_payload_is_escaped_in_email_and_plain_in_the_inbox(
    client: httpx.AsyncClient, producer: dict[str, str], user_headers: Any
) -> None:
    event = commented(SCRIPT + " {{ 7*7 }}")
    preview = await client.post(
        "/v1/catalog/comment.created/preview",
        json={"data": event["data"], "actor": event["actor"]},
        headers=producer,
    )
    assert preview.status_code == 200, preview.text
    rendered = preview.json()
    assert "<script>" not in rendered["html"]
    assert "<img" not in rendered["html"]
    assert "&lt;script&gt;" in rendered["html"]
    assert "{{ 7*7 }}" in rendered["text"]
    assert "49" not in rendered["text"]

    assert (await client.post("/v1/events", json=event, headers=producer)).status_code == 202
    bob = user_headers("u-bob")

    async def arrived() -> bool:
        return bool((await client.get("/v1/me/inbox", headers=bob)).json()["items"])

    await eventually(arrived)
    [item] = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]
    # The inbox API hands out plain text; the widget renders it as text, never as HTML.
    assert item["body"] == SCRIPT + " {{ 7*7 }}"


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


@pytest.fixture
async def smtp_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=database_url,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
        job_max_attempts=2,
    )
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


async def test_line_breaks_never_become_extra_mail_headers(
    smtp_app: FastAPI, sink: SmtpSink
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    _key, plaintext = await runtime.auth.create_key("tests", ["*"])
    producer = {"Authorization": f"Bearer {plaintext}"}
    injected = "Ann\r\nBcc: eve@evil.example\r\nX-Injected: yes"
    event = commented("hello", actor=injected)
    event["recipients"] = [
        {"id": "u-bob", "email": "bob@example.com", "name": "Bob\r\nBcc: mallory@evil.example"}
    ]
    transport = httpx.ASGITransport(app=smtp_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        published = await client.post("/v1/events", json=event, headers=producer)
        assert published.status_code in (202, 422), published.text
        if published.status_code == 422:
            return
        # An address with a line break in it is refused outright.
        bad_address = copy.deepcopy(event)
        bad_address["idempotency_key"] = "abuse-2"
        bad_address["recipients"] = [{"id": "u-eve", "email": "eve@example.com\r\nBcc: x@y.z"}]
        refused = await client.post("/v1/events", json=bad_address, headers=producer)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"]

    [received] = await sink.wait_for(1)
    message = received.message
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert "\n" not in str(message["Subject"]).replace("\r\n ", " ").replace("\n ", " ")
    assert {address.lower() for address in received.rcpt_tos} == {"bob@example.com"}
    headers = received.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in headers
    assert b"\nX-Injected:" not in headers


async def test_an_oversized_body_is_413_json(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    big = commented("x" * (runtime.settings.max_body_bytes + 10))
    response = await client.post("/v1/events", json=big, headers=producer)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("depth", [10_000, 100_000])
async def test_deeply_nested_json_is_a_clear_4xx(
    client: httpx.AsyncClient, producer: dict[str, str], depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    body = (
        '{"type": "comment.created", "idempotency_key": "deep", "recipients": [{"id": "u-bob"}],'
        f' "data": {{"board": {{"id": "b", "name": "n"}}, "comment": {{"id": "c", "text": "t"}},'
        f' "deep": {nested}}}}}'
    )
    response = await client.post(
        "/v1/events",
        content=body,
        headers={**producer, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


UNICODE_NAMES = [
    "\u202eevil\u202c",  # right-to-left override
    "Zoe\u0301 e\u0301\u0301\u0301",  # combining accents
    "Ann \U0001f600\U0001f469\u200d\U0001f4bb",  # emoji, zero-width joiner
    "nul\x00byte",
    "\ufeffbom",
    "a" * 5000,
    "\ud7ff\ue000\U0010ffff",
]
UNICODE_ADDRESSES = [
    "bob@exämple.com",
    "bob@xn--exmple-cua.com",
    "josé@example.com",
    "bob\x00@example.com",
    "bob@example.com\u202e",
    "\U0001f600@example.com",
    "bob@@example.com",
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
async def test_unicode_in_names_is_kept_or_refused_never_a_crash(
    client: httpx.AsyncClient, producer: dict[str, str], name: str
) -> None:
    response = await client.put("/v1/users/u-uni", json={"name": name}, headers=producer)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert (await client.get("/v1/users/u-uni", headers=producer)).json()["name"] == name
    else:
        assert response.json()["error"]["field"]


@pytest.mark.parametrize("address", UNICODE_ADDRESSES)
async def test_unicode_in_addresses_is_kept_or_refused_never_a_crash(
    client: httpx.AsyncClient, producer: dict[str, str], address: str
) -> None:
    profile = await client.put("/v1/users/u-uni", json={"email": address}, headers=producer)
    assert profile.status_code in (200, 422), profile.text
    event = commented("hi", key=f"uni-{address!r}")
    event["recipients"] = [{"id": "u-uni2", "email": address}]
    published = await client.post("/v1/events", json=event, headers=producer)
    assert published.status_code in (202, 422), published.text


async def test_forged_and_expired_user_tokens_are_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    now = runtime.clock.now()
    hour = dt.timedelta(hours=1)
    forged = tokens.issue_user_token("another-secret-" + "y" * 32, "u-bob", ttl=hour, now=now)
    expired = tokens.issue_user_token(
        runtime.settings.signing_secret, "u-bob", ttl=dt.timedelta(minutes=1), now=now - hour
    )
    unsigned = jwt.encode(
        {"sub": "u-bob", "aud": tokens.AUDIENCE, "exp": now + hour}, key="", algorithm="none"
    )
    wrong_audience = jwt.encode(
        {"sub": "u-bob", "aud": "someone-else", "exp": now + hour},
        runtime.settings.signing_secret,
        algorithm="HS256",
    )
    for token in (forged, expired, unsigned, wrong_audience, forged[:-4]):
        for headers, params in (({"Authorization": f"Bearer {token}"}, {}), ({}, {"token": token})):
            response = await client.get("/v1/me/inbox", headers=headers, params=params)
            assert response.status_code == 401, (token, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"


async def test_forged_unsubscribe_links_change_nothing(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    link = runtime.composer.unsubscribe_for("u-bob", "comments", "bob@example.com").url
    token = link.rsplit("/", 1)[1]
    forged_token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (forged_token, "not-a-token", token + "x", "%00", "a" * 2000):
        page = await client.post(f"/v1/unsubscribe/{bad}")
        assert 400 <= page.status_code < 500, page.text
    preferences = await client.get("/v1/users/u-bob/preferences", headers=producer)
    assert preferences.status_code == 200
    assert "unsubscribe_link" not in preferences.text

    # The genuine link, replayed, stays one unsubscription.
    first = await client.post(f"/v1/unsubscribe/{token}")
    again = await client.post(f"/v1/unsubscribe/{token}")
    assert (first.status_code, again.status_code) == (200, 200)


# Rate limits ---------------------------------------------------------------------------


@pytest.fixture
async def limited_app(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=database_url, rate_limit_per_second=1, rate_limit_burst=3)
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


async def test_a_burst_over_the_limit_gets_429_then_passes_after_retry_after(
    limited_app: FastAPI,
) -> None:
    runtime: Runtime = limited_app.state.runtime
    _key, plaintext = await runtime.auth.create_key("busy", ["*", "users:read"])
    _other, other_plaintext = await runtime.auth.create_key("quiet", ["*", "users:read"])
    busy = {"Authorization": f"Bearer {plaintext}"}
    transport = httpx.ASGITransport(app=limited_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        answers = [await client.get("/v1/users/u-bob", headers=busy) for _ in range(6)]
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(429) >= 2
        assert statuses[:3] == [404, 404, 404]
        limited = next(answer for answer in answers if answer.status_code == 429)
        assert limited.json()["error"]["code"] == "rate_limited"
        retry_after = int(limited.headers["Retry-After"])
        assert retry_after >= 1

        # Another key has its own allowance.
        quiet = {"Authorization": f"Bearer {other_plaintext}"}
        assert (await client.get("/v1/users/u-bob", headers=quiet)).status_code == 404

        await asyncio.sleep(retry_after)
        assert (await client.get("/v1/users/u-bob", headers=busy)).status_code == 404


async def test_end_user_tokens_are_limited_per_user(limited_app: FastAPI) -> None:
    runtime: Runtime = limited_app.state.runtime
    bob = {"Authorization": f"Bearer {runtime.auth.issue_user_token('u-bob')}"}
    eve = {"Authorization": f"Bearer {runtime.auth.issue_user_token('u-eve')}"}
    transport = httpx.ASGITransport(app=limited_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        statuses = [
            (await client.get("/v1/me/inbox/counts", headers=bob)).status_code for _ in range(6)
        ]
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses
        assert (await client.get("/v1/me/inbox/counts", headers=eve)).status_code == 200


@contextlib.asynccontextmanager
async def api_process(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


async def test_shared_limits_hold_across_api_processes(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Two API processes with their buckets in Redis: a key's burst of three is spent
    across both, where per-process buckets would have allowed six."""
    probe = aioredis.Redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except (OSError, RedisError) as exc:
        service_missing(f"Redis at {REDIS_URL}", exc)
    finally:
        await probe.aclose()
    settings = make_settings(
        database_url=database_url,
        rate_limit_per_second=0.2,
        rate_limit_burst=3,
        rate_limit_backend="redis",
        redis_url=REDIS_URL,
        redis_prefix=f"t{uuid.uuid4().hex[:10]}",
    )
    async with api_process(settings) as first, api_process(settings) as second:
        _key, plaintext = await first.state.runtime.auth.create_key("busy", ["*", "users:read"])
        busy = {"Authorization": f"Bearer {plaintext}"}
        statuses = []
        for app in (first, second, first, second, first, second):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as c:
                statuses.append((await c.get("/v1/users/u-bob", headers=busy)).status_code)
        assert statuses == [404, 404, 404, 429, 429, 429]


async def test_shared_limits_let_requests_through_when_redis_is_down(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = make_settings(
        database_url=database_url,
        rate_limit_per_second=0.2,
        rate_limit_burst=1,
        rate_limit_backend="redis",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
    )
    async with api_process(settings) as app:
        _key, plaintext = await app.state.runtime.auth.create_key("busy", ["*", "users:read"])
        busy = {"Authorization": f"Bearer {plaintext}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
            statuses = [
                (await client.get("/v1/users/u-bob", headers=busy)).status_code for _ in range(3)
            ]
    assert statuses == [404, 404, 404]
    warnings = [r for r in caplog.records if "rate limits are off" in r.getMessage()]
    assert len(warnings) == 1


async def test_nul_in_ids_and_event_data_is_refused_or_kept_never_a_crash(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    for path in ("/v1/users/u%00x", "/v1/users/u%00x/preferences"):
        response = await client.get(path, headers=producer)
        assert response.status_code == 422, response.text
    event = commented("nul\x00in the text", key="nul-1")
    published = await client.post("/v1/events", json=event, headers=producer)
    assert published.status_code == 422, published.text
    assert published.json()["error"]["field"] == "data.comment.text"
    for query in ("?limit=1%00", "?cursor=%00"):
        refused_query = await client.get(f"/v1/dead-letters{query}", headers=producer)
        assert refused_query.status_code == 422, refused_query.text
    # A backslash followed by "u0000" is text, not a NUL: it is kept.
    kept = await client.post(
        "/v1/events", json=commented("C:\\u0000", key="nul-3"), headers=producer
    )
    assert kept.status_code == 202, kept.text
    actor = commented("hi", key="nul-2")
    actor["actor"]["id"] = "u\x00ann"
    refused = await client.post("/v1/events", json=actor, headers=producer)
    assert refused.status_code == 422, refused.text
