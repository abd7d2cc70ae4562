from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable

import dkim as dkimpy  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tidings.email import dkim, mime
from tidings.email.message import RenderedEmail

DOMAIN = "mail.example.com"
SELECTOR = "tidings2024"

DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def private_key() -> bytes:
    return dkim.generate_key()


@pytest.fixture(scope="module")
def signer(private_key: bytes) -> dkim.DkimSigner:
    return dkim.DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=private_key)


@pytest.fixture(scope="module")
def dns(private_key: bytes) -> DnsFunc:
    """dkimpy's DNS lookup, answering only for our selector."""
    record = dkim.dns_record(private_key).encode("ascii")

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def message(
    *,
    subject: str = "Ann commented on Roadmap",
    text: str = "Ann said: looks good.\n",
    unsubscribe: mime.Unsubscribe | None = None,
) -> bytes:
    return mime.build_message(
        sender="notifications@example.com",
        sender_name="Tidings",
        recipient="bob@example.com",
        recipient_name="Bob Zoë",
        rendered=RenderedEmail(
            subject=subject, html=f"<p>{text}</p>\n   indented  \n", text=text, locale="en"
        ),
        message_id="<d-1@example.com>",
        date=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        unsubscribe=unsubscribe,
    )


def verifies(raw: bytes, dns: DnsFunc) -> bool:
    return bool(dkimpy.verify(raw, dnsfunc=dns))


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n", 1)[0]
    match = re.match(rb"DKIM-Signature: (.*?)\r\n(?! )", signed, re.DOTALL)
    assert header.startswith(b"DKIM-Signature: ")
    assert match is not None
    value = re.sub(r"\s+", "", match.group(1).decode("ascii"))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


UNSUBSCRIBE = mime.Unsubscribe(
    url="https://tidings.example.com/u/tok", mailto="mailto:u@example.com?subject=tok"
)


@pytest.mark.parametrize("unsubscribe", [None, UNSUBSCRIBE], ids=["mandatory", "unsubscribable"])
def test_dkimpy_verifies_the_signature(
    signer: dkim.DkimSigner, dns: DnsFunc, unsubscribe: mime.Unsubscribe | None
) -> None:
    raw = message(unsubscribe=unsubscribe)
    signed = signer.sign(raw)
    assert signed.endswith(raw)
    assert verifies(signed, dns)


def test_the_signature_is_relaxed_rsa_sha256_over_the_headers_present(
    signer: dkim.DkimSigner,
) -> None:
    tags = signature_tags(signer.sign(message(unsubscribe=UNSUBSCRIBE)))
    assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/relaxed")
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)
    signed_once = [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ]
    # Each signed again (oversigned), so a second instance cannot be added.
    assert tags["h"].split(":") == signed_once * 2
    assert "t" not in tags
    assert "l" not in tags  # no body length: nothing may be appended


def test_mandatory_messages_do_not_sign_absent_unsubscribe_headers(
    signer: dkim.DkimSigner,
) -> None:
    tags = signature_tags(signer.sign(message(unsubscribe=None)))
    assert "list-unsubscribe" not in tags["h"]


def test_timestamp_becomes_the_t_tag(signer: dkim.DkimSigner, dns: DnsFunc) -> None:
    at = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    signed = signer.sign(message(), timestamp=at)
    assert signature_tags(signed)["t"] == str(int(at.timestamp()))
    assert verifies(signed, dns)


def test_signature_lines_are_short(signer: dkim.DkimSigner) -> None:
    signed = signer.sign(message(unsubscribe=UNSUBSCRIBE))
    header = re.match(rb"DKIM-Signature: .*?\r\n(?! )", signed, re.DOTALL)
    assert header is not None
    assert all(len(line) <= 78 for line in header.group(0).split(b"\r\n"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b"looks good", b"looks bad!", id="body"),
        pytest.param(b"Subject: Ann commented", b"Subject: Ann  deleted  ", id="subject"),
        pytest.param(b"<bob@example.com>", b"<eve@example.com>", id="to"),
        pytest.param(b"<d-1@example.com>", b"<d-2@example.com>", id="message-id"),
        pytest.param(b"u/tok", b"u/tak", id="list-unsubscribe"),
    ],
)
def test_tampering_breaks_the_signature(
    signer: dkim.DkimSigner, dns: DnsFunc, old: bytes, new: bytes
) -> None:
    signed = signer.sign(message(unsubscribe=UNSUBSCRIBE))
    assert old in signed
    assert not verifies(signed.replace(old, new, 1), dns)


