"""DKIM signatures (RFC 6376): rsa-sha256, relaxed/relaxed, signed through ``cryptography``.

dkimpy signs with its own pure-Python RSA (about ten times slower than OpenSSL), so only
the canonicalisation lives here; the tests let dkimpy's verifier judge the result.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
# Signed once more than present (as rspamd does), so no relay can add a second From,
# Subject or List-Unsubscribe that a reader might show or act on instead of ours.
DEFAULT_OVERSIGNED_HEADERS: tuple[str, ...] = DEFAULT_SIGNED_HEADERS

_MIN_KEY_BITS = 1024
_LINE = 78
_CHUNK = 72  # characters of the signature per line
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
_HEADER_NAME = re.compile(r"[!-9;-~]+", re.ASCII)
_BARE_LINE_END = re.compile(rb"\r?\n")


class DkimSigner:
    """Signs messages for one domain and selector; the key is loaded once."""

    def __init__(
        self,
        *,
        domain: str,
        selector: str,
        private_key_pem: bytes,
        headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
        oversign: Sequence[str] = DEFAULT_OVERSIGNED_HEADERS,
    ) -> None:
        """Raises ValueError for a malformed domain, selector or header list, or a key that
        is not an unencrypted RSA key of at least 1024 bits."""
        for what, name in (("domain", domain), ("selector", selector)):
            if not _DNS_NAME.fullmatch(name):
                raise ValueError(f"the DKIM {what} {name!r} is not a DNS name")
        self._headers = _header_names(headers)
        self._oversign = _header_names(oversign)
        if "from" not in self._headers:
            raise ValueError("DKIM must sign the From header (RFC 6376 section 5.4)")
        key = _load_key(private_key_pem)
        if key.key_size < _MIN_KEY_BITS:
            raise ValueError(f"a {key.key_size}-bit DKIM key is too short to be trusted")
        self._key = key
        self._pem = private_key_pem
        self.domain = domain
        self.selector = selector

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its settings (the key as PEM), so a worker process can sign too."""
        return _signer, (self.domain, self.selector, self._pem, self._headers, self._oversign)

    def sign(self, message: bytes, *, timestamp: datetime | None = None) -> bytes:
        """``message`` with a ``DKIM-Signature`` header prepended.

        Bare LF line endings are first turned into CRLF, as SMTP will carry them; the
        result is what must be sent. ``timestamp``, when given, becomes the ``t=`` tag.

        Raises:
            ValueError: ``message`` has a header line that is not ``name: value``, or no
                From header.
        """
        if message.count(b"\n") != message.count(b"\r\n"):
            message = _BARE_LINE_END.sub(b"\r\n", message)
        fields, body = _split(message)
        listed, hashed = self._select(fields)
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        tags = ["v=1;", "a=rsa-sha256;", "c=relaxed/relaxed;", f"d={self.domain};"]
        tags.append(f"s={self.selector};")
        if timestamp is not None:
            tags.append(f"t={int(timestamp.timestamp())};")
        names = [f"{name}:" for name in listed]
        names[0] = "h=" + names[0]
        names[-1] = names[-1].removesuffix(":") + ";"
        tags += [*names, f"bh={body_hash.decode('ascii')};"]
        # b= starts its own line, so the signature is appended without refolding.
        unsigned = _fold(tags) + "\r\n b="
        _, canonical_self = _relaxed_field(b"DKIM-Signature:" + unsigned.encode("ascii"))
        hashed.append(canonical_self.removesuffix(b"\r\n"))
        signature = self._key.sign(b"".join(hashed), padding.PKCS1v15(), hashes.SHA256())
        encoded = base64.b64encode(signature).decode("ascii")
        chunks = [encoded[i : i + _CHUNK] for i in range(0, len(encoded), _CHUNK)]
        header = f"DKIM-Signature: {unsigned}" + "\r\n ".join(chunks) + "\r\n"
        return header.encode("ascii") + message

    def _select(self, fields: list[tuple[bytes, bytes]]) -> tuple[list[str], list[bytes]]:
        """The ``h=`` names, and the canonical fields they sign, in order (section 5.4.2).

        Each listed name takes the next instance up from the bottom; a name listed once
        more than present (oversigning) stands for an empty field, so adding another
        instance breaks the signature.
        """
        present: dict[str, list[bytes]] = {}
        for raw_name, canonical in fields:
            present.setdefault(raw_name.decode("latin-1"), []).append(canonical)
        if "from" not in present:
            raise ValueError("a message without a From header cannot be DKIM-signed")
        listed: list[str] = []
        for name in self._headers:
            listed += [name] * len(present.get(name, ()))
        listed += [name for name in self._oversign if name in present and name in self._headers]
        hashed: list[bytes] = []
        remaining = {name: len(instances) for name, instances in present.items()}
        for name in listed:
            if remaining.get(name, 0) > 0:
                remaining[name] -= 1
                hashed.append(present[name][remaining[name]])
        return listed, hashed


