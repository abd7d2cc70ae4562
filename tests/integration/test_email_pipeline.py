"""Email end to end: planned, rendered, signed, caught or sent over real SMTP, unsubscribed."""

from __future__ import annotations

import base64
import contextlib
import email
import email.parser
import email.policy
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import dkim
import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from tests.conftest import eventually
from tests.smtp_sink import SmtpSink
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import tables
from tidings.kit.settings import Settings

RESET = {
    "type": "auth.password_reset",
    "idempotency_key": "r-1",
    "recipients": [{"id": "u-bob", "email": "bob@example.com"}],
    "data": {"reset_url": "https://app.example.com/reset/abc", "expires_in_minutes": 30},
}


async def deliveries_of(runtime: Runtime, event_id: str, channel: str) -> list[dict[str, Any]]:
    async with runtime.db.reader() as conn:
        every = tables.every_delivery()
        rows = await conn.execute(
            sa.select(every).where(every.c.event_id == event_id, every.c.channel == channel)
        )
        return [dict(r._mapping) for r in rows]


async def settled(runtime: Runtime, event_id: str, channel: str = "email") -> dict[str, Any]:
    """Wait until the event's one delivery on ``channel`` has left "planned"/"scheduled"."""

    async def done() -> bool:
        found = await deliveries_of(runtime, event_id, channel)
        return bool(found) and found[0]["state"] not in ("planned", "scheduled")

    await eventually(done)
    return (await deliveries_of(runtime, event_id, channel))[0]


