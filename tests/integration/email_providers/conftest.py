"""Helpers for the provider tests: messages to send, SMTP settings for a sink, a clock."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.policy
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest

from tests.integration.email_providers import moto_ses
from tests.smtp_sink import SmtpSink
from tidings.email.message import OutgoingEmail
from tidings.email.providers.smtp import SmtpProvider, SmtpSettings
from tidings.kit import ids
from tidings.kit.clock import FrozenClock

SENDER = "notifications@tidings.test"


def make_email(
    n: int = 1, *, recipient: str = "bob@example.com", subject: str | None = None
) -> OutgoingEmail:
    """A small, real RFC 5322 message, as the composer would hand it over."""
    subject = subject or f"Message {n}"
    delivery_id = ids.derived_id("test-delivery", str(n), recipient)
    message_id = f"<{delivery_id}@tidings.test>"
    message = EmailMessage()
    message["From"] = f"Tidings <{SENDER}>"
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
    message.set_content(f"Hello number {n}.\n")
    return OutgoingEmail(
        delivery_id=delivery_id,
        message_id=message_id,
        sender=SENDER,
        recipient=recipient,
        raw=message.as_bytes(policy=email.policy.SMTP),
        subject=subject,
    )


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server (SES) for the whole run."""
    with moto_ses.moto_server() as url:
        yield url


@pytest.fixture
def verified(moto_url: str) -> str:
    """A clean moto, with the test sender's identity verified."""
    moto_ses.reset_and_verify(moto_url, SENDER)
    return moto_url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


def settings_for(sink: SmtpSink, **overrides: Any) -> SmtpSettings:
    """SMTP settings that reach ``sink``, trusting its certificate."""
    values: dict[str, Any] = {
        "host": sink.host,
        "port": sink.port,
        "security": sink.security,
        "cert_bundle": str(sink.ca_file) if sink.ca_file else None,
        "local_hostname": "client.tidings.test",
        "timeout": 5.0,
    }
    values.update(overrides)
    return SmtpSettings(**values)


@contextlib.asynccontextmanager
async def smtp_provider(settings: SmtpSettings, **kwargs: Any) -> AsyncIterator[SmtpProvider]:
    """An SMTP provider, closed afterwards."""
    provider = SmtpProvider(settings, **kwargs)
    try:
        yield provider
    finally:
        await provider.close()
