"""What the MIME tests check a built message against, decoded independently of mime.py."""

from __future__ import annotations

import email
import email.message
import re
import unicodedata
from email import policy
from email.header import decode_header, make_header


def parse(raw: bytes) -> email.message.EmailMessage:
    """The message as Python's modern parser reads it; it must find no defect."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert message.defects == []
    return message


def parts(message: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    found = list(message.iter_parts())
    assert all(isinstance(part, email.message.EmailMessage) for part in found)
    return found  # type: ignore[return-value]


def mailbox(raw: bytes, message: email.message.EmailMessage, field: str) -> tuple[str, str]:
    """The display name and address in ``field``, decoded as RFC 2047 says.

    CPython's modern parser keeps the whitespace between adjacent encoded words in a
    display name (gh-128110); the legacy decoder ignores it, as the RFC and mail clients
    do, so a name made of encoded words only is decoded with that one.
    """
    (parsed,) = message[field].addresses
    value = re.search(
        rb"^" + field.encode() + rb": (.*?)\r\n(?![ \t])", raw, re.MULTILINE | re.DOTALL
    )
    assert value is not None
    display = value.group(1).decode("ascii").replace("\r\n", "").rpartition(" <")[0]
    if display.startswith("=?"):
        return str(make_header(decode_header(display))), parsed.addr_spec
    return parsed.display_name, parsed.addr_spec


def header_fields(raw: bytes) -> list[bytes]:
    """The header fields of ``raw``, each with its folds."""
    head = raw.partition(b"\r\n\r\n")[0]
    return re.split(rb"\r\n(?![ \t])", head)


def expected_header_text(value: str) -> str:
    """What a header made from ``value`` reads back as (see mime.py's docstring)."""
    cleaned = "".join(
        "\ufffd"
        if unicodedata.category(char) == "Cs"
        else " "
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029"
        else char
        for char in value
    )
    return cleaned.strip(" ")


def expected_body(value: str) -> str:
    """What a body part made from ``value`` decodes to (see mime.py's docstring)."""
    cleaned = "".join("\ufffd" if unicodedata.category(c) == "Cs" else c for c in value)
    return cleaned.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
