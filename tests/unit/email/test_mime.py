from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import email.utils
from typing import Any

import pytest
from tests.unit.email.mime_checks import mailbox, parse, parts

from tidings.email import mime
from tidings.email.message import RenderedEmail

DATE = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
UNSUBSCRIBE = mime.Unsubscribe(
    url="https://tidings.example.com/v1/unsubscribe/tok.en-_",
    mailto="mailto:unsubscribe@example.com?subject=unsubscribe%20tok.en-_",
)


def build(
    *,
    subject: str = "A comment on Roadmap",
    text: str = "Ann commented.\n",
    html: str = "<p>Ann commented.</p>\n",
    locale: str = "default",
    **overrides: Any,
) -> bytes:
    arguments: dict[str, Any] = {
        "sender": "notifications@example.com",
        "sender_name": "Tidings",
        "recipient": "bob@example.com",
        "recipient_name": "Bob",
        "rendered": RenderedEmail(subject=subject, html=html, text=text, locale=locale),
        "message_id": mime.message_id_for("d-1", "example.com"),
        "date": DATE,
        "unsubscribe": UNSUBSCRIBE,
    }
    arguments.update(overrides)
    return mime.build_message(**arguments)


def header_lines(raw: bytes) -> list[bytes]:
    return raw.partition(b"\r\n\r\n")[0].split(b"\r\n")


SUBJECTS = [
    pytest.param("Plain ASCII", "Plain ASCII", id="ascii"),
    pytest.param("Café crème à côté", "Café crème à côté", id="accents"),
    pytest.param("🎉 Ann 👩‍👩‍👧 replied", "🎉 Ann 👩‍👩‍👧 replied", id="emoji-zwj"),
    pytest.param("會議提醒明天", "會議提醒明天", id="cjk"),
    pytest.param("مرحبا بالعالم", "مرحبا بالعالم", id="rtl"),
    pytest.param("word " * 40, ("word " * 40).strip(), id="long-folded"),
    pytest.param("x" * 200, "x" * 200, id="long-unbreakable"),
    pytest.param("é" * 200, "é" * 200, id="long-non-ascii"),
    pytest.param("a   b\t\tc", "a   b  c", id="whitespace-runs-and-tabs"),
    pytest.param("  padded  ", "padded", id="outer-spaces-dropped"),
    pytest.param("=?utf-8?q?spoof?=", "=?utf-8?q?spoof?=", id="literal-encoded-word"),
    pytest.param('Quotes " and \\ and , ; : < >', 'Quotes " and \\ and , ; : < >', id="specials"),
    pytest.param("Hi\r\nBcc: evil@example.net", "Hi  Bcc: evil@example.net", id="crlf-injection"),
    pytest.param("Hi\nX-Evil: 1", "Hi X-Evil: 1", id="lf-injection"),
    pytest.param("a\x00b\x1bc\x7fd\x85e\u2028f", "a b c d e f", id="controls"),
    pytest.param("lone \ud800 surrogate", "lone \ufffd surrogate", id="surrogate"),
    pytest.param("", "", id="empty"),
]


@pytest.mark.parametrize(("subject", "expected"), SUBJECTS)
def test_subject_decodes_to_what_was_given(subject: str, expected: str) -> None:
    raw = build(subject=subject)
    message = parse(raw)
    assert message.get_all("Subject") == [expected]
    assert all(len(line) <= 76 for line in header_lines(raw) if b"=?utf-8?" in line)
    assert all(len(line) <= 78 for line in header_lines(raw))


def test_no_payload_value_can_add_a_header_or_a_body() -> None:
    evil = "x\r\nBcc: eve@example.net\nX-Injected: 1\r\rX-Too: 2\r\n\r\n<p>fake body</p>"
    raw = build(subject=evil, sender_name=evil, recipient_name=evil, extra_headers={"X-Note": evil})
    message = parse(raw)
    assert [name.lower() for name in message] == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "x-note",
        "content-type",
    ]
    neutralised = "x  Bcc: eve@example.net X-Injected: 1  X-Too: 2    <p>fake body</p>"
    assert message["Subject"] == message["X-Note"] == neutralised
    assert mailbox(raw, message, "To") == (neutralised, "bob@example.com")
    assert len(parts(message)) == 2


