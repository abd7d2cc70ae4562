"""Build the RFC 5322 / MIME source of one email: headers, both parts, List-Unsubscribe.

The message is written by hand rather than through ``email.message.EmailMessage``: the
standard library's header folder loses whitespace where it folds between encoded words
and can overrun line limits, its body encoder rewrites every ``str.splitlines``
separator, and it encodes long URLs in List-Unsubscribe as encoded words, so none of
that round-trips. What comes out is 7-bit ASCII with CRLF line endings (but for an address
whose local part is not ASCII, which From and To carry as UTF-8, RFC 6532: such a
message needs a server offering SMTPUTF8; an internationalised domain is written in its
ASCII form and needs nothing), every line at
most 78 characters (76 where it holds RFC 2047 encoded words) except where a long
unbreakable ASCII token (a URL, an address, a display name, an extra header's value)
must stay whole, and never more than 998.

What a reader gets back:

- Subject, display names and extra header values: control characters (C0, DEL, C1,
  U+2028, U+2029) become a space, lone surrogates become U+FFFD, and leading and trailing
  spaces are dropped. Everything else decodes to exactly what was given.
- Bodies: ``\\r\\n`` and a lone ``\\r`` count as ``\\n``; each ``\\n`` travels as a CRLF line
  break (so a decoder hands back ``\\r\\n``); lone surrogates become U+FFFD. Every other
  character, control characters included, round-trips.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from types import MappingProxyType

from tidings.email import addresses
from tidings.email.message import RenderedEmail

_SOFT_LIMIT = 78
_HARD_LIMIT = 998
_ENCODED_WORD_LIMIT = 75
_ENCODED_LINE_LIMIT = 76  # RFC 2047 section 2, for lines holding encoded words

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_FOLD_POINT = re.compile("(?<! ) ")  # a space that does not follow a space

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}", re.ASCII)
# RFC 6531: atext grows every character outside ASCII (those that print: see below).
_UTF8_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_UTF8_ADDR_SPEC = re.compile(rf"{_UTF8_ATEXT}+(?:\.{_UTF8_ATEXT}+)*@{_DOMAIN}")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOMAIN}>", re.ASCII)
_ATOM_PHRASE = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*", re.ASCII)
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*", re.ASCII)
_HEADER_NAME = re.compile(r"[!-9;-~]+", re.ASCII)
# RFC 3986 characters, so a URL can neither leave its angle brackets nor fold.
_URL = re.compile(r"[!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]+", re.ASCII)
# Each byte in a "Q" encoded word, keeping unencoded only what RFC 2047 allows in a phrase.
_Q_BYTE = tuple(
    chr(byte)
    if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "!*+-/")
    else "_"
    if byte == 0x20
    else f"={byte:02X}"
    for byte in range(256)
)

_GENERATED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-language",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "dkim-signature",
        "return-path",
    }
)
_NO_EXTRA_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Unsubscribe:
    """Where a recipient unsubscribes; ``None`` in its place means a mandatory category.

    ``url`` is an http(s) URL carrying a signed token; ``mailto`` a ``mailto:`` URL (empty:
    none). ``one_click`` adds ``List-Unsubscribe-Post`` (RFC 8058).
    """

    url: str
    mailto: str
    one_click: bool = True


def message_id_for(delivery_id: str, domain: str) -> str:
    """The Message-ID of a delivery: the same delivery always gets the same id.

    Raises:
        ValueError: the id or domain cannot form a valid Message-ID.
    """
    message_id = f"<{delivery_id}@{domain}>"
    if not _valid_message_id(message_id):
        raise ValueError(f"cannot form a Message-ID from {delivery_id!r} and {domain!r}")
    return message_id


def build_message(
    *,
    sender: str,
    sender_name: str | None,
    recipient: str,
    recipient_name: str | None,
    rendered: RenderedEmail,
    message_id: str,
    date: datetime,
    unsubscribe: Unsubscribe | None,
    extra_headers: Mapping[str, str] = _NO_EXTRA_HEADERS,
) -> bytes:
    """The whole message source: multipart/alternative, text then HTML, CRLF line endings.

    Raises:
        ValueError: an address, the Message-ID, the date (naive), an unsubscribe URL or an
            extra header name is malformed, or an extra header replaces a generated one.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("the Date must be timezone-aware")
    if not _valid_message_id(message_id):
        raise ValueError(f"{message_id!r} is not a valid Message-ID")
    headers = [
        _address_header("From", sender_name, _checked_address(sender, "sender")),
        _address_header("To", recipient_name, _checked_address(recipient, "recipient")),
        _unstructured_header("Subject", rendered.subject, encode_long=True),
        f"Date: {format_datetime(date)}\r\n",
        f"Message-ID: {message_id}\r\n",
        "MIME-Version: 1.0\r\n",
    ]
    language = rendered.locale.replace("_", "-")
    if language != "default" and _LANGUAGE_TAG.fullmatch(language):
        headers.append(f"Content-Language: {language}\r\n")
    if unsubscribe is not None:
        headers.extend(_unsubscribe_headers(unsubscribe))
    for name, value in extra_headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _GENERATED:
            raise ValueError(f"the {name} header is generated and cannot be replaced")
        headers.append(_unstructured_header(name, value, encode_long=False))
    # "=_" never occurs in quoted-printable text, so the boundary cannot collide.
    boundary = "=_" + hashlib.blake2b(message_id.encode("ascii"), digest_size=12).hexdigest()
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n')
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            "".join(headers).encode("utf-8"),
            b"\r\n",
            delimiter,
            _part("text/plain", rendered.text),
            b"\r\n",
            delimiter,
            _part("text/html", rendered.html),
            b"\r\n",
            f"--{boundary}--\r\n".encode("ascii"),
        )
    )