def _signer(
    domain: str,
    selector: str,
    private_key_pem: bytes,
    headers: Sequence[str],
    oversign: Sequence[str],
) -> DkimSigner:
    return DkimSigner(
        domain=domain,
        selector=selector,
        private_key_pem=private_key_pem,
        headers=headers,
        oversign=oversign,
    )


def generate_key() -> bytes:
    """A new RSA-2048 private key as PKCS#1 PEM, the form DKIM tools expect."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def dns_record(private_key_pem: bytes) -> str:
    """The TXT record value to publish at ``<selector>._domainkey.<domain>``.

    A value longer than 255 characters is published as several strings in one record.
    """
    public = _load_key(private_key_pem).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def _load_key(private_key_pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the DKIM private key cannot be read: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the DKIM private key must be an RSA key")
    return key


def _header_names(names: Sequence[str]) -> tuple[str, ...]:
    unique: dict[str, None] = {}
    for name in names:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        unique[name.lower()] = None
    return tuple(unique)


def _split(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields, relaxed-canonical and keyed by lower-case name, and the body."""
    if message.startswith(b"\r\n"):
        return [], message[2:]
    head, separator, body = message.partition(b"\r\n\r\n")
    if not separator:
        head = head.removesuffix(b"\r\n")
    raw_fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and raw_fields:
            raw_fields[-1] += b"\r\n" + line
        else:
            raw_fields.append(line)
    return [_relaxed_field(field) for field in raw_fields], body


def _relaxed_field(field: bytes) -> tuple[bytes, bytes]:
    """RFC 6376 section 3.4.2: the lower-case name and ``name:value\\r\\n`` to hash."""
    name, colon, value = field.partition(b":")
    name = name.rstrip(b" \t").lower()
    if not colon or not name:
        raise ValueError(f"not a header field: {field[:80]!r}")
    value = _collapsed_whitespace(value.replace(b"\r\n", b"")).strip(b" ")
    return name, name + b":" + value + b"\r\n"


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 section 3.4.4, with bytes.replace where dkimpy uses regexes (much faster)."""
    body = _collapsed_whitespace(body).replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    body = body[:end]
    return body + b"\r\n" if body else b""


def _collapsed_whitespace(value: bytes) -> bytes:
    """Every run of spaces and tabs as a single space."""
    value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value


def _fold(tags: list[str]) -> str:
    """Tags joined by spaces, folded before a line would pass 78 columns."""
    line_length = len("DKIM-Signature: ")
    parts: list[str] = []
    for tag in tags:
        if parts and line_length + 1 + len(tag) > _LINE:
            parts.append("\r\n " + tag)
            line_length = 1 + len(tag)
        else:
            parts.append(" " + tag if parts else tag)
            line_length += len(parts[-1])
    return "".join(parts)
