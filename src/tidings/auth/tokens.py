"""End-user tokens: JWTs signed with the deployment's secret."""

from __future__ import annotations

import datetime as dt

import jwt

from tidings.kit import errors

AUDIENCE = "tidings:user"
ALGORITHM = "HS256"
LEEWAY = dt.timedelta(seconds=30)
"""How far the clocks of the application that mints tokens and of Tidings may disagree:
a token is taken this much before its ``iat``/``nbf`` and after its ``exp``."""


def issue_user_token(secret: str, user_id: str, *, ttl: dt.timedelta, now: dt.datetime) -> str:
    """A token that lets ``user_id`` read and change their own inbox, until it expires."""
    claims = {"sub": user_id, "aud": AUDIENCE, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_user_token(secret: str, token: str) -> str:
    """The user id a valid token speaks for.

    Raises:
        errors.Unauthenticated: the token is malformed, forged, expired or not a user token.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
            leeway=LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise errors.Unauthenticated(
            "The user token has expired; ask the application for a new one.", field="token"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise errors.Unauthenticated(
            f"The user token is not valid: {exc}.", field="token"
        ) from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise errors.Unauthenticated("The user token names no user.", field="token")
    return subject


def accepted_until(token: str) -> dt.datetime:
    """When a token that ``verify_user_token`` accepted stops being accepted: its ``exp``
    plus the leeway. Only for a token already verified (the signature is not checked)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    expires = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
    return expires + LEEWAY
