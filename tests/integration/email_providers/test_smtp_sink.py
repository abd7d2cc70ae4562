"""The test SMTP server itself, as other test suites and the benchmark will use it."""

from __future__ import annotations

import asyncio
import smtplib

import aiosmtplib
import pytest

from tests.integration.email_providers.conftest import make_email, settings_for, smtp_provider
from tests.smtp_sink import DROP, Security, SmtpSink


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_threaded_sink_serves_from_its_own_loop(security: Security) -> None:
    async with (
        SmtpSink(security=security, threaded=True, auth=("u", "p")) as sink,
        smtp_provider(settings_for(sink, username="u", password="p", pool_size=3)) as provider,
    ):
        sink.respond_with(["451 4.3.0 busy"])
        outcomes = await asyncio.gather(
            *(provider.send(make_email(n)) for n in range(12)), return_exceptions=True
        )
        received = await sink.wait_for(11)

    assert sum(isinstance(o, Exception) for o in outcomes) == 1
    assert len(received) == 11
    assert all(r.username == "u" and r.tls == (security != "none") for r in received)
    assert sink.refused == [("DATA", "451 4.3.0 busy")]


async def test_a_blocking_client_can_use_a_threaded_sink() -> None:
    """smtplib blocks its thread; the sink, in its own thread, still answers."""
    async with SmtpSink(threaded=True) as sink:
        email = make_email(1)

        def send() -> None:
            with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test") as client:
                client.sendmail(email.sender, [email.recipient], email.raw)

        await asyncio.to_thread(send)
        [received] = await sink.wait_for(1)

    assert received.raw == email.raw


async def test_auth_is_required_when_configured() -> None:
    async with SmtpSink(security="starttls", auth=("u", "p")) as sink:
        client = aiosmtplib.SMTP(
            hostname=sink.host, port=sink.port, cert_bundle=str(sink.ca_file), start_tls=True
        )
        await client.connect()
        try:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as raised:
                await client.sendmail("a@x.test", ["b@x.test"], b"Subject: x\r\n\r\nx\r\n")
        finally:
            await client.quit()

    assert raised.value.code == 530


async def test_programmed_replies_per_stage_then_acceptance() -> None:
    async with SmtpSink() as sink:
        sink.respond_with(["550 5.1.1 unknown"], at="RCPT")
        sink.respond_with(["553 5.1.8 bad sender"], at="MAIL")
        sink.respond_with(["250 2.0.0 custom ok"])
        client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
        await client.connect()
        try:
            with pytest.raises(aiosmtplib.SMTPSenderRefused):
                await client.sendmail("a@x.test", ["b@x.test"], b"Subject: 1\r\n\r\n1\r\n")
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await client.sendmail("a@x.test", ["b@x.test"], b"Subject: 2\r\n\r\n2\r\n")
            _, reply = await client.sendmail("a@x.test", ["b@x.test"], b"Subject: 3\r\n\r\n3\r\n")
            _, again = await client.sendmail("a@x.test", ["b@x.test"], b"Subject: 4\r\n\r\n4\r\n")
        finally:
            await client.quit()

    assert reply == "2.0.0 custom ok"
    assert again == "2.0.0 Ok: queued as S2"
    assert [r.message["Subject"] for r in sink.received] == ["3", "4"]
    assert [stage for stage, _ in sink.refused] == ["MAIL", "RCPT"]


async def test_drop_and_421_close_the_connection() -> None:
    async with SmtpSink() as sink:
        sink.respond_with(["421 4.7.0 bye", DROP])
        for _ in range(2):
            client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
            await client.connect()
            with pytest.raises((aiosmtplib.SMTPDataError, aiosmtplib.SMTPServerDisconnected)):
                await client.sendmail("a@x.test", ["b@x.test"], b"Subject: x\r\n\r\nx\r\n")
            assert not client.is_connected
            client.close()

    assert sink.received == []


def test_replies_must_look_like_replies() -> None:
    with pytest.raises(ValueError, match="not an SMTP reply"):
        SmtpSink().respond_with(["try later"])


async def test_wait_for_gives_up() -> None:
    async with SmtpSink() as sink:
        with pytest.raises(TimeoutError, match="0 of 1"):
            await sink.wait_for(1, timeout=0.05)
