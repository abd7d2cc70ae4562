"""Identifiers: time-ordered for new things, derived for things that must not repeat."""

from __future__ import annotations

import uuid

import uuid_utils

_NAMESPACE = uuid.UUID("6f1d3c2e-8b1a-4d0e-9a53-7c1f0e2b4a10")


def new_id() -> str:
    """A fresh, time-ordered id (UUIDv7)."""
    return str(uuid_utils.uuid7())


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts, so a redelivered step writes the same row."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