@pytest.mark.parametrize(
    "header",
    [
        b"From: Eve <eve@example.net>\r\n",
        b"Subject: Your account is locked\r\n",
        b"List-Unsubscribe: <https://evil.example.net/>\r\n",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    ],
)
@pytest.mark.parametrize("where", ["top", "bottom"])
def test_adding_a_signed_header_breaks_the_signature(
    signer: dkim.DkimSigner, dns: DnsFunc, header: bytes, where: str
) -> None:
    signed = signer.sign(message(unsubscribe=UNSUBSCRIBE))
    head, _, body = signed.partition(b"\r\n\r\n")
    forged = header + signed if where == "top" else head + b"\r\n" + header + b"\r\n" + body
    assert not verifies(forged, dns)


def test_relaxed_canonicalisation_tolerates_whitespace_changes_in_transit(
    signer: dkim.DkimSigner, dns: DnsFunc
) -> None:
    signed = signer.sign(message())
    refolded = signed.replace(b"Subject: Ann commented", b"Subject:   Ann\r\n\tcommented", 1)
    padded = refolded.replace(b"   indented  \r\n", b"\t indented\r\n", 1) + b"\r\n\r\n"
    assert padded != signed
    assert verifies(padded, dns)


def test_unrelated_headers_added_in_transit_keep_the_signature(
    signer: dkim.DkimSigner, dns: DnsFunc
) -> None:
    signed = signer.sign(message())
    assert verifies(b"Received: from relay.example.org\r\n" + signed, dns)


def test_bare_line_feeds_are_signed_as_crlf(signer: dkim.DkimSigner, dns: DnsFunc) -> None:
    raw = message().replace(b"\r\n", b"\n")
    signed = signer.sign(raw)
    assert signed.count(b"\n") == signed.count(b"\r\n")
    assert verifies(signed, dns)


def test_an_empty_body_is_signed(signer: dkim.DkimSigner, dns: DnsFunc) -> None:
    for raw in (b"From: a@example.com\r\nSubject: x\r\n\r\n", b"From: a@example.com\r\n"):
        assert verifies(signer.sign(raw), dns)


def test_a_message_without_from_is_refused(signer: dkim.DkimSigner) -> None:
    with pytest.raises(ValueError, match="From"):
        signer.sign(b"Subject: x\r\n\r\nbody\r\n")


def test_a_malformed_header_line_is_refused(signer: dkim.DkimSigner) -> None:
    with pytest.raises(ValueError, match="header"):
        signer.sign(b"From: a@example.com\r\nnot a header\r\n\r\nbody\r\n")


def test_custom_headers_and_no_oversigning(private_key: bytes, dns: DnsFunc) -> None:
    signer = dkim.DkimSigner(
        domain=DOMAIN,
        selector=SELECTOR,
        private_key_pem=private_key,
        headers=["From", "Subject", "X-Absent"],
        oversign=[],
    )
    signed = signer.sign(message())
    assert signature_tags(signed)["h"] == "from:subject"  # x-absent is absent
    assert verifies(signed, dns)


def test_generated_keys_and_their_dns_record(private_key: bytes) -> None:
    assert private_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(private_key, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    record = dkim.dns_record(private_key)
    prefix = "v=DKIM1; k=rsa; p="
    assert record.startswith(prefix)
    public = serialization.load_der_public_key(base64.b64decode(record.removeprefix(prefix)))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_pkcs8_keys_are_accepted(private_key: bytes, dns: DnsFunc) -> None:
    key = serialization.load_pem_private_key(private_key, password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = dkim.DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=pkcs8)
    assert verifies(signer.sign(message()), dns)


def test_non_rsa_and_unreadable_keys_are_refused() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="RSA"):
        dkim.DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=ed)
    with pytest.raises(ValueError, match="cannot be read"):
        dkim.DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=b"not a key")


@pytest.mark.parametrize(
    ("domain", "selector", "headers"),
    [
        ("example.com; x=y", SELECTOR, dkim.DEFAULT_SIGNED_HEADERS),
        (DOMAIN, "sel\r\nX: y", dkim.DEFAULT_SIGNED_HEADERS),
        (DOMAIN, "", dkim.DEFAULT_SIGNED_HEADERS),
        (DOMAIN, SELECTOR, ("subject", "to")),
        (DOMAIN, SELECTOR, ("from", "sub:ject")),
    ],
)
def test_malformed_settings_are_refused(
    private_key: bytes, domain: str, selector: str, headers: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=r"DKIM|header"):
        dkim.DkimSigner(
            domain=domain, selector=selector, private_key_pem=private_key, headers=headers
        )
