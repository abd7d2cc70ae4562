"""End-user tokens: JWTs signed with the deployment's secret."""

from __future__ import annotations

import datetime as dt

import jwt

from tidings.kit import errors

AUDIENCE = "tidings:user"
ALGORITHM = "HS256"


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
