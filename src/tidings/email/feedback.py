"""Provider feedback: bounces, complaints and deliveries, verified and parsed (pure, no I/O).

Two shapes reach the webhook: Amazon SES events inside a signed SNS envelope, and a
generic JSON shape signed with a shared secret (``Tidings-Signature``, Stripe-style).
Nothing here touches the network or the database: SNS certificates come from a
``CertificateStore`` the operator fills.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.kit import errors


class FeedbackKind(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    DELIVERED = "delivered"


@dataclass(frozen=True)
class Feedback:
    """What a provider said about one message to one address."""

    kind: FeedbackKind
    address: str
    provider: str
    message_id: str | None = None  # RFC 5322 form, "<local@domain>"
    provider_message_id: str | None = None
    detail: str | None = None
    occurred_at: dt.datetime | None = None


MAX_DETAIL = 1000

# --- generic signed JSON -------------------------------------------------------------

SIGNATURE_HEADER = "Tidings-Signature"
SIGNATURE_TOLERANCE = dt.timedelta(minutes=5)
_SIGNATURE_FIELD = "tidings-signature"
_GENERIC_TYPES = ("bounce", "complaint", "delivered")


def sign_generic(raw: bytes, secret: str, at: dt.datetime) -> str:
    """The ``Tidings-Signature`` value for ``raw`` sent at ``at``: what a sender computes."""
    timestamp = int(at.timestamp())
    return f"t={timestamp},v1={_generic_digest(secret, timestamp, raw)}"


def verify_generic_signature(
    raw: bytes, signature_header: str | None, secret: str, now: dt.datetime
) -> None:
    """Check a ``Tidings-Signature`` header; any ``v1`` may match (secret rotation).

    Raises:
        errors.Unauthenticated: missing, malformed, wrong or older than 5 minutes.
    """
    if not secret:
        raise errors.Unauthenticated(
            "Generic email feedback is not configured: no webhook secret is set.",
            field=_SIGNATURE_FIELD,
        )
    if not signature_header:
        raise errors.Unauthenticated(
            f"The {SIGNATURE_HEADER} header is missing.", field=_SIGNATURE_FIELD
        )
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in signature_header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and re.fullmatch(r"[0-9]{1,12}", value):
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.strip().lower().encode())
    if timestamp is None or not candidates:
        raise errors.Unauthenticated(
            f"The {SIGNATURE_HEADER} header must read "
            "'t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">'.",
            field=_SIGNATURE_FIELD,
        )
    expected = _generic_digest(secret, timestamp, raw).encode()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise errors.Unauthenticated(
            "The signature does not match the body: sign '<t>.<raw body>' with HMAC-SHA256 "
            "and the webhook secret.",
            field=_SIGNATURE_FIELD,
        )
    if abs(now.timestamp() - timestamp) > SIGNATURE_TOLERANCE.total_seconds():
        raise errors.Unauthenticated(
            "The signature's timestamp is more than 5 minutes from now: sign each request "
            "as it is sent, and check the sender's clock.",
            field=_SIGNATURE_FIELD,
        )


def parse_generic(
    raw: bytes, signature_header: str | None, secret: str, now: dt.datetime
) -> list[Feedback]:
    """Verify and parse a generic feedback body: one event, or ``{"events": [...]}``.

    Raises:
        errors.Unauthenticated: the signature is missing, wrong or stale.
        errors.Invalid: the body is not the generic shape; ``field`` is its JSON path.
    """
    verify_generic_signature(raw, signature_header, secret, now)
    body = _json_object(raw, "body", "The body must be a JSON object.")
    if "events" not in body:
        return [_generic_event(body, "")]
    events = body["events"]
    if not isinstance(events, list):
        raise errors.Invalid("'events' must be a list of feedback events.", field="events")
    return [_generic_event(event, f"events.{i}") for i, event in enumerate(events)]


def _generic_digest(secret: str, timestamp: int, raw: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()


def _generic_event(item: Any, path: str) -> Feedback:
    def at(name: str) -> str:
        return f"{path}.{name}" if path else name

    if not isinstance(item, dict):
        raise errors.Invalid("Each feedback event must be a JSON object.", field=path or "body")
    kind_name = item.get("type")
    bounce_type = item.get("bounce_type")
    if kind_name not in _GENERIC_TYPES:
        raise errors.Invalid(
            "'type' must be one of 'bounce', 'complaint', 'delivered'.", field=at("type")
        )
    if kind_name == "bounce":
        if bounce_type not in ("hard", "soft"):
            raise errors.Invalid(
                "'bounce_type' must be 'hard' or 'soft' for a bounce.", field=at("bounce_type")
            )
        kind = FeedbackKind.HARD_BOUNCE if bounce_type == "hard" else FeedbackKind.SOFT_BOUNCE
    elif bounce_type is not None:
        raise errors.Invalid("'bounce_type' belongs to bounces only.", field=at("bounce_type"))
    else:
        kind = FeedbackKind(kind_name)
    recipient = _string(item.get("recipient"), at("recipient"), required=True)
    occurred_at = item.get("occurred_at")
    return Feedback(
        kind=kind,
        address=_address(recipient, at("recipient")),
        provider="generic",
        message_id=_message_id(_string(item.get("message_id"), at("message_id"))),
        provider_message_id=_string(item.get("provider_message_id"), at("provider_message_id")),
        detail=_detail(_string(item.get("detail"), at("detail"))),
        occurred_at=None if occurred_at is None else _timestamp(occurred_at, at("occurred_at")),
    )


# --- Amazon SES through SNS ----------------------------------------------------------

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
    envelope = _json_object(raw, "body", "The body must be an SNS message (a JSON object).")
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
    sent_at = _timestamp(envelope["Timestamp"], "Timestamp")
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


def parse_ses_event(message: str) -> list[Feedback]:
    """Feedback from an SES notification or event-publishing record (an SNS ``Message``).

    Events that are not bounces, complaints or deliveries (sends, opens, the topic's
    setup notice) give no feedback.

    Raises:
        errors.Invalid: not JSON, or a bounce, complaint or delivery of the wrong shape.
    """
    event = _json_object(message.encode(), "Message", "The SNS Message must be an SES event.")
    kind_name = event.get("notificationType") or event.get("eventType")
    if kind_name not in ("Bounce", "Complaint", "Delivery"):
        return []
    mail = _object(event.get("mail"), "Message.mail")
    section_name = kind_name.lower()
    section = _object(event.get(section_name), f"Message.{section_name}")
    path = f"Message.{section_name}"
    common: dict[str, Any] = {
        "provider": "ses",
        "message_id": _ses_message_id(mail),
        "provider_message_id": _string(mail.get("messageId"), "Message.mail.messageId"),
    }
    stamp = section.get("timestamp") or mail.get("timestamp")
    common["occurred_at"] = None if stamp is None else _timestamp(stamp, f"{path}.timestamp")

    if kind_name == "Delivery":
        recipients = _list(section.get("recipients"), f"{path}.recipients")
        detail = _detail(_string(section.get("smtpResponse"), f"{path}.smtpResponse"))
        return [
            Feedback(
                FeedbackKind.DELIVERED,
                _address(
                    _string(r, f"{path}.recipients.{i}", required=True), f"{path}.recipients.{i}"
                ),
                detail=detail,
                **common,
            )
            for i, r in enumerate(recipients)
        ]
    if kind_name == "Complaint":
        listed = _list(section.get("complainedRecipients"), f"{path}.complainedRecipients")
        reason = section.get("complaintFeedbackType") or section.get("complaintSubType")
        return [
            Feedback(
                FeedbackKind.COMPLAINT,
                _recipient(r, f"{path}.complainedRecipients.{i}"),
                detail=_detail(_string(reason, f"{path}.complaintFeedbackType")),
                **common,
            )
            for i, r in enumerate(listed)
        ]
    bounce_type = _string(section.get("bounceType"), f"{path}.bounceType", required=True)
    subtype = _string(section.get("bounceSubType"), f"{path}.bounceSubType")
    # Only a permanent bounce is certain enough to stop mailing an address for good.
    kind = FeedbackKind.HARD_BOUNCE if bounce_type == "Permanent" else FeedbackKind.SOFT_BOUNCE
    listed = _list(section.get("bouncedRecipients"), f"{path}.bouncedRecipients")
    found: list[Feedback] = []
    for i, entry in enumerate(listed):
        at = f"{path}.bouncedRecipients.{i}"
        address = _recipient(entry, at)
        diagnostic = _string(entry.get("diagnosticCode"), f"{at}.diagnosticCode")
        label = "/".join(x for x in (bounce_type, subtype) if x)
        detail = f"{label}: {diagnostic}" if diagnostic else label
        found.append(Feedback(kind, address, detail=_detail(detail), **common))
    return found


def _recipient(entry: Any, path: str) -> str:
    entry = _object(entry, path)
    email = _string(entry.get("emailAddress"), f"{path}.emailAddress", required=True)
    return _address(email, f"{path}.emailAddress")


def _ses_message_id(mail: Mapping[str, Any]) -> str | None:
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if (
                isinstance(header, dict)
                and str(header.get("name", "")).lower() == "message-id"
                and isinstance(header.get("value"), str)
            ):
                return _message_id(header["value"])
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        return _message_id(common["messageId"])
    return None


# --- shared shape checks -------------------------------------------------------------


def _json_object(raw: bytes, path: str, message: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.Invalid(f"{message} It is not valid JSON: {exc}.", field=path) from exc
    return _object(value, path, message)


def _object(value: Any, path: str, message: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.Invalid(message or f"'{path}' must be a JSON object.", field=path)
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise errors.Invalid(f"'{path}' must be a list.", field=path)
    return value


def _string(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise errors.Invalid(f"'{path}' must be a non-empty string.", field=path)
    return value


def _address(value: str | None, path: str) -> str:
    _name, address = parseaddr(value or "")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 320 or re.search(r"\s", address):
        raise errors.Invalid(f"'{path}' must be an email address.", field=path)
    return address


def _message_id(value: str | None) -> str | None:
    """Message-IDs compare in their ``<local@domain>`` form, whoever dropped the brackets."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _detail(value: str | None) -> str | None:
    return None if value is None else value[:MAX_DETAIL]


def _timestamp(value: Any, path: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise errors.Invalid(f"'{path}' must be an ISO 8601 time with a UTC offset.", field=path)
    return parsed.astimezone(dt.UTC)
