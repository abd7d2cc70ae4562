"""Identifiers: time-ordered for new things, derived for things that must not repeat."""

from __future__ import annotations

import hashlib

import uuid_utils

_NAMESPACE = uuid_utils.UUID("6f1d3c2e-8b1a-4d0e-9a53-7c1f0e2b4a10")


def new_id() -> str:
    """A fresh, time-ordered id (UUIDv7)."""
    return str(uuid_utils.uuid7())


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts, so a redelivered step writes the same row.

    When the first part is itself a time-ordered id (an event's UUIDv7, or an id derived
    from one), the result keeps its first 48 bits, the time, and takes the other 74 from
    the hash (a version-8 UUID): rows derived from an event are written in the order
    their events came, at the end of their indexes, instead of at random places.
    """
    hashed = str(uuid_utils.uuid5(_NAMESPACE, "\x1f".join(parts)))
    first = parts[0]
    if len(first) == 36 and first[14] in _TIME_ORDERED:
        return f"{first[:13]}-8{hashed[15:]}"
    return hashed


def legacy_derived_id(*parts: str) -> str:
    """The id ``derived_id`` gave before it kept the time: rows written by earlier
    releases (a digest entry planned before an upgrade) are found by it."""
    return str(uuid_utils.uuid5(_NAMESPACE, "\x1f".join(parts)))


# The version digits of UUIDs whose first 48 bits are a time: v7, and v8 as made here.
_TIME_ORDERED = frozenset("78")


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