NAMES = [
    pytest.param("Ann", "Ann", b"From: Ann <", id="atom"),
    pytest.param("Ann Smith", "Ann Smith", b"From: Ann Smith <", id="atoms"),
    pytest.param("Smith, Ann", "Smith, Ann", b'From: "Smith, Ann" <', id="comma-quoted"),
    pytest.param('Ann "Boss" Smith', 'Ann "Boss" Smith', b'"Ann \\"Boss\\" Smith"', id="quotes"),
    pytest.param("Dr. A. O'Brien", "Dr. A. O'Brien", b'"Dr. A. O\'Brien"', id="dots"),
    pytest.param("back\\slash", "back\\slash", b'"back\\\\slash"', id="backslash"),
    pytest.param("Zoë Ünal", "Zoë Ünal", b"=?utf-8?", id="non-ascii"),
    pytest.param(
        "Zoë, «chef» <x@y.z>", "Zoë, «chef» <x@y.z>", b"=?utf-8?", id="non-ascii-specials"
    ),
    pytest.param("a   b", "a   b", b'"a   b"', id="whitespace-run"),
    pytest.param(
        "Ann\r\nBcc: evil@example.net", "Ann  Bcc: evil@example.net", None, id="injection"
    ),
    pytest.param("N" * 100, "N" * 100, b"From: " + b"N" * 100 + b"\r\n <", id="long-ascii"),
    pytest.param("Zoë " * 30, ("Zoë " * 30).strip(), b"=?utf-8?", id="long-non-ascii"),
    pytest.param("  ", "", b"From: notifications@example.com\r\n", id="blank"),
    pytest.param(None, "", b"From: notifications@example.com\r\n", id="none"),
]


@pytest.mark.parametrize(("name", "expected", "raw_form"), NAMES)
def test_display_names_are_quoted_or_encoded(
    name: str | None, expected: str, raw_form: bytes | None
) -> None:
    raw = build(sender_name=name, recipient_name=name)
    message = parse(raw)
    for field, address in (("From", "notifications@example.com"), ("To", "bob@example.com")):
        assert len(message.get_all(field) or []) == 1
        assert mailbox(raw, message, field) == (expected, address)
    if raw_form is not None:
        assert raw_form in raw
    assert b"\nBcc" not in raw


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.com\r\nBcc: evil@example.net",
        "bob@example.com\n",
        "bob@exa\rmple.com",
        "bob",
        "bob@",
        "@example.com",
        "bob smith@example.com",
        "<bob@example.com>",
        "Bob <bob@example.com>",
        "bob@example.com, eve@example.net",
        "bob@-example.com",
        "bob..x@example.com",
        "\u202ezoë@example.com",
        "zo\u00a0ë@example.com",
        "zoë@ex\u202eample.com",
        "bob@exämple..com",
        "ø" * 33 + "@example.com",
        "b" * 65 + "@example.com",
        "",
    ],
)
@pytest.mark.parametrize("role", ["sender", "recipient"])
def test_implausible_addresses_are_refused(address: str, role: str) -> None:
    with pytest.raises(ValueError, match=role):
        build(**{role: address})


@pytest.mark.parametrize(
    "address", ["bob@example.com", "bob.smith+tag@mail.example.co.uk", "o'brien@example.ie", "a@b"]
)
def test_plausible_addresses_pass(address: str) -> None:
    (parsed,) = parse(build(recipient=address))["To"].addresses
    assert parsed.addr_spec == address


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("bob@exämple.com", "bob@xn--exmple-cua.com"),
        ("bob@BÜCHER.example", "bob@xn--bcher-kva.example"),
        ("zoë@example.com", "zoë@example.com"),
        ("josé.álvarez@bücher.example", "josé.álvarez@xn--bcher-kva.example"),
    ],
)
@pytest.mark.parametrize("role", ["sender", "recipient"])
def test_international_addresses_are_written_with_an_ascii_domain(
    address: str, written: str, role: str
) -> None:
    raw = build(**{role: address})
    header = "From" if role == "sender" else "To"
    # RFC 6532: a local part outside ASCII is UTF-8 in the header; all else stays ASCII.
    assert raw.isascii() == written.isascii()
    message = email.parser.Parser(policy=email.policy.default).parsestr(raw.decode("utf-8"))
    (parsed,) = message[header].addresses
    assert parsed.addr_spec == written


