"""Signed unsubscribe tokens: who, from what, and (optionally) which address and language.

An HS256 JWT for the audience ``tidings:unsubscribe``, so no other token signed with the
deployment's secret (a user token, say) passes for one. It never expires: a link in an
old email must keep working. ``iat`` records when it was issued, for a future cut-off.
The claims are signed, not encrypted: the address, when included, is readable by
whoever holds the link, which is the person it was sent to. The locale is the language
the email was written for, so that the page the link opens speaks it too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt

from tidings.kit import errors

AUDIENCE = "tidings:unsubscribe"
ALGORITHM = "HS256"
_MAX_TOKEN_LENGTH = 2048
_MAX_LOCALE_LENGTH = 35
# The header PyJWT writes for HS256 with no "typ", already encoded: tokens are issued
# here by hand, byte for byte as ``jwt.encode`` would, at a quarter of its cost.
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=")


@dataclass(frozen=True)
class UnsubscribeClaim:
    """What a valid token says: ``user_id`` no longer wants ``category`` (at ``email``)."""

    user_id: str
    category: str
    email: str | None = None
    locale: str | None = None


def issue(
    secret: str,
    *,
    user_id: str,
    category: str,
    email: str | None = None,
    locale: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """A compact, URL-safe token for an unsubscribe link; ``now`` defaults to the clock.

    Raises:
        ValueError: the secret, user id or category is empty.
    """
    if not secret:
        raise ValueError("unsubscribe tokens need a signing secret")
    if not user_id or not category:
        raise ValueError("an unsubscribe token names a user and a category")
    issued_at = now if now is not None else dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {
        "aud": AUDIENCE,
        "sub": user_id,
        "cat": category,
        "iat": int(issued_at.timestamp()),
    }
    if email is not None:
        claims["eml"] = email
    if locale:
        claims["loc"] = locale[:_MAX_LOCALE_LENGTH]
    # No "typ" header: every byte of the token ends up in a URL.
    payload = json.dumps(claims, separators=(",", ":")).encode("utf-8")
    signing_input = _HEADER + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    signature = hmac.digest(secret.encode("utf-8"), signing_input, hashlib.sha256)
    token = signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")
    return token.decode("ascii")


def verify(secret: str, token: str) -> UnsubscribeClaim:
    """What ``token`` claims, once its signature and audience check out.

    Raises:
        errors.Invalid: the token is malformed, forged, or not an unsubscribe token.
    """
    if not secret:
        raise ValueError("unsubscribe tokens need a signing secret")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise errors.Invalid("The unsubscribe token is not valid: too long.", field="token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            # Never expires; a future-dated iat is clock skew between nodes, not forgery.
            options={"require": ["aud", "sub", "cat", "iat"], "verify_iat": False},
        )
    except jwt.InvalidTokenError as exc:
        raise errors.Invalid(f"The unsubscribe token is not valid: {exc}.", field="token") from None
    user_id, category, email = claims["sub"], claims["cat"], claims.get("eml")
    # Only ever a hint for the page's language: anything but a short string is ignored.
    locale = claims.get("loc")
    if not isinstance(locale, str) or len(locale) > _MAX_LOCALE_LENGTH:
        locale = None
    if not isinstance(user_id, str) or not user_id:
        raise errors.Invalid("The unsubscribe token names no user.", field="token")
    if not isinstance(category, str) or not category:
        raise errors.Invalid("The unsubscribe token names no category.", field="token")
    if email is not None and not isinstance(email, str):
        raise errors.Invalid("The unsubscribe token has a malformed address.", field="token")
    if not isinstance(claims["iat"], int):
        raise errors.Invalid("The unsubscribe token has a malformed iat.", field="token")
    return UnsubscribeClaim(user_id=user_id, category=category, email=email, locale=locale)