def _valid_message_id(message_id: str) -> bool:
    # Some systems truncate Message-IDs past 250 characters.
    return len(message_id) <= 250 and _MESSAGE_ID.fullmatch(message_id) is not None


def _checked_address(address: str, role: str) -> str:
    """``address`` as a header carries it (its domain in ASCII), once it is plausible."""
    implausible = ValueError(f"the {role} {address!r} is not a plausible email address")
    try:
        sending = addresses.for_sending(address)
    except ValueError as exc:
        raise ValueError(f"{implausible}: {exc}") from None
    local, _, _ = sending.rpartition("@")
    if len(sending.encode()) > 254 or len(local.encode()) > 64:
        raise implausible
    if sending.isascii():
        if not _ADDR_SPEC.fullmatch(sending):
            raise implausible
    elif not (local.isprintable() and _UTF8_ADDR_SPEC.fullmatch(sending)):
        # Controls, separators, format characters (bidi overrides) are not printable.
        raise implausible
    return sending


def _neutralised(value: str) -> str:
    """``value`` with nothing that could end a header line or confuse a reader."""
    if not value.isprintable():  # controls and surrogates are not; the regexes are slow
        value = _CONTROL.sub(" ", _SURROGATE.sub("\ufffd", value))
    return value.strip(" ")


def _fold(name: str, tokens: list[str], limit: int = _SOFT_LIMIT) -> str:
    """A header line, folded between ``tokens`` wherever that keeps lines within ``limit``.

    Raises:
        ValueError: a token does not fit in 998 columns.
    """
    lines: list[str] = []
    line = f"{name}: {tokens[0]}"
    for token in tokens[1:]:
        if len(line) + 1 + len(token) <= limit:
            line = f"{line} {token}"
        else:
            lines.append(line)
            line = f" {token}"
    lines.append(line)
    if max(map(len, lines)) > _HARD_LIMIT:
        raise ValueError(f"the {name} header has a token too long for a line")
    return "\r\n".join(lines) + "\r\n"


def _unstructured_header(name: str, value: str, *, encode_long: bool) -> str:
    """A free-text header (Subject, extras): plain ASCII if it fits, else RFC 2047 words.

    With ``encode_long`` an ASCII value whose words do not fit in 78 columns is encoded
    too; without it, such a value is kept verbatim up to 998 columns, so that tokens in
    headers such as ``List-Id`` or ``Feedback-ID`` stay machine-readable.
    """
    value = _neutralised(value)
    if not value:
        return f"{name}: \r\n"
    if value.isascii() and "=?" not in value:
        # Fold only at the first space of a run, so no line ends in whitespace.
        tokens = _FOLD_POINT.split(value)
        limit = _SOFT_LIMIT if encode_long else _HARD_LIMIT
        if len(name) + 2 + len(tokens[0]) <= limit and all(len(t) < limit for t in tokens):
            return _fold(name, tokens)
    return _fold(name, _encoded_words(value, name), _ENCODED_LINE_LIMIT)