def test_structure_is_multipart_alternative_text_then_html() -> None:
    raw = build(text="Hello Zoë\n", html="<p>Hello Zoë</p>")
    message = parse(raw)
    assert message.is_multipart()
    assert message.get_content_type() == "multipart/alternative"
    assert message["MIME-Version"] == "1.0"
    text, html = parts(message)
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    for part in (text, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.defects == []
    assert text.get_content() == "Hello Zoë\r\n"
    assert html.get_content() == "<p>Hello Zoë</p>"


BODIES = [
    pytest.param("Hello\n", "Hello\r\n", id="simple"),
    pytest.param("Ça coûte 5 €\n日本語 🎉\n", "Ça coûte 5 €\r\n日本語 🎉\r\n", id="non-ascii"),
    pytest.param("a\r\nb\rc\nd", "a\r\nb\r\nc\r\nd", id="line-endings"),
    pytest.param("x" * 5000 + "\n" + "é" * 3000, "x" * 5000 + "\r\n" + "é" * 3000, id="long-lines"),
    pytest.param("From the team\nFrom here\n", "From the team\r\nFrom here\r\n", id="from-lines"),
    pytest.param(".\n..\n. x\n", ".\r\n..\r\n. x\r\n", id="dots"),
    pytest.param("trailing   \nspace\t\n", "trailing   \r\nspace\t\r\n", id="trailing-space"),
    pytest.param("--=_boundary\n--\n", "--=_boundary\r\n--\r\n", id="boundary-lookalike"),
    pytest.param("a=b =?x?= =3D\n", "a=b =?x?= =3D\r\n", id="equals"),
    pytest.param("nul\x00 vt\x0b ls\u2028", "nul\x00 vt\x0b ls\u2028", id="controls-kept"),
    pytest.param("", "", id="empty"),
    pytest.param("\n\n\n", "\r\n\r\n\r\n", id="only-newlines"),
]


@pytest.mark.parametrize(("body", "expected"), BODIES)
def test_bodies_round_trip(body: str, expected: str) -> None:
    raw = build(text=body, html=body)
    text, html = parts(parse(raw))
    assert text.get_content() == expected
    assert html.get_content() == expected
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines if not line.startswith(b"List-Unsubscribe:"))
    assert raw.isascii()


def test_line_endings_are_crlf_only() -> None:
    raw = build(subject="s\r\n", text="a\nb\rc\r\n", html="<p>\n</p>\r")
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")


def test_headers_carry_date_message_id_and_language() -> None:
    message = parse(build(locale="fr_CA"))
    assert email.utils.parsedate_to_datetime(message["Date"]) == DATE
    assert message["Message-ID"] == "<d-1@example.com>"
    assert message["Content-Language"] == "fr-CA"


@pytest.mark.parametrize("locale", ["default", "fr\r\nBcc: x@example.net", "not a tag", ""])
def test_content_language_is_left_out_unless_a_valid_tag(locale: str) -> None:
    raw = build(locale=locale)
    assert parse(raw)["Content-Language"] is None
    assert b"Bcc" not in raw


def test_naive_dates_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build(date=dt.datetime(2024, 5, 1, 12, 30))


def test_message_id_is_deterministic() -> None:
    assert mime.message_id_for("0190-abc", "mail.example.com") == "<0190-abc@mail.example.com>"
    assert build() == build()


@pytest.mark.parametrize(
    ("delivery_id", "domain"),
    [
        ("a b", "example.com"),
        ("a\r\n", "example.com"),
        ("a", "exa mple.com"),
        ("a>", "x.com"),
        ("a" * 300, "example.com"),
    ],
)
def test_message_id_refuses_what_would_break_it(delivery_id: str, domain: str) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        mime.message_id_for(delivery_id, domain)


