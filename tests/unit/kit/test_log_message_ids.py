"""Log lines mask email addresses but keep Message-IDs, which look like addresses yet
name a message, and are what an operator searches the logs for."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from tidings.kit import logs

OWN = "<0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b@mail.example.com>"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"soft bounce for message {OWN}: 452 full", f"soft bounce for message {OWN}: 452 full"),
        ("Message-ID: <abc.123@mta.example.net>", "Message-ID: <abc.123@mta.example.net>"),
        ("message_id=<x-9@relay.example>", "message_id=<x-9@relay.example>"),
        ("550 5.1.1 <bob@example.com>: rejected", "550 5.1.1 <<email>>: rejected"),
        ("to Bob <bob@example.com>", "to Bob <<email>>"),
        (f"{OWN} went to ann@example.org", f"{OWN} went to <email>"),
        (
            "Message-ID: <m@example.net> from carol@example.net",
            "Message-ID: <m@example.net> from <email>",
        ),
    ],
)
def test_addresses_are_masked_and_message_ids_kept(
    output: io.StringIO, text: str, shown: str
) -> None:
    logging.getLogger("tidings.example").info("%s", text)
    (line,) = [json.loads(found) for found in output.getvalue().splitlines()]
    assert line["event"] == shown


def test_fields_named_message_id_are_kept(output: io.StringIO) -> None:
    structlog.get_logger("tidings.example").info(
        "sent",
        message_id="<billing.7@example.com>",
        provider_message_id="<0100@email.amazonses.com>",
        recipient="dan@example.com",
        headers={"Message-ID": "<h@example.com>", "To": "dan@example.com"},
    )
    (line,) = [json.loads(found) for found in output.getvalue().splitlines()]
    assert line["message_id"] == "<billing.7@example.com>"
    assert line["provider_message_id"] == "<0100@email.amazonses.com>"
    assert line["recipient"] == "<email>"
    assert line["headers"] == {"Message-ID": "<h@example.com>", "To": "<email>"}
