"""The built-in mail catcher on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import email.parser
import email.policy
from collections.abc import AsyncIterator

import pytest

from tests.integration.email_providers.conftest import SENDER, make_email
from tidings.email.providers.catcher import MailCatcher
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def catcher(db: Database, clock: FrozenClock) -> MailCatcher:
    return MailCatcher(db, clock)


async def test_stores_and_lists_newest_first(catcher: MailCatcher, clock: FrozenClock) -> None:
    sent = [make_email(n, recipient=f"user{n % 2}@example.com") for n in range(3)]
    for outgoing in sent:
        accepted = await catcher.send(outgoing)
        assert accepted.provider == "catcher"
        assert accepted.provider_id == outgoing.delivery_id
        clock.advance(1)

    listed = await catcher.list()

    assert [m["subject"] for m in listed] == ["Message 2", "Message 1", "Message 0"]
    newest = listed[0]
    assert newest["id"] == sent[2].delivery_id
    assert newest["delivery_id"] == sent[2].delivery_id
    assert newest["message_id"] == sent[2].message_id
    assert newest["to"] == "user0@example.com"
    assert newest["from"] == SENDER
    assert newest["raw"] == sent[2].raw.decode()
    assert newest["created_at"] == clock.now().replace(second=2)
    parsed = email.parser.Parser(policy=email.policy.default).parsestr(newest["raw"])
    assert parsed["Message-ID"] == sent[2].message_id


async def test_filters_by_recipient_and_limits(catcher: MailCatcher, clock: FrozenClock) -> None:
    for n in range(6):
        await catcher.send(make_email(n, recipient="ann@example.com" if n % 2 else "bob@x.test"))
        clock.advance(1)

    for_ann = await catcher.list(recipient="Ann@Example.com")
    assert [m["subject"] for m in for_ann] == ["Message 5", "Message 3", "Message 1"]
    assert [m["subject"] for m in await catcher.list(limit=2)] == ["Message 5", "Message 4"]
    assert await catcher.list(recipient="nobody@example.com") == []
    with pytest.raises(ValueError, match="limit"):
        await catcher.list(limit=0)


async def test_the_same_delivery_is_stored_once(catcher: MailCatcher) -> None:
    outgoing = make_email(1)

    first = await catcher.send(outgoing)
    again = await catcher.send(outgoing)

    assert first == again
    assert len(await catcher.list()) == 1


async def test_a_message_without_a_delivery_gets_an_id_from_its_message_id(
    catcher: MailCatcher,
) -> None:
    outgoing = dataclasses.replace(make_email(1), delivery_id="")

    first = await catcher.send(outgoing)
    await catcher.send(outgoing)

    [stored] = await catcher.list()
    assert stored["id"] == first.provider_id
    assert stored["delivery_id"] is None


async def test_clear_empties_the_mailbox(catcher: MailCatcher) -> None:
    await catcher.send(make_email(1))
    await catcher.send(make_email(2))

    assert await catcher.clear() == 2
    assert await catcher.list() == []


async def test_concurrent_sends_and_redeliveries(catcher: MailCatcher) -> None:
    """A batch is handed over concurrently; a redelivered one may race its first copy."""
    batch = [make_email(n) for n in range(40)]

    await asyncio.gather(*(catcher.send(outgoing) for outgoing in batch + batch[:10]))

    stored = await catcher.list(limit=100)
    assert sorted(m["id"] for m in stored) == sorted(e.delivery_id for e in batch)
