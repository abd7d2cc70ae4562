"""No payload string breaks the message: its headers, its MIME structure, or its signature.

Payload text reaches a message as the subject, the display names, extra header values and
both bodies. Whatever it holds (CR, LF, NUL, other controls, lone surrogates, encoded-word
lookalikes, boundary lookalikes, any Unicode), the message parses without defects, has
exactly the headers it should, and reads back as the text given, normalised as mime.py's
docstring says (and mime_checks.py re-implements independently).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dkim as dkimpy  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.email.mime_checks import (
    expected_body,
    expected_header_text,
    header_fields,
    mailbox,
    parse,
    parts,
)

from tidings.email import dkim, mime
from tidings.email.message import RenderedEmail

NASTY = [
    "\r",
    "\n",
    "\r\n",
    "\r\n\r\n",
    "\x00",
    "\t",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\ud800",
    "\udfff",
    " ",
    "   ",
    "\u00a0",
    "\u3000",
    "\ufeff",
    "\u202e",
    "=?utf-8?q?x?=",
    "=?",
    "?=",
    "=",
    "_",
    '"',
    "\\",
    ",",
    ";",
    ":",
    "<",
    ">",
    "@",
    "(",
    ")",
    ".",
    "é",
    "€",
    "日本",
    "🎉",
    "👩\u200d👩\u200d👧",
    "From ",
    "\nFrom me",
    "\n.\n",
    "--",
    "=_",
    "\r\nBcc: eve@example.net",
    "\nSubject: forged",
    "\r\n\r\n--=_",
    "x" * 80,
    "é" * 40,
    "🎉" * 20,
]

_any_text = st.text(alphabet=st.characters(exclude_categories=[]), max_size=40)
header_text = st.lists(st.one_of(_any_text, st.sampled_from(NASTY)), max_size=8).map("".join)
_long_lines = st.sampled_from(["y" * 1500, "é" * 700 + "\n", " " * 200 + "\n", "\n" * 50])
body_text = st.lists(
    st.one_of(_any_text, st.sampled_from(NASTY), st.text(max_size=400), _long_lines), max_size=20
).map("".join)

EXPECTED_HEADERS = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-tidings-note",
    "content-type",
]
SENDER = "notifications@example.com"
RECIPIENT = "bob@example.com"


def build(subject: str, name: str, note: str, text: str, html: str) -> bytes:
    return mime.build_message(
        sender=SENDER,
        sender_name=name,
        recipient=RECIPIENT,
        recipient_name=name[::-1],
        rendered=RenderedEmail(subject=subject, html=html, text=text, locale="default"),
        message_id=mime.message_id_for("0190f6b2-7c1e-7d3a-9e51-3b2f4c5d6e7f", "example.com"),
        date=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        unsubscribe=mime.Unsubscribe(
            url="https://tidings.example.com/v1/unsubscribe/tok",
            mailto="mailto:unsubscribe@example.com?subject=unsubscribe%20tok",
        ),
        extra_headers={"X-Tidings-Note": note},
    )


def check_message(raw: bytes, subject: str, name: str, note: str, text: str, html: str) -> None:
    assert raw.isascii()
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")
    for field in header_fields(raw):
        lines = field.split(b"\r\n")
        # Only long ASCII tokens in display names and extra headers may pass 78 columns
        # (see mime._address_header and mime._unstructured_header).
        limit = 998 if field.startswith((b"From:", b"To:", b"X-Tidings-Note:")) else 78
        assert all(len(line) <= limit for line in lines)
        assert all(len(line) <= 76 for line in lines if b"=?utf-8?" in line)  # RFC 2047
    body = raw.partition(b"\r\n\r\n")[2]
    assert all(len(line) <= 78 for line in body.split(b"\r\n"))

    message = parse(raw)
    assert [key.lower() for key in message] == EXPECTED_HEADERS
    assert str(message["Subject"]) == expected_header_text(subject)
    assert "\r" not in str(message["Subject"])
    assert "\n" not in str(message["Subject"])
    assert str(message["X-Tidings-Note"]) == expected_header_text(note)
    assert mailbox(raw, message, "From") == (expected_header_text(name), SENDER)
    assert mailbox(raw, message, "To") == (expected_header_text(name[::-1]), RECIPIENT)

    assert message.get_content_type() == "multipart/alternative"
    found = parts(message)
    assert [part.get_content_type() for part in found] == ["text/plain", "text/html"]
    for part, content in zip(found, (text, html), strict=True):
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert part.get_content() == expected_body(content)


@settings(max_examples=400, deadline=None)
@given(subject=header_text, name=header_text, note=header_text, text=body_text, html=body_text)
def test_no_payload_breaks_the_message(
    subject: str, name: str, note: str, text: str, html: str
) -> None:
    raw = build(subject, name, note, text, html)
    check_message(raw, subject, name, note, text, html)


DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def signing() -> tuple[dkim.DkimSigner, DnsFunc]:
    key = dkim.generate_key()
    record = dkim.dns_record(key).encode("ascii")
    signer = dkim.DkimSigner(domain="example.com", selector="s1", private_key_pem=key)
    return signer, lambda name, timeout=5: record


# Fewer examples: dkimpy verifies in pure Python.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=header_text, name=header_text, note=header_text, text=body_text, html=body_text)
def test_no_payload_breaks_the_signature(
    signing: tuple[dkim.DkimSigner, DnsFunc],
    subject: str,
    name: str,
    note: str,
    text: str,
    html: str,
) -> None:
    signer, dns = signing
    raw = build(subject, name, note, text, html)
    signed = signer.sign(raw)
    assert signed.endswith(raw)
    assert dkimpy.verify(signed, dnsfunc=dns)
