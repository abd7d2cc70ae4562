"""Identifiers: time-ordered for new things, derived for things that must not repeat."""

from __future__ import annotations

import hashlib

import uuid_utils

_NAMESPACE = uuid_utils.UUID("6f1d3c2e-8b1a-4d0e-9a53-7c1f0e2b4a10")


def new_id() -> str:
    """A fresh, time-ordered id (UUIDv7)."""
    return str(uuid_utils.uuid7())


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts, so a redelivered step writes the same row."""
    # uuid_utils computes the same standard UUIDv5 as the standard library, ten times faster.
    return str(uuid_utils.uuid5(_NAMESPACE, "\x1f".join(parts)))


def bounded(key: str, limit: int) -> str:
    """``key`` if it fits in ``limit`` characters, else a prefix of it and its hash:
    equal keys stay equal, different keys stay different."""
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    room = limit - len(digest) - 1
    if room < 0:
        # Too small a limit for a readable prefix: the hash alone, as much as fits.
        return digest[:limit]
    return f"{key[:room]}#{digest}"
