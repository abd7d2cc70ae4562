"""The SMTP provider's envelope, written by hand (not ``sendmail``): the size declared,
the envelope reset after a refusal, and addresses that cannot go on a command line."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from tests.integration.email_providers.conftest import make_email, settings_for, smtp_provider
from tests.smtp_sink import SmtpSink
from tidings.email.providers.base import PermanentSendError
from tidings.email.providers.smtp import SmtpProvider


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as running:
        yield running


@pytest.fixture
async def provider(sink: SmtpSink) -> AsyncIterator[SmtpProvider]:
    async with smtp_provider(settings_for(sink, pool_size=1)) as opened:
        yield opened


async def test_the_size_is_declared_as_sent(sink: SmtpSink, provider: SmtpProvider) -> None:
    email = make_email(1)
    await provider.send(email)
    [received] = await sink.wait_for(1)
    assert f"SIZE={len(email.raw)}" in {option.upper() for option in received.mail_options}
    assert received.raw == email.raw


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_after_a_refusal_the_connection_sends_the_next_message(
    sink: SmtpSink, provider: SmtpProvider, stage: str
) -> None:
    sink.respond_with(["550 5.7.1 refused"], at=stage)  # type: ignore[arg-type]
    with pytest.raises(PermanentSendError, match=r"550 5\.7\.1 refused"):
        await provider.send(make_email(1))
    await provider.send(make_email(2))
    [received] = await sink.wait_for(1)
    assert received.message["Message-ID"] == make_email(2).message_id
    assert provider.connections_opened == 1


@pytest.mark.parametrize(
    "recipient",
    ["two words@example.com", "ann@example.com> SIZE=1", 'a"b@example.com', "ann@example.com\r"],
)
async def test_an_address_that_would_break_the_command_is_refused_unsent(
    sink: SmtpSink, provider: SmtpProvider, recipient: str
) -> None:
    email = dataclasses.replace(make_email(1), recipient=recipient)
    with pytest.raises(PermanentSendError, match="not a usable address"):
        await provider.send(email)
    assert sink.received == []


async def test_a_quoted_local_part_may_hold_a_space(sink: SmtpSink, provider: SmtpProvider) -> None:
    email = dataclasses.replace(make_email(1), recipient='"ann smith"@example.com')
    await provider.send(email)
    [received] = await sink.wait_for(1)
    assert received.rcpt_tos == ('"ann smith"@example.com',)
