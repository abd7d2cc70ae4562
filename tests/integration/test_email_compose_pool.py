"""A backlog of email is built and signed in the compose processes, then sent over real
SMTP: every message signed (dkimpy verifies it), unsubscribable, with its delivery's
Message-ID, each sent once; and the processes stop with the sender."""

from __future__ import annotations

import email.policy
from collections.abc import AsyncIterator, Callable
from typing import Any

import dkim
import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import eventually
from tests.integration.test_email_pipeline import (
    deliveries_of,
    dkim_dns,
    many_recipients,
    publish,
    sending_to,
)
from tests.smtp_sink import SmtpSink
from tidings.app.runtime import Runtime
from tidings.delivery.carriers.email import POOL_FROM, EmailCarrier
from tidings.delivery.sender import Sender
from tidings.kit.settings import Settings

RECIPIENTS = POOL_FROM + 8


def email_sender(runtime: Runtime) -> EmailCarrier:
    """The carrier of email deliveries, in the worker's handler of email jobs."""
    sender = runtime.worker._tasks["email"].handle.__self__  # type: ignore[attr-defined]
    assert isinstance(sender, Sender)
    carrier = sender.carrier("email")
    assert isinstance(carrier, EmailCarrier)
    return carrier


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


@pytest.fixture
async def smtp_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    async with sending_to(sink, make_settings, database_url, smtp_pool_size=8) as app:
        yield app


async def send_backlog(
    app: FastAPI, sink: SmtpSink, event: dict[str, Any], key: str, already: int
) -> list[Any]:
    """Publish ``event`` to RECIPIENTS users; wait until every email is sent and received."""
    runtime: Runtime = app.state.runtime
    _key, plaintext = await runtime.auth.create_key(f"k-{key}", ["*"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tidings.test"
    ) as client:
        event_id = await publish(
            client,
            {"Authorization": f"Bearer {plaintext}"},
            {**many_recipients(event, RECIPIENTS), "idempotency_key": key},
        )

    async def all_sent() -> bool:
        found = await deliveries_of(runtime, event_id, "email")
        return len(found) == RECIPIENTS and {d["state"] for d in found} == {"sent"}

    await eventually(all_sent, timeout=60)
    received = await sink.wait_for(already + RECIPIENTS, timeout=30)
    deliveries = await deliveries_of(runtime, event_id, "email")
    by_message_id = {d["message_id"]: d for d in deliveries}
    mine = [r for r in received if r.message["Message-ID"] in by_message_id]
    assert len(mine) == RECIPIENTS  # each sent once, with its delivery's Message-ID
    for received_message in mine:
        delivery = by_message_id[received_message.message["Message-ID"]]
        assert received_message.rcpt_tos == (f"u{delivery['user_id'][2:]}@example.com",)
    return mine


async def test_a_backlog_is_signed_in_the_compose_processes_and_sent_once(
    smtp_app: FastAPI, sink: SmtpSink, canonical_event: dict[str, Any]
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    sender = email_sender(runtime)
    assert sender.compose_pool.processes > 0  # the default uses processes

    # The first backlog starts the processes (built in the loop until they answer).
    first = await send_backlog(smtp_app, sink, canonical_event, "first", 0)
    assert sender.compose_pool.started == 1
    await sender.compose_pool.start()
    pids = sender.compose_pool.pids()
    assert pids

    # The next is built by them.
    second = await send_backlog(smtp_app, sink, canonical_event, "second", len(first))
    assert sender.compose_pool.chunks_built >= RECIPIENTS // 16
    lookup = dkim_dns(runtime)
    for received in first + second:
        assert dkim.verify(received.raw, dnsfunc=lookup)
        message = email.message_from_bytes(received.raw, policy=email.policy.default)
        assert str(message["List-Unsubscribe"]).startswith(
            f"<{runtime.settings.base_url}/v1/unsubscribe/"
        )
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    await sender.close()
    assert not sender.compose_pool.running
    assert sender.compose_pool.pids() == []
