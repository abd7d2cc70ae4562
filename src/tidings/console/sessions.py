"""Console sign-in: a signed, expiring session cookie and a CSRF token bound to it.

The cookie holds the operator key's id, an expiry and a random nonce, signed with an
HMAC of a key derived from the deployment's secret. It never holds the key itself.

Signing out ends the session on the server too: its nonce is marked as signed out in
the counters (the database's, or Redis) until the session would have expired, so a
copy of the cookie taken before stops working at once, in every process. The mark
belongs to no user (``SIGNED_OUT_OWNER``), so erasing a user never removes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from tidings.kit.counters import Counters, NewMark
from tidings.kit.db import Database

COOKIE = "tidings_console"
LIFETIME = dt.timedelta(hours=12)
SIGNED_OUT_OWNER = ""
"""The user a sign-out mark is stored under: a user id is 1 to 255 characters, so no
erasure names this one. (Marks written by earlier versions, under
``console:<key id>``, still count; they end with their sessions, within 12 hours.)"""


@dataclass(frozen=True)
class Session:
    """One operator's sign-in to the console."""

    key_id: str
    expires_at: dt.datetime
    nonce: str


def start(key_id: str, now: dt.datetime, lifetime: dt.timedelta = LIFETIME) -> Session:
    """A new session for the operator key ``key_id``."""
    return Session(key_id=key_id, expires_at=now + lifetime, nonce=secrets.token_urlsafe(16))


def seal(secret: str, session: Session) -> str:
    """The cookie value of ``session``: its claims and their signature."""
    claims = {"k": session.key_id, "e": int(session.expires_at.timestamp()), "n": session.nonce}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_sign(secret, 'session', body)}"


def unseal(secret: str, value: str | None, now: dt.datetime) -> Session | None:
    """The session a cookie value holds; None when it is missing, forged or expired."""
    # Only ASCII was ever sealed; anything else is refused before it meets the HMAC.
    if not value or not value.isascii() or value.count(".") != 1:
        return None
    body, signature = value.split(".")
    if not hmac.compare_digest(signature, _sign(secret, "session", body)):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(
            key_id=str(claims["k"]),
            expires_at=dt.datetime.fromtimestamp(int(claims["e"]), dt.UTC),
            nonce=str(claims["n"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_at > now else None


def csrf_token(secret: str, session: Session) -> str:
    """The token every state-changing request of this session must carry."""
    return _sign(secret, "csrf", session.nonce)


def csrf_ok(secret: str, session: Session, presented: str | None) -> bool:
    """Whether ``presented`` is this session's CSRF token (constant time)."""
    if not presented or not str(presented).isascii():
        return False  # compare_digest raises on other text; no token has any
    return hmac.compare_digest(str(presented), csrf_token(secret, session))


async def end(counters: Counters, db: Database, session: Session, now: dt.datetime) -> None:
    """Sign the session out for good: its cookie opens nothing from now on."""
    mark = NewMark(
        key=_signed_out_key(session),
        user_id=SIGNED_OUT_OWNER,
        owner=None,
        first_seen=now,
        expires_at=max(session.expires_at, now + dt.timedelta(seconds=1)),
    )
    async with db.transaction() as conn:
        await counters.save_marks(conn, [mark], now=now)


async def ended(counters: Counters, db: Database, session: Session, now: dt.datetime) -> bool:
    """Whether the session was signed out."""
    key = _signed_out_key(session)
    async with db.reader() as conn:
        return key in await counters.live_marks(conn, [key], now)


def _signed_out_key(session: Session) -> str:
    # A digest, as the counters' keys are: it cannot meet a dedup mark's.
    return hashlib.sha256(f"tidings-console-signed-out:{session.nonce}".encode()).hexdigest()


def _sign(secret: str, purpose: str, message: str) -> str:
    # A key per purpose, so a session signature is never a valid CSRF token or a link.
    key = hmac.new(secret.encode(), f"tidings-console-{purpose}".encode(), "sha256").digest()
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
