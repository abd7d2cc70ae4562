"""API keys: generated, hashed, scoped to notification-type patterns."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "tdg"
OPERATOR_SCOPE = "admin"
"""The scope of an operator's key: any user's deliveries, any event, dead letters."""


@dataclass(frozen=True)
class ApiKey:
    """A producer's key as stored: never the secret itself, only its hash."""

    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    def may_publish(self, type_key: str) -> bool:
        """Whether this key's scopes cover the notification type ``type_key``."""
        return any(fnmatch.fnmatchcase(type_key, pattern) for pattern in self.scopes)

    @property
    def is_operator(self) -> bool:
        """Whether this is an operator's key: its scopes include the literal ``admin``."""
        return OPERATOR_SCOPE in self.scopes

    def may_read(self, type_key: str) -> bool:
        """Whether this key may see events of ``type_key`` and their deliveries."""
        return self.is_operator or self.may_publish(type_key)


@dataclass(frozen=True)
class GeneratedKey:
    plaintext: str
    prefix: str
    secret_hash: str


def generate() -> GeneratedKey:
    """A new key: ``tdg_<prefix>_<secret>``; the plaintext is shown once, never stored."""
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return GeneratedKey(plaintext=plaintext, prefix=prefix, secret_hash=hash_secret(plaintext))


def hash_secret(plaintext: str) -> str:
    """SHA-256 of the whole key: keys are 256 random bits, so a slow hash adds nothing."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like one."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def matches(plaintext: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented key against a stored hash."""
    return hmac.compare_digest(hash_secret(plaintext), secret_hash)