def dkim_dns(runtime: Runtime) -> Callable[..., bytes]:
    key = serialization.load_pem_private_key(runtime.settings.dkim_key_pem, password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    name = f"{runtime.settings.dkim_selector}._domainkey.{runtime.settings.sender_domain}."

    def lookup(queried: bytes, timeout: int = 5) -> bytes:
        return record if queried.decode().rstrip(".") + "." == name else b""

    return lookup


async def publish(
    client: httpx.AsyncClient, producer: dict[str, str], event: dict[str, Any]
) -> str:
    response = await client.post("/v1/events", json=event, headers=producer)
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


async def test_the_canonical_event_is_mailed_signed_and_unsubscribable(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    event_id = await publish(client, producer, canonical_event)
    delivery = await settled(runtime, event_id)
    assert delivery["state"] == "sent"
    assert delivery["provider"] == "catcher"

    box = (await client.get("/v1/dev/mailbox", headers=producer)).json()["messages"]
    assert len(box) == 1
    raw = box[0]["raw"].encode()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "bob@example.com"
    assert str(message["Subject"]) == "Ann commented on Roadmap"
    assert message["Message-ID"] == delivery["message_id"]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert "Looks good" in text.get_content()
    assert html is not None
    assert "Looks good" in html.get_content()
    assert dkim.verify(raw, dnsfunc=dkim_dns(runtime))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # One click, no login: the URL from the header is all it takes.
    url = next(
        part.strip(" <>")
        for part in str(message["List-Unsubscribe"]).split(",")
        if part.strip(" <>").startswith("http")
    )
    path = urllib.parse.urlsplit(url).path
    page = await client.get(path)
    assert page.status_code == 200
    assert "<strong>Comments</strong>" in page.text  # the category by its title
    assert "<form" in page.text
    done = await client.post(path, content=b"List-Unsubscribe=One-Click")
    assert done.status_code == 200
    async with runtime.db.reader() as conn:
        preference = (await conn.execute(sa.select(tables.preference_sets))).one()
    assert (preference.owner_kind, preference.owner_id, preference.choices) == (
        "user",
        "u-bob",
        {"categories": {"comments": {"channels": {"email": False}}}},
    )

    # The next comment still reaches the inbox, but no longer the mailbox.
    second = await publish(client, producer, {**canonical_event, "idempotency_key": "c-2"})
    suppressed = await settled(runtime, second)
    assert (suppressed["state"], suppressed["reason"]) == ("suppressed", "opted_out")
    [in_app] = await deliveries_of(runtime, second, "in_app")
    assert in_app["state"] == "delivered"
    view = (await client.get(f"/v1/events/{second}", headers=producer)).json()
    assert {(d["channel"], d["state"], d["reason"]) for d in view["deliveries"]} == {
        ("email", "suppressed", "opted_out"),
        ("in_app", "delivered", None),
    }


async def test_a_forged_unsubscribe_token_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = runtime.composer.unsubscribe_for("u-bob", "comments", "bob@example.com").url
    forged = token.rsplit("/", 1)[1][:-2] + "xx"
    response = await client.post(f"/v1/unsubscribe/{forged}")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "token"
    async with runtime.db.reader() as conn:
        assert (await conn.execute(sa.select(tables.preference_sets))).all() == []


async def test_mandatory_mail_has_no_unsubscribe_and_ignores_opt_outs(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await runtime.preferences.set_channel("u-bob", "*", "email", enabled=False, source="test")
    event_id = await publish(client, producer, RESET)
    delivery = await settled(runtime, event_id)
    assert delivery["state"] == "sent"
    [caught] = (await client.get("/v1/dev/mailbox", headers=producer)).json()["messages"]
    message = email.message_from_bytes(caught["raw"].encode(), policy=email.policy.default)
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None


async def test_recipients_without_an_address_or_on_the_suppression_list_get_no_mail(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    no_address = await publish(
        client, producer, {**canonical_event, "idempotency_key": "n-1", "recipients": ["u-x"]}
    )
    assert (await settled(runtime, no_address))["reason"] == "no_address"
    async with runtime.db.transaction() as conn:
        from tidings.email.suppressions import SuppressionCause

        await runtime.suppressions.add(conn, "Bob@Example.com", SuppressionCause.HARD_BOUNCE)
    bounced = await publish(client, producer, {**canonical_event, "idempotency_key": "n-2"})
    assert (await settled(runtime, bounced))["reason"] == "address_suppressed"
    assert (await client.get("/v1/dev/mailbox", headers=producer)).json()["messages"] == []


async def test_preview_renders_a_locale(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    body = {"data": canonical_event["data"], "actor": {"id": "u-ann", "name": "Ann"}}
    english = await client.post("/v1/catalog/comment.created/preview", json=body, headers=producer)
    assert english.status_code == 200, english.text
    assert english.json()["subject"] == "Ann commented on Roadmap"
    french = await client.post(
        "/v1/catalog/comment.created/preview", json={**body, "locale": "fr-CA"}, headers=producer
    )
    assert french.json()["locale"] == "fr"
    assert french.json()["subject"] != english.json()["subject"]
    bad = await client.post(
        "/v1/catalog/comment.created/preview",
        json={
            **body,
            "data": {"board": {"id": "b", "name": "n"}, "comment": {"id": "c", "text": 5}},
        },
        headers=producer,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "data.comment.text"


# Over real SMTP -----------------------------------------------------------------------


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


@contextlib.asynccontextmanager
async def sending_to(
    sink: SmtpSink, make_settings: Callable[..., Settings], database_url: str, **extra: Any
) -> AsyncIterator[FastAPI]:
    """A running Tidings that sends its email over SMTP to ``sink``."""
    settings = make_settings(
        database_url=database_url,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
        **extra,
    )
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def smtp_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    async with sending_to(sink, make_settings, database_url, job_max_attempts=3) as app:
        yield app


@pytest.fixture
async def smtp_client(smtp_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=smtp_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


@pytest.fixture
async def smtp_producer(smtp_app: FastAPI) -> dict[str, str]:
    _key, plaintext = await smtp_app.state.auth.create_key("tests", ["*"])
    return {"Authorization": f"Bearer {plaintext}"}


async def test_transient_refusals_are_retried_then_sent(
    smtp_app: FastAPI,
    smtp_client: httpx.AsyncClient,
    smtp_producer: dict[str, str],
    sink: SmtpSink,
    canonical_event: dict[str, Any],
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    sink.respond_with(["451 4.3.0 try again later", "421 4.7.0 closing"])
    event_id = await publish(smtp_client, smtp_producer, canonical_event)
    delivery = await settled(runtime, event_id)
    assert delivery["state"] == "sent"
    [received] = await sink.wait_for(1)
    assert received.message["Message-ID"] == delivery["message_id"]
    assert dkim.verify(received.raw, dnsfunc=dkim_dns(runtime))
    view = (await smtp_client.get(f"/v1/events/{event_id}", headers=smtp_producer)).json()
    [email_delivery] = [d for d in view["deliveries"] if d["channel"] == "email"]
    states = [t["state"] for t in email_delivery["transitions"]]
    assert states == ["planned", "scheduled", "scheduled", "scheduled", "sent"]
    assert "451" in email_delivery["transitions"][2]["detail"]


async def test_a_permanent_refusal_fails_the_delivery_with_the_servers_reply(
    smtp_app: FastAPI,
    smtp_client: httpx.AsyncClient,
    smtp_producer: dict[str, str],
    sink: SmtpSink,
    canonical_event: dict[str, Any],
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    sink.respond_with(["550 5.1.1 no such user"])
    event_id = await publish(smtp_client, smtp_producer, canonical_event)
    delivery = await settled(runtime, event_id)
    assert (delivery["state"], delivery["reason"]) == ("failed", "rejected")
    assert "550 5.1.1 no such user" in delivery["detail"]
    assert sink.received == []


async def test_retries_run_out_into_the_dead_letters(
    smtp_app: FastAPI,
    smtp_client: httpx.AsyncClient,
    smtp_producer: dict[str, str],
    sink: SmtpSink,
    canonical_event: dict[str, Any],
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    sink.respond_with(["451 4.3.0 later"] * 3)
    event_id = await publish(smtp_client, smtp_producer, canonical_event)
    delivery = await settled(runtime, event_id)
    assert (delivery["state"], delivery["reason"]) == ("failed", "retries_exhausted")

    async def buried() -> bool:
        async with runtime.db.reader() as conn:
            return bool((await conn.execute(sa.select(tables.dead_letters))).all())

    await eventually(buried)
    async with runtime.db.reader() as conn:
        dead = (await conn.execute(sa.select(tables.dead_letters))).one()
    assert dead.kind == "email"
    assert dead.attempts == 3


async def test_an_address_no_header_can_carry_fails_that_delivery_only(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    event = {
        **canonical_event,
        "recipients": [
            {"id": "u-bob", "email": "bob..smith@example.com"},
            {"id": "u-cy", "email": "cy@example.com"},
        ],
    }
    event_id = await publish(client, producer, event)

    async def both_settled() -> bool:
        found = await deliveries_of(runtime, event_id, "email")
        return len(found) == 2 and all(d["state"] not in ("planned", "scheduled") for d in found)

    await eventually(both_settled)
    states = {
        d["user_id"]: (d["state"], d["reason"])
        for d in await deliveries_of(runtime, event_id, "email")
    }
    assert states == {"u-bob": ("failed", "invalid_message"), "u-cy": ("sent", None)}


def many_recipients(event: dict[str, Any], count: int) -> dict[str, Any]:
    return {
        **event,
        "recipients": [{"id": f"u-{n}", "email": f"u{n}@example.com"} for n in range(count)],
    }


async def test_a_slow_message_does_not_hold_back_the_rest_of_its_batch(
    smtp_app: FastAPI,
    smtp_client: httpx.AsyncClient,
    smtp_producer: dict[str, str],
    sink: SmtpSink,
    canonical_event: dict[str, Any],
) -> None:
    """The first message handed over hangs at the provider; the batch's other twenty
    go on through the remaining connections, their outcomes committed as they come,
    instead of waiting for the whole first window to be recorded."""
    runtime: Runtime = smtp_app.state.runtime
    sink.stall(5.0, count=1)
    event_id = await publish(smtp_client, smtp_producer, many_recipients(canonical_event, 21))
    received = await sink.wait_for(21, timeout=30)
    assert [r.stalled for r in received] == [0.0] * 20 + [5.0]

    async def all_sent() -> bool:
        found = await deliveries_of(runtime, event_id, "email")
        return len(found) == 21 and {d["state"] for d in found} == {"sent"}

    await eventually(all_sent)
    deliveries = await deliveries_of(runtime, event_id, "email")
    assert sorted(d["message_id"] for d in deliveries) == sorted(
        r.message["Message-ID"] for r in received
    )


@pytest.fixture
async def short_lease_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    async with sending_to(
        sink, make_settings, database_url, worker_lease_seconds=2.0, job_max_attempts=5
    ) as app:
        yield app


async def test_a_batch_that_runs_out_of_lease_gives_back_what_it_has_not_sent(
    short_lease_app: FastAPI,
    sink: SmtpSink,
    canonical_event: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a slow provider a batch cannot send everything within half its lease: the
    messages it has not handed over by then go back to the queue at once and are sent
    by a later batch, each exactly once."""
    runtime: Runtime = short_lease_app.state.runtime
    sink.stall(0.4)
    _key, plaintext = await runtime.auth.create_key("tests", ["*"])
    producer = {"Authorization": f"Bearer {plaintext}"}
    transport = httpx.ASGITransport(app=short_lease_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        event_id = await publish(client, producer, many_recipients(canonical_event, 24))

    async def all_sent() -> bool:
        found = await deliveries_of(runtime, event_id, "email")
        return len(found) == 24 and {d["state"] for d in found} == {"sent"}

    await eventually(all_sent, timeout=60)
    message_ids = [r.message["Message-ID"] for r in sink.received]
    assert len(message_ids) == len(set(message_ids)) == 24
    assert any("given back" in record.getMessage() for record in caplog.records)


INTERNATIONAL = {
    "u-idn": "bob@exämple.com",
    "u-utf8": "bøb@example.com",
    "u-both": "zoë@bücher.example",
    "u-plain": "cy@example.com",
}


async def publish_to_international_addresses(
    app: FastAPI, canonical_event: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The canonical event to one user per kind of address; their settled deliveries."""
    runtime: Runtime = app.state.runtime
    _key, plaintext = await runtime.auth.create_key("intl", ["*"])
    event = {
        **canonical_event,
        "recipients": [{"id": user, "email": address} for user, address in INTERNATIONAL.items()],
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tidings.test"
    ) as client:
        event_id = await publish(client, {"Authorization": f"Bearer {plaintext}"}, event)

    async def all_settled() -> bool:
        found = await deliveries_of(runtime, event_id, "email")
        return len(found) == 4 and all(d["state"] not in ("planned", "scheduled") for d in found)

    await eventually(all_settled)
    return {d["user_id"]: d for d in await deliveries_of(runtime, event_id, "email")}


async def test_international_addresses_are_delivered_over_smtputf8(
    make_settings: Callable[..., Settings], database_url: str, canonical_event: dict[str, Any]
) -> None:
    async with (
        SmtpSink(smtputf8=True) as sink,
        sending_to(sink, make_settings, database_url) as app,
    ):
        deliveries = await publish_to_international_addresses(app, canonical_event)
        assert {user: d["state"] for user, d in deliveries.items()} == dict.fromkeys(
            INTERNATIONAL, "sent"
        )
        received = await sink.wait_for(4)
        runtime: Runtime = app.state.runtime
    by_envelope = {r.rcpt_tos: r for r in received}
    # The domain travels in its ASCII form; a local part outside ASCII as it is.
    assert set(by_envelope) == {
        ("bob@xn--exmple-cua.com",),
        ("bøb@example.com",),
        ("zoë@xn--bcher-kva.example",),
        ("cy@example.com",),
    }
    for (rcpt,), message in by_envelope.items():
        assert ("SMTPUTF8" in message.mail_options) == (not rcpt.isascii())
        # RFC 6532: the headers are UTF-8 text.
        parsed = email.parser.Parser(policy=email.policy.default).parsestr(
            message.raw.decode("utf-8")
        )
        (to,) = parsed["To"].addresses
        assert to.addr_spec == rcpt
        assert dkim.verify(message.raw, dnsfunc=dkim_dns(runtime))


async def test_a_server_without_smtputf8_gets_what_it_can_carry_and_the_rest_fail_saying_why(
    make_settings: Callable[..., Settings], database_url: str, canonical_event: dict[str, Any]
) -> None:
    async with (
        SmtpSink(smtputf8=False) as sink,
        sending_to(sink, make_settings, database_url) as app,
    ):
        deliveries = await publish_to_international_addresses(app, canonical_event)
        received = await sink.wait_for(2)
    assert {user: d["state"] for user, d in deliveries.items()} == {
        "u-idn": "sent",
        "u-plain": "sent",
        "u-utf8": "failed",
        "u-both": "failed",
    }
    assert sorted(r.rcpt_tos for r in received) == [
        ("bob@xn--exmple-cua.com",),
        ("cy@example.com",),
    ]
    for user in ("u-utf8", "u-both"):
        assert deliveries[user]["reason"] == "rejected"
        assert "does not offer SMTPUTF8" in deliveries[user]["detail"]
