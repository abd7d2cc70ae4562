"""What every provider promises, run against each of them (and the in-memory twin)."""

from __future__ import annotations

import dataclasses
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.integration.email_providers import moto_ses
from tests.integration.email_providers.conftest import make_email, settings_for
from tests.smtp_sink import SmtpSink
from tidings.email.providers.base import EmailProvider
from tidings.email.providers.catcher import MailCatcher
from tidings.email.providers.memory import InMemoryProvider
from tidings.email.providers.ses import SesProvider
from tidings.email.providers.smtp import SmtpProvider
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database


@dataclasses.dataclass
class Subject:
    provider: EmailProvider
    delivered: Callable[[], Awaitable[list[bytes]]]
    """The raw bytes of every message that arrived, oldest first."""


@pytest.fixture(params=["memory", "catcher", "smtp", "ses"])
async def subject(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[Subject]:
    if request.param == "memory":
        memory = InMemoryProvider()

        async def in_memory() -> list[bytes]:
            return [e.raw for e in memory.sent]

        yield Subject(memory, in_memory)
        await memory.close()
    elif request.param == "catcher":
        async with fresh_database("sqlite", tmp_path) as url:
            db = Database(url)
            catcher = MailCatcher(db, clock)

            async def caught() -> list[bytes]:
                return [m["raw"].encode() for m in reversed(await catcher.list())]

            yield Subject(catcher, caught)
            await catcher.close()
            await db.dispose()
    elif request.param == "smtp":
        async with SmtpSink() as sink:
            smtp = SmtpProvider(settings_for(sink))

            async def received() -> list[bytes]:
                return [r.raw for r in sink.received]

            yield Subject(smtp, received)
            await smtp.close()
    else:
        url = request.getfixturevalue("verified")
        ses = SesProvider(moto_ses.ses_settings(url))

        async def recorded() -> list[bytes]:
            return [m["raw_data"].encode() for m in moto_ses.sent_by_moto(url)]

        yield Subject(ses, recorded)
        await ses.close()


async def test_hands_over_the_bytes_unchanged(subject: Subject, clock: FrozenClock) -> None:
    sent = [make_email(n) for n in range(3)]

    for outgoing in sent:
        accepted = await subject.provider.send(outgoing)
        assert accepted.provider == subject.provider.capabilities.name
        assert accepted.reply
        clock.advance(1)

    assert await subject.delivered() == [e.raw for e in sent]


async def test_a_large_message_with_a_unicode_subject(subject: Subject) -> None:
    message = EmailMessage()
    message["From"] = "notifications@tidings.test"
    message["To"] = "bob@example.com"
    message["Subject"] = "Zoë commented: “ça marche” ✓"
    message["Message-ID"] = "<large@tidings.test>"
    message.set_content("Lorem ipsum dolor sit amet. " * 40_000)  # ~1 MB
    raw = message.as_bytes(policy=email.policy.SMTP)
    outgoing = dataclasses.replace(make_email(1), raw=raw, subject=str(message["Subject"]))
    assert len(raw) < subject.provider.capabilities.max_message_bytes

    await subject.provider.send(outgoing)

    assert await subject.delivered() == [raw]


async def test_close_twice_is_harmless(subject: Subject) -> None:
    await subject.provider.send(make_email(1))
    await subject.provider.close()
    await subject.provider.close()


def test_capabilities_are_data(subject: Subject) -> None:
    capabilities = subject.provider.capabilities
    assert capabilities.name
    assert capabilities.max_message_bytes > 0


def test_every_provider_fits_the_protocol() -> None:
    """Checked by mypy here: each implementation is assignable to ``EmailProvider``."""
    providers: list[type[EmailProvider]] = [
        InMemoryProvider,
        MailCatcher,
        SmtpProvider,
        SesProvider,
    ]
    assert len(providers) == 4
