"""Generic email feedback: a JSON body (one event, or ``{"events": [...]}``) signed with a
shared secret in the ``Tidings-Signature`` header, Stripe-style (pure, no I/O)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

from tidings.email.feedback import Feedback, FeedbackKind
from tidings.email.feedback_checks import (
    address_at,
    clipped_detail,
    json_object,
    normal_message_id,
    string_at,
    time_at,
)
from tidings.kit import errors

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
    body = json_object(raw, "body", "The body must be a JSON object.")
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
    recipient = string_at(item.get("recipient"), at("recipient"), required=True)
    occurred_at = item.get("occurred_at")
    return Feedback(
        kind=kind,
        address=address_at(recipient, at("recipient")),
        provider="generic",
        message_id=normal_message_id(string_at(item.get("message_id"), at("message_id"))),
        provider_message_id=string_at(item.get("provider_message_id"), at("provider_message_id")),
        detail=clipped_detail(string_at(item.get("detail"), at("detail"))),
        occurred_at=None if occurred_at is None else time_at(occurred_at, at("occurred_at")),
    )
