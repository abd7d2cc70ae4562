"""Amazon SNS feedback: an SNS HTTP(S) message, its signature verified against the
certificates the operator keeps (``CertificateStore``; nothing is fetched), carrying an
SES event (``feedback_ses``) or a subscription step for the operator (pure, no I/O).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.email.feedback import Feedback
from tidings.email.feedback_checks import json_object, time_at
from tidings.email.feedback_ses import parse_ses_event
from tidings.kit import errors

SNS_MAX_AGE = dt.timedelta(hours=1)
SNS_MAX_SKEW = dt.timedelta(minutes=5)
_SNS_CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn")
_SIGNED_KEYS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (*_CONFIRMATION_KEYS, "Type"),
    "UnsubscribeConfirmation": (*_CONFIRMATION_KEYS, "Type"),
}
_SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}


class SnsKind(enum.StrEnum):
    NOTIFICATION = "notification"
    SUBSCRIPTION_CONFIRMATION = "subscription_confirmation"
    UNSUBSCRIBE_CONFIRMATION = "unsubscribe_confirmation"


_SNS_KINDS = {
    "Notification": SnsKind.NOTIFICATION,
    "SubscriptionConfirmation": SnsKind.SUBSCRIPTION_CONFIRMATION,
    "UnsubscribeConfirmation": SnsKind.UNSUBSCRIBE_CONFIRMATION,
}


@dataclass(frozen=True)
class SnsResult:
    """A verified SNS message: SES feedback, or a subscription step for the operator."""

    kind: SnsKind
    topic_arn: str
    sns_message_id: str
    subscribe_url: str | None = None
    feedback: list[Feedback] = field(default_factory=list)


class CertificateStore:
    """The certificates SNS signs with, by ``SigningCertURL``; nothing is fetched.

    They come from memory (``pems``, URL → PEM) or from ``directory``, laid out as the
    URLs are (``<directory>/sns.us-east-1.amazonaws.com/SimpleNotificationService-….pem``,
    what ``wget -x <url>`` saves), so adding one is a download.
    """

    def __init__(
        self, pems: Mapping[str, str | bytes] | None = None, *, directory: Path | None = None
    ) -> None:
        self._pems = {
            url: p.encode() if isinstance(p, str) else p for url, p in (pems or {}).items()
        }
        self._directory = directory
        self._loaded: dict[str, x509.Certificate] = {}

    def certificate(self, url: str) -> x509.Certificate | None:
        """The certificate ``url`` names, or None when the store does not hold it.

        Raises:
            errors.Unauthenticated: the held file is not a PEM certificate.
        """
        if url in self._loaded:
            return self._loaded[url]
        pem = self._pems.get(url)
        if pem is None:
            pem = self._read(url)
        if pem is None:
            return None
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise errors.Unauthenticated(
                f"The stored certificate for {url} is not a PEM certificate.",
                field="SigningCertURL",
            ) from exc
        self._loaded[url] = certificate
        return certificate

    def _read(self, url: str) -> bytes | None:
        if self._directory is None:
            return None
        parts = urlsplit(url)
        segments = PurePosixPath(parts.path).parts[1:]
        if not parts.hostname or not segments or any(s in ("", ".", "..") for s in segments):
            return None
        path = self._directory.joinpath(parts.hostname, *segments)
        try:
            return path.read_bytes()
        except OSError:
            return None


def check_certificate_url(url: str) -> None:
    """Refuse a ``SigningCertURL`` that is not an SNS certificate over HTTPS.

    Raises:
        errors.Unauthenticated: another scheme, host, port or file type.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme != "https"
        or parts.username is not None
        or port not in (None, 443)
        or not _SNS_CERT_HOST.fullmatch(parts.hostname or "")
        or not parts.path.endswith(".pem")
    ):
        raise errors.Unauthenticated(
            f"SigningCertURL {url!r} is not an Amazon SNS certificate "
            "(https://sns.<region>.amazonaws.com/….pem).",
            field="SigningCertURL",
        )


def sns_string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed: fixed keys, in order, as ``key\\nvalue\\n``; no absent Subject.

    Raises:
        errors.Invalid: a signed key is missing or not a string.
    """
    lines: list[str] = []
    for key in _SIGNED_KEYS[str(envelope.get("Type"))]:
        value = envelope.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise errors.Invalid(f"The SNS message needs '{key}' as a string.", field=key)
        lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode()


def parse_sns(
    raw: bytes, store: CertificateStore, *, topic_arns: frozenset[str], now: dt.datetime
) -> SnsResult:
    """Verify an SNS HTTP(S) message and parse the SES event it carries.

    ``topic_arns`` empty accepts any topic.

    Raises:
        errors.Unauthenticated: bad signature or certificate, topic not allowed, or a
            Timestamp over an hour old (a replay).
        errors.Invalid: not an SNS message, or an SES event of the wrong shape.
    """
    envelope = json_object(raw, "body", "The body must be an SNS message (a JSON object).")
    type_name = envelope.get("Type")
    if type_name not in _SNS_KINDS:
        raise errors.Invalid(
            "'Type' must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation.",
            field="Type",
        )
    _verify_sns(envelope, store, now)
    topic_arn: str = envelope["TopicArn"]
    if topic_arns and topic_arn not in topic_arns:
        raise errors.Unauthenticated(
            f"Topic {topic_arn} is not one this deployment accepts feedback from.",
            field="TopicArn",
        )
    sent_at = time_at(envelope["Timestamp"], "Timestamp")
    if now - sent_at > SNS_MAX_AGE or sent_at - now > SNS_MAX_SKEW:
        raise errors.Unauthenticated(
            "The SNS message's Timestamp is more than an hour old or in the future.",
            field="Timestamp",
        )
    kind = _SNS_KINDS[type_name]
    message_id: str = envelope["MessageId"]
    if kind is not SnsKind.NOTIFICATION:
        return SnsResult(kind, topic_arn, message_id, subscribe_url=envelope["SubscribeURL"])
    return SnsResult(kind, topic_arn, message_id, feedback=parse_ses_event(envelope["Message"]))


def _verify_sns(envelope: Mapping[str, Any], store: CertificateStore, now: dt.datetime) -> None:
    signed = sns_string_to_sign(envelope)
    algorithm = _SIGNATURE_HASHES.get(str(envelope.get("SignatureVersion")))
    if algorithm is None:
        raise errors.Unauthenticated(
            "SignatureVersion must be '1' (SHA1withRSA) or '2' (SHA256withRSA).",
            field="SignatureVersion",
        )
    url = envelope.get("SigningCertURL")
    if not isinstance(url, str):
        raise errors.Unauthenticated(
            "The SNS message has no SigningCertURL.", field="SigningCertURL"
        )
    check_certificate_url(url)
    certificate = store.certificate(url)
    if certificate is None:
        raise errors.Unauthenticated(
            f"The SNS certificate {url} is not in the certificate store: download it to "
            "<TIDINGS_SNS_CERTIFICATES_DIR>/<host>/<path> (wget -x does).",
            field="SigningCertURL",
        )
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise errors.Unauthenticated(
            f"The SNS certificate {url} is not valid now.", field="SigningCertURL"
        )
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise errors.Unauthenticated(
            f"The SNS certificate {url} does not hold an RSA key.", field="SigningCertURL"
        )
    try:
        signature = base64.b64decode(str(envelope.get("Signature", "")), validate=True)
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except (binascii.Error, InvalidSignature) as exc:
        raise errors.Unauthenticated(
            "The SNS signature does not match the message.", field="Signature"
        ) from exc