def _address_header(name: str, display_name: str | None, address: str) -> str:
    """``Name: display <address>``, the display name as atoms, quoted, or encoded.

    An ASCII name stays readable even where that makes a line longer than 78 columns,
    and only non-ASCII names (or ASCII ones too long for any line) are encoded: CPython's
    parser reads a name split over several encoded words with an extra space at each
    split (gh-128110; RFC 2047 section 6.2 says to ignore that whitespace, as mail
    clients do), so splits are best kept to names that need them.
    """
    display = _neutralised(display_name or "")
    if not display:
        return f"{name}: {address}\r\n"
    tokens: list[str] = []
    if display.isascii() and "=?" not in display:
        if _ATOM_PHRASE.fullmatch(display):
            tokens = display.split(" ")
        else:
            tokens = ['"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"']
    if tokens and len(name) + 2 + max(map(len, tokens)) <= _HARD_LIMIT:
        return _fold(name, [*tokens, f"<{address}>"])
    return _fold(name, [*_encoded_words(display, name), f"<{address}>"], _ENCODED_LINE_LIMIT)


def _encoded_words(value: str, header_name: str) -> list[str]:
    """``value`` as RFC 2047 encoded words, each whole characters and at most 75 long.

    The first word fits on the line after ``header_name``. Uses "Q" when that is no
    longer than "B", restricted to what a phrase allows, so the same words serve a
    Subject and a display name. Whitespace between encoded words is not part of the
    text, so the value survives folding exactly.
    """
    first_room = _ENCODED_LINE_LIMIT - len(header_name) - 2
    data = value.encode("utf-8")
    q_text = [_Q_BYTE[byte] for byte in data]
    use_q = sum(map(len, q_text)) <= 4 * -(-len(data) // 3)
    prefix = "=?utf-8?q?" if use_q else "=?utf-8?b?"
    overhead = len(prefix) + 2
    room = max(min(first_room, _ENCODED_WORD_LIMIT), overhead + 16) - overhead
    words: list[str] = []
    start = 0
    while start < len(data):
        if use_q:
            end, length, cut = start, 0, start
            while end < len(data):
                if data[end] & 0xC0 != 0x80:  # a character starts here
                    cut = end
                length += len(q_text[end])
                if length > room:
                    break
                end += 1
            else:
                cut = len(data)
            words.append(prefix + "".join(q_text[start:cut]) + "?=")
        else:
            cut = min(start + room // 4 * 3, len(data))
            while cut < len(data) and data[cut] & 0xC0 == 0x80:  # mid-character
                cut -= 1
            words.append(prefix + base64.b64encode(data[start:cut]).decode("ascii") + "?=")
        start = cut
        room = _ENCODED_WORD_LIMIT - overhead
    return words


def _unsubscribe_headers(unsubscribe: Unsubscribe) -> list[str]:
    """``List-Unsubscribe`` (RFC 2369) and, for one click, ``List-Unsubscribe-Post``."""
    if not unsubscribe.url.startswith(("https://", "http://")) or not _URL.fullmatch(
        unsubscribe.url
    ):
        raise ValueError(f"{unsubscribe.url!r} is not a usable unsubscribe URL")
    targets = [f"<{unsubscribe.url}>"]
    if unsubscribe.mailto:
        if not unsubscribe.mailto.startswith("mailto:") or not _URL.fullmatch(unsubscribe.mailto):
            raise ValueError(f"{unsubscribe.mailto!r} is not a usable mailto URL")
        targets.append(f"<{unsubscribe.mailto}>")
    tokens = [f"{target}," for target in targets[:-1]] + targets[-1:]
    headers = [_fold("List-Unsubscribe", tokens)]
    if unsubscribe.one_click:
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    return headers


def _part(content_type: str, content: str) -> bytes:
    """One body part: its headers, then ``content`` as UTF-8 quoted-printable."""
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        data = _SURROGATE.sub("\ufffd", content).encode("utf-8")
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # Some relays rewrite a line starting "From " to ">From ", which breaks DKIM.
    if encoded.startswith(b"From "):
        encoded = b"=46" + encoded[1:]
    encoded = encoded.replace(b"\nFrom ", b"\n=46rom ").replace(b"\n", b"\r\n")
    head = (
        f"Content-Type: {content_type}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + encoded
