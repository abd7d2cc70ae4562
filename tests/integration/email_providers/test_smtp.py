"""The SMTP provider against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import eventually
from tests.integration.email_providers.conftest import (
    SENDER,
    make_email,
    settings_for,
    smtp_provider,
)
from tests.smtp_sink import DROP, SmtpSink
from tidings.email.providers._ratelimit import RateLimiter
from tidings.email.providers.base import PermanentSendError, TransientSendError
from tidings.email.providers.smtp import SmtpProvider, SmtpSettings


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as running:
        yield running


@pytest.fixture
async def provider(sink: SmtpSink) -> AsyncIterator[SmtpProvider]:
    async with smtp_provider(settings_for(sink, pool_size=2)) as opened:
        yield opened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_delivers_the_message_as_given(sink: SmtpSink, provider: SmtpProvider) -> None:
    email = make_email(1, recipient="ann@example.com", subject="Ann, you have mail")

    accepted = await provider.send(email)

    assert accepted.provider == "smtp"
    assert accepted.reply == "250 2.0.0 Ok: queued as S1"
    assert accepted.provider_id == "S1"
    [received] = await sink.wait_for(1)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ("ann@example.com",)
    assert received.message["Subject"] == "Ann, you have mail"
    assert received.message["Message-ID"] == email.message_id
    assert received.message.get_content() == "Hello number 1.\n"
    assert received.raw == email.raw


async def test_sequential_sends_reuse_one_connection(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    for n in range(10):
        await provider.send(make_email(n))

    received = await sink.wait_for(10)
    assert {r.connection for r in received} == {1}
    assert sink.connections_opened == provider.connections_opened == 1


async def test_concurrent_sends_share_the_pool(sink: SmtpSink, provider: SmtpProvider) -> None:
    await asyncio.gather(*(provider.send(make_email(n)) for n in range(20)))

    received = await sink.wait_for(20)
    assert len({r.message["Message-ID"] for r in received}) == 20
    assert sink.connections_opened == provider.connections_opened == 2


async def test_pool_size_bounds_connections(sink: SmtpSink) -> None:
    async with smtp_provider(settings_for(sink, pool_size=3)) as provider:
        await asyncio.gather(*(provider.send(make_email(n)) for n in range(30)))
        await asyncio.gather(*(provider.send(make_email(n)) for n in range(30, 60)))

    await sink.wait_for(60)
    assert sink.connections_opened == 3


async def test_starttls_then_auth() -> None:
    async with (
        SmtpSink(security="starttls", auth=("tidings", "s3cret")) as sink,
        smtp_provider(settings_for(sink, username="tidings", password="s3cret")) as provider,
    ):
        await provider.send(make_email(1))
        await provider.send(make_email(2))
        received = await sink.wait_for(2)

    assert [(r.tls, r.username) for r in received] == [(True, "tidings"), (True, "tidings")]
    assert sink.connections_opened == 1


async def test_implicit_tls_with_auth() -> None:
    async with (
        SmtpSink(security="tls", auth=("tidings", "s3cret")) as sink,
        smtp_provider(settings_for(sink, username="tidings", password="s3cret")) as provider,
    ):
        await provider.send(make_email(1))
        [received] = await sink.wait_for(1)

    assert received.tls
    assert received.username == "tidings"


async def test_wrong_password_is_transient() -> None:
    """Bad credentials hold for every message: retry (or fail over), never drop this one."""
    async with (
        SmtpSink(security="starttls", auth=("tidings", "s3cret")) as sink,
        smtp_provider(settings_for(sink, username="tidings", password="wrong")) as provider,
    ):
        with pytest.raises(TransientSendError) as raised:
            await provider.send(make_email(1))

    assert raised.value.code == 535
    assert raised.value.reply.startswith("535 ")
    assert sink.received == []


async def test_plain_text_to_a_server_requiring_starttls_is_transient() -> None:
    async with (
        SmtpSink(security="starttls") as sink,
        smtp_provider(settings_for(sink, security="none")) as provider,
    ):
        with pytest.raises(TransientSendError) as raised:
            await provider.send(make_email(1))

    assert raised.value.code == 530


async def test_untrusted_certificate_is_refused() -> None:
    async with SmtpSink(security="tls") as sink:
        async with smtp_provider(settings_for(sink, cert_bundle=None)) as provider:
            with pytest.raises(TransientSendError, match="cannot connect"):
                await provider.send(make_email(1))
        # Trusting any certificate is possible, and then it sends.
        async with smtp_provider(
            settings_for(sink, cert_bundle=None, validate_certs=False)
        ) as provider:
            await provider.send(make_email(2))
        await sink.wait_for(1)


@pytest.mark.parametrize(
    ("stage", "reply", "error", "new_connection"),
    [
        ("DATA", "451 4.3.0 Try again later", TransientSendError, False),
        ("DATA", "452 4.3.1 Insufficient system storage", TransientSendError, False),
        ("RCPT", "450 4.2.1 Mailbox busy", TransientSendError, False),
        ("MAIL", "421 4.7.0 Closing connection", TransientSendError, True),
        ("DATA", "421 4.3.2 Shutting down", TransientSendError, True),
        ("RCPT", "550 5.1.1 No such user here", PermanentSendError, False),
        ("MAIL", "553 5.1.8 Sender address rejected", PermanentSendError, False),
        ("DATA", "554 5.7.1 Message rejected as spam", PermanentSendError, False),
    ],
)
async def test_refusals_are_classified_with_the_servers_reply(
    sink: SmtpSink,
    provider: SmtpProvider,
    stage: Any,
    reply: str,
    error: type[Exception],
    new_connection: bool,
) -> None:
    await provider.send(make_email(1))
    sink.respond_with([reply], at=stage)

    with pytest.raises(error) as raised:
        await provider.send(make_email(2))
    assert isinstance(raised.value, TransientSendError | PermanentSendError)
    assert raised.value.reply == reply
    assert raised.value.code == int(reply[:3])
    assert raised.value.provider == "smtp"

    # The server accepts again; a 421 closed the connection, anything else kept it.
    await provider.send(make_email(3))
    received = await sink.wait_for(2)
    assert [r.message["Subject"] for r in received] == ["Message 1", "Message 3"]
    assert sink.connections_opened == (2 if new_connection else 1)


async def test_a_sequence_of_refusals_then_acceptance(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    sink.respond_with(["451 4.3.0 try later", "421 4.7.0 closing", "550 5.1.1 no such user"])
    outcomes: list[str] = []
    for n in range(4):
        try:
            await provider.send(make_email(n))
        except (TransientSendError, PermanentSendError) as exc:
            outcomes.append(f"{type(exc).__name__} {exc.reply}")
        else:
            outcomes.append("accepted")

    assert outcomes == [
        "TransientSendError 451 4.3.0 try later",
        "TransientSendError 421 4.7.0 closing",
        "PermanentSendError 550 5.1.1 no such user",
        "accepted",
    ]
    assert [stage for stage, _ in sink.refused] == ["DATA", "DATA", "DATA"]


async def test_server_down_is_transient() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), security="none", timeout=2.0)
    async with smtp_provider(settings) as provider:
        with pytest.raises(TransientSendError, match="cannot connect") as raised:
            await provider.send(make_email(1))

    assert raised.value.code is None


async def test_silent_server_times_out_as_transient() -> None:
    """A server that accepts the connection but never greets."""
    connected: list[asyncio.StreamWriter] = []

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=0.2)
        async with smtp_provider(settings) as provider:
            with pytest.raises(TransientSendError, match="cannot connect"):
                await provider.send(make_email(1))
    finally:
        for writer in connected:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_recovers_when_the_server_comes_back(sink: SmtpSink, provider: SmtpProvider) -> None:
    await provider.send(make_email(1))
    await sink.stop()

    with pytest.raises(TransientSendError):
        await provider.send(make_email(2))

    await sink.start()  # the same port
    await provider.send(make_email(3))
    received = await sink.wait_for(2)
    assert [r.message["Subject"] for r in received] == ["Message 1", "Message 3"]


async def test_a_pooled_connection_dropped_unnoticed_is_replaced_once(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    await provider.send(make_email(1))
    await sink.drop_connections()

    # No pause: the pooled connection still looks open, and the send meets the EOF.
    await provider.send(make_email(2))

    received = await sink.wait_for(2)
    assert [r.connection for r in received] == [1, 2]
    assert provider.connections_opened == 2


async def test_a_pooled_connection_dropped_while_idle_is_replaced(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    await provider.send(make_email(1))
    await sink.drop_connections()

    async def noticed() -> bool:
        return not any(smtp.is_connected for smtp in provider._idle)

    await eventually(noticed, timeout=5)

    await provider.send(make_email(2))

    received = await sink.wait_for(2)
    assert [r.connection for r in received] == [1, 2]


async def test_a_pooled_connection_lost_mid_send_is_replaced_once(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    await provider.send(make_email(1))
    sink.respond_with([DROP, DROP])

    # The pooled connection is lost, and so is the new one: that is news.
    with pytest.raises(TransientSendError, match="connection lost"):
        await provider.send(make_email(2))

    assert sink.connections_opened == 2
    await provider.send(make_email(3))
    received = await sink.wait_for(2)
    assert [(r.message["Subject"], r.connection) for r in received] == [
        ("Message 1", 1),
        ("Message 3", 3),
    ]


async def test_a_fresh_connection_lost_mid_send_is_not_retried(sink: SmtpSink) -> None:
    """Only a reused connection earns the transparent retry; a fresh one failing is news."""
    sink.respond_with([DROP])
    async with smtp_provider(settings_for(sink)) as provider:
        with pytest.raises(TransientSendError, match="connection lost"):
            await provider.send(make_email(1))
    assert sink.connections_opened == 1
    assert sink.received == []


async def test_international_addresses_use_smtputf8(sink: SmtpSink, provider: SmtpProvider) -> None:
    await provider.send(make_email(1, recipient="bjørn@exämple.com"))

    [received] = await sink.wait_for(1)
    assert received.rcpt_tos == ("bjørn@exämple.com",)
    assert "SMTPUTF8" in received.mail_options


async def test_an_address_that_would_inject_commands_is_permanent(
    sink: SmtpSink, provider: SmtpProvider
) -> None:
    forged = "bob@example.com>\r\nRCPT TO:<eve@evil.test"
    with pytest.raises(PermanentSendError):
        await provider.send(dataclasses.replace(make_email(1), recipient=forged))

    await provider.send(make_email(2))
    [received] = await sink.wait_for(1)
    assert received.rcpt_tos == ("bob@example.com",)
    assert sink.connections_opened == 1


async def test_close_quits_every_connection(sink: SmtpSink) -> None:
    provider = SmtpProvider(settings_for(sink, pool_size=3))
    await asyncio.gather(*(provider.send(make_email(n)) for n in range(9)))
    assert sink.connections_active == 3

    await provider.close()

    async def all_gone() -> bool:
        return sink.connections_active == 0

    await eventually(all_gone, timeout=5)
    with pytest.raises(TransientSendError, match="closed"):
        await provider.send(make_email(10))
    await provider.close()  # closing twice is harmless


async def test_close_waits_for_sends_in_flight(sink: SmtpSink) -> None:
    provider = SmtpProvider(settings_for(sink, pool_size=2))
    sends = [asyncio.create_task(provider.send(make_email(n))) for n in range(6)]
    await asyncio.sleep(0)  # the sends start

    await provider.close()

    assert all(task.done() and not task.exception() for task in sends)
    assert len(sink.received) == 6
    with pytest.raises(TransientSendError, match="closed"):
        await provider.send(make_email(7))


async def test_rate_cap_spaces_sends_through_the_limiter(sink: SmtpSink) -> None:
    """The limiter decides the waits; a fake clock and sleep make them visible, not slow."""
    now = 0.0
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    limiter = RateLimiter(10.0, now=lambda: now, sleep=fake_sleep)
    async with smtp_provider(settings_for(sink, pool_size=4), limiter=limiter) as provider:
        await asyncio.gather(*(provider.send(make_email(n)) for n in range(5)))

    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert len(await sink.wait_for(5)) == 5


def test_the_settings_cap_is_a_capability() -> None:
    provider = SmtpProvider(SmtpSettings(max_per_second=50))
    assert provider.capabilities.max_per_second == 50
    assert provider.capabilities.name == "smtp"
    assert SmtpProvider(SmtpSettings()).capabilities.max_per_second is None


@pytest.mark.parametrize(("security", "port"), [("none", 25), ("starttls", 587), ("tls", 465)])
def test_default_port_follows_security(security: Any, port: int) -> None:
    assert SmtpSettings(security=security).resolved_port == port
    assert SmtpSettings(security=security, port=2525).resolved_port == 2525


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"pool_size": 0}, "pool_size"),
        ({"max_per_second": 0}, "max_per_second"),
        ({"security": "ssl"}, "security"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_settings_are_checked(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmtpSettings(**bad)


def test_password_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(SmtpSettings(username="u", password="hunter2"))
