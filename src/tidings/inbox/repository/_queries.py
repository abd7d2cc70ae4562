"""Pieces of SQL that several of the inbox's repository modules use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import sqlalchemy as sa

from tidings.kit.tables import broadcasts, subscriptions

# Values per IN list: well under every driver's limit on bound parameters.
_CHUNK = 500

_T = TypeVar("_T")

BROADCAST_SINCE = sa.exists().where(
    broadcasts.c.topic == subscriptions.c.topic,
    broadcasts.c.created_at > subscriptions.c.created_at,
)
"""The subscription (of the enclosing query) has a broadcast stored after it was made."""


def chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``values`` in slices short enough for one IN list each."""
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