@pytest.mark.parametrize("message_id", ["d-1@example.com", "<d 1@example.com>", "<a>\r\n<b>", ""])
def test_malformed_message_ids_are_refused(message_id: str) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        build(message_id=message_id)


def test_list_unsubscribe_has_url_then_mailto_and_one_click() -> None:
    raw = build()
    message = parse(raw)
    assert message.get_all("List-Unsubscribe") == [f"<{UNSUBSCRIBE.url}>, <{UNSUBSCRIBE.mailto}>"]
    assert message.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert f"List-Unsubscribe: <{UNSUBSCRIBE.url}>,\r\n <{UNSUBSCRIBE.mailto}>".encode() in raw


def test_long_unsubscribe_urls_stay_whole() -> None:
    url = "https://tidings.example.com/v1/unsubscribe/" + "t" * 300
    message = parse(build(unsubscribe=mime.Unsubscribe(url=url, mailto="")))
    assert message["List-Unsubscribe"] == f"<{url}>"


def test_mandatory_categories_get_no_list_unsubscribe() -> None:
    raw = build(unsubscribe=None)
    assert b"List-Unsubscribe" not in raw


def test_without_one_click_there_is_no_list_unsubscribe_post() -> None:
    message = parse(build(unsubscribe=mime.Unsubscribe(UNSUBSCRIBE.url, "", one_click=False)))
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE.url}>"
    assert message["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(
    ("url", "mailto"),
    [
        ("javascript:alert(1)", UNSUBSCRIBE.mailto),
        ("https://x.example/u>, <https://evil.example/", UNSUBSCRIBE.mailto),
        ("https://x.example/u\r\nBcc: evil@example.net", UNSUBSCRIBE.mailto),
        ("https://x.example/a b", UNSUBSCRIBE.mailto),
        ("https://x.example/é", UNSUBSCRIBE.mailto),
        (UNSUBSCRIBE.url, "https://not-a-mailto.example/"),
        (UNSUBSCRIBE.url, "mailto:u@example.com\r\nX: y"),
    ],
)
def test_unusable_unsubscribe_urls_are_refused(url: str, mailto: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        build(unsubscribe=mime.Unsubscribe(url=url, mailto=mailto))


def test_extra_headers_are_neutralised_and_encoded() -> None:
    extra = {
        "X-Tidings-Delivery": "d-1",
        "X-Note": "Zoë\r\nBcc: evil@example.net",
        "X-Entity-Ref-ID": "comments-" + "x" * 100,
    }
    raw = build(extra_headers=extra)
    message = parse(raw)
    assert message["X-Tidings-Delivery"] == "d-1"
    assert message["X-Note"] == "Zoë  Bcc: evil@example.net"
    assert message["Bcc"] is None
    # A long machine-readable token is kept whole rather than encoded.
    assert f"X-Entity-Ref-ID: {extra['X-Entity-Ref-ID']}\r\n".encode() in raw


@pytest.mark.parametrize(
    "name", ["Subject", "from", "BCC", "Content-Type", "DKIM-Signature", "List-Unsubscribe"]
)
def test_extra_headers_cannot_replace_generated_ones(name: str) -> None:
    with pytest.raises(ValueError, match="generated"):
        build(extra_headers={name: "x"})


@pytest.mark.parametrize("name", ["X-A\r\nBcc", "X A", "X:A", "", "X-É"])
def test_extra_header_names_must_be_field_names(name: str) -> None:
    with pytest.raises(ValueError, match="header name"):
        build(extra_headers={name: "x"})


def test_extra_header_tokens_too_long_for_any_line_are_encoded() -> None:
    raw = build(extra_headers={"X-Token": "t" * 1000})
    assert parse(raw)["X-Token"] == "t" * 1000
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_unsubscribe_urls_too_long_for_any_line_are_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        build(unsubscribe=mime.Unsubscribe(url="https://x.example/" + "t" * 1000, mailto=""))
