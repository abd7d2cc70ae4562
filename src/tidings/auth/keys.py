"""API keys: generated, hashed, scoped.

A key's scopes are of two kinds. Type patterns (``comment.*``, ``billing.invoice_paid``)
say which notification types it may publish and read. Capability scopes (``users:write``,
``preferences:read``, …, see ``CAPABILITIES``) say what else it may do; they always hold
a ``:``, which no type key does, so the two never mix up. ``admin`` implies every
capability and every type.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from tidings.kit import errors

KEY_PREFIX = "tdg"
OPERATOR_SCOPE = "admin"
"""The scope of an operator's key: any user's deliveries, any event, dead letters, and
every capability below."""

USERS_READ = "users:read"
USERS_WRITE = "users:write"
USERS_ERASE = "users:erase"
TOPICS_READ = "topics:read"
TOPICS_WRITE = "topics:write"
PREFERENCES_READ = "preferences:read"
PREFERENCES_WRITE = "preferences:write"
DEV_MAILBOX = "dev:mailbox"

CAPABILITIES: dict[str, str] = {
    USERS_READ: "read recipients' profiles (email address, name, locale, time zone)",
    USERS_WRITE: "create and change profiles, also through the recipients of an event",
    USERS_ERASE: "erase a recipient: profile, inbox, subscriptions",
    TOPICS_READ: "list a topic's subscribers",
    TOPICS_WRITE: "subscribe users to topics and unsubscribe them",
    PREFERENCES_READ: "read users' and tenants' notification preferences",
    PREFERENCES_WRITE: "change users' and tenants' notification preferences",
    DEV_MAILBOX: "read the built-in mail catcher (GET /v1/dev/mailbox)",
}
"""Capability scopes a key may be given besides type patterns, and what each allows."""

_TYPE_PATTERN = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")


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
        """Whether this key's type patterns cover the notification type ``type_key``."""
        return self._publishable.match(type_key) is not None

    @functools.cached_property
    def _publishable(self) -> re.Pattern[str]:
        """The type patterns as one expression, as ``fnmatch.fnmatchcase`` reads each."""
        patterns = [fnmatch.translate(pattern) for pattern in self.type_patterns]
        return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")

    @property
    def type_patterns(self) -> tuple[str, ...]:
        """The scopes that name notification types (``comment.*``)."""
        return tuple(s for s in self.scopes if not is_capability(s))

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The capability scopes this key holds (``admin`` counts as all of them)."""
        if self.is_operator:
            return tuple(CAPABILITIES)
        return tuple(s for s in self.scopes if s in CAPABILITIES)

    def has(self, capability: str) -> bool:
        """Whether this key may do what ``capability`` (one of ``CAPABILITIES``) allows."""
        return self.is_operator or capability in self.scopes

    @property
    def is_operator(self) -> bool:
        """Whether this is an operator's key: its scopes include the literal ``admin``."""
        return OPERATOR_SCOPE in self.scopes

    def may_read(self, type_key: str) -> bool:
        """Whether this key may see events of ``type_key`` and their deliveries."""
        return self.is_operator or self.may_publish(type_key)


def is_capability(scope: str) -> bool:
    """Whether ``scope`` is a capability (or ``admin``) rather than a type pattern."""
    return scope == OPERATOR_SCOPE or ":" in scope


def checked_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes of a new key, trimmed, each once, in the order given.

    Raises:
        errors.Invalid: no scope, an unknown capability (``users:wrte``), or a type
            pattern that no notification type could match.
    """
    wanted: list[str] = []
    for raw in scopes:
        scope = raw.strip()
        if scope and scope not in wanted:
            wanted.append(scope)
    if not wanted:
        raise errors.Invalid(
            "A key needs at least one scope: a type pattern such as 'comment.*' or a "
            f"capability ({', '.join(CAPABILITIES)}, or admin).",
            field="scopes",
        )
    for scope in wanted:
        _check_scope(scope)
    return wanted


def _check_scope(scope: str) -> None:
    if scope == OPERATOR_SCOPE or scope in CAPABILITIES:
        return
    known = ", ".join([*CAPABILITIES, OPERATOR_SCOPE])
    if ":" in scope:
        raise errors.Invalid(
            f"Unknown scope {scope!r}; the capability scopes are {known}.", field="scopes"
        )
    # Type keys are ``area.name``: a pattern with neither a dot nor a wildcard matches none.
    if not _TYPE_PATTERN.match(scope) or not any(c in scope for c in ".*?["):
        raise errors.Invalid(
            f"Unknown scope {scope!r}: a type pattern names notification types "
            f"('comment.*', 'billing.invoice_paid'); the capability scopes are {known}.",
            field="scopes",
        )


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
